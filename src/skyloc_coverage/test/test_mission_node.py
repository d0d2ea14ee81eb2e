"""The mission node as a real process over DDS, flying a point mass that this test integrates
from its /cmd_vel: take-off, survey, LOST -> hold, recovery, survey complete -> return ->
land -> done; bad input (NaN pose, NaN battery) is reported and the node keeps flying."""

import math
import os
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import BatteryState
from skyloc_sim.dds import configure_dds
from skyloc_sim.testing import start_node, stop_process, TestNode
from std_msgs.msg import Float32, String

from skyloc_coverage.ros_common import LATCHED

configure_dds(start=__file__)
DOMAIN = 200 + os.getpid() % 8


class Vehicle(TestNode):
    """A point mass driven by /cmd_vel (body frame), publishing its pose at 20 Hz."""

    def __init__(self, domain):
        super().__init__('mission_test', domain)
        n = self.node
        self.x, self.y, self.z, self.yaw = 5.0, -3.0, 0.0, 0.4
        self.cmd = Twist()
        self.states, self.progress, self.diag, self.modes = [], [], [], []
        self.lock = threading.Lock()
        self.nan_next = False
        n.create_subscription(Twist, '/cmd_vel', self._on_cmd, 10)
        n.create_subscription(String, '/mission/state', lambda m: self.states.append(m.data),
                              LATCHED)
        n.create_subscription(String, '/skyloc/flight_mode',
                              lambda m: self.modes.append(m.data), LATCHED)
        n.create_subscription(Float32, '/mission/progress',
                              lambda m: self.progress.append(m.data), LATCHED)
        n.create_subscription(DiagnosticArray, '/diagnostics',
                              lambda m: self.diag.extend(m.status), 10)
        self.pose_pub = n.create_publisher(Odometry, '/skyloc/odometry', 10)
        self.diag_pub = n.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.progress_pub = n.create_publisher(Float32, '/coverage/progress', 10)
        self.follower_pub = n.create_publisher(Twist, '/mission/survey_cmd_vel', 10)
        self.battery_pub = n.create_publisher(BatteryState, '/battery',
                                              qos_profile_sensor_data)
        self.localizer = 'OK'
        self.coverage = 0.0             # on /coverage/progress
        self.coverage_diag = 0.0        # in the coverage planner's /diagnostics
        self.last = time.monotonic()
        n.create_timer(0.05, self._step)
        n.create_timer(0.5, self._slow)

    def _on_cmd(self, msg):
        with self.lock:
            self.cmd = msg

    def _step(self):
        now = time.monotonic()
        dt, self.last = now - self.last, now
        with self.lock:
            c = self.cmd
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        self.x += (cy * c.linear.x - sy * c.linear.y) * dt
        self.y += (sy * c.linear.x + cy * c.linear.y) * dt
        self.z = max(0.0, self.z + c.linear.z * dt)
        self.yaw += c.angular.z * dt
        msg = Odometry()
        msg.header.frame_id = 'map'
        msg.header.stamp = self.node.get_clock().now().to_msg()
        p = msg.pose.pose.position
        p.x, p.y, p.z = (float('nan'), 0.0, 0.0) if self.nan_next else (self.x, self.y, self.z)
        self.nan_next = False
        msg.pose.pose.orientation.z = math.sin(self.yaw / 2)
        msg.pose.pose.orientation.w = math.cos(self.yaw / 2)
        self.pose_pub.publish(msg)
        follower = Twist()
        follower.linear.x = 2.0                # the follower flies forward at 2 m/s
        self.follower_pub.publish(follower)

    def _slow(self):
        status = DiagnosticStatus(name='localizer: pose', level=DiagnosticStatus.OK)
        status.values = [KeyValue(key='state', value=self.localizer)]
        planner = DiagnosticStatus(name='coverage: planner', level=DiagnosticStatus.OK)
        planner.values = [KeyValue(key='progress_percent', value=f'{self.coverage_diag:.1f}'),
                          KeyValue(key='goal_reached', value='False')]
        self.diag_pub.publish(DiagnosticArray(status=[status, planner]))
        self.progress_pub.publish(Float32(data=self.coverage))
        self.battery_pub.publish(BatteryState(percentage=0.9))

    def state(self):
        return self.states[-1].split(':')[0] if self.states else None


def test_mission_flies_takeoff_survey_hold_return_land_over_dds(tmp_path):
    proc = start_node('skyloc_coverage', 'mission', 'mission', {
        'altitude': 6.0, 'climb_rate': 3.0, 'descent_rate': 3.0, 'return_speed': 4.0,
        'ground_wait_s': 0.5, 'recover_s': 0.5, 'hold_timeout_s': 60.0, 'lost_climb_m': 2.0,
        'max_altitude': 10.0, 'pose_timeout_s': 2.0, 'rate': 20.0,
        'coverage_goal_percent': 99.0}, DOMAIN, tmp_path)
    v = Vehicle(DOMAIN)
    try:
        assert v.wait_until(lambda: v.state() == 'SURVEY', 40), v.states
        assert v.z >= 5.4
        v.spin(2.0)
        assert abs(v.z - 6.0) < 0.3                             # the mission holds altitude
        x0 = v.x
        assert v.wait_until(lambda: abs(v.x - x0) > 3.0, 10)     # the follower's command flies
        v.nan_next = True                                       # a NaN pose: ignored
        assert v.wait_until(lambda: any('NaN' in s.message for s in v.diag
                                        if s.name == 'mission: state'), 5)
        v.localizer = 'LOST'
        assert v.wait_until(lambda: v.state() == 'HOLD', 10), v.states
        v.spin(1.0)
        x_hold, z_hold = v.x, v.z
        v.spin(1.5)
        assert abs(v.x - x_hold) < 0.2 and v.z > z_hold        # stopped, climbing
        v.localizer = 'DEGRADED'
        assert v.wait_until(lambda: v.state() == 'SURVEY', 10), v.states
        v.coverage = 50.0
        assert v.wait_until(lambda: any(kv.key == 'progress_percent' and kv.value == '50.0'
                                        for s in v.diag if s.name == 'mission: state'
                                        for kv in s.values), 10)
        assert v.state() == 'SURVEY'
        # the planner's /diagnostics is the second path of the progress
        v.coverage_diag = 99.5
        assert v.wait_until(lambda: v.state() == 'DONE', 60), v.states
        assert math.hypot(v.x - 5.0, v.y + 3.0) < 3.5 and v.z < 0.6   # home, on the ground
        assert v.wait_until(lambda: v.progress and v.progress[-1] == 100.0, 5)
        assert [s.split(':')[0] for s in v.states] == [
            'WAITING', 'TAKEOFF', 'SURVEY', 'HOLD', 'SURVEY', 'RETURN', 'LAND', 'DONE']
        # the localizer's flight mode follows the state (its query rate, the hover hold)
        modes = [m for i, m in enumerate(v.modes) if i == 0 or v.modes[i - 1] != m]
        assert modes == ['takeoff', 'survey', 'hold', 'survey', 'cruise', 'land'], v.modes
        assert proc.poll() is None
    finally:
        v.close()
        code, out = stop_process(proc)
        print(out[-3000:])      # shown on failure
    assert code == 0, out[-2000:]
    assert 'SURVEY -> HOLD: localizer LOST' in out and 'LAND -> DONE' in out
