"""The `localizer` node: descriptors + IMU + barometer -> /skyloc/pose, /skyloc/odometry.

Subscribes /skyloc/descriptor and /skyloc/query_image (the embedder's north-up crop with the
same stamp), /imu/data, /baro, /battery, /skyloc/flight_mode, /skyloc/query_rate_cap and
/initialpose. Publishes /skyloc/pose (PoseWithCovarianceStamped), /skyloc/odometry
(Odometry), /skyloc/probability_map (OccupancyGrid, latched), /skyloc/query_rate (latched,
for the embedder) and /diagnostics; broadcasts map -> base_link where tf2_ros is installed.

All the work is skyloc_localization.core.LocalizerCore; this module converts messages. A
query (retrieval + correlation, tens of ms) runs in its own callback group, beside the IMU
callbacks; the filters are changed under one lock. Bad input (a database built with another
model, a descriptor of the wrong dimension, NaN IMU samples, time going backwards, no
barometer, no camera) is logged, counted and reported on /diagnostics; the node keeps running.
"""

import math
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid, Odometry
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from sensor_msgs.msg import BatteryState, FluidPressure, Image, Imu
from skyloc_interfaces.msg import Descriptor
from std_msgs.msg import Float32, String

from skyloc_sim.node_main import declare_parameters, rss_mb, run_node, workspace_path

OK, WARN, ERROR = 0, 1, 2   # DiagnosticStatus levels (the message's constants are bytes)

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# IMU at 100-200 Hz, faster than real time in simulation: a deep queue so that a callback
# delayed by a query loses no sample
IMU_QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT,
                     durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
CROP_QOS = QoSProfile(depth=5, reliability=qos_profile_sensor_data.reliability,
                      durability=qos_profile_sensor_data.durability,
                      history=qos_profile_sensor_data.history)

PARAMETERS = [
    ('database', '.cache/databases/default', 'Map database folder (db.json, descriptors.npy, '
     'centres.npy); relative paths from the workspace root'),
    ('bundle', '', 'Model bundle folder; when given, its model_id must be the database\'s '
     '(checked at start). Empty: descriptors are checked against the database only'),
    ('top_k', 10, 'Tiles whose similarities update the probability map'),
    ('verify_k', 3, 'Distinct tiles verified by correlation per query (besides the tracking '
     'window around the filter\'s position)'),
    ('fallback_k', 8, 'Tiles verified when the best similarity is weak or the state is not OK'),
    ('histogram_cell_m', 5.0, 'Cell size of the probability map, m'),
    ('prior_max_sigma_m', 40.0, 'Track (verify the window around the filter\'s position first) '
     'while its horizontal std is below this, m'),
    ('hold_velocity_std', 1.0, 'Flight mode "hold" (the mission hovers while LOST): the '
     'horizontal velocity is measured as 0 with this std, m/s, so the pose does not drift '
     'away without fixes. It assumes the hover holds over the ground: a drone drifting with '
     'the wind (no GNSS or optical flow) moves unseen (BENCHMARKS.md: better than IMU alone '
     'in calm air and after 2 min, worse for the first minute in a 2 m/s wind); 0 turns it off'),
    ('hold_settle_s', 3.0, 'Flight mode "hold" this long (the vehicle has stopped) before the '
     'zero-velocity measurement starts, s'),
    ('reseed_confirmations', 2, 'A filter with a position is re-seeded from the map (a kidnap) '
     'only after this many queries whose verified fixes confirm the map\'s far mode and agree '
     'with each other; 1: the first one does'),
    ('min_similarity', 0.05, 'A query whose best cosine similarity is below this is invalid'),
    ('min_peak', 0.12, 'A fine fix whose correlation peak is below this is invalid'),
    ('correlation_chroma', 3.0, 'Weight of colour edges (CIE Lab a/b) beside the grey ones in '
     'the correlation fix: a boundary between two fields of the same brightness counts too; '
     '0 correlates grey edges only (use 0 with a monochrome camera)'),
    ('crop_wait_s', 1.0, 'How long a descriptor waits for its /skyloc/query_image (wall s); '
     'then it is used for retrieval only'),
    ('publish_rate_hz', 20.0, 'Rate of /skyloc/pose and /skyloc/odometry (IMU stamps), Hz'),
    ('base_query_rate_hz', 1.0, 'Query rate in survey mode at low uncertainty, Hz (the seed\'s '
     'was 0.2)'),
    ('min_query_rate_hz', 0.1, 'Lowest query rate asked of the embedder, Hz'),
    ('max_query_rate_hz', 2.0, 'Highest query rate asked of the embedder, Hz'),
    ('baro_std_m', 0.5, 'Barometric altitude noise, m'),
    ('probability_map_log_scale', True, 'Publish log10 of the belief (shows secondary modes)'),
    ('map_frame', 'map', 'Frame of the pose and the probability map'),
    ('base_frame', 'base_link', 'child_frame_id of /skyloc/odometry and of the TF'),
    ('publish_tf', True, 'Broadcast map -> base_link (where tf2_ros is installed)'),
]


