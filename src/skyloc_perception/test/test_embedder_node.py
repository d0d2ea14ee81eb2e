"""The `embedder` node as a real process over DDS: Image in, Descriptor out; bad input."""

import math
import os

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import FluidPressure, Image, Imu
from skyloc_interfaces.msg import Descriptor

from skyloc_perception.bundle import load_bundle
from skyloc_perception.build_bundle import build, parser
from skyloc_sim.dds import configure_dds
from skyloc_sim.testing import start_node, stop_process, TestNode

configure_dds(start=__file__)


@pytest.fixture(scope='module')
def bundle_dir(tmp_path_factory):
    """A small RootSIFT bundle fitted on a procedural map (no torch)."""
    import cv2
    from skyloc_sim.geo import write_map_yaml
    from skyloc_sim.procedural import generate_layout, render_orthophoto
    out = tmp_path_factory.mktemp('bundle')
    layout = generate_layout(3, size_m=300.0, resolution=0.5)
    rgb = render_orthophoto(layout, 'map', 0)
    cv2.imwrite(str(out / 'map.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    map_yaml = write_map_yaml(str(out / 'map.yaml'), 'map.png', 0.5, (-150.0, -150.0, 0.0),
                              (47.0, 8.0))
    args = parser().parse_args(['--map', map_yaml, '--out', str(out / 'b'), '--k', '8',
                                '--pca-dim', '32', '--tiles', '80', '--footprints', '60',
                                '--input-size', '160', '--quiet'])
    build(args, log=lambda m: None)
    return str(out / 'b')


def start_embedder(tmp_path, domain, **params):
    return start_node('skyloc_perception', 'embedder', 'embedder', params, domain, tmp_path)


class Driver(TestNode):
    """Test-side node: publishes camera/IMU/baro, collects descriptors and diagnostics."""

    def __init__(self, domain):
        super().__init__('embedder_test', domain)
        self.image = self.node.create_publisher(Image, '/camera/image_raw',
                                                qos_profile_sensor_data)
        self.imu = self.node.create_publisher(Imu, '/imu/data', qos_profile_sensor_data)
        self.baro = self.node.create_publisher(FluidPressure, '/baro', qos_profile_sensor_data)
        self.descriptors, self.crops, self.diagnostics = [], [], []
        self.node.create_subscription(Descriptor, '/skyloc/descriptor',
                                      self.descriptors.append, 10)
        self.node.create_subscription(Image, '/skyloc/query_image', self.crops.append,
                                      qos_profile_sensor_data)
        self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                      self.diagnostics.append, 10)

    def wait_matched(self, timeout=20.0):
        """Wait until the node under test subscribes to every input (then 0.5 s more)."""
        pubs = (self.image, self.imu, self.baro)
        ok = self.wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs),
                             timeout)
        self.spin(0.5)
        return ok

    def send_attitude_and_altitude(self, yaw=0.3, pressure=101325.0, nan=False):
        imu = Imu()
        value = math.nan if nan else 0.0
        imu.orientation.x, imu.orientation.y = value, 0.0
        imu.orientation.z, imu.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        self.imu.publish(imu)
        baro = FluidPressure()
        baro.fluid_pressure = pressure
        self.baro.publish(baro)

    def send_image(self, stamp_s, encoding='rgb8', width=640, height=480, seed=0):
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), np.uint8)
        pixels = np.repeat(np.repeat(pixels, 8, 0), 8, 1)[:height, :width]
        msg = Image()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(
            round((stamp_s % 1) * 1e9))
        msg.height, msg.width, msg.encoding = height, width, encoding
        msg.step = width * 3
        msg.data = pixels.tobytes()
        self.image.publish(msg)

    def last_status(self):
        return self.diagnostics[-1].status[0] if self.diagnostics else None


