"""Node `mission`: take-off, coverage survey, return and landing, on the pipeline's own pose.

Subscribes the fused pose (`pose_topic`, nav_msgs/Odometry, /skyloc/odometry), /diagnostics
(the localizer's `state` OK / DEGRADED / LOST), /battery (sensor_msgs/BatteryState),
/coverage/progress (std_msgs/Float32) and the path follower's command on
`follower_cmd_topic` (the follower's /cmd_vel remapped there). Publishes /cmd_vel
(geometry_msgs/Twist, body frame: the follower's during the survey, its own otherwise),
/mission/state (std_msgs/String, latched: the state and why), /mission/progress
(std_msgs/Float32, percent of the mission: take-off 0-5, survey 5-90 by coverage, return
90-95, landing 95-100, 100 when landed), /skyloc/flight_mode (std_msgs/String, latched:
takeoff, survey, hold, cruise, land; the localizer's query rate, and its zero-velocity hold)
and /diagnostics.

Failsafes: localizer LOST -> stop and climb, back to the survey (or the return) when it
recovers, land where it is after `hold_timeout_s`; battery at or below `low_battery_percent`
-> home, or land where it is if the localizer is LOST then. The state machine is
skyloc_coverage.mission (no ROS).

Simulation only: with `scenario_mast_percent` > 0, when the survey reaches that progress the
node asks the simulator (`sim_event_service`, skyloc_interfaces/SimEvent add_obstacle) for a
mast `scenario_mast_ahead_m` ahead on the remaining coverage path, taller than the flight
altitude, so that the LIDAR sees it and the coverage planner must replan around it.
"""

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry, Path
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import BatteryState
from skyloc_sim.node_main import declare_parameters, run_node
from std_msgs.msg import Float32, String

from skyloc_coverage.mission import Command, FLIGHT_MODES, Mission, MissionConfig
from skyloc_coverage.ros_common import checked_pose, Diagnostics, LATCHED, POSE_QOS

PARAMETERS = [
    ('pose_topic', '/skyloc/odometry', 'nav_msgs/Odometry of the vehicle in the map frame '
     '(the pipeline pose; never ground truth)'),
    ('follower_cmd_topic', '/mission/survey_cmd_vel', 'The path follower\'s geometry_msgs/Twist '
     '(its /cmd_vel remapped here); passed to /cmd_vel during the survey'),
    ('localizer_status', 'localizer', 'Name (prefix) of the localizer\'s /diagnostics status '
     'whose `state` value (OK / DEGRADED / LOST) drives the LOST failsafe'),
    ('coverage_status', 'coverage', 'Name (prefix) of the coverage planner\'s /diagnostics '
     'status: its `progress_percent` and `goal_reached` values back up /coverage/progress '
     '(a second path: one run here never matched that subscription over LARGE_DATA)'),
    ('altitude', 100.0, 'Survey altitude above the take-off point, m'),
    ('climb_rate', 3.0, 'Take-off and failsafe climb rate, m/s'),
    ('descent_rate', 2.0, 'Landing descent rate above the flare altitude, m/s'),
    ('return_speed', 10.0, 'Horizontal speed on the way home, m/s'),
    ('home_tolerance_m', 3.0, 'Distance from home at which the landing starts, m'),
    ('ground_wait_s', 2.0, 'Time on the ground after the first pose before take-off, s'),
    ('coverage_goal_percent', 99.0, 'Coverage progress at which the survey is complete, %'),
    ('low_battery_percent', 25.0, 'Battery charge at or below which the vehicle returns, %'),
    ('lost_climb_m', 20.0, 'Localizer LOST: climb this far above the survey altitude, m'),
    ('max_altitude', 150.0, 'Never command above this altitude, m'),
    ('recover_s', 3.0, 'Localizer not LOST this long: resume the survey, s'),
    ('touchdown_s', 4.0, 'Landing: this long commanding descent without the altitude dropping '
     '0.3 m is a touchdown (a barometer offset keeps the estimate above landed), s'),
    ('hold_timeout_s', 120.0, 'Localizer LOST this long: land where it is (its position is '
     'unknown, so it cannot fly home), s'),
    ('rate', 10.0, 'Command rate, Hz'),
    ('pose_timeout_s', 1.0, 'No pose this long while flying: stop horizontally, s'),
    ('scenario_mast_percent', 0.0, 'Simulation only: at this survey progress put a mast on '
     'the remaining path (0: never)'),
    ('scenario_mast_ahead_m', 150.0, 'How far ahead along the remaining path the mast '
     'appears, m'),
    ('scenario_mast_height_m', 160.0, 'Mast height, m (taller than the flight altitude)'),
    ('scenario_mast_radius_m', 4.0, 'Mast radius, m'),
    ('sim_event_service', '/sim/event', 'The simulator\'s skyloc_interfaces/SimEvent service'),
]


