"""Sensor models of the built-in simulator: IMU, barometer, LIDAR, battery, image noise.

All noise is drawn from a numpy Generator passed in, so a run is deterministic per seed.
Units SI; frames as in DESIGN.md (map ENU, base_link x forward, z up).
"""

from dataclasses import dataclass
import math

import cv2
import numpy as np

GRAVITY = 9.80665
SEA_LEVEL_PRESSURE = 101325.0


def isa_pressure(altitude_m, p0=SEA_LEVEL_PRESSURE):
    """ISA troposphere pressure (Pa) at a geopotential altitude (m) above the p0 level."""
    return p0 * (1.0 - 2.25577e-5 * altitude_m) ** 5.25588


def isa_altitude(pressure_pa, p0=SEA_LEVEL_PRESSURE):
    """Inverse of isa_pressure: altitude (m) above the level where the pressure is p0."""
    return (1.0 - (pressure_pa / p0) ** (1.0 / 5.25588)) / 2.25577e-5


def quaternion_from_rpy(roll, pitch, yaw):
    """(x, y, z, w) of Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy)


def yaw_from_quaternion(x, y, z, w):
    """REP 103 yaw (rad) of a quaternion."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


@dataclass
class ImuConfig:
    """MEMS-grade defaults (BMI088 class); densities per sqrt(Hz), random walks per sqrt(s)."""

    rate: float = 100.0
    gyro_noise_density: float = 2.4e-4       # rad/s/sqrt(Hz)
    accel_noise_density: float = 1.7e-3      # m/s^2/sqrt(Hz)
    gyro_bias_walk: float = 2.0e-5           # rad/s/sqrt(s)
    accel_bias_walk: float = 2.0e-4          # m/s^2/sqrt(s)
    gyro_bias_init: float = 2.0e-3           # rad/s, std of the turn-on bias
    accel_bias_init: float = 0.05            # m/s^2, std of the turn-on bias
    attitude_noise_deg: float = 0.2          # roll/pitch of the orientation estimate
    yaw_noise_deg: float = 0.5
    yaw_bias_deg: float = 2.0                # magnetometer heading error (constant)


class ImuModel:
    """Orientation, angular velocity and specific force with white noise and bias random walk."""

    def __init__(self, config, rng):
        self.cfg = config
        self.rng = rng
        self.gyro_bias = rng.normal(0.0, config.gyro_bias_init, 3)
        self.accel_bias = rng.normal(0.0, config.accel_bias_init, 3)

    def sample(self, accel_map, angular_velocity_body, roll, pitch, yaw):
        """One sample: (quaternion xyzw, gyro [3] rad/s, accel [3] m/s^2 in base_link).

        accel_map: true acceleration of the vehicle in the map frame (m/s^2, gravity excluded).
        """
        from skyloc_sim.camera import rotation_base_to_map
        dt = 1.0 / self.cfg.rate
        self.gyro_bias += self.rng.normal(0.0, self.cfg.gyro_bias_walk * math.sqrt(dt), 3)
        self.accel_bias += self.rng.normal(0.0, self.cfg.accel_bias_walk * math.sqrt(dt), 3)
        sqrt_rate = math.sqrt(self.cfg.rate)
        r_bm = rotation_base_to_map(yaw, roll, pitch).T
        specific_force = r_bm @ (np.asarray(accel_map, float) + np.array([0.0, 0.0, GRAVITY]))
        accel = specific_force + self.accel_bias + self.rng.normal(
            0.0, self.cfg.accel_noise_density * sqrt_rate, 3)
        gyro = np.asarray(angular_velocity_body, float) + self.gyro_bias + self.rng.normal(
            0.0, self.cfg.gyro_noise_density * sqrt_rate, 3)
        att = math.radians(self.cfg.attitude_noise_deg)
        q = quaternion_from_rpy(
            roll + self.rng.normal(0.0, att), pitch + self.rng.normal(0.0, att),
            yaw + math.radians(self.cfg.yaw_bias_deg)
            + self.rng.normal(0.0, math.radians(self.cfg.yaw_noise_deg)))
        return q, gyro, accel


@dataclass
class BaroConfig:
    rate: float = 20.0
    noise_pa: float = 3.0              # white noise std (about 0.25 m)
    drift_walk_pa: float = 0.3         # random-walk std per sqrt(s) (weather, temperature)
    ground_pressure: float = 101325.0  # pressure at ground level (z = 0)


