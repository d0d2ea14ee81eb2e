"""The `localizer` node as a real process over DDS: fixes from descriptors, bad input survived,
a database of another model refused; and the chain simulator -> embedder -> localizer, whose
pose converges to the ground truth."""

import math
import os
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped, Twist
from nav_msgs.msg import OccupancyGrid, Odometry
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import FluidPressure, Image, Imu
from skyloc_interfaces.msg import Descriptor
from std_msgs.msg import Float32, String

from localization_testdata import ALTITUDE, camera_image, tiny_bundle, tiny_database, tiny_world
from skyloc_perception.bundle import DescriptorPipeline
from skyloc_perception.normalize import normalize_query
from skyloc_sim.sensors import isa_pressure
from skyloc_sim.dds import configure_dds
from skyloc_sim.testing import start_node, stop_process, TestNode

configure_dds(start=__file__)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('loc'))
    world = tiny_world(root)
    bundle = tiny_bundle(root, world)
    db = tiny_database(root, world, bundle)
    return {'root': root, 'world': world, 'bundle': bundle, 'db': db.path,
            'pipeline': DescriptorPipeline(bundle)}


def stamp(msg, t):
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int(round((t - int(t)) * 1e9))
    return msg


class Driver(TestNode):
    """Test side: IMU / barometer / descriptors / crops in; pose, map, diagnostics out."""

    def __init__(self, domain):
        super().__init__('localizer_test', domain)
        n = self.node
        self.imu = n.create_publisher(Imu, '/imu/data', qos_profile_sensor_data)
        self.baro = n.create_publisher(FluidPressure, '/baro', qos_profile_sensor_data)
        self.desc = n.create_publisher(Descriptor, '/skyloc/descriptor', 10)
        self.crop = n.create_publisher(Image, '/skyloc/query_image', qos_profile_sensor_data)
        self.initialpose = n.create_publisher(PoseWithCovarianceStamped, '/initialpose', 10)
        self.mode = n.create_publisher(String, '/skyloc/flight_mode', LATCHED)
        self.cap = n.create_publisher(Float32, '/skyloc/query_rate_cap', LATCHED)
        self.poses, self.odoms, self.maps, self.rates, self.diags = [], [], [], [], []
        n.create_subscription(PoseWithCovarianceStamped, '/skyloc/pose', self.poses.append, 50)
        n.create_subscription(Odometry, '/skyloc/odometry', self.odoms.append, 50)
        n.create_subscription(OccupancyGrid, '/skyloc/probability_map', self.maps.append,
                              LATCHED)
        n.create_subscription(Float32, '/skyloc/query_rate', self.rates.append, LATCHED)
        n.create_subscription(DiagnosticArray, '/diagnostics', self.diags.append, 10)

    def wait_matched(self, timeout=30.0):
        pubs = (self.imu, self.baro, self.desc, self.crop, self.initialpose)
        ok = self.wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs),
                             timeout)
        self.spin(0.5)
        return ok

    def sensors(self, t0, seconds, baro=True, nan=False):
        """Hovering, level, yaw 0: IMU at 50 Hz (published in bursts), barometer at 10 Hz."""
        for k in range(int(round(seconds * 50))):
            t = t0 + k / 50.0
            imu = stamp(Imu(), t)
            imu.orientation.w = 1.0
            imu.linear_acceleration.z = math.nan if nan else 9.80665
            self.imu.publish(imu)
            if baro and k % 5 == 0:
                p = stamp(FluidPressure(), t)
                p.fluid_pressure = isa_pressure(ALTITUDE if t0 > 0 else 0.0, 101325.0)
                self.baro.publish(p)
            if k % 5 == 4:      # paced: best-effort samples of a burst would be dropped
                self.spin(0.01)

    def query(self, data, t, x, y, model_id=None, dim=None, footprint=100.0):
        """The embedder's output for a camera image at (x, y), stamped t."""
        pipeline = data['pipeline']
        image, k = camera_image(data['world'], x, y, ALTITUDE, 0.0)
        crop, _ = normalize_query(image, k, ALTITUDE, 0.0, footprint, pipeline.input_size)
        d = stamp(Descriptor(), t)
        d.header.frame_id = 'map'
        d.model_id = model_id if model_id is not None else pipeline.model_id
        vec = pipeline.describe(crop).astype(np.float32)
        d.data = (vec if dim is None else np.resize(vec, dim)).tolist()
        d.altitude_m, d.yaw_rad, d.footprint_m = ALTITUDE, 0.0, footprint
        img = stamp(Image(), t)
        img.height, img.width = crop.shape[:2]
        img.encoding, img.step = 'rgb8', crop.shape[1] * 3
        img.data = crop.tobytes()
        self.crop.publish(img)
        self.desc.publish(d)

    def values(self, key):
        """Values of `key` in the localizer's diagnostics so far."""
        return [kv.value for a in self.diags for s in a.status if s.name.startswith('localizer')
                for kv in s.values if kv.key == key]

    def messages(self):
        return [(s.level, s.message) for a in self.diags for s in a.status
                if s.name.startswith('localizer')]