def point_ahead(path_xy, position, distance):
    """The point `distance` metres along the path from its point closest to `position`."""
    path = np.asarray(path_xy, float)
    if len(path) == 0:
        return None
    if len(path) == 1:
        return tuple(path[0])
    seg = path[1:] - path[:-1]
    lengths = np.linalg.norm(seg, axis=1)
    # closest point on each segment
    rel = np.asarray(position[:2], float) - path[:-1]
    with np.errstate(invalid='ignore', divide='ignore'):
        u = np.clip(np.where(lengths > 0, (rel * seg).sum(1) / lengths ** 2, 0.0), 0.0, 1.0)
    closest = path[:-1] + seg * u[:, None]
    i = int(np.argmin(np.linalg.norm(closest - position[:2], axis=1)))
    left = distance + u[i] * lengths[i]
    for j in range(i, len(seg)):
        if left <= lengths[j]:
            return tuple(path[j] + seg[j] * (left / lengths[j] if lengths[j] else 0.0))
        left -= lengths[j]
    return tuple(path[-1])


def mission_progress(m):
    """Percent of the whole mission done (see the module docstring)."""
    cfg = m.cfg
    if m.state == 'WAITING' or m.pose is None:
        return 0.0
    if m.state == 'TAKEOFF':
        return 5.0 * min(1.0, max(0.0, m.pose[3] / cfg.altitude))
    if m.state in ('SURVEY', 'HOLD'):
        return 5.0 + 85.0 * min(1.0, m.progress / cfg.coverage_goal_percent)
    if m.state == 'RETURN':
        return 90.0
    if m.state == 'LAND':
        return 95.0 + 4.9 * (1.0 - min(1.0, m.pose[3] / cfg.altitude))
    return 100.0


