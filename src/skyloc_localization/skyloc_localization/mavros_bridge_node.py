"""Node `mavros_bridge`: fly a PX4 / ArduPilot flight controller on skyloc's pose via MAVROS.

- /skyloc/pose (PoseWithCovarianceStamped, map = ENU) -> /mavros/vision_pose/pose
  (geometry_msgs/PoseStamped) and /mavros/vision_pose/pose_cov (PoseWithCovarianceStamped),
  at most `max_rate_hz` (the flight controller's EKF wants 30-50 Hz); MAVROS converts ENU to the
  controller's NED itself. PX4: EKF2_EV_CTRL (horizontal + vertical position), EKF2_HGT_REF;
  ArduPilot: VISO_TYPE 1 (MAVLink), EK3_SRC1_POSXY 6 (ExternalNav).
- Optionally (`forward_cmd_vel`) the follower's /cmd_vel (geometry_msgs/Twist, base_link: x
  forward, yaw rate) -> /mavros/setpoint_velocity/cmd_vel_unstamped, rotated into ENU with the
  pose's yaw (MAVROS takes that setpoint in the local ENU frame).

The sensors come the other way by remapping in config/graphs/pi.yaml, not through this node:
/mavros/imu/data -> /imu/data, /mavros/imu/static_pressure -> /baro, /mavros/battery ->
/battery. A pose with NaN, or one older than `max_age_s`, is not forwarded (WARN on
/diagnostics); the node keeps running.
"""

import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, Twist
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from skyloc_sim.node_main import declare_parameters, run_node

PARAMETERS = [
    ('pose_topic', '/skyloc/pose', 'skyloc pose (PoseWithCovarianceStamped, map frame ENU)'),
    ('vision_topic', '/mavros/vision_pose/pose', 'MAVROS vision pose input (PoseStamped)'),
    ('vision_cov_topic', '/mavros/vision_pose/pose_cov',
     'MAVROS vision pose with covariance input; empty: not published'),
    ('frame_id', 'map', 'Frame the flight controller gets the pose in (MAVROS: ENU local)'),
    ('max_rate_hz', 30.0, 'Most vision poses per second sent on'),
    ('max_age_s', 0.5, 'A pose older than this (against the node clock) is not sent on, s'),
    ('forward_cmd_vel', False, 'Also send /cmd_vel (base_link) on as an ENU velocity setpoint'),
    ('cmd_vel_topic', '/cmd_vel', 'Velocity command of the follower / mission (Twist, body)'),
    ('setpoint_topic', '/mavros/setpoint_velocity/cmd_vel_unstamped',
     'MAVROS velocity setpoint (Twist, local ENU)'),
]


def yaw_of(q):
    """Yaw (rad, ENU) of a quaternion message."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def body_to_enu(twist, yaw):
    """A base_link Twist rotated into ENU by the yaw (z and the yaw rate unchanged)."""
    c, s = math.cos(yaw), math.sin(yaw)
    out = Twist()
    out.linear.x = c * twist.linear.x - s * twist.linear.y
    out.linear.y = s * twist.linear.x + c * twist.linear.y
    out.linear.z = twist.linear.z
    out.angular.z = twist.angular.z
    return out


def finite_pose(msg):
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return all(math.isfinite(v) for v in (p.x, p.y, p.z, q.x, q.y, q.z, q.w)) and \
        abs(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w - 1.0) < 0.1


class MavrosBridgeNode(Node):
    def __init__(self, **kwargs):
        super().__init__('mavros_bridge', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        if float(p['max_rate_hz']) <= 0:
            raise ValueError(f"max_rate_hz must be positive, got {p['max_rate_hz']}")
        self.vision_pub = self.create_publisher(PoseStamped, p['vision_topic'], 10)
        self.cov_pub = self.create_publisher(PoseWithCovarianceStamped, p['vision_cov_topic'],
                                             10) if p['vision_cov_topic'] else None
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(PoseWithCovarianceStamped, p['pose_topic'], self._on_pose, 10)
        self.setpoint_pub = None
        if p['forward_cmd_vel']:
            self.setpoint_pub = self.create_publisher(Twist, p['setpoint_topic'], 10)
            self.create_subscription(Twist, p['cmd_vel_topic'], self._on_cmd, 10)
        self.yaw = None
        self.last_sent = -math.inf
        self.stats = {'poses_in': 0, 'poses_sent': 0, 'rejected': 0, 'stale': 0,
                      'setpoints': 0, 'setpoints_dropped': 0}
        self.problem, self.level = '', DiagnosticStatus.OK
        self.create_timer(1.0, self._diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"{p['pose_topic']} -> {p['vision_topic']} (<= {p['max_rate_hz']:g} Hz)" +
            (f", {p['cmd_vel_topic']} -> {p['setpoint_topic']} (ENU)"
             if p['forward_cmd_vel'] else ''))

    def _warn(self, text):
        self.problem, self.level = text, DiagnosticStatus.WARN
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _on_pose(self, msg):
        self.stats['poses_in'] += 1
        if not finite_pose(msg):
            self.stats['rejected'] += 1
            self._warn('pose with NaN or a non-unit quaternion: not sent to the flight '
                       'controller')
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if stamp > 0 and now - stamp > float(self.cfg['max_age_s']):
            self.stats['stale'] += 1
            self._warn(f'pose {now - stamp:.2f} s old: not sent (max_age_s '
                       f"{self.cfg['max_age_s']:g})")
            return
        self.yaw = yaw_of(msg.pose.pose.orientation)
        wall = time.monotonic()
        if wall - self.last_sent < 1.0 / float(self.cfg['max_rate_hz']) - 1e-4:
            return
        self.last_sent = wall
        out = PoseStamped()
        out.header.stamp, out.header.frame_id = msg.header.stamp, self.cfg['frame_id']
        out.pose = msg.pose.pose
        self.vision_pub.publish(out)
        if self.cov_pub is not None:
            cov = PoseWithCovarianceStamped()
            cov.header = out.header
            cov.pose = msg.pose
            self.cov_pub.publish(cov)
        self.stats['poses_sent'] += 1

    def _on_cmd(self, msg):
        values = (msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.z)
        if self.yaw is None or not all(math.isfinite(v) for v in values):
            self.stats['setpoints_dropped'] += 1
            reason = 'no pose yet (yaw unknown)' if self.yaw is None else 'NaN'
            self._warn(f'velocity command dropped: {reason}')
            return
        self.setpoint_pub.publish(body_to_enu(msg, self.yaw))
        self.stats['setpoints'] += 1

    def _diagnostics(self):
        status = DiagnosticStatus(name='mavros_bridge: vision pose', hardware_id='mavros',
                                  level=self.level)
        status.message = self.problem or (f"{self.stats['poses_sent']} poses sent"
                                          if self.stats['poses_sent'] else 'waiting for a pose')
        status.values = [KeyValue(key=k, value=str(v)) for k, v in self.stats.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        self.problem, self.level = '', DiagnosticStatus.OK


NODE_CLASS = MavrosBridgeNode


def main(args=None):
    run_node(MavrosBridgeNode, args)


if __name__ == '__main__':
    main()
