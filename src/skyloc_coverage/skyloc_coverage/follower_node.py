"""Node `follower`: /coverage/path -> /cmd_vel (built-in pure pursuit) or Nav2.

Subscribes /coverage/path (nav_msgs/Path, transient local) and the vehicle pose
(nav_msgs/Odometry on `pose_topic`). With backend 'builtin' it publishes geometry_msgs/Twist
on /cmd_vel (body frame; a multirotor also holds `altitude`); with backend 'nav2' it hands
each path to Nav2's controller through nav2_simple_commander (followPath) and publishes
nothing itself. A new path replaces the one being followed. Stops (zero Twist) when the pose
is stale or the path is done.
"""

import math

from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry, Path
import numpy as np
from rclpy.node import Node
from skyloc_sim.node_main import declare_parameters, run_node

from skyloc_coverage.follower import FollowerConfig, PurePursuit
from skyloc_coverage.ros_common import checked_pose, Diagnostics, LATCHED, POSE_QOS

PARAMETERS = [
    ('backend', 'builtin', "'builtin' (pure pursuit -> /cmd_vel) or 'nav2' "
     '(nav2_simple_commander followPath; needs Nav2)'),
    ('vehicle', 'ground', "'ground' (turns in place, drives forward) or 'multirotor' "
     '(holonomic, holds altitude)'),
    ('pose_topic', '/skyloc/odometry', 'nav_msgs/Odometry of the vehicle in the map frame'),
    ('lookahead_m', 0.3, 'Pure pursuit look-ahead distance, m'),
    ('speed', 0.4, 'Cruise speed, m/s'),
    ('max_yaw_rate', 1.0, 'Yaw-rate limit, rad/s'),
    ('goal_tolerance_m', 0.08, 'Distance at which the last waypoint counts as reached, m'),
    ('corner_deg', 30.0, 'Path corners sharper than this are reached, not cut, degrees'),
    ('altitude', 0.0, 'Multirotor: altitude to hold, m (0: no vertical command)'),
    ('altitude_gain', 0.8, 'Multirotor: vertical speed per metre of altitude error, 1/s'),
    ('rate', 20.0, 'Control rate, Hz'),
    ('pose_timeout_s', 0.5, 'Stop when the newest pose is older than this, s'),
    ('stuck_timeout_s', 3.0, 'Commanded to move but not moving this long: back up, s'),
    ('backup_s', 1.0, 'How long to back up when stuck, s'),
    ('backup_speed', 0.15, 'Backing-up speed, m/s'),
    ('nav2_controller', 'FollowPath', 'Nav2 controller plugin id for followPath'),
]


class FollowerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('follower', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        if p['vehicle'] not in ('ground', 'multirotor'):
            raise ValueError(f"vehicle must be 'ground' or 'multirotor', got {p['vehicle']!r}")
        self.pursuit = PurePursuit(FollowerConfig(
            lookahead_m=float(p['lookahead_m']), speed=float(p['speed']),
            max_yaw_rate=float(p['max_yaw_rate']),
            goal_tolerance_m=float(p['goal_tolerance_m']), corner_deg=float(p['corner_deg']),
            holonomic=p['vehicle'] == 'multirotor'))
        self.diag = Diagnostics(self, 'follower: path tracking')
        self.pose = None
        self.pose_time = None
        self.paths = 0
        self.finished_logged = True
        self.stuck_ref = None
        self.last_stuck = None
        self.backup_until = -math.inf
        self.backups = 0
        self.nav2 = None
        if p['backend'] == 'nav2':
            from skyloc_coverage.nav2_backend import Nav2Backend, Nav2Unavailable
            try:
                self.nav2 = Nav2Backend(self, p['nav2_controller'])
            except Nav2Unavailable as exc:
                self.get_logger().error(f'{exc}; using the built-in follower')
                self.diag.problem_seen(str(exc), DiagnosticStatus.ERROR)
        elif p['backend'] != 'builtin':
            raise ValueError(f"backend must be 'builtin' or 'nav2', got {p['backend']!r}")
        self.create_subscription(Path, '/coverage/path', self._on_path, LATCHED)
        self.create_subscription(Odometry, p['pose_topic'], self._on_pose,
                                 POSE_QOS)
        self.cmd_pub = self.create_publisher(Twist, '/cmd_vel', 10)
        self.create_timer(1.0 / max(1.0, float(p['rate'])), self._control)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_path(self, msg):
        pts = [(ps.pose.position.x, ps.pose.position.y) for ps in msg.poses]
        if not pts or not all(math.isfinite(v) for xy in pts for v in xy):
            self.diag.problem_seen(f'path with {len(pts)} poses (empty or NaN) ignored')
            self.get_logger().warning('empty or non-finite /coverage/path ignored')
            return
        self.paths += 1
        if self.nav2 is not None:
            self.nav2.follow(msg)
            return
        self.pursuit.set_path(pts)
        self.finished_logged = False
        self.get_logger().info(f'following a path of {len(pts)} waypoints '
                               f'({self.pursuit._cum[-1]:.1f} m)')

    def _on_pose(self, msg):
        pose = checked_pose(self, self.diag, msg)
        if pose is None:
            return
        self.pose = pose
        self.pose_time = self.get_clock().now()

    def _control(self):
        if self.nav2 is not None:
            return
        cmd = Twist()
        now = self.get_clock().now()
        stale = self.pose_time is None or \
            (now - self.pose_time).nanoseconds * 1e-9 > float(self.cfg['pose_timeout_s'])
        if stale:
            if not self.pursuit.done:
                self.diag.problem_seen('no recent pose: holding')
                self.get_logger().warning('no recent pose: holding', throttle_duration_sec=5.0)
            self.cmd_pub.publish(cmd)
            return
        x, y, z, yaw = self.pose
        t = now.nanoseconds * 1e-9
        vx, vy, wz = self.pursuit.command(x, y, yaw)
        if self._stuck(t, x, y, vx, vy):
            vx, vy, wz = -float(self.cfg['backup_speed']), 0.0, 0.0
        cmd.linear.x, cmd.linear.y, cmd.angular.z = float(vx), float(vy), float(wz)
        alt = float(self.cfg['altitude'])
        if self.cfg['vehicle'] == 'multirotor' and alt > 0:
            cmd.linear.z = float(np.clip(float(self.cfg['altitude_gain']) * (alt - z), -2.0, 2.0))
        self.cmd_pub.publish(cmd)
        if self.pursuit.done and not self.finished_logged:
            self.finished_logged = True
            self.get_logger().info(f'path complete at ({x:.2f}, {y:.2f})')

    def _stuck(self, t, x, y, vx, vy):
        """True while backing up: commanded to move for stuck_timeout_s without getting
        anywhere (a bumper stop, a wheel against furniture), back up for backup_s."""
        if t < self.backup_until:
            return True
        # commanded to move: the pursuit's slowest approach command is 0.05 m/s, so a robot
        # blocked on its final approach must count (with > 0.05 it never did)
        moving = math.hypot(vx, vy) > 0.02
        if not moving or self.stuck_ref is None or \
                math.hypot(x - self.stuck_ref[1], y - self.stuck_ref[2]) > 0.03:
            self.stuck_ref = (t, x, y)
            return False
        if t - self.stuck_ref[0] > float(self.cfg['stuck_timeout_s']):
            self.backups += 1
            self.backup_until = t + float(self.cfg['backup_s'])
            self.stuck_ref = None
            again = self.last_stuck is not None and \
                math.hypot(x - self.last_stuck[0], y - self.last_stuck[1]) < 0.15
            self.last_stuck = (x, y)
            if again:   # the same place twice: that waypoint cannot be reached, skip it
                self.pursuit.skip()
            text = (f'stuck at ({x:.2f}, {y:.2f}): backing up ({self.backups} so far)'
                    + ('; skipping the waypoint' if again else ''))
            self.diag.problem_seen(text)
            self.get_logger().warning(text)
            return True
        return False

    def _publish_diagnostics(self):
        state = 'nav2' if self.nav2 is not None else \
            ('idle' if self.pursuit.done else 'following')
        self.diag.publish(state, {'paths_received': self.paths,
                                  'remaining_m': f'{self.pursuit.remaining_m:.1f}',
                                  'segment': self.pursuit.progress_index(),
                                  'backups': self.backups,
                                  'backend': 'nav2' if self.nav2 is not None else 'builtin'})


NODE_CLASS = FollowerNode


def main(args=None):
    run_node(FollowerNode, args)


if __name__ == '__main__':
    main()