def stamp_s(stamp):
    return stamp.sec + stamp.nanosec * 1e-9


class LocalizerNode(Node):
    """Descriptor queries + IMU + barometer -> fused pose (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__('localizer', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        if not p['correlation_chroma'] >= 0.0:
            raise ValueError(f"parameter 'correlation_chroma' must not be negative, got "
                             f"{p['correlation_chroma']!r}")
        self.cfg = p
        self.lock = threading.RLock()
        self.core = None
        self.error = None              # why the node cannot localise (database, bundle)
        self.mode, self.battery, self.cap = 'survey', None, None
        self.hold_since, self.hold_logged = None, False
        self.rate_hz, self.rate_info = None, {}
        self.pending = []              # descriptors waiting for their crop: (msg, wall time)
        self.crops = {}                # stamp (ns) -> Image
        self.last_query_t = None
        self.last_pub_t = None
        self.last_tick_t = None
        self.orientation = (0.0, 0.0, 0.0, 1.0)
        self.baro_seen = False
        self.stats = {'descriptors': 0, 'queries': 0, 'valid': 0, 'bad_descriptor': 0,
                      'model_mismatch': 0, 'time_backwards': 0, 'no_crop': 0, 'nan_imu': 0,
                      'stale': 0, 'reseeded': 0,
                      'query_ms': [], 'problems': [], 'level': OK}
        self._load(p)

        sensors = MutuallyExclusiveCallbackGroup()
        queries = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Imu, '/imu/data', self._on_imu, IMU_QOS, callback_group=sensors)
        self.create_subscription(FluidPressure, '/baro', self._on_baro, qos_profile_sensor_data,
                                 callback_group=sensors)
        self.create_subscription(BatteryState, '/battery', self._on_battery,
                                 qos_profile_sensor_data, callback_group=sensors)
        self.create_subscription(String, '/skyloc/flight_mode', self._on_mode, LATCHED,
                                 callback_group=sensors)
        self.create_subscription(Float32, '/skyloc/query_rate_cap', self._on_cap, LATCHED,
                                 callback_group=sensors)
        self.create_subscription(PoseWithCovarianceStamped, '/initialpose', self._on_initialpose,
                                 10, callback_group=sensors)
        self.create_subscription(Descriptor, '/skyloc/descriptor', self._on_descriptor, 10,
                                 callback_group=queries)
        self.create_subscription(Image, '/skyloc/query_image', self._on_crop, CROP_QOS,
                                 callback_group=queries)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, '/skyloc/pose', 10)
        self.odom_pub = self.create_publisher(Odometry, '/skyloc/odometry', 10)
        self.map_pub = self.create_publisher(OccupancyGrid, '/skyloc/probability_map', LATCHED)
        self.rate_pub = self.create_publisher(Float32, '/skyloc/query_rate', LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.tf = self._tf_broadcaster() if p['publish_tf'] else None
        self.create_timer(0.05, self._process, callback_group=queries)
        self.create_timer(1.0, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self._update_rate()

    # ------------------------------------------------------------------ set-up
    def _load(self, p):
        from skyloc_localization.core import CoreConfig, LocalizerCore
        from skyloc_localization.database import DatabaseError, load_database
        from skyloc_localization.health import HealthConfig
        from skyloc_localization.kalman import KalmanConfig
        from skyloc_localization.rate import RateConfig
        path = workspace_path(p['database'])
        t0 = time.perf_counter()
        try:
            bundle = None
            if p['bundle']:
                from skyloc_perception.bundle import BundleError, load_bundle
                try:
                    bundle = load_bundle(workspace_path(p['bundle']))
                except BundleError as exc:
                    raise DatabaseError(f'model bundle: {exc}') from exc
            db = load_database(path, bundle)
            cfg = CoreConfig(top_k=int(p['top_k']), verify_k=int(p['verify_k']),
                             fallback_k=int(p['fallback_k']),
                             histogram_cell_m=float(p['histogram_cell_m']),
                             prior_max_sigma_m=float(p['prior_max_sigma_m']),
                             hold_velocity_std=float(p['hold_velocity_std']),
                             hold_settle_s=float(p['hold_settle_s']),
                             reseed_confirmations=int(p['reseed_confirmations']),
                             correlation_chroma=float(p['correlation_chroma']))
            self.core = LocalizerCore(
                db, cfg, KalmanConfig(baro_std=float(p['baro_std_m'])),
                HealthConfig(min_similarity=float(p['min_similarity']),
                             min_geometric_score=float(p['min_peak'])),
                RateConfig(base_hz=float(p['base_query_rate_hz']),
                           min_hz=float(p['min_query_rate_hz']),
                           max_hz=float(p['max_query_rate_hz'])), lock=self.lock)
            self.core.retriever.matcher.min_peak = float(p['min_peak'])
        except (DatabaseError, ValueError, OSError) as exc:
            self.error = str(exc)
            self.get_logger().error(f'cannot localise: {exc}')
            return
        bands = ', '.join(f"{b['alt_min']:g}-{b['alt_max']:g} m ({b['count']} tiles)"
                          for b in db.bands)
        self.get_logger().info(
            f'database {path}: {len(db)} tiles, dim {db.dim}, model_id {db.model_id[:12]}, '
            f'bands {bands}; probability map {self.core.hist.cols}x{self.core.hist.rows} '
            f'cells of {self.core.hist.cell:g} m; ready in {time.perf_counter() - t0:.2f} s')

    def _tf_broadcaster(self):
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            self.get_logger().info('tf2_ros not installed: no map -> base_link TF (the pose '
                                   'is on /skyloc/pose and /skyloc/odometry)')
            return None
        return TransformBroadcaster(self)

    def _problem(self, text, level=WARN, counter=None):
        if counter:
            self.stats[counter] += 1
        problems = self.stats['problems']   # distinct problems since the last report
        if text not in problems and len(problems) < 6:
            problems.append(text)
        self.stats['level'] = max(self.stats['level'], level)
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ sensors
    def _on_imu(self, msg):
        if self.core is None:
            return
        t = stamp_s(msg.header.stamp)
        q = msg.orientation
        a = msg.linear_acceleration
        quat, acc = (q.x, q.y, q.z, q.w), (a.x, a.y, a.z)
        if not all(math.isfinite(v) for v in quat + acc):
            self._problem('IMU sample with NaN orientation or acceleration ignored: '
                          'coasting on the last attitude at constant velocity',
                          counter='nan_imu')
            if self.orientation is None or not math.isfinite(t):
                return
            # the pose keeps coming (the mission and the follower stop without one): the
            # filter predicts with the last good attitude and no acceleration (specific force
            # = gravity in the body frame)
            from skyloc_localization.kalman import GRAVITY, rotation_from_quaternion
            R = rotation_from_quaternion(*self.orientation)
            if R is None:
                return
            quat, acc = self.orientation, tuple(float(v) for v in R.T @ (0.0, 0.0, GRAVITY))
        if not self.core.imu(t, quat, acc):
            st = self.core.kf.stats
            if st['time_backwards']:
                self._problem(f'IMU time went backwards ({st["time_backwards"]} samples '
                              'ignored)')
            return
        self.orientation = quat
        if self.last_tick_t is None or t - self.last_tick_t >= 0.5:
            self.last_tick_t = t
            self.core.tick(t)
            self._hover(t)
        rate = float(self.cfg['publish_rate_hz'])
        if self.last_pub_t is None or t - self.last_pub_t >= 1.0 / max(rate, 1e-3) - 1e-6 \
                or t < self.last_pub_t:
            self.last_pub_t = t
            self._publish_pose(msg.header.stamp)

    def _hover(self, t):
        """Flight mode 'hold' (the mission hovers while LOST): after hold_settle_s the
        filter is told the vehicle is at rest, so the pose does not drift away without fixes."""
        if self.mode != 'hold':
            self.hold_since, self.hold_logged = None, False
            return
        if self.hold_since is None or t < self.hold_since:
            self.hold_since = t
        elif t - self.hold_since >= self.core.cfg.hold_settle_s and self.core.hover(t) and \
                not self.hold_logged:
            self.hold_logged = True
            self.get_logger().info(
                f'flight mode hold for {t - self.hold_since:.1f} s: holding the velocity at '
                f'zero (std {self.core.cfg.hold_velocity_std:g} m/s) until it ends')

    def _on_baro(self, msg):
        if self.core is None:
            return
        if not self.core.baro(stamp_s(msg.header.stamp), msg.fluid_pressure):
            if not (math.isfinite(msg.fluid_pressure) and msg.fluid_pressure > 0):
                self._problem(f'barometer reading {msg.fluid_pressure} Pa ignored')
            return
        self.baro_seen = True

    def _on_battery(self, msg):
        self.battery = msg.percentage
        self._update_rate()

    def _on_mode(self, msg):
        self.mode = msg.data
        self._update_rate()

    def _on_cap(self, msg):
        self.cap = float(msg.data)
        self._update_rate()

    def _on_initialpose(self, msg):
        if self.core is None:
            return
        p = msg.pose.pose.position
        cov = np.array(msg.pose.covariance, float).reshape(6, 6)[:3, :3]
        if cov[0, 0] <= 0 or cov[1, 1] <= 0:
            cov[:2, :2] += np.eye(2) * 25.0   # rviz2 sends a small default; 5 m if none
        if not self.core.initial_pose(stamp_s(msg.header.stamp) or self.core.kf.t or 0.0,
                                      (p.x, p.y, p.z), cov):
            self._problem('/initialpose with NaN values ignored')
            return
        self.get_logger().info(f'initial pose ({p.x:.1f}, {p.y:.1f}) m, std '
                               f'{math.sqrt(cov[0, 0]):.1f} m')

    # ------------------------------------------------------------------ queries
    def _on_descriptor(self, msg):
        self.stats['descriptors'] += 1
        self.pending.append((msg, time.monotonic()))

    def _on_crop(self, msg):
        key = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
        self.crops[key] = msg
        while len(self.crops) > 8:
            del self.crops[min(self.crops)]

    def _process(self):
        """Match descriptors with their crops and run the queries (the newest only)."""
        if not self.pending:
            return
        if self.core is None:
            self.pending.clear()
            self._problem(f'cannot localise: {self.error}', ERROR)
            return
        ready = []
        now = time.monotonic()
        for msg, since in self.pending:
            key = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
            if key in self.crops or now - since >= float(self.cfg['crop_wait_s']):
                ready.append((msg, self.crops.pop(key, None)))
        if not ready:
            return
        self.pending = [(m, s) for m, s in self.pending if all(m is not r[0] for r in ready)]
        usable = []
        for msg, crop_msg in ready:
            problem = self._check(msg)
            if problem is not None:
                self._problem(problem[0], problem[2], counter=problem[1])
            else:
                usable.append((msg, crop_msg))
        if usable:   # older ones are stale (the filters moved on): the newest wins
            self.stats['stale'] += len(usable) - 1
            self._query(*usable[-1])

    def _check(self, msg):
        """None if the descriptor is usable, else the problem (and its counter)."""
        db = self.core.db
        if msg.model_id != db.model_id:
            return (f'descriptor from model_id {msg.model_id[:12] or "(none)"} but the '
                    f'database was built with {db.model_id[:12]}: give the embedder the '
                    'bundle of the database', 'model_mismatch', ERROR)
        if len(msg.data) != db.dim:
            return (f'descriptor of dimension {len(msg.data)}, the database has {db.dim}',
                    'bad_descriptor', ERROR)
        if not (math.isfinite(msg.altitude_m) and msg.altitude_m > 0
                and math.isfinite(msg.footprint_m) and msg.footprint_m > 0):
            return (f'descriptor with altitude {msg.altitude_m} m, footprint {msg.footprint_m} '
                    'm ignored', 'bad_descriptor', WARN)
        band = db.bands[db.band_for_altitude(msg.altitude_m)]
        if abs(msg.footprint_m / band['footprint_m'] - 1.0) > 0.02:
            return (f"query footprint {msg.footprint_m:g} m but the database's band "
                    f"{band['alt_min']:g}-{band['alt_max']:g} m has {band['footprint_m']:g} "
                    'm tiles: give the embedder the database', 'bad_descriptor',
                    ERROR)
        t = stamp_s(msg.header.stamp)
        if self.last_query_t is not None and t < self.last_query_t - 1e-6:
            return (f'descriptor stamp {t:.3f} s is older than the previous query '
                    f'({self.last_query_t:.3f} s): time went backwards, ignored',
                    'time_backwards', WARN)
        return None

    def _query(self, msg, crop_msg):
        from skyloc_perception.image import ImageError, image_from_msg
        vector = np.asarray(msg.data, np.float32)
        if not np.all(np.isfinite(vector)):
            self._problem('descriptor with NaN values ignored', counter='bad_descriptor')
            return
        crop = None
        if crop_msg is None:
            self._problem('no /skyloc/query_image for the descriptor: retrieval only',
                          counter='no_crop')
        else:
            try:
                crop = image_from_msg(crop_msg)
            except ImageError as exc:
                self._problem(f'bad /skyloc/query_image: {exc}: retrieval only',
                              counter='no_crop')
        t = stamp_s(msg.header.stamp)
        self.last_query_t = t
        out = self.core.query(t, vector, crop, float(msg.footprint_m), float(msg.altitude_m))
        self.stats['queries'] += 1
        self.stats['valid'] += int(out.valid)
        self.stats['query_ms'] = (self.stats['query_ms'] + [out.timings_ms['total']])[-50:]
        loc = out.localization
        fr = out.fix_result
        self.get_logger().debug(
            f'query t={t:.2f}: {loc.fix} ({loc.x:.1f}, {loc.y:.1f}) sim {loc.similarity:.3f} '
            f'peak {loc.geometric_score:.3f} {out.source} valid={out.valid} '
            f'{"accepted" if fr is not None and fr.accepted else "not applied"}'
            f'{" RESEED" if out.reseeded else ""} {out.timings_ms["total"]:.0f} ms')
        if out.reseeded:   # the filter was wrong (a kidnap, or drift): WARN on /diagnostics
            x, y = self.core.kf.position[:2]
            self._problem(f're-seeded the filter from the map at ({x:.0f}, {y:.0f}) m: the '
                          'pose jumped (kidnap or drift)', counter='reseeded')
        self._publish_probability_map(msg.header.stamp)
        self._update_rate()

    # ------------------------------------------------------------------ outputs
    def _publish_pose(self, stamp):
        kf = self.core.kf
        with self.lock:
            pos, vel, P = kf.position, kf.velocity, kf.P
        frame = self.cfg['map_frame']
        cov6 = np.zeros((6, 6))
        cov6[:3, :3] = P[:3, :3]
        cov6[3:, 3:] = np.eye(3) * 0.01   # attitude comes from the IMU, not estimated here
        msg = PoseWithCovarianceStamped()
        msg.header.stamp, msg.header.frame_id = stamp, frame
        pose = msg.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in pos)
        q = self.orientation
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q
        msg.pose.covariance = [float(v) for v in cov6.ravel()]
        self.pose_pub.publish(msg)
        odom = Odometry()
        odom.header = msg.header
        odom.child_frame_id = self.cfg['base_frame']
        odom.pose = msg.pose
        from skyloc_localization.kalman import rotation_from_quaternion
        R = rotation_from_quaternion(*q)
        v_body = R.T @ vel if R is not None else vel   # twist is in the child frame
        odom.twist.twist.linear.x, odom.twist.twist.linear.y, odom.twist.twist.linear.z = (
            float(v) for v in v_body)
        tw = np.zeros((6, 6))
        tw[:3, :3] = P[3:6, 3:6]
        odom.twist.covariance = [float(v) for v in tw.ravel()]
        self.odom_pub.publish(odom)
        if self.tf is not None:
            from geometry_msgs.msg import TransformStamped
            tf = TransformStamped()
            tf.header = msg.header
            tf.child_frame_id = self.cfg['base_frame']
            tf.transform.translation.x, tf.transform.translation.y, \
                tf.transform.translation.z = pose.position.x, pose.position.y, pose.position.z
            tf.transform.rotation = pose.orientation
            self.tf.sendTransform(tf)

    def _publish_probability_map(self, stamp):
        hist = self.core.hist
        with self.lock:
            data = hist.occupancy(log_scale=bool(self.cfg['probability_map_log_scale']))
            res, width, height, ox, oy = hist.occupancy_info()
        msg = OccupancyGrid()
        msg.header.stamp, msg.header.frame_id = stamp, self.cfg['map_frame']
        msg.info.map_load_time = stamp
        msg.info.resolution = float(res)
        msg.info.width, msg.info.height = int(width), int(height)
        msg.info.origin.position.x, msg.info.origin.position.y = float(ox), float(oy)
        msg.info.origin.orientation.w = 1.0
        msg.data = data.tobytes()
        self.map_pub.publish(msg)

    def _update_rate(self):
        if self.core is None:
            return
        rate, info = self.core.rate(self.mode, self.battery, self.cap)
        self.rate_info = info
        if self.rate_hz is None or abs(rate - self.rate_hz) > 0.01 * self.rate_hz:
            self.rate_hz = rate
            self.rate_pub.publish(Float32(data=float(rate)))

    def _publish_diagnostics(self):
        st = self.stats
        status = DiagnosticStatus(name='localizer: pose', hardware_id='skyloc_localization')
        values = {'queries': st['queries'], 'valid_queries': st['valid'],
                  'descriptors_received': st['descriptors'],
                  'descriptors_rejected': st['bad_descriptor'] + st['model_mismatch'],
                  'model_mismatch': st['model_mismatch'], 'time_backwards': st['time_backwards'],
                  'queries_without_crop': st['no_crop'], 'nan_imu_samples': st['nan_imu'],
                  'descriptors_skipped_stale': st['stale'],
                  'rss_mb': f'{rss_mb():.0f}'}
        if self.core is None:
            status.level = bytes([ERROR])
            status.message = f'cannot localise: {self.error}'
        else:
            level, message, health = self.core.health.diagnostic()
            kf = self.core.kf
            with self.lock:
                pos, std = kf.position, self.core.position_std()
                kst = dict(kf.stats)
                baro_ok, initialized = kf.baro_ok, kf.initialized
            last = self.core.last
            lat = st['query_ms']
            values.update(health)
            values.update({
                'x': f'{pos[0]:.2f}', 'y': f'{pos[1]:.2f}', 'z': f'{pos[2]:.2f}',
                'position_std_m': f'{std:.2f}', 'initialized': str(initialized),
                'entropy': f'{last.estimate.entropy:.3f}' if last else 'n/a',
                'query_rate_hz': f'{self.rate_hz:.3f}' if self.rate_hz else 'n/a',
                'flight_mode': self.mode, 'query_ms_mean': f'{np.mean(lat):.1f}' if lat else 'n/a',
                'fixes_accepted': kst['fixes_accepted'], 'fixes_rejected': kst['fixes_rejected'],
                'reseeds': kst['reseeds'], 'baro_ok': str(baro_ok),
                'hold_velocity_updates': kst['velocity_updates'],
                'imu_time_backwards': kst['time_backwards'], 'imu_gaps': kst['imu_gaps']})
            if not baro_ok and self.core.kf.t is not None:
                health_note = 'no barometer: vertical covariance inflated'
                level = max(level, WARN)
                message = f'{message}; {health_note}'
            status.level = bytes([max(level, st['level'])])
            status.message = '; '.join([message] + st['problems'])
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.diag_pub.publish(msg)
        st['level'], st['problems'] = OK, []


NODE_CLASS = LocalizerNode


def main(args=None):
    run_node(LocalizerNode, args, executor_class=MultiThreadedExecutor, num_threads=3)
