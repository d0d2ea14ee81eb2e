"""Node `demo_pilot`: an open-loop lawnmower flight on /cmd_vel for the simulator demo.

Take-off to `altitude`, then `legs` straight legs of `leg_length` joined by 90-degree turns
and `leg_spacing` side steps, then a hover. It reads no pose at all (dead reckoning from its
own commands, in sim time): the mission node of a later issue flies on the pipeline's pose.
"""

from dataclasses import dataclass
import math

from geometry_msgs.msg import Twist
from rclpy.node import Node

from skyloc_sim.node_main import declare_parameters, run_node

PARAMETERS = [
    ('altitude', 100.0, 'Cruise altitude above ground, m'),
    ('climb_rate', 3.0, 'Climb rate during take-off, m/s'),
    ('leg_length', 300.0, 'Length of each lawnmower leg, m'),
    ('leg_spacing', 80.0, 'Distance between legs, m'),
    ('legs', 4, 'Number of legs'),
    ('speed', 10.0, 'Cruise speed, m/s'),
    ('yaw_rate', 0.5, 'Turn rate at the end of a leg, rad/s'),
    ('wait_for', '', 'Stay on the ground until this nav_msgs/Odometry topic '
     'publishes (the localizer is up and has its barometer reference on the ground); empty: '
     'take off at once'),
    ('max_wait_s', 60.0, 'Take off anyway after this much simulated time on the ground, s'),
    ('ground_wait_s', 2.0, 'Time on the ground after wait_for published, s'),
]


@dataclass
class Segment:
    duration: float
    vx: float = 0.0
    vz: float = 0.0
    wz: float = 0.0
    label: str = ''


def lawnmower_plan(altitude, climb_rate, leg_length, leg_spacing, legs, speed, yaw_rate):
    """Timed command segments (body frame) of the demo flight."""
    plan = [Segment(altitude / climb_rate, vz=climb_rate, label='takeoff'),
            Segment(2.0, label='hover')]
    turn = (math.pi / 2) / yaw_rate
    for i in range(legs):
        plan.append(Segment(leg_length / speed, vx=speed, label=f'leg {i + 1}/{legs}'))
        if i == legs - 1:
            break
        direction = 1.0 if i % 2 == 0 else -1.0
        plan.append(Segment(turn, wz=direction * yaw_rate, label='turn'))
        plan.append(Segment(leg_spacing / speed, vx=speed, label='step'))
        plan.append(Segment(turn, wz=direction * yaw_rate, label='turn'))
    plan.append(Segment(math.inf, label='hover'))
    return plan


class DemoPilot(Node):
    """Publishes the timed lawnmower plan on /cmd_vel at 10 Hz (sim time)."""

    def __init__(self, **kwargs):
        super().__init__('demo_pilot', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        for name in ('altitude', 'climb_rate', 'speed', 'yaw_rate'):
            if not p[name] > 0:
                raise ValueError(f"parameter '{name}' must be positive, got {p[name]}")
        self.plan = lawnmower_plan(**{k: p[k] for k in (
            'altitude', 'climb_rate', 'leg_length', 'leg_spacing', 'legs', 'speed',
            'yaw_rate')})
        self.cfg = p
        self.ready_at = None        # sim time the wait_for topic first published
        self.first_tick = None
        if p['wait_for']:
            from nav_msgs.msg import Odometry
            self.create_subscription(Odometry, p['wait_for'], self._on_ready, 10)
        self.cmd_pub = self.create_publisher(Twist, '/cmd_vel', 10)
        self.start = None
        self.segment = -1
        self.create_timer(0.1, self._tick)
        self.get_logger().info(f'demo flight: {len(self.plan)} segments, '
                               f'{sum(s.duration for s in self.plan[:-1]):.0f} s')

    def _on_ready(self, msg):
        if self.ready_at is None:
            self.ready_at = self.get_clock().now().nanoseconds * 1e-9
            self.get_logger().info(f"{self.cfg['wait_for']} is up: taking off in "
                                   f"{self.cfg['ground_wait_s']:g} s")

    def _tick(self):
        now = self.get_clock().now().nanoseconds * 1e-9
        if now <= 0.0:
            return  # no /clock yet
        if self.start is None:
            self.first_tick = self.first_tick if self.first_tick is not None else now
            waited = now - self.first_tick
            if self.cfg['wait_for'] and waited < float(self.cfg['max_wait_s']):
                if self.ready_at is None or now - self.ready_at < float(
                        self.cfg['ground_wait_s']):
                    self.cmd_pub.publish(Twist())   # hold on the ground
                    return
            elif self.cfg['wait_for']:
                self.get_logger().warning(f"no {self.cfg['wait_for']} after {waited:.0f} s: "
                                          'taking off anyway')
            self.start = now
        elapsed = now - self.start
        index, t = 0, 0.0
        while t + self.plan[index].duration < elapsed:
            t += self.plan[index].duration
            index += 1
        seg = self.plan[index]
        if index != self.segment:
            self.segment = index
            self.get_logger().info(f'{seg.label} at t={elapsed:.1f} s')
        cmd = Twist()
        cmd.linear.x, cmd.linear.z, cmd.angular.z = seg.vx, seg.vz, seg.wz
        self.cmd_pub.publish(cmd)


NODE_CLASS = DemoPilot


def main(args=None):
    run_node(DemoPilot, args)
