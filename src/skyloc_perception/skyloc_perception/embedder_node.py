"""Node `embedder`: camera image -> normalised north-up crop -> descriptor.

Subscribes /camera/image_raw, /camera/camera_info, /imu/data (attitude), /skyloc/odometry
(altitude once the localizer runs), /baro (altitude before that, relative to the first
reading), /skyloc/query_rate; publishes /skyloc/descriptor (skyloc_interfaces/Descriptor),
/skyloc/query_image (the crop, same stamp) and /diagnostics. Images are only stored by their
callback; inference runs in its own callback group, and a frame that arrives while it is busy
replaces the waiting one (counted as dropped) instead of queueing.
"""

import ctypes
import ctypes.util
import math
import os
import threading
import time


def limit_malloc_arenas(arenas=1):
    """glibc only (a no-op elsewhere): at most ``arenas`` malloc arenas for the process.

    By default every thread that allocates gets its own arena (up to 8 per core) and each
    keeps what it freed: the executor threads, the inference thread, the DDS threads and
    OpenBLAS's worker pass 0.9 MB frames and numpy temporaries around. Effective only for
    threads started afterwards, hence called here, before numpy (OpenBLAS starts its threads
    on import) and rclpy are imported. Measured with the INT8 ViT bundle: 3-4 MB less peak
    RSS of the node than the same call in main() (bench/results/perception.json).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        return libc.mallopt(-8, int(arenas)) == 1  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


limit_malloc_arenas()
# numpy's OpenBLAS would start a worker per core for VLAD/PCA's small products: inference is
# one thread (the `threads` parameter is ONNX Runtime's), and on a busy core handing a
# 0.1 ms product to a worker cost up to 1-2 ms (measured); a node started with the variable
# set keeps its value
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
import numpy as np  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import (DurabilityPolicy, QoSProfile, qos_profile_sensor_data,  # noqa: E402
                       ReliabilityPolicy)
from sensor_msgs.msg import CameraInfo, FluidPressure, Image, Imu  # noqa: E402
from skyloc_interfaces.msg import Descriptor  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from skyloc_perception.attitude import attitude_from_quaternion, baro_altitude  # noqa: E402
from skyloc_perception.bundle import (BundleError, DescriptorPipeline,  # noqa: E402
                                      load_bundle)
from skyloc_perception.image import image_from_msg, ImageError  # noqa: E402
from skyloc_perception.normalize import (band_for_altitude, CameraIntrinsics,  # noqa: E402
                                         normalize_query)
from skyloc_sim.node_main import (declare_parameters, rss_mb, run_node,  # noqa: E402
                                  workspace_path)

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# sensor-data QoS keeping one frame: only the newest is ever embedded, and each frame kept in
# the reader's history is 0.9 MB (VGA rgb8)
CAMERA_QOS = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                        durability=qos_profile_sensor_data.durability,
                        history=qos_profile_sensor_data.history)
MIN_IMAGE_SIDE = 32

PARAMETERS = [
    ('bundle', '', 'Model bundle folder (bundle.json, vocabulary.npy, pca.npz[, model.onnx]); '
     "relative paths from the workspace root. Empty: the default '.cache/bundles/default'"),
    ('database', '', "Map database folder (db.json): footprint and altitude bands from it; "
     'empty: use footprint_m'),
    ('footprint_m', 100.0, 'Side of the ground square cropped from each image, m (when no '
     'database is given)'),
    ('query_rate', 1.0, 'Descriptors per second until the localizer asks for another rate '
     'on /skyloc/query_rate, Hz'),
    ('max_query_rate', 5.0, 'Upper bound of the query rate, Hz'),
    ('hfov_deg', 90.0, 'Camera horizontal field of view until /camera/camera_info arrives'),
    ('camera_gimbal', True, 'Camera is gimbal-stabilised (nadir); false: fixed mount, the '
     'crop is corrected with roll/pitch'),
    ('magnetic_declination_deg', 0.0, 'Added to the IMU yaw (an IMU referenced to magnetic '
     'north); REP 103 yaw'),
    ('min_valid_fraction', 0.9, 'Skip a query whose crop has less of its area inside the '
     'image'),
    ('threads', 1, 'Inference threads (ONNX Runtime intra-op)'),
    ('float16', False, 'Publish the descriptor after rounding to float16'),
]


class EmbedderNode(Node):
    """Camera image -> Descriptor, at the localizer's query rate."""

    def __init__(self, **kwargs):
        super().__init__('embedder', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        self.query_rate = min(float(p['query_rate']), float(p['max_query_rate']))
        self.lock = threading.Lock()
        self.pending = None            # (image msg, attitude, altitude) waiting for inference
        self.attitude = None           # (roll, pitch, yaw) rad
        self.altitude = None           # m above ground
        self.altitude_source = None
        self.baro_reference = None
        self.intrinsics = None
        self.last_query_stamp = None
        self._problem_logged = {}      # kind of problem -> when it was last logged
        self.stats = {'received': 0, 'embedded': 0, 'dropped': 0, 'skipped': 0,
                      'latency_ms': [], 'last_problem': '', 'level': DiagnosticStatus.OK}
        self.pipeline = None
        self.bundle_error = None
        self.footprint_m = float(p['footprint_m'])
        self.bands = None              # the database's altitude bands (footprint per band)
        self._load(p)

        sensors = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, '/camera/image_raw', self._on_image, CAMERA_QOS,
                                 callback_group=sensors)
        self.create_subscription(CameraInfo, '/camera/camera_info', self._on_info,
                                 qos_profile_sensor_data, callback_group=sensors)
        self.create_subscription(Imu, '/imu/data', self._on_imu, qos_profile_sensor_data,
                                 callback_group=sensors)
        self.create_subscription(FluidPressure, '/baro', self._on_baro,
                                 qos_profile_sensor_data, callback_group=sensors)
        self.create_subscription(Odometry, '/skyloc/odometry', self._on_odometry, 10,
                                 callback_group=sensors)
        self.create_subscription(Float32, '/skyloc/query_rate', self._on_query_rate, LATCHED,
                                 callback_group=sensors)
        self.descriptor_pub = self.create_publisher(Descriptor, '/skyloc/descriptor', 10)
        self.crop_pub = self.create_publisher(Image, '/skyloc/query_image',
                                              qos_profile_sensor_data)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # inference in its own group: never blocks the 100-200 Hz IMU callbacks
        self.create_timer(0.02, self._infer, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())

    # ------------------------------------------------------------------ set-up
    def _load(self, p):
        path = workspace_path(p['bundle'] or '.cache/bundles/default')
        try:
            bundle = load_bundle(path)
            self.pipeline = DescriptorPipeline(bundle, threads=int(p['threads']),
                                               float16=bool(p['float16']))
        except BundleError as exc:
            self.bundle_error = str(exc)
            self.get_logger().error(f'model bundle unusable, not embedding: {exc}')
            return
        if p['database']:
            self._load_database(workspace_path(p['database']), bundle)
        self.get_logger().info(
            f'bundle {path}: {bundle.backend} {bundle.kind}, descriptor dim '
            f'{self.pipeline.dim}, model_id {bundle.model_id[:12]}; footprint '
            f'{self.footprint_m:.0f} m, query rate {self.query_rate:g} Hz')

    def _load_database(self, path, bundle):
        import json
        try:
            with open(os.path.join(path, 'db.json')) as stream:
                db = json.load(stream)
        except (OSError, ValueError) as exc:
            self.bundle_error = f'{path}/db.json: cannot read: {exc}'
            self.get_logger().error(self.bundle_error)
            self.pipeline = None
            return
        if db.get('model_id') != bundle.model_id:
            self.bundle_error = (f"{path}/db.json: model_id {str(db.get('model_id'))[:12]} "
                                 f'does not match the bundle {bundle.model_id[:12]}')
            self.get_logger().error(self.bundle_error)
            self.pipeline = None
            return
        bands = db.get('bands')
        if not isinstance(bands, list) or not bands or not all(
                isinstance(b, dict) and {'alt_min', 'alt_max', 'footprint_m'} <= set(b)
                for b in bands):
            self.bundle_error = f'{path}/db.json: no usable altitude bands'
            self.get_logger().error(self.bundle_error)
            self.pipeline = None
            return
        self.bands = bands
        self.footprint_m = float(bands[len(bands) // 2]['footprint_m'])

    # ------------------------------------------------------------------ inputs
    PROBLEM_LOG_PERIOD_S = 5.0

    def _problem(self, text, level=DiagnosticStatus.WARN, frame=True):
        """Log a bad input, report it on /diagnostics; count a skipped frame.  The log is
        throttled per kind of problem (the text before its first ':' or digit), so a new kind
        is logged at once even while another one repeats."""
        self.stats['skipped'] += int(frame)
        self.stats['last_problem'] = text
        self.stats['level'] = max(self.stats['level'], level)
        kind = ''.join(c for c in text.split(':')[0] if not c.isdigit())
        now = time.monotonic()
        if now - self._problem_logged.get(kind, -math.inf) >= self.PROBLEM_LOG_PERIOD_S:
            self._problem_logged[kind] = now
            self.get_logger().warning(text)

    def _on_info(self, msg):
        if len(msg.k) == 9 and msg.k[0] > 0 and msg.width > 0:
            self.intrinsics = CameraIntrinsics.from_camera_info(list(msg.k), msg.width,
                                                                msg.height)

    def _on_imu(self, msg):
        q = msg.orientation
        values = (q.x, q.y, q.z, q.w)
        if not all(math.isfinite(v) for v in values) or sum(v * v for v in values) < 0.5:
            self._problem('IMU orientation is NaN/invalid: sample ignored', frame=False)
            return
        roll, pitch, yaw = attitude_from_quaternion(*values)
        yaw += math.radians(float(self.cfg['magnetic_declination_deg']))
        self.attitude = (roll, pitch, yaw)

    def _on_baro(self, msg):
        if not math.isfinite(msg.fluid_pressure) or msg.fluid_pressure <= 0:
            self._problem(f'barometer reading {msg.fluid_pressure} ignored', frame=False)
            return
        if self.baro_reference is None:
            self.baro_reference = msg.fluid_pressure  # the take-off point is the ground
        if self.altitude_source != 'odometry':
            self.altitude = baro_altitude(msg.fluid_pressure, self.baro_reference)
            self.altitude_source = 'barometer'

    def _on_odometry(self, msg):
        z = msg.pose.pose.position.z
        if math.isfinite(z):
            self.altitude = z
            self.altitude_source = 'odometry'

    def _on_query_rate(self, msg):
        rate = float(msg.data)
        if math.isfinite(rate) and rate > 0:
            self.query_rate = min(rate, float(self.cfg['max_query_rate']))

    def _on_image(self, msg):
        self.stats['received'] += 1
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if self.last_query_stamp is not None and \
                stamp - self.last_query_stamp < 1.0 / self.query_rate - 1e-3:
            return  # not due yet at the current query rate
        with self.lock:
            if self.pending is not None:
                self.stats['dropped'] += 1  # inference busy: keep only the newest frame
            self.pending = (msg, self.attitude, self.altitude)
        self.last_query_stamp = stamp

    # ------------------------------------------------------------------ inference
    def _infer(self):
        with self.lock:
            job, self.pending = self.pending, None
        if job is None:
            return
        msg, attitude, altitude = job
        if self.pipeline is None:
            self._problem(f'no usable model bundle: {self.bundle_error}',
                          DiagnosticStatus.ERROR)
            return
        if attitude is None or altitude is None:
            self._problem('waiting for attitude (/imu/data) and altitude (/baro or '
                          '/skyloc/odometry): frame skipped')
            return
        roll, pitch, yaw = attitude
        if not all(math.isfinite(v) for v in (roll, pitch, yaw, altitude)):
            self._problem(f'NaN attitude or altitude ({attitude}, {altitude}): skipped')
            return
        if altitude < 5.0:
            self._problem(f'altitude {altitude:.1f} m too low for a nadir query')
            return
        t0 = time.perf_counter()
        try:
            rgb = image_from_msg(msg, copy=False)  # msg outlives its use here
            if min(rgb.shape[:2]) < MIN_IMAGE_SIDE:
                raise ImageError(f'image {rgb.shape[1]}x{rgb.shape[0]} is too small '
                                 f'(< {MIN_IMAGE_SIDE} px)')
            intrinsics = self.intrinsics
            if intrinsics is None or (intrinsics.width, intrinsics.height) != \
                    (rgb.shape[1], rgb.shape[0]):
                intrinsics = CameraIntrinsics.from_hfov(rgb.shape[1], rgb.shape[0],
                                                        float(self.cfg['hfov_deg']))
            if self.bands:   # the database's footprint for this altitude
                self.footprint_m = float(
                    self.bands[band_for_altitude(self.bands, altitude)]['footprint_m'])
            crop, valid = normalize_query(
                rgb, intrinsics, altitude, yaw, self.footprint_m, self.pipeline.input_size,
                roll_rad=roll, pitch_rad=pitch, gimbal=bool(self.cfg['camera_gimbal']))
        except (ImageError, ValueError) as exc:
            self._problem(f'bad camera image: {exc}')
            return
        if valid < float(self.cfg['min_valid_fraction']):
            self._problem(f'only {100 * valid:.0f}% of the {self.footprint_m:.0f} '
                          f'm footprint is in view at {altitude:.0f} m: skipped')
            return
        vector = self.pipeline.describe(crop)
        latency = (time.perf_counter() - t0) * 1e3
        out = Descriptor()
        out.header.stamp = msg.header.stamp
        out.header.frame_id = 'map'
        out.model_id = self.pipeline.model_id
        out.data = vector.astype(np.float32).tolist()
        out.altitude_m, out.yaw_rad, out.footprint_m = float(altitude), float(yaw), \
            float(self.footprint_m)
        self.descriptor_pub.publish(out)
        image = Image()
        image.header = msg.header
        image.height, image.width = crop.shape[:2]
        image.encoding, image.step = 'rgb8', crop.shape[1] * 3
        image.data = np.ascontiguousarray(crop).tobytes()
        self.crop_pub.publish(image)
        self.stats['embedded'] += 1
        self.stats['latency_ms'].append(latency)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self):
        st = self.stats
        lat = st['latency_ms'][-50:]
        st['latency_ms'] = lat
        status = DiagnosticStatus(name='embedder: descriptor', hardware_id='skyloc_perception')
        if self.pipeline is None:
            status.level = DiagnosticStatus.ERROR
            status.message = f'no usable model bundle: {self.bundle_error}'
        else:
            status.level = st['level']
            status.message = st['last_problem'] or f'embedding at {self.query_rate:g} Hz'
        values = {
            'query_rate_hz': f'{self.query_rate:g}', 'frames_received': st['received'],
            'queries_embedded': st['embedded'], 'frames_dropped_busy': st['dropped'],
            'frames_skipped_bad_input': st['skipped'],
            'latency_ms_mean': f'{np.mean(lat):.1f}' if lat else 'n/a',
            'latency_ms_last': f'{lat[-1]:.1f}' if lat else 'n/a',
            'rss_mb': f'{rss_mb():.0f}', 'altitude_source': str(self.altitude_source),
            'footprint_m': f'{self.footprint_m:g}',
            'model_id': self.pipeline.model_id[:12] if self.pipeline else 'none'}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.diag_pub.publish(msg)
        st['level'], st['last_problem'] = DiagnosticStatus.OK, ''


NODE_CLASS = EmbedderNode


def main(args=None):
    run_node(EmbedderNode, args, executor_class=MultiThreadedExecutor, num_threads=3)