def test_image_to_descriptor_with_same_stamp_and_bad_input_survived(tmp_path, bundle_dir):
    domain = 110 + os.getpid() % 20
    proc = start_embedder(tmp_path, domain, bundle=bundle_dir, footprint_m=60.0,
                          query_rate=5.0)
    drv = Driver(domain)
    try:
        assert drv.wait_matched(), 'embedder never subscribed'
        # ground reference (the first reading the node gets), then 80 m up (about 950 Pa less)
        for _ in range(5):
            drv.send_attitude_and_altitude(pressure=101325.0)
            drv.spin(0.1)
        for i in range(3):
            drv.send_attitude_and_altitude(pressure=101325.0 - 950.0)
            drv.send_image(100.0 + i * 0.5, seed=i)
            drv.spin(0.3)
        assert drv.wait_until(lambda: len(drv.descriptors) >= 2), 'no descriptors'
        d = drv.descriptors[0]
        bundle = load_bundle(bundle_dir)
        assert d.model_id == bundle.model_id
        assert len(d.data) == bundle.descriptor_dim == 32
        assert abs(np.linalg.norm(d.data) - 1.0) < 1e-3
        # the stamp of one of the images sent (the first may be dropped while the node is busy
        # or has not taken the altitude yet: one CI run got 100.5 first)
        sent = {(100, 0), (100, 500000000), (101, 0)}
        stamp = (d.header.stamp.sec, d.header.stamp.nanosec)
        assert stamp in sent
        assert d.altitude_m == pytest.approx(80.0, abs=2.0)
        assert d.yaw_rad == pytest.approx(0.3, abs=1e-3) and d.footprint_m == 60.0
        assert drv.wait_until(lambda: len(drv.crops) >= 1)
        crop = drv.crops[0]
        assert (crop.width, crop.height, crop.encoding) == (160, 160, 'rgb8')
        assert (crop.header.stamp.sec, crop.header.stamp.nanosec) in sent
        assert drv.wait_until(lambda: stamp in {(c.header.stamp.sec, c.header.stamp.nanosec)
                                                for c in drv.crops}, 5)   # same stamp
        # bad inputs: each is reported and skipped, the node keeps serving
        before = len(drv.descriptors)
        drv.send_image(110.0, encoding='yuv422')
        drv.spin(0.5)
        drv.send_image(111.0, width=16, height=12)
        drv.spin(0.5)
        drv.send_attitude_and_altitude(nan=True)
        drv.spin(0.3)
        assert drv.wait_until(lambda: drv.last_status() is not None and
                              drv.last_status().level == DiagnosticStatus.WARN)
        warn = drv.last_status()
        assert 'skipped' in warn.message or 'bad camera image' in warn.message \
            or 'NaN' in warn.message
        assert len(drv.descriptors) == before
        drv.send_attitude_and_altitude(pressure=101325.0 - 950.0)
        drv.spin(0.2)
        drv.send_image(112.0, encoding='bgr8')
        assert drv.wait_until(lambda: len(drv.descriptors) > before), 'node stopped serving'
        assert drv.descriptors[-1].header.stamp.sec == 112
        values = {kv.key: kv.value for kv in drv.diagnostics[-1].status[0].values}
        assert int(values['frames_skipped_bad_input']) >= 2
        assert float(values['rss_mb']) > 30
    finally:
        drv.close()
        code, out = stop_process(proc)
        print(out)  # the node's log, shown when the test fails
    assert code == 0, out
    assert 'unknown encoding' in out.lower() or 'yuv422' in out


@pytest.mark.parametrize('breakage, expect', [
    ('missing', 'bundle folder not found'),
    ('corrupt', 'sha256 does not match'),
    ('dimension', 'does not match the backbone'),
])
def test_bad_bundle_reports_error_and_node_stays_up(tmp_path, bundle_dir, breakage, expect):
    import shutil
    broken = tmp_path / 'broken'
    if breakage != 'missing':
        shutil.copytree(bundle_dir, broken)
    if breakage == 'corrupt':
        with open(broken / 'pca.npz', 'ab') as stream:
            stream.write(b'junk')
    if breakage == 'dimension':  # a vocabulary of dim 64 for a 128-dim backbone, rehashed
        import json
        from skyloc_perception.bundle import compute_model_id, file_sha256
        np.save(broken / 'vocabulary.npy', np.ones((8, 64), np.float32))
        meta = json.loads((broken / 'bundle.json').read_text())
        meta['files'] = {n: file_sha256(broken / n) for n in meta['files']}
        meta['files'].pop('pca.npz')
        os.remove(broken / 'pca.npz')
        meta['model_id'] = compute_model_id(meta['files'])
        (broken / 'bundle.json').write_text(json.dumps(meta))
    domain = 130 + os.getpid() % 10
    proc = start_embedder(tmp_path, domain, bundle=str(broken))
    drv = Driver(domain)
    try:
        assert drv.wait_until(lambda: drv.last_status() is not None, timeout=20)
        status = drv.last_status()
        assert status.level == DiagnosticStatus.ERROR and expect in status.message
        drv.send_attitude_and_altitude()
        drv.send_image(5.0)
        drv.spin(1.0)
        assert proc.poll() is None and not drv.descriptors
    finally:
        drv.close()
        code, out = stop_process(proc)
        print(out)
    assert code == 0 and expect in out
