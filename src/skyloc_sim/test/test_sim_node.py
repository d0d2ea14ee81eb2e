"""The `sim` node as a real process, observed over DDS from this test process."""

import math
import os
import sys
import time

import cv2
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import BatteryState, CameraInfo, FluidPressure, Image, Imu, LaserScan
from skyloc_interfaces.srv import SimEvent
import yaml

from skyloc_sim.sensors import isa_altitude
from skyloc_sim.testing import start_node, stop_process, TestNode
from skyloc_sim.world import save_world

MAST = (30.0, 0.0)   # a 200 m mast 30 m east of the start


@pytest.fixture(scope='module')
def world_yaml(tmp_path_factory):
    """A 400 m x 400 m textured world with one tall mast."""
    out = tmp_path_factory.mktemp('world')
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8), (800, 800))
    heights = np.zeros((800, 800), np.float32)
    cv2.circle(heights, (400 + 60, 400), 6, 200.0, -1)   # x = 30 m at 0.5 m/px
    return save_world(str(out), image, heights, 0.5, (-200.0, -200.0, 0.0), (47.0, 8.0))


def start_sim(tmp_path, domain_id, **params):
    return start_node('skyloc_sim', 'sim', 'sim', params, domain_id, tmp_path)


class Probe(TestNode):
    """Counts and keeps the simulator's messages per topic."""

    TOPICS = {
        '/camera/image_raw': (Image, qos_profile_sensor_data),
        '/camera/camera_info': (CameraInfo, qos_profile_sensor_data),
        '/imu/data': (Imu, qos_profile_sensor_data),
        '/baro': (FluidPressure, qos_profile_sensor_data),
        '/scan': (LaserScan, qos_profile_sensor_data),
        '/battery': (BatteryState, qos_profile_sensor_data),
        '/odom': (Odometry, qos_profile_sensor_data),
        '/sim/ground_truth': (Odometry, 10),
        '/clock': (Clock, 10),
    }

    def __init__(self, domain_id):
        super().__init__('probe', domain_id)
        self.msgs = {t: [] for t in self.TOPICS}
        self.times = {t: [] for t in self.TOPICS}
        for topic, (kind, qos) in self.TOPICS.items():
            self.node.create_subscription(kind, topic, self._callback(topic), qos)
        self.cmd = self.node.create_publisher(Twist, '/cmd_vel', 10)
        self.event = self.node.create_client(SimEvent, '/sim/event')

    def _callback(self, topic):
        def store(msg):
            self.times[topic].append(time.monotonic())
            self.msgs[topic].append(msg)
        return store

    def wait_for(self, topic, timeout=30.0):
        assert self.wait_until(lambda: bool(self.msgs[topic]), timeout), \
            f'no message on {topic} within {timeout} s'

    def clear(self):
        for topic in self.TOPICS:
            self.msgs[topic].clear()
            self.times[topic].clear()

    def event_call(self, name, args):
        return self.call(self.event, SimEvent.Request(name=name, args=args))


@pytest.fixture
def drone(tmp_path, world_yaml):
    domain = 60 + os.getpid() % 8   # 60-67: never a domain test_runner uses (71-75)
    proc = start_sim(tmp_path, domain, world=world_yaml, start=[0.0, 0.0, 80.0, 0.0],
                     imu_yaw_bias_deg=0.0)
    probe = Probe(domain)
    try:
        probe.wait_for('/clock')
        yield probe, proc
    finally:
        probe.close()
        code, out = stop_process(proc)
        sys.stdout.write(out)
        assert code == 0, f'sim exited with {code}:\n{out}'


def test_every_sensor_topic_arrives_at_its_rate(drone):
    probe, _ = drone
    probe.wait_for('/camera/image_raw')
    probe.clear()
    probe.spin(5.0)
    expected = {'/camera/image_raw': 5, '/camera/camera_info': 5, '/imu/data': 100,
                '/baro': 20, '/scan': 10, '/battery': 1, '/sim/ground_truth': 100,
                '/clock': 100}
    rates = {}
    for topic, hz in expected.items():
        stamps = probe.times[topic]
        assert len(stamps) >= 3, f'{topic}: only {len(stamps)} messages'
        rates[topic] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    for topic, hz in expected.items():
        assert rates[topic] == pytest.approx(hz, rel=0.2), (topic, rates)
    assert not probe.msgs['/odom']  # drone mode: no wheel odometry