def start_localizer(tmp_path, domain, **params):
    return start_node('skyloc_localization', 'localizer', 'localizer', params, domain, tmp_path)


def test_fix_from_descriptors_and_bad_input_survived(tmp_path, data):
    domain = 220 + os.getpid() % 5
    proc = start_localizer(tmp_path, domain, database=data['db'], publish_rate_hz=10.0)
    drv = Driver(domain)
    try:
        assert drv.wait_matched(), 'the localizer did not subscribe'
        drv.sensors(0.0, 1.0)                           # on the ground: baro reference
        assert drv.wait_until(lambda: drv.rates, 10.0)   # latched query rate for the embedder
        assert 0.1 <= drv.rates[-1].data <= 2.0
        prior = stamp(PoseWithCovarianceStamped(), 1.0)  # /initialpose: took off, 100 m up
        prior.header.frame_id = 'map'
        prior.pose.pose.position.z = ALTITUDE
        prior.pose.covariance = list(np.diag([50.0 ** 2, 50.0 ** 2, 1.0, 0.1, 0.1, 0.1]).ravel())
        drv.initialpose.publish(prior)
        drv.spin(0.3)
        drv.sensors(1.0, 2.0)
        truth = (30.0, -20.0)
        # hover, one query a second, each waited for (its probability map): under load
        # queries that pile up while one runs are stale and only the newest is run, and one
        # CI run got a single fix (sqrt(covariance) 18.4 m)
        for k in range(4):
            drv.query(data, 3.0 + k, *truth)
            drv.sensors(3.0 + k, 1.0)
            drv.wait_until(lambda: drv.maps and drv.maps[-1].header.stamp.sec >= 3 + k, 10.0)
            drv.spin(0.3)
        assert drv.wait_until(lambda: drv.maps, 10.0)
        drv.sensors(7.0, 0.5)
        assert drv.wait_until(lambda: drv.poses and drv.poses[-1].header.stamp.sec >= 7, 10.0)
        pose = drv.poses[-1].pose
        err = math.hypot(pose.pose.position.x - truth[0], pose.pose.position.y - truth[1])
        assert err < 5.0, (pose.pose.position, drv.messages()[-3:])
        assert math.sqrt(pose.covariance[0]) < 8.0      # from a 50 m prior
        assert abs(pose.pose.position.z - ALTITUDE) < 3.0   # barometer, ISA
        grid = drv.maps[-1]
        assert grid.info.resolution == pytest.approx(5.0) and grid.info.width == 60
        assert max(grid.data) == 100
        assert drv.odoms and drv.odoms[-1].child_frame_id == 'base_link'

        # query rate: faster for a precision landing, never above the thermal cap
        survey = drv.rates[-1].data
        drv.mode.publish(String(data='precision_landing'))
        assert drv.wait_until(lambda: drv.rates[-1].data > 1.5 * survey, 5.0), survey
        drv.cap.publish(Float32(data=0.15))
        assert drv.wait_until(lambda: drv.rates[-1].data <= 0.15 + 1e-6, 5.0)
        drv.spin(1.2)
        assert drv.values('flight_mode')[-1] == 'precision_landing'

        # bad input: each is reported, none stops the node
        drv.query(data, 8.0, *truth, model_id='0' * 64)
        drv.query(data, 8.5, *truth, dim=17)
        drv.query(data, 8.7, *truth, footprint=60.0)
        drv.query(data, 2.0, *truth)                    # time went backwards
        drv.sensors(7.5, 1.5)
        drv.sensors(9.0, 0.2, nan=True)
        drv.spin(2.5)
        text = ' | '.join(m for _, m in drv.messages())
        assert 'model_id 000000000000' in text and data['bundle'].model_id[:12] in text
        assert 'dimension 17' in text
        assert "footprint 60 m" in text
        assert 'time went backwards' in text
        assert int(drv.values('nan_imu_samples')[-1]) >= 10
        # the pose goes on through the NaN samples (coasting), finite
        coasted = [p for p in drv.poses if 9.0 <= p.header.stamp.sec +
                   p.header.stamp.nanosec * 1e-9 <= 9.2]
        assert coasted and all(math.isfinite(p.pose.pose.position.x) for p in coasted)
        assert int(drv.values('model_mismatch')[-1]) == 1
        # no barometer any more: a warning, the vertical covariance grows, poses go on
        before = drv.poses[-1].pose.covariance[14]
        drv.sensors(9.2, 3.8, baro=False)
        drv.spin(1.5)
        assert drv.poses[-1].pose.covariance[14] > before
        assert any('no barometer' in m for _, m in drv.messages()[-2:])
        # camera blackout: no queries for 12 s -> DEGRADED, the covariance grows; fixes back
        # -> OK again
        std_before = drv.poses[-1].pose.covariance[0]
        drv.sensors(13.0, 12.0)
        drv.spin(1.5)
        assert drv.values('state')[-1] == 'DEGRADED', (drv.messages()[-2:],
                                                       drv.values('imu_gaps')[-1:])
        assert drv.poses[-1].pose.covariance[0] > std_before
        # (two valid results go one state up; under load the timer's blackout check may have
        # taken it down to LOST before the first, so up to six queries. Each query is waited
        # for (its probability map): queries that pile up while one runs are stale, and only
        # the newest of them is run; one CI run stayed DEGRADED that way)
        for k in range(6):
            drv.query(data, 25.0 + k, *truth)
            drv.sensors(25.0 + k, 1.0)
            drv.wait_until(lambda: drv.maps[-1].header.stamp.sec >= 25 + k, 5.0)
            drv.spin(0.3)
            if k >= 2 and drv.values('state')[-1] == 'OK':
                break
        drv.spin(1.5)
        assert drv.values('state')[-1] == 'OK', drv.messages()[-2:]
        # flight mode 'hold' (the mission's LOST failsafe): after hold_settle_s (3 s) the
        # filter is told the vehicle hovers; none before
        assert int(drv.values('hold_velocity_updates')[-1]) == 0
        drv.mode.publish(String(data='hold'))
        assert drv.wait_until(lambda: drv.values('flight_mode')[-1] == 'hold', 5.0)
        drv.sensors(26.0 + k, 6.0)
        # (/diagnostics comes on a wall-clock timer: wait for the report after the samples)
        assert drv.wait_until(lambda: int(drv.values('hold_velocity_updates')[-1]) >= 4, 5.0), \
            drv.values('hold_velocity_updates')[-3:]
        drv.spin(1.5)
        assert 4 <= int(drv.values('hold_velocity_updates')[-1]) <= 8
        assert proc.poll() is None
    finally:
        drv.close()
        code, out = stop_process(proc)
    assert code == 0, out
    assert 'Traceback' not in out, out