class Barometer:
    """Static pressure from the ISA model at the vehicle's altitude, with noise and drift."""

    def __init__(self, config, rng):
        self.cfg = config
        self.rng = rng
        self.drift = 0.0
        self.step_m = 0.0

    def sample(self, altitude_m):
        """Pressure (Pa) at altitude_m above ground, including a commanded step (baro_step)."""
        dt = 1.0 / self.cfg.rate
        self.drift += self.rng.normal(0.0, self.cfg.drift_walk_pa * math.sqrt(dt))
        p = isa_pressure(altitude_m + self.step_m, self.cfg.ground_pressure)
        return p + self.drift + self.rng.normal(0.0, self.cfg.noise_pa)

    @property
    def variance(self):
        return self.cfg.noise_pa ** 2


@dataclass
class LidarConfig:
    rate: float = 10.0
    beams: int = 360
    range_min: float = 0.3
    range_max: float = 100.0
    noise_m: float = 0.03


def raycast(heights, grid, x, y, z, yaw, angles, range_min, range_max, step=None):
    """Horizontal ray cast at height z against an obstacle height map.

    heights: H x W metres above ground (north-up, MapGrid ``grid``); x, y, z: sensor position
    (map frame, m); angles: beam angles in the sensor frame (rad, 0 = forward, CCW).
    Returns the ranges (m) of the first cell whose height >= z; +inf where no return within
    range_max (REP 117).
    """
    angles = np.asarray(angles, dtype=float)
    step = step or grid.resolution * 0.5
    dists = np.arange(range_min, range_max + step, step)
    world = yaw + angles
    xs = x + np.cos(world)[:, None] * dists[None, :]
    ys = y + np.sin(world)[:, None] * dists[None, :]
    u, v = grid.map_to_pixel(xs, ys)
    cols = np.floor(u).astype(np.int64)
    rows = np.floor(v).astype(np.int64)
    inside = (cols >= 0) & (cols < grid.width) & (rows >= 0) & (rows < grid.height)
    hit = np.zeros(xs.shape, dtype=bool)
    hit[inside] = heights[rows[inside], cols[inside]] >= z
    any_hit = hit.any(axis=1)
    first = np.argmax(hit, axis=1)
    ranges = np.full(len(angles), np.inf)
    ranges[any_hit] = dists[first[any_hit]]
    return ranges


class Lidar:
    """2D LIDAR: ray cast plus range noise; returns beyond range_max are +inf."""

    def __init__(self, config, rng):
        self.cfg = config
        self.rng = rng
        self.angles = np.linspace(-math.pi, math.pi, config.beams, endpoint=False)

    @property
    def angle_increment(self):
        return 2.0 * math.pi / self.cfg.beams

    def scan(self, heights, grid, x, y, z, yaw):
        ranges = raycast(heights, grid, x, y, z, yaw, self.angles, self.cfg.range_min,
                         self.cfg.range_max)
        finite = np.isfinite(ranges)
        ranges[finite] += self.rng.normal(0.0, self.cfg.noise_m, int(finite.sum()))
        ranges[finite] = np.clip(ranges[finite], self.cfg.range_min, self.cfg.range_max)
        return ranges.astype(np.float32)


@dataclass
class BatteryConfig:
    capacity_wh: float = 90.0
    hover_power_w: float = 160.0        # multirotor hover / ground robot idle
    power_per_speed_w: float = 3.0      # extra W per m/s of speed
    power_per_climb_w: float = 25.0     # extra W per m/s of climb
    full_voltage: float = 16.8          # 4S LiPo
    empty_voltage: float = 13.2


class Battery:
    """Energy bookkeeping: state of charge from power draw, voltage linear in charge."""

    def __init__(self, config):
        self.cfg = config
        self.energy_wh = config.capacity_wh

    def step(self, dt, speed, climb_rate, flying=True):
        power = self.cfg.hover_power_w if flying else 5.0
        power += self.cfg.power_per_speed_w * speed + self.cfg.power_per_climb_w * max(
            climb_rate, 0.0)
        self.energy_wh = max(0.0, self.energy_wh - power * dt / 3600.0)
        self.power_w = power
        return power

    @property
    def percentage(self):
        return self.energy_wh / self.cfg.capacity_wh

    @property
    def voltage(self):
        return self.cfg.empty_voltage + (self.cfg.full_voltage - self.cfg.empty_voltage) * \
            self.percentage


def camera_noise(image, rng_seed, noise_std=3.0):
    """Sensor noise on an 8-bit image (Gaussian, per pixel), deterministic per seed."""
    if noise_std <= 0:
        return image
    noise = np.empty(image.shape, dtype=np.int16)
    cv2.setRNGSeed(int(rng_seed) & 0x7FFFFFFF)
    cv2.randn(noise, 0, noise_std)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