def test_sensor_contents_are_consistent_with_the_pose(drone):
    probe, _ = drone
    probe.wait_for('/camera/image_raw')
    probe.spin(1.0)
    img = probe.msgs['/camera/image_raw'][-1]
    assert (img.width, img.height, img.encoding, img.step) == (640, 480, 'rgb8', 1920)
    assert img.header.frame_id == 'camera_link'
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(480, 640, 3)
    assert pixels.std() > 20  # a textured view, not a blank frame
    info = probe.msgs['/camera/camera_info'][-1]
    assert info.k[0] == pytest.approx(320.0) and info.k[2] == pytest.approx(319.5)
    baro = probe.msgs['/baro'][-1]
    assert isa_altitude(baro.fluid_pressure) == pytest.approx(80.0, abs=3.0)
    imu = probe.msgs['/imu/data'][-1]
    assert imu.linear_acceleration.z == pytest.approx(9.81, abs=0.5)
    assert imu.header.frame_id == 'base_link'
    truth = probe.msgs['/sim/ground_truth'][-1]
    assert (truth.header.frame_id, truth.child_frame_id) == ('map', 'base_link')
    assert truth.pose.pose.position.z == pytest.approx(80.0)
    scan = probe.msgs['/scan'][-1]
    ranges = np.array(scan.ranges)
    forward = int(round((0.0 - scan.angle_min) / scan.angle_increment))
    assert ranges[forward] == pytest.approx(MAST[0] - 3.0, abs=1.0)   # the mast, 3 m radius
    assert np.isinf(ranges[0])   # backwards: no return (REP 117)
    assert scan.range_max == pytest.approx(100.0)
    stamp = truth.header.stamp.sec + truth.header.stamp.nanosec * 1e-9
    clock = probe.msgs['/clock'][-1].clock
    assert abs(clock.sec + clock.nanosec * 1e-9 - stamp) < 0.5  # stamps are sim time


def test_cmd_vel_moves_the_drone_nan_ignored_limits_clamped(drone):
    probe, _ = drone
    nan = Twist()
    nan.linear.x = math.nan
    fast = Twist()
    fast.linear.z = 50.0      # beyond max_vertical_speed (4 m/s): clamped
    for _ in range(30):
        probe.cmd.publish(fast)
        probe.cmd.publish(nan)
        probe.spin(0.1)
    probe.msgs['/sim/ground_truth'].clear()
    probe.spin(0.5)
    truth = probe.msgs['/sim/ground_truth'][-1]
    assert truth.twist.twist.linear.z == pytest.approx(4.0, abs=0.05)
    assert truth.twist.twist.linear.x == pytest.approx(0.0, abs=1e-6)
    assert truth.pose.pose.position.z > 85.0


def test_event_service_adds_obstacle_and_blacks_out_camera(drone):
    probe, _ = drone
    result = probe.event_call('add_obstacle', [0.0, -20.0, 150.0, 2.0])   # 20 m south
    assert result.success, result.message
    probe.msgs['/scan'].clear()
    probe.spin(0.5)
    scan = probe.msgs['/scan'][-1]
    south = int(round((-math.pi / 2 - scan.angle_min) / scan.angle_increment))
    assert scan.ranges[south] == pytest.approx(18.0, abs=1.0)
    assert not probe.event_call('add_obstacle', [1.0]).success
    assert probe.event_call('camera_blackout', [2.0]).success
    probe.spin(0.3)
    probe.msgs['/camera/image_raw'].clear()
    probe.spin(1.0)
    assert not probe.msgs['/camera/image_raw']
    assert probe.event_call('teleport', [50.0, 60.0]).success
    probe.msgs['/sim/ground_truth'].clear()
    probe.spin(0.3)
    pos = probe.msgs['/sim/ground_truth'][-1].pose.pose.position
    assert (pos.x, pos.y) == pytest.approx((50.0, 60.0), abs=0.5)


def test_ground_robot_in_room_publishes_drifting_wheel_odometry(tmp_path):
    domain = 90 + os.getpid() % 5
    proc = start_sim(tmp_path, domain, world='room', world_cache_dir=str(tmp_path / 'cache'),
                     start=[0.0, 0.0, 0.0, 0.0])
    probe = Probe(domain)
    try:
        probe.wait_for('/odom')
        go = Twist()
        go.linear.x = 0.4
        for _ in range(20):
            probe.cmd.publish(go)
            probe.spin(0.1)
        probe.clear()
        probe.spin(2.0)
        stamps = probe.times['/odom']
        assert (len(stamps) - 1) / (stamps[-1] - stamps[0]) == pytest.approx(50.0, rel=0.2)
        odom, truth = probe.msgs['/odom'][-1], probe.msgs['/sim/ground_truth'][-1]
        assert odom.header.frame_id == 'odom'
        assert truth.pose.pose.position.x > 0.3
        assert odom.pose.pose.position.x != truth.pose.pose.position.x
        scan = probe.msgs['/scan'][-1]
        assert np.isfinite(scan.ranges).mean() > 0.9   # walls all around within 12 m
        assert not probe.msgs['/camera/image_raw']      # a ground robot has no nadir view
    finally:
        probe.close()
        code, out = stop_process(proc)
        assert code == 0, out


@pytest.mark.parametrize('mutate, expect', [
    (lambda doc: doc.pop('resolution'), "required field 'resolution' is missing"),
    (lambda doc: doc.update(resolution=-0.5), "field 'resolution' must be positive"),
    (lambda doc: doc.update(image='missing.png'), "field 'image' names a file"),
])
def test_bad_world_is_a_clear_error_naming_file_and_field(tmp_path, world_yaml, mutate, expect):
    doc = yaml.safe_load(open(world_yaml))
    doc['image'] = os.path.join(os.path.dirname(world_yaml), doc['image'])
    doc['heights'] = os.path.join(os.path.dirname(world_yaml), doc['heights'])
    mutate(doc)
    bad = tmp_path / 'bad_world.yaml'
    bad.write_text(yaml.safe_dump(doc))
    proc = start_sim(tmp_path, 59, world=str(bad))
    out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode != 0
    assert expect in text and 'bad_world.yaml' in text
    assert 'Traceback' not in text