def test_database_of_another_model_is_refused_naming_both(tmp_path, data):
    from skyloc_perception.build_bundle import build, parser
    other = str(tmp_path / 'other_bundle')
    build(parser().parse_args(['--map', data['world'], '--out', other, '--tiles', '40',
                               '--k', '4', '--pca-dim', '16', '--footprints', '100',
                               '--quiet']), log=lambda m: None)
    from skyloc_perception.bundle import load_bundle
    other_id = load_bundle(other).model_id
    domain = 225 + os.getpid() % 5
    proc = start_localizer(tmp_path, domain, database=data['db'], bundle=other)
    drv = Driver(domain)
    try:
        assert drv.wait_until(lambda: drv.messages(), 20.0)
        level, message = drv.messages()[-1]
        assert level == b'\x02' and 'cannot localise' in message
        assert other_id in message and data['bundle'].model_id in message
        assert drv.wait_matched()
        drv.query(data, 1.0, 0.0, 0.0)
        drv.spin(1.5)
        assert proc.poll() is None      # still up, still reporting
    finally:
        drv.close()
        code, out = stop_process(proc)
    assert code == 0 and 'Traceback' not in out, out


class Chain(TestNode):
    """Flies the simulated drone (climb, then east) and records truth and estimate."""

    def __init__(self, domain):
        super().__init__('chain_test', domain)
        self.cmd = self.node.create_publisher(Twist, '/cmd_vel', 10)
        self.truth, self.est, self.diags = [], [], []
        self.node.create_subscription(Odometry, '/sim/ground_truth', self.truth.append, 50)
        self.node.create_subscription(Odometry, '/skyloc/odometry', self.est.append, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diags.append, 50)

    def now(self):
        """Simulated time: the newest ground truth's stamp."""
        s = self.truth[-1].header.stamp
        return s.sec + s.nanosec * 1e-9

    def fly(self, vx, vz, seconds=math.inf, until=lambda: False, timeout=120.0):
        """Command a body velocity for `seconds` of simulated time or until `until()`."""
        end = self.now() + seconds
        wall = time.monotonic() + timeout
        while self.now() < end and not until() and time.monotonic() < wall:
            t = Twist()
            t.linear.x, t.linear.z = vx, vz
            self.cmd.publish(t)
            self.spin(0.1)

    def errors(self, since):
        """Horizontal error of each estimate after sim time `since` (truth at the stamp)."""
        tt = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in self.truth])
        xy = np.array([(m.pose.pose.position.x, m.pose.pose.position.y) for m in self.truth])
        out = []
        for m in self.est:
            t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
            if t < since or not len(tt):
                continue
            i = int(np.clip(np.searchsorted(tt, t), 0, len(tt) - 1))
            out.append(math.hypot(m.pose.pose.position.x - xy[i, 0],
                                  m.pose.pose.position.y - xy[i, 1]))
        return out


