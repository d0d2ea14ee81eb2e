"""The simulation core without ROS: world + vehicle + sensors stepped in simulated time.

``Simulation.step()`` advances one physics step (1 / imu_rate s) and returns the sensor
samples that fall due in it; the node only turns them into messages. Runtime events (faults,
obstacles, kidnap) are applied with ``apply_event``.
"""

from dataclasses import dataclass, field
import math

import numpy as np

from skyloc_sim.camera import OrthoRenderer, PinholeCamera
from skyloc_sim.sensors import (Barometer, BaroConfig, Battery, BatteryConfig, camera_noise,
                                ImuConfig, ImuModel, Lidar, LidarConfig)
from skyloc_sim.vehicle import GroundRobot, Limits, Multirotor, sanitize_command

EVENT_ARITY = {
    'add_obstacle': (4, 4), 'remove_obstacles': (0, 0), 'camera_blackout': (1, 1),
    'imu_nan_burst': (1, 1), 'baro_step': (1, 1), 'lidar_dropout': (1, 1),
    'teleport': (2, 4), 'kidnap': (2, 2),
}


@dataclass
class SimConfig:
    vehicle: str = 'multirotor'
    start: tuple = (0.0, 0.0, 0.0, math.pi / 2)
    limits: Limits = field(default_factory=Limits)
    wind: tuple = (0.0, 0.0)
    wind_gust_std: float = 0.0
    camera_width: int = 640
    camera_height: int = 480
    camera_hfov_deg: float = 90.0
    camera_rate: float = 5.0
    camera_gimbal: bool = True
    camera_noise: float = 3.0
    imu: ImuConfig = field(default_factory=ImuConfig)
    baro: BaroConfig = field(default_factory=BaroConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    battery: BatteryConfig = field(default_factory=BatteryConfig)
    lidar_height: float = 0.25     # ground robot: LIDAR above the floor, m
    robot_radius: float = 0.2
    seed: int = 0


@dataclass
class Samples:
    """What one step produced; None where the sensor was not due (or is faulted)."""

    t: float
    imu: tuple = None          # (quaternion xyzw, gyro, accel) or 'nan'
    baro: float = None         # Pa
    scan: np.ndarray = None    # ranges, or 'dropout'
    image: np.ndarray = None   # RGB, or 'blackout'
    battery: bool = False
    odom: bool = False


class Simulation:
    """World + vehicle + sensors; deterministic for a seed and command sequence."""

    def __init__(self, world, camera_orthophoto, config):
        self.world = world
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        x, y, z, yaw = config.start
        if config.vehicle == 'ground':
            self.vehicle = GroundRobot(config.limits, x, y, yaw, radius=config.robot_radius,
                                       rng=np.random.default_rng(config.seed + 1))
        elif config.vehicle == 'multirotor':
            self.vehicle = Multirotor(config.limits, x, y, z, yaw, config.wind,
                                      config.wind_gust_std, np.random.default_rng(config.seed + 1))
        else:
            raise ValueError(f"vehicle must be 'multirotor' or 'ground', got {config.vehicle!r}")
        self.camera = PinholeCamera(config.camera_width, config.camera_height,
                                    config.camera_hfov_deg)
        self.renderer = OrthoRenderer(camera_orthophoto, world.grid)
        self.imu = ImuModel(config.imu, np.random.default_rng(config.seed + 2))
        self.baro = Barometer(config.baro, np.random.default_rng(config.seed + 3))
        self.lidar = Lidar(config.lidar, np.random.default_rng(config.seed + 4))
        self.battery = Battery(config.battery)
        self.dt = 1.0 / config.imu.rate
        self.t = 0.0
        self.step_count = 0
        # first sample of each sensor one period after start, then every period
        self._next = {'baro': 1.0 / config.baro.rate, 'scan': 1.0 / config.lidar.rate,
                      'camera': 1.0 / config.camera_rate, 'battery': 1.0, 'odom': 0.02}
        self._fault_until = {'camera_blackout': -1.0, 'imu_nan_burst': -1.0,
                             'lidar_dropout': -1.0}
        self._static_heights = world.heights.copy()
        self.events_log = []

    def set_command(self, vx, vy, vz, yaw_rate):
        """Apply a Twist-like command; returns 'ignored', 'clamped' or 'ok'."""
        cmd, clamped = sanitize_command((vx, vy, vz, yaw_rate), self.cfg.limits)
        if cmd is None:
            return 'ignored'
        self.vehicle.command = cmd
        return 'clamped' if clamped else 'ok'

    def _due(self, key, rate):
        if self.t + 1e-9 >= self._next[key]:
            self._next[key] += 1.0 / rate
            if self._next[key] <= self.t:  # after a long stall, do not burst to catch up
                self._next[key] = self.t + 1.0 / rate
            return True
        return False

    @property
    def sensor_height(self):
        if self.cfg.vehicle == 'ground':
            return self.cfg.lidar_height
        return float(self.vehicle.position[2])

    def step(self):
        """Advance one physics step; returns the Samples due in it."""
        v = self.vehicle
        if self.cfg.vehicle == 'ground':
            v.step(self.dt, lambda x, y, r: self.world.is_free(x, y, r))
        else:
            v.step(self.dt)
        self.t += self.dt
        self.step_count += 1
        out = Samples(t=self.t)
        if self.t < self._fault_until['imu_nan_burst']:
            out.imu = 'nan'
        else:
            out.imu = self.imu.sample(v.acceleration, v.angular_velocity_body(), v.roll,
                                      v.pitch, v.yaw)
        if self._due('baro', self.cfg.baro.rate):
            out.baro = self.baro.sample(float(v.position[2]))
        if self._due('scan', self.cfg.lidar.rate):
            if self.t < self._fault_until['lidar_dropout']:
                out.scan = 'dropout'
            else:
                out.scan = self.lidar.scan(self.world.heights, self.world.grid, v.position[0],
                                           v.position[1], self.sensor_height, v.yaw)
        if self._due('camera', self.cfg.camera_rate):
            out.image = self.render_camera()
        if self._due('battery', 1.0):
            out.battery = True
        if self.cfg.vehicle == 'ground' and self._due('odom', 50.0):
            out.odom = True
        speed = float(np.hypot(v.velocity[0], v.velocity[1]))
        self.battery.step(self.dt, speed, float(v.velocity[2]),
                          flying=self.cfg.vehicle != 'ground' and not v.landed)
        return out

    def render_camera(self):
        """The camera frame now: RGB uint8, 'blackout' during a blackout, None below 0.5 m."""
        if self.t < self._fault_until['camera_blackout']:
            return 'blackout'
        v = self.vehicle
        z = float(v.position[2]) if self.cfg.vehicle != 'ground' else 0.0
        if z < 0.5:
            return None  # on the ground: the nadir camera sees nothing useful
        image = self.renderer.render(self.camera, v.position[0], v.position[1], z, v.yaw,
                                     v.roll, v.pitch, self.cfg.camera_gimbal)
        return camera_noise(image, self.cfg.seed * 1000003 + self.step_count,
                            self.cfg.camera_noise)

    def apply_event(self, name, args=()):
        """Apply a runtime event; returns (ok, message). See skyloc_interfaces/SimEvent."""
        args = [float(a) for a in args]
        if name not in EVENT_ARITY:
            return False, f"unknown event '{name}' (known: {', '.join(EVENT_ARITY)})"
        lo, hi = EVENT_ARITY[name]
        if not lo <= len(args) <= hi or not all(math.isfinite(a) for a in args):
            return False, f"event '{name}' takes {lo}-{hi} finite numbers, got {args}"
        if name == 'add_obstacle':
            x, y, height, radius = args
            if height <= 0 or radius <= 0:
                return False, 'add_obstacle: height and radius must be positive'
            self.world.add_obstacle(x, y, height, radius)
            msg = f'obstacle {height:.0f} m tall, r={radius:.1f} m at ({x:.1f}, {y:.1f})'
        elif name == 'remove_obstacles':
            self.world.heights[:] = self._static_heights
            msg = 'added obstacles removed'
        elif name in self._fault_until:
            self._fault_until[name] = self.t + max(0.0, args[0])
            msg = f'{name} for {args[0]:.1f} s'
        elif name == 'baro_step':
            self.baro.step_m += args[0]
            msg = f'barometer altitude step {args[0]:+.1f} m'
        elif name == 'kidnap':    # teleport by (dx, dy) from where the vehicle is
            v = self.vehicle
            x0, y0 = float(v.position[0]), float(v.position[1])
            v.position[0], v.position[1] = x0 + args[0], y0 + args[1]
            v.velocity[:] = 0.0
            msg = (f'vehicle kidnapped {math.hypot(args[0], args[1]):.0f} m: ({x0:.1f}, '
                   f'{y0:.1f}) -> ({v.position[0]:.1f}, {v.position[1]:.1f})')
        else:  # teleport
            v = self.vehicle
            v.position[0], v.position[1] = args[0], args[1]
            if len(args) >= 3 and self.cfg.vehicle != 'ground':
                v.position[2] = max(0.0, args[2])
            if len(args) == 4:
                v.yaw = args[3]
            v.velocity[:] = 0.0
            msg = f'vehicle teleported to ({args[0]:.1f}, {args[1]:.1f})'
        self.events_log.append((self.t, name, args))
        return True, msg


def parse_event_line(line):
    """'t_s name arg...' -> (t_s, name, [args]); ValueError with the reason."""
    parts = str(line).split()
    if len(parts) < 2:
        raise ValueError(f"event '{line}': expected 't_s name args...'")
    try:
        t = float(parts[0])
        args = [float(p) for p in parts[2:]]
    except ValueError as exc:
        raise ValueError(f"event '{line}': time and arguments must be numbers") from exc
    if parts[1] not in EVENT_ARITY:
        raise ValueError(f"event '{line}': unknown event '{parts[1]}'")
    lo, hi = EVENT_ARITY[parts[1]]
    if not lo <= len(args) <= hi:
        raise ValueError(f"event '{line}': '{parts[1]}' takes {lo}-{hi} arguments")
    return t, parts[1], args
