"""The MAVROS bridge as a real process over DDS: skyloc's pose reaches /mavros/vision_pose/*
unchanged and rate-limited, a body-frame /cmd_vel becomes an ENU setpoint by the pose's yaw,
and a NaN pose is refused (WARN) without stopping the node."""

import math
import os

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, Twist
import pytest
from skyloc_sim.dds import configure_dds
from skyloc_sim.testing import start_node, stop_process, TestNode

from skyloc_localization.mavros_bridge_node import body_to_enu

configure_dds(start=__file__)
DOMAIN = 80 + os.getpid() % 5


def _pose(node, x, y, z, yaw):
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = 'map'
    p = msg.pose.pose
    p.position.x, p.position.y, p.position.z = x, y, z
    p.orientation.z, p.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    msg.pose.covariance = [0.0] * 36
    msg.pose.covariance[0] = msg.pose.covariance[7] = 4.0
    return msg


def test_body_to_enu():
    t = Twist()
    t.linear.x, t.linear.z, t.angular.z = 10.0, 1.0, 0.2
    out = body_to_enu(t, math.pi / 2)        # facing north: forward is +y
    assert out.linear.x == pytest.approx(0.0, abs=1e-9) and out.linear.y == pytest.approx(10.0)
    assert out.linear.z == 1.0 and out.angular.z == 0.2


def test_bridge_forwards_pose_and_setpoints(tmp_path):
    proc = start_node('skyloc_localization', 'mavros_bridge', 'mavros_bridge',
                      {'max_rate_hz': 5.0, 'forward_cmd_vel': True}, DOMAIN, tmp_path)
    t = TestNode('bridge_test', DOMAIN)
    vision, cov, setpoints, diags = [], [], [], []
    try:
        n = t.node
        n.create_subscription(PoseStamped, '/mavros/vision_pose/pose', vision.append, 10)
        n.create_subscription(PoseWithCovarianceStamped, '/mavros/vision_pose/pose_cov',
                              cov.append, 10)
        n.create_subscription(Twist, '/mavros/setpoint_velocity/cmd_vel_unstamped',
                              setpoints.append, 10)
        n.create_subscription(DiagnosticArray, '/diagnostics',
                              lambda m: diags.extend(m.status), 10)
        pose_pub = n.create_publisher(PoseWithCovarianceStamped, '/skyloc/pose', 10)
        cmd_pub = n.create_publisher(Twist, '/cmd_vel', 10)
        assert t.wait_until(lambda: pose_pub.get_subscription_count() and
                            cmd_pub.get_subscription_count(), 20.0)
        # 20 poses at 20 Hz: about 5 Hz of them go on
        for i in range(20):
            pose_pub.publish(_pose(n, 10.0 + i, -5.0, 100.0, math.pi / 2))
            t.spin(0.05)
        assert t.wait_until(lambda: len(vision) >= 3, 5.0)
        t.spin(0.5)
        assert 3 <= len(vision) <= 8, len(vision)
        last = vision[-1]
        assert last.header.frame_id == 'map' and last.pose.position.y == -5.0
        assert last.pose.position.z == 100.0 and 10.0 <= last.pose.position.x <= 29.0
        assert cov and cov[-1].pose.covariance[0] == 4.0
        # a body command while facing north becomes a northward ENU setpoint
        cmd = Twist()
        cmd.linear.x = 8.0
        cmd_pub.publish(cmd)
        assert t.wait_until(lambda: setpoints, 5.0)
        assert setpoints[-1].linear.y == pytest.approx(8.0)
        assert setpoints[-1].linear.x == pytest.approx(0.0, abs=1e-6)
        # NaN pose: refused, reported, node alive, next good pose goes on
        n_before = len(vision)
        pose_pub.publish(_pose(n, math.nan, 0.0, 100.0, 0.0))
        assert t.wait_until(lambda: any(s.level == DiagnosticStatus.WARN and 'NaN' in s.message
                                        for s in diags), 5.0)
        t.spin(0.3)
        pose_pub.publish(_pose(n, 1.0, 2.0, 3.0, 0.0))
        assert t.wait_until(lambda: len(vision) > n_before, 5.0)
        assert all(math.isfinite(v.pose.position.x) for v in vision)
        assert proc.poll() is None
    finally:
        t.close()
        code, out = stop_process(proc)
    assert code == 0, out