class MissionNode(Node):
    def __init__(self, **kwargs):
        super().__init__('mission', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        self.mission = Mission(MissionConfig(**{k: float(p[k]) for k in (
            'altitude', 'climb_rate', 'descent_rate', 'return_speed', 'home_tolerance_m',
            'ground_wait_s', 'coverage_goal_percent', 'low_battery_percent', 'lost_climb_m',
            'max_altitude', 'recover_s', 'hold_timeout_s', 'touchdown_s')}))
        self.diag = Diagnostics(self, 'mission: state', hardware_id='skyloc_mission')
        self.pose_t = None
        self.progress_t = None
        self.path = None
        self.mast = None              # (x, y) once placed
        self.mast_pending = False
        self.events_logged = 0
        self.create_subscription(Odometry, p['pose_topic'], self._on_pose, POSE_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.create_subscription(BatteryState, '/battery', self._on_battery,
                                 qos_profile_sensor_data)
        self.create_subscription(Float32, '/coverage/progress', self._on_progress, 10)
        self.create_subscription(Twist, p['follower_cmd_topic'], self._on_follower, 10)
        self.create_subscription(Path, '/coverage/path', self._on_path, LATCHED)
        self.cmd_pub = self.create_publisher(Twist, '/cmd_vel', 10)
        self.state_pub = self.create_publisher(String, '/mission/state', LATCHED)
        self.progress_pub = self.create_publisher(Float32, '/mission/progress', LATCHED)
        self.mode_pub = self.create_publisher(String, '/skyloc/flight_mode', LATCHED)
        self.event_client = None
        if float(p['scenario_mast_percent']) > 0:
            from skyloc_interfaces.srv import SimEvent
            self.event_client = self.create_client(SimEvent, p['sim_event_service'])
        self.create_timer(1.0 / max(1.0, float(p['rate'])), self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._publish_state()
        self.get_logger().info(
            f"mission: take-off to {p['altitude']:g} m, survey until "
            f"{p['coverage_goal_percent']:g}% coverage, return and land; failsafes: LOST -> "
            f"hold and climb {p['lost_climb_m']:g} m (land after {p['hold_timeout_s']:g} s), "
            f"battery <= {p['low_battery_percent']:g}% -> return (land if LOST)"
            + (f"; scenario: a mast at {p['scenario_mast_percent']:g}% progress"
               if self.event_client else ''))

    def _now(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_pose(self, msg):
        pose = checked_pose(self, self.diag, msg)
        if pose is None:
            return
        self.pose_t = self._now()
        self.mission.on_pose(self.pose_t, *pose)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith(self.cfg['localizer_status']):
                for kv in status.values:
                    if kv.key == 'state':
                        self.mission.on_localizer_state(self._now(), kv.value)
            elif status.name.startswith(self.cfg['coverage_status']):
                values = {kv.key: kv.value for kv in status.values}
                try:
                    progress = float(values.get('progress_percent', 'n/a'))
                except ValueError:
                    progress = None
                if progress is not None:
                    self.mission.on_progress(progress)
                if values.get('goal_reached') == 'True':
                    self.mission.on_survey_complete()

    def _on_battery(self, msg):
        percent = float(msg.percentage) * 100.0
        if not math.isfinite(percent):
            self.diag.problem_seen('battery percentage is NaN')
            return
        self.mission.on_battery(percent)

    def _on_progress(self, msg):
        self.progress_t = self._now()
        self.mission.on_progress(float(msg.data))

    def _on_follower(self, msg):
        values = (msg.linear.x, msg.linear.y, msg.angular.z)
        if not all(math.isfinite(v) for v in values):
            self.diag.problem_seen('follower command with NaN ignored')
            return
        self.mission.on_follower(self._now(), Command(msg.linear.x, msg.linear.y, 0.0,
                                                      msg.angular.z))

    def _on_path(self, msg):
        self.path = [(p.pose.position.x, p.pose.position.y) for p in msg.poses]

    def _tick(self):
        now = self._now()
        if now <= 0.0:
            return          # no /clock yet
        m = self.mission
        if m.state == 'SURVEY' and (m.follower_t is None or now - m.follower_t > 1.0):
            m.on_follower(now, Command())      # the follower is silent: do not drift on
        cmd = m.step(now)
        if m.state not in ('WAITING', 'DONE') and (
                self.pose_t is None or now - self.pose_t > float(self.cfg['pose_timeout_s'])):
            self.diag.problem_seen('no pose: stopping', DiagnosticStatus.ERROR)
            self.get_logger().warning('no pose: stopping', throttle_duration_sec=5.0)
            cmd = Command(vz=0.0)
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.linear.z = cmd.vx, cmd.vy, cmd.vz
        twist.angular.z = cmd.wz
        self.cmd_pub.publish(twist)
        while self.events_logged < len(m.events):
            t, old, new, reason = m.events[self.events_logged]
            self.events_logged += 1
            if new == 'HOLD' or 'battery' in reason:
                self.get_logger().warning(f'{old} -> {new}: {reason}')
            else:
                self.get_logger().info(f'{old} -> {new}: {reason}')
            self._publish_state()
        self._scenario(m)
        if m.state == 'SURVEY' and self.progress_t is None and m.since is not None and \
                now - m.since > 30.0:
            self.diag.problem_seen('no /coverage/progress in 30 s of survey (progress from '
                                   "the coverage planner's /diagnostics)")
        self.progress_pub.publish(Float32(data=float(mission_progress(m))))

    def _scenario(self, m):
        if self.event_client is None or self.mast is not None or self.mast_pending:
            return
        if m.state != 'SURVEY' or m.progress < float(self.cfg['scenario_mast_percent']) \
                or not self.path or m.pose is None:
            return
        point = point_ahead(self.path, np.array(m.pose[1:3]),
                            float(self.cfg['scenario_mast_ahead_m']))
        if point is None or not self.event_client.service_is_ready():
            return
        from skyloc_interfaces.srv import SimEvent
        request = SimEvent.Request(name='add_obstacle', args=[
            float(point[0]), float(point[1]), float(self.cfg['scenario_mast_height_m']),
            float(self.cfg['scenario_mast_radius_m'])])
        self.mast_pending = True
        future = self.event_client.call_async(request)

        def done(fut, point=point):
            self.mast_pending = False
            result = fut.result()
            if result is not None and result.success:
                self.mast = point
                self.get_logger().info(f'scenario: mast at ({point[0]:.0f}, {point[1]:.0f}) '
                                       f'on the remaining path ({result.message})')
            else:
                self.get_logger().warning(f'scenario: the simulator refused the mast: '
                                          f'{result.message if result else "no reply"}')
        future.add_done_callback(done)

    def _publish_state(self):
        m = self.mission
        self.state_pub.publish(String(data=f'{m.state}: {m.reason}'))
        self.mode_pub.publish(String(data=FLIGHT_MODES[m.state]))

    def _publish_diagnostics(self):
        m = self.mission
        values = {'state': m.state, 'reason': m.reason, 'localizer': m.localizer,
                  'progress_percent': f'{m.progress:.1f}',
                  'battery_percent': 'n/a' if m.battery is None else f'{m.battery:.0f}',
                  'transitions': len(m.events)}
        if m.pose is not None:
            values.update(x=f'{m.pose[1]:.1f}', y=f'{m.pose[2]:.1f}', z=f'{m.pose[3]:.1f}')
        if self.mast is not None:
            values['scenario_mast'] = f'({self.mast[0]:.0f}, {self.mast[1]:.0f})'
        if m.state == 'HOLD':
            self.diag.problem_seen('localizer LOST: holding', DiagnosticStatus.WARN)
        self.diag.publish(f'{m.state}: {m.reason}', values)


NODE_CLASS = MissionNode


def main(args=None):
    run_node(MissionNode, args)
