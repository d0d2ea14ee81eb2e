"""Vehicle kinematics: a multirotor driven by body-frame velocity commands, a ground robot
(unicycle) with drifting wheel odometry.

Commands are geometry_msgs/Twist semantics: linear.x forward, linear.y left, linear.z up
(m/s, base_link axes, yaw-only frame for the multirotor), angular.z yaw rate (rad/s, CCW).
"""

from dataclasses import dataclass
import math

import numpy as np

from skyloc_sim.sensors import GRAVITY


def wrap_angle(a):
    """Angle wrapped to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


@dataclass
class Limits:
    max_speed: float = 12.0          # m/s horizontal
    max_vertical_speed: float = 4.0  # m/s
    max_accel: float = 4.0           # m/s^2
    max_yaw_rate: float = 1.0        # rad/s


def sanitize_command(cmd, limits):
    """(vx, vy, vz, yaw_rate) clamped to the limits; None if any value is NaN/inf.

    Returns (command, clamped) where clamped says whether any value was limited.
    """
    vx, vy, vz, wz = (float(c) for c in cmd)
    if not all(math.isfinite(c) for c in (vx, vy, vz, wz)):
        return None, False
    clamped = False
    speed = math.hypot(vx, vy)
    if speed > limits.max_speed:
        vx, vy = vx * limits.max_speed / speed, vy * limits.max_speed / speed
        clamped = True
    if abs(vz) > limits.max_vertical_speed:
        vz, clamped = math.copysign(limits.max_vertical_speed, vz), True
    if abs(wz) > limits.max_yaw_rate:
        wz, clamped = math.copysign(limits.max_yaw_rate, wz), True
    return (vx, vy, vz, wz), clamped


class Multirotor:
    """Point-mass multirotor: velocity follows the command with bounded acceleration.

    Attitude is the tilt a real multirotor needs for its acceleration and the wind it holds
    against; wind pushes the vehicle (its velocity loop has no GNSS to cancel it).
    """

    def __init__(self, limits, x=0.0, y=0.0, z=0.0, yaw=0.0, wind=(0.0, 0.0),
                 wind_gust_std=0.0, rng=None):
        self.limits = limits
        self.position = np.array([x, y, z], dtype=float)
        self.velocity = np.zeros(3)
        self.acceleration = np.zeros(3)
        self.yaw = float(yaw)
        self.yaw_rate = 0.0
        self.roll = 0.0
        self.pitch = 0.0
        self.wind = np.array([wind[0], wind[1], 0.0], dtype=float)
        self.wind_gust_std = wind_gust_std
        self.gust = np.zeros(3)
        self.rng = rng or np.random.default_rng(0)
        self.command = (0.0, 0.0, 0.0, 0.0)

    @property
    def landed(self):
        return self.position[2] <= 0.0 and self.velocity[2] <= 0.0

    def step(self, dt):
        vx, vy, vz, wz = self.command
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        target = np.array([c * vx - s * vy, s * vx + c * vy, vz])
        if self.position[2] <= 0.0 and vz <= 0.0:
            target[:] = 0.0  # on the ground: no horizontal motion until it climbs
        if self.wind_gust_std > 0.0:  # first-order gusts, 5 s correlation
            self.gust += (-self.gust * dt / 5.0
                          + self.rng.normal(0.0, self.wind_gust_std * math.sqrt(2 * dt / 5.0), 3))
            self.gust[2] = 0.0
        airborne = self.position[2] > 0.0 or vz > 0.0
        wind = (self.wind + self.gust) if airborne else np.zeros(3)
        target = target + wind
        dv = target - self.velocity
        max_dv = self.limits.max_accel * dt
        norm = float(np.linalg.norm(dv))
        if norm > max_dv:
            dv *= max_dv / norm
        self.acceleration = dv / dt
        self.velocity += dv
        self.position += self.velocity * dt
        if self.position[2] < 0.0:
            self.position[2] = 0.0
            self.velocity[2] = max(self.velocity[2], 0.0)
        self.yaw_rate = wz if airborne else 0.0
        self.yaw = wrap_angle(self.yaw + self.yaw_rate * dt)
        # tilt that produces the horizontal acceleration (and holds against the wind drag)
        ax, ay = self.acceleration[0], self.acceleration[1]
        fwd = c * ax + s * ay
        left = -s * ax + c * ay
        self.pitch = math.atan2(fwd, GRAVITY)
        self.roll = -math.atan2(left, GRAVITY)

    def angular_velocity_body(self):
        return np.array([0.0, 0.0, self.yaw_rate])


class GroundRobot:
    """Unicycle ground robot; stops instead of entering an occupied cell.

    Wheel odometry integrates the measured wheel speeds with a scale error and noise, so /odom
    drifts from the truth as on a robot without SLAM.
    """

    def __init__(self, limits, x=0.0, y=0.0, yaw=0.0, radius=0.2, rng=None,
                 odom_scale_error=0.02, odom_yaw_rate_error=0.01, odom_noise=0.02):
        self.limits = limits
        self.position = np.array([x, y, 0.0])
        self.velocity = np.zeros(3)
        self.acceleration = np.zeros(3)
        self.yaw = float(yaw)
        self.yaw_rate = 0.0
        self.roll = self.pitch = 0.0
        self.radius = radius
        self.rng = rng or np.random.default_rng(0)
        self.speed = 0.0
        self.command = (0.0, 0.0, 0.0, 0.0)
        self.odom_scale = 1.0 + odom_scale_error
        self.odom_yaw_scale = 1.0 + odom_yaw_rate_error
        self.odom_noise = odom_noise
        self.odom_pose = np.array([x, y, yaw], dtype=float)
        self.odom_twist = np.zeros(2)
        self.bumped = False

    landed = False

    def step(self, dt, is_free=None):
        vx, _, _, wz = self.command
        dv = float(np.clip(vx - self.speed, -self.limits.max_accel * dt,
                           self.limits.max_accel * dt))
        self.speed += dv
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        nxt = self.position[:2] + self.speed * dt * np.array([c, s])
        self.bumped = is_free is not None and not is_free(nxt[0], nxt[1], self.radius)
        if self.bumped:
            self.speed = 0.0
        else:
            self.position[:2] = nxt
        self.acceleration = np.array([c * dv / dt, s * dv / dt, 0.0])
        self.velocity = np.array([c * self.speed, s * self.speed, 0.0])
        self.yaw_rate = wz
        self.yaw = wrap_angle(self.yaw + wz * dt)
        # wheel odometry: scaled and noisy measured speeds, integrated in the odom frame
        v_m = self.speed * self.odom_scale + self.rng.normal(0.0, self.odom_noise)
        w_m = wz * self.odom_yaw_scale + self.rng.normal(0.0, self.odom_noise)
        th = self.odom_pose[2]
        self.odom_pose += np.array([v_m * math.cos(th) * dt, v_m * math.sin(th) * dt, w_m * dt])
        self.odom_pose[2] = wrap_angle(self.odom_pose[2])
        self.odom_twist = np.array([v_m, w_m])

    def angular_velocity_body(self):
        return np.array([0.0, 0.0, self.yaw_rate])