def test_simulator_embedder_localizer_pose_converges_to_ground_truth(tmp_path, data):
    domain = 174 + os.getpid() % 5   # DDS domain ids stop at 232
    procs = [start_node('skyloc_sim', 'sim', 'sim', {
        'world': data['world'], 'start': [-70.0, 10.0, 0.0, 0.0], 'rate': 1.0,
        'scan_rate': 2.0, 'lidar_beams': 36}, domain, tmp_path)]
    common = {'use_sim_time': True}
    procs.append(start_node('skyloc_perception', 'embedder', 'embedder', dict(
        common, bundle=data['bundle'].path, database=data['db']), domain, tmp_path))
    procs.append(start_node('skyloc_localization', 'localizer', 'localizer', dict(
        common, database=data['db'], bundle=data['bundle'].path), domain, tmp_path))
    drv = Chain(domain)
    try:
        assert drv.wait_until(lambda: drv.est and drv.truth, 60.0), 'no pose from the chain'
        drv.fly(0.0, 0.0, 2.0)          # on the ground: the barometer reference
        drv.fly(0.0, 4.0, until=lambda: drv.truth[-1].pose.pose.position.z > ALTITUDE - 2)
        drv.fly(0.0, 0.0, 2.0)
        t_cruise = drv.now()
        drv.fly(6.0, 0.0, 22.0)         # east at 6 m/s over the map
        errors = drv.errors(since=t_cruise + 5)
        assert len(errors) > 50, len(errors)
        # the chain converges and tracks: median < 5 m. Between fixes the estimate can drift
        # for a few seconds (a velocity error after the acceleration, fixes failing over some
        # stretches): over 18 runs on this machine (one of them CI) the largest error was
        # 14.1 m and p90 < 10 m failed in about one run in five, at half simulator speed too.
        # The accuracy goal (RMSE <= 5 m over a 10-minute survey) is bench_survey's.
        assert np.median(errors) < 5.0 and np.percentile(errors, 90) < 15.0, \
            (np.median(errors), np.percentile(errors, 90), max(errors))
        z = drv.est[-1].pose.pose.position.z
        assert abs(z - drv.truth[-1].pose.pose.position.z) < 5.0
        states = [kv.value for a in drv.diags[-10:] for s in a.status
                  if s.name.startswith('localizer') for kv in s.values if kv.key == 'state']
        assert states and states[-1] == 'OK', states
        assert all(p.poll() is None for p in procs)
    finally:
        drv.close()
        outs = [stop_process(p) for p in procs]
    for code, out in outs:
        assert code == 0 and 'Traceback' not in out, out
