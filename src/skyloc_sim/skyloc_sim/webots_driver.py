"""Webots driver plugin of the skyloc drone (a Mavic 2 Pro): /cmd_vel in, motors and sensors out.

webots_ros2_driver loads this class from ``urdf/skyloc_drone.urdf``
(``<plugin type="skyloc_sim.webots_driver.SkylocDriver"/>``), calls ``init(webots_node,
properties)`` once and ``step()`` at every Webots time step. The plugin

- follows ``/cmd_vel`` (geometry_msgs/Twist: linear.x/y in m/s in the heading frame, i.e.
  base_link without roll and pitch; linear.z climb rate in m/s; angular.z yaw rate in rad/s,
  REP 103) with a cascaded velocity -> attitude -> motor controller on the four propellers;
  commands with NaN/inf are ignored with a warning, the others clamped to the limits;
- levels the camera gimbal so that the nadir camera looks straight down (``camera_gimbal``);
- publishes ``/baro`` (FluidPressure, ISA pressure of the GPS altitude plus noise),
  ``/battery`` (BatteryState, a simple energy model), ``/camera/camera_info`` (the pinhole
  model of the Webots camera: webots_ros2 publishes the image, its own CameraInfo lands on
  ``/camera/image_raw/camera_info``) and ``/sim/ground_truth`` (Odometry from the GPS and the
  InertialUnit, frame ``map``, child ``base_link``: for reports and tests, never the pipeline).

Camera, IMU and LIDAR are published by webots_ros2's own device plugins (see the URDF).

The controller, the battery and the ISA formula are plain classes and functions on numbers,
tested without Webots. Nothing from Webots or ROS is imported at module level: ``init`` takes
the robot from ``webots_node.robot`` and imports rclpy and the messages.

Parameters: the plugin runs inside the webots_ros2 driver process, whose ROS arguments do not
reach Python, so launch/webots.launch.py passes the parameter file in the environment:
``SKYLOC_WEBOTS_PARAMS`` (config/webots.yaml, relative paths from ``SKYLOC_ROOT`` or the
working directory) and ``SKYLOC_USE_SIM_TIME``.
"""

from dataclasses import dataclass, fields
import math
import os
import random

from skyloc_sim.sensors import isa_pressure
from skyloc_sim.vehicle import Limits, sanitize_command as sanitize_vehicle_command, wrap_angle

NODE_NAME = 'skyloc_webots_driver'
CMD_VEL_TOPIC = '/cmd_vel'
BARO_TOPIC = '/baro'
BATTERY_TOPIC = '/battery'
GROUND_TRUTH_TOPIC = '/sim/ground_truth'
CAMERA_INFO_TOPIC = '/camera/camera_info'
MAP_FRAME = 'map'
BASE_FRAME = 'base_link'
CAMERA_FRAME = 'camera_link'

PARAMS_ENV = 'SKYLOC_WEBOTS_PARAMS'
USE_SIM_TIME_ENV = 'SKYLOC_USE_SIM_TIME'
ROOT_ENV = 'SKYLOC_ROOT'

# Devices of the Mavic2Pro PROTO used by the controller (the PROTO's own, body-fixed ones; the
# IMU that webots_ros2 publishes is a separate set in the world's bodySlot, so that its plugin
# enabling/disabling them never touches what the controller reads).
GPS_NAME = 'gps'
INERTIAL_UNIT_NAME = 'inertial unit'
GYRO_NAME = 'gyro'
CAMERA_NAME = 'camera'
GIMBAL_MOTOR_NAMES = ('camera yaw', 'camera pitch', 'camera roll')
# Joint limits of the PROTO's gimbal (rad): yaw, pitch, roll.
GIMBAL_LIMITS = ((-1.7, 1.7), (-0.5, 1.7), (-0.5, 0.5))

# The four propellers in the order of MotorVelocities, and the sign of each motor's velocity
# that produces upward thrust (the PROTO's thrust constants are -, +, +, - for FR, FL, RR, RL:
# front left and rear right spin counter-clockwise seen from above, the others clockwise).
MOTOR_NAMES = ('front left propeller', 'front right propeller',
               'rear left propeller', 'rear right propeller')
MOTOR_SIGNS = (1.0, -1.0, -1.0, 1.0)
MOTOR_MAX_VELOCITY = 576.0  # rad/s, the PROTO's RotationalMotor maxVelocity


def clamp(value, low, high):
    """value limited to [low, high]."""
    return min(max(value, low), high)


def stamp_from_seconds(t):
    """(sec, nanosec) of a builtin_interfaces/Time for a time in seconds (t >= 0)."""
    sec = int(math.floor(t))
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1000000000:
        sec, nanosec = sec + 1, nanosec - 1000000000
    return sec, nanosec


def world_to_body(quaternion, vector):
    """A world-frame vector expressed in the body frame of orientation (x, y, z, w)."""
    x, y, z, w = quaternion
    vx, vy, vz = vector
    # v' = q* v q, i.e. R^T v, with R the body -> world rotation of q
    r00, r01, r02 = 1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)
    r10, r11, r12 = 2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)
    r20, r21, r22 = 2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)
    return (r00 * vx + r10 * vy + r20 * vz,
            r01 * vx + r11 * vy + r21 * vz,
            r02 * vx + r12 * vy + r22 * vz)


def gimbal_angles(roll, pitch):
    """Gimbal joint positions (yaw, pitch, roll joints, rad) that level the camera slot.

    The PROTO's gimbal is a yaw (z) -> pitch (y) -> roll (x) chain on the body, so the slot's
    orientation is R_body Rz(a) Ry(b) Rx(c). With R_body = Rz(yaw) Ry(pitch) Rx(roll), the
    slot is level with the vehicle's heading when Rz(a) Ry(b) Rx(c) = Rx(-roll) Ry(-pitch).
    Results are clamped to the joint limits.
    """
    ca, sa = math.cos(-roll), math.sin(-roll)
    cb, sb = math.cos(-pitch), math.sin(-pitch)
    # M = Rx(-roll) Ry(-pitch); ZYX decomposition of M
    m00, m10, m20 = cb, sa * sb, -ca * sb
    m21, m22 = sa, ca * cb
    joint_yaw = math.atan2(m10, m00)
    joint_pitch = -math.asin(clamp(m20, -1.0, 1.0))
    joint_roll = math.atan2(m21, m22)
    return tuple(clamp(v, lo, hi) for v, (lo, hi)
                 in zip((joint_yaw, joint_pitch, joint_roll), GIMBAL_LIMITS))


# Limits of a velocity command (m/s horizontal norm, m/s vertical, rad/s yaw): shared with
# the built-in simulator, as are the checks of a command.
CommandLimits = Limits


def sanitize_command(vx, vy, vz, yaw_rate, limits):
    """A Twist's (vx, vy, vz, yaw_rate) checked and clamped: (command or None, problem or None).

    A command with a NaN or infinite component is refused as a whole; otherwise the
    horizontal speed is scaled down to max_speed, climb and yaw rates clamped
    (skyloc_sim.vehicle.sanitize_command), and the problem names the limits applied.
    """
    command, clamped = sanitize_vehicle_command((vx, vy, vz, yaw_rate), limits)
    if command is None:
        return None, f'non-finite command {(vx, vy, vz, yaw_rate)} ignored'
    if not clamped:
        return command, None
    applied = [name for name, asked, got in (
        ('max_speed', math.hypot(vx, vy), math.hypot(command[0], command[1])),
        ('max_vertical_speed', vz, command[2]), ('max_yaw_rate', yaw_rate, command[3]))
        if asked != got]
    return command, 'clamped to ' + ', '.join(applied)


@dataclass
class VehicleState:
    """What the controller reads: attitude (rad, REP 103, ENU), body rates (rad/s), position
    (m, world/map frame ENU; z is the altitude) and velocity (m/s, world frame)."""

    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0
    roll_rate: float = 0.0
    pitch_rate: float = 0.0
    yaw_rate: float = 0.0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    vz: float = 0.0


@dataclass
class ControllerGains:
    """Gains of the cascaded controller; motor inputs are in rad/s of propeller velocity.

    The attitude P gains (50/30 rad/s per rad) are in the range that flies the Webots Mavic 2
    Pro; the rate damping and the small integral were chosen on a rigid-body model of the PROTO
    (0.5 kg, its rotor positions and thrust constants, centre of mass off the rotors' centre)
    to stay stable over a 30x range of inertia and up to 40 ms of motor lag; the outer loops
    are slow enough not to excite the inner one.
    """

    hover_velocity: float = 68.5     # rad/s per motor that about holds the Mavic 2 Pro
    ground_altitude: float = 0.0     # m, altitude of the ground under the start point
    landed_margin: float = 0.5       # m: below ground + margin with no climb wanted: motors off
    landing_speed: float = 0.5       # m/s, descent rate limit at the ground
    flare: float = 0.5               # 1/s: descent rate limit = max(landing_speed, flare * height)
    altitude_p: float = 1.0          # m/s of climb per m of altitude error
    vertical_p: float = 6.0          # rad/s per m/s of climb-rate error
    vertical_i: float = 3.0          # rad/s per m of integrated climb-rate error
    vertical_i_limit: float = 40.0   # rad/s
    velocity_p: float = 0.12         # rad of tilt per m/s of horizontal velocity error
    velocity_i: float = 0.03         # rad of tilt per m of integrated velocity error
    velocity_i_limit: float = 0.2    # rad
    max_tilt: float = 0.35           # rad
    roll_p: float = 50.0             # rad/s per rad
    pitch_p: float = 30.0            # rad/s per rad
    roll_rate_d: float = 3.0         # rad/s per rad/s
    pitch_rate_d: float = 3.0        # rad/s per rad/s
    attitude_i: float = 5.0          # rad/s per rad s: trims a centre of mass off the middle
    attitude_i_limit: float = 20.0   # rad/s
    attitude_input_limit: float = 30.0  # rad/s
    heading_p: float = 1.5           # rad/s of yaw rate per rad of heading error
    yaw_rate_p: float = 4.0          # rad/s per rad/s of yaw-rate error
    yaw_input_limit: float = 10.0    # rad/s


@dataclass
class MotorVelocities:
    """Signed propeller velocities (rad/s) to hand to the four RotationalMotors."""

    front_left: float
    front_right: float
    rear_left: float
    rear_right: float

    def as_tuple(self):
        """(front left, front right, rear left, rear right), the order of MOTOR_NAMES."""
        return (self.front_left, self.front_right, self.rear_left, self.rear_right)


def mix(thrust, roll_input, pitch_input, yaw_input, max_velocity=MOTOR_MAX_VELOCITY):
    """Motor velocities from a collective thrust and roll/pitch/yaw inputs (all rad/s).

    Positive roll_input speeds up the right motors (rolls left, against a positive REP 103
    roll), positive pitch_input the front ones (nose up, against a positive pitch), positive
    yaw_input the clockwise pair (the body turns counter-clockwise, positive yaw).
    """
    front_left = thrust - roll_input + pitch_input - yaw_input
    front_right = thrust + roll_input + pitch_input + yaw_input
    rear_left = thrust - roll_input - pitch_input + yaw_input
    rear_right = thrust + roll_input - pitch_input - yaw_input
    speeds = [clamp(s, 0.0, max_velocity)
              for s in (front_left, front_right, rear_left, rear_right)]
    return MotorVelocities(*(sign * s for sign, s in zip(MOTOR_SIGNS, speeds)))


class MulticopterController:
    """Twist -> motor velocities for the Mavic 2 Pro: plain numbers in and out.

    Outer loops: the altitude reference integrates the climb command (and a takeoff target)
    and a climb-rate PI gives the collective thrust; horizontal velocity errors in the heading
    frame give roll/pitch set points (PI, limited to max_tilt); the heading reference integrates
    the yaw-rate command. Inner loop: PID on roll and pitch from the InertialUnit and the Gyro,
    P on the yaw rate. On the ground (below ground + landed_margin, still, with no climb wanted)
    the motors stop; descents slow down to landing_speed near the ground.
    """

    def __init__(self, gains=None, limits=None):
        self.gains = gains or ControllerGains()
        self.limits = limits or CommandLimits()
        self.reset()

    def reset(self):
        """Forget references and integrators (they are re-seeded from the next state)."""
        self.altitude_ref = None
        self.altitude_target = None
        self.heading_ref = None
        self.vertical_integral = 0.0
        self.velocity_integral = [0.0, 0.0]
        self.attitude_integral = [0.0, 0.0]

    def set_altitude_target(self, altitude):
        """Climb (or descend) to this altitude (m) at up to max_vertical_speed, then hold it."""
        self.altitude_target = float(altitude)

    def landed(self, state):
        """True when on the ground, not moving vertically, with no climb wanted: motors off."""
        g = self.gains
        return (state.z < g.ground_altitude + g.landed_margin and abs(state.vz) < 0.3
                and self.altitude_ref is not None and self.altitude_ref < g.ground_altitude + 0.1)

    def update(self, command, state, dt):
        """MotorVelocities for a command (vx, vy, vz, yaw_rate) and a VehicleState after dt s.

        The command is assumed sanitized (finite, within limits): see sanitize_command.
        """
        g, lim = self.gains, self.limits
        vx_cmd, vy_cmd, vz_cmd, yaw_rate_cmd = command
        dt = max(float(dt), 0.0)
        if self.altitude_ref is None:  # start: on the ground, or hold the altitude
            on_ground = state.z < g.ground_altitude + g.landed_margin
            self.altitude_ref = g.ground_altitude if on_ground else state.z
        if self.heading_ref is None:
            self.heading_ref = state.yaw

        # Altitude reference: the climb command, else the takeoff/altitude target.
        if vz_cmd != 0.0:
            self.altitude_target = None
        elif self.altitude_target is not None:
            error = self.altitude_target - self.altitude_ref
            vz_cmd = clamp(error, -lim.max_vertical_speed, lim.max_vertical_speed)
            if abs(error) < 0.05:
                self.altitude_ref, self.altitude_target = self.altitude_target, None
                vz_cmd = 0.0
        self.altitude_ref += vz_cmd * dt
        # keep the reference near the vehicle (anti-windup) and above the ground
        self.altitude_ref = clamp(self.altitude_ref, state.z - 2.0, state.z + 2.0)
        self.altitude_ref = max(self.altitude_ref, g.ground_altitude)

        if self.landed(state):
            self.vertical_integral = 0.0
            self.velocity_integral = [0.0, 0.0]
            self.attitude_integral = [0.0, 0.0]
            self.heading_ref = state.yaw
            return mix(0.0, 0.0, 0.0, 0.0)

        # Vertical: altitude P -> climb rate (descent slowed near the ground), climb-rate PI ->
        # collective thrust.
        vz_des = clamp(vz_cmd + g.altitude_p * (self.altitude_ref - state.z),
                       -lim.max_vertical_speed, lim.max_vertical_speed)
        height = state.z - g.ground_altitude
        vz_des = max(vz_des, -max(g.landing_speed, g.flare * height))
        vz_error = vz_des - state.vz
        self.vertical_integral = clamp(self.vertical_integral + g.vertical_i * vz_error * dt,
                                       -g.vertical_i_limit, g.vertical_i_limit)
        tilt = max(math.cos(state.roll) * math.cos(state.pitch), 0.5)
        thrust = (g.hover_velocity + g.vertical_p * vz_error + self.vertical_integral)
        thrust /= math.sqrt(tilt)  # thrust ~ velocity^2: keep the vertical component

        # Horizontal: velocity error in the heading frame -> tilt set points.
        cy, sy = math.cos(state.yaw), math.sin(state.yaw)
        v_forward = cy * state.vx + sy * state.vy
        v_left = -sy * state.vx + cy * state.vy
        errors = (vx_cmd - v_forward, vy_cmd - v_left)
        for i, error in enumerate(errors):
            self.velocity_integral[i] = clamp(
                self.velocity_integral[i] + g.velocity_i * error * dt,
                -g.velocity_i_limit, g.velocity_i_limit)
        # nose down (positive pitch) accelerates forward; right side down (positive roll)
        # accelerates to the right, i.e. -y
        pitch_des = clamp(g.velocity_p * errors[0] + self.velocity_integral[0],
                          -g.max_tilt, g.max_tilt)
        roll_des = clamp(-(g.velocity_p * errors[1] + self.velocity_integral[1]),
                         -g.max_tilt, g.max_tilt)

        # Attitude PID (the integral trims a centre of mass away from the rotors' centre).
        attitude_errors = (state.roll - roll_des, state.pitch - pitch_des)
        for i, error in enumerate(attitude_errors):
            self.attitude_integral[i] = clamp(
                self.attitude_integral[i] + g.attitude_i * error * dt,
                -g.attitude_i_limit, g.attitude_i_limit)
        roll_input = clamp(g.roll_p * attitude_errors[0] + self.attitude_integral[0]
                           + g.roll_rate_d * state.roll_rate,
                           -g.attitude_input_limit, g.attitude_input_limit)
        pitch_input = clamp(g.pitch_p * attitude_errors[1] + self.attitude_integral[1]
                            + g.pitch_rate_d * state.pitch_rate,
                            -g.attitude_input_limit, g.attitude_input_limit)

        # Heading: the reference integrates the yaw-rate command and stays near the vehicle.
        self.heading_ref = wrap_angle(self.heading_ref + yaw_rate_cmd * dt)
        heading_error = clamp(wrap_angle(self.heading_ref - state.yaw), -0.5, 0.5)
        self.heading_ref = wrap_angle(state.yaw + heading_error)
        yaw_rate_des = yaw_rate_cmd + g.heading_p * heading_error
        yaw_input = clamp(g.yaw_rate_p * (yaw_rate_des - state.yaw_rate),
                          -g.yaw_input_limit, g.yaw_input_limit)
        return mix(thrust, roll_input, pitch_input, yaw_input)


class BatteryModel:
    """Energy left in a LiPo pack drained by the motors: power ~ propeller velocity cubed."""

    def __init__(self, capacity_wh, cells=4, idle_power_w=5.0, hover_power_w=100.0,
                 hover_velocity=68.5):
        if capacity_wh <= 0.0:
            raise ValueError(f'battery capacity must be positive, got {capacity_wh} Wh')
        self.capacity_wh = float(capacity_wh)
        self.energy_wh = float(capacity_wh)
        self.cells = int(cells)
        self.idle_power_w = float(idle_power_w)
        self.hover_power_w = float(hover_power_w)
        self.hover_velocity = float(hover_velocity)
        self.power_w = self.idle_power_w

    def power(self, motor_velocities):
        """Electrical power (W) for the four propeller velocities (rad/s, any sign)."""
        load = sum((abs(w) / self.hover_velocity) ** 3 for w in motor_velocities) / 4.0
        return self.idle_power_w + self.hover_power_w * load

    def update(self, motor_velocities, dt):
        """Drain the pack for dt seconds at the motors' power."""
        self.power_w = self.power(motor_velocities)
        self.energy_wh = max(0.0, self.energy_wh - self.power_w * dt / 3600.0)

    @property
    def fraction(self):
        """State of charge, 0..1 (BatteryState.percentage)."""
        return self.energy_wh / self.capacity_wh

    @property
    def voltage(self):
        """Pack voltage (V): 3.5 V per cell empty to 4.2 V full, linear."""
        return self.cells * (3.5 + 0.7 * self.fraction)

    @property
    def nominal_voltage(self):
        """Nominal pack voltage (V): 3.85 V per cell."""
        return self.cells * 3.85

    @property
    def current(self):
        """Discharge current (A), positive."""
        return self.power_w / self.voltage

    @property
    def capacity_ah(self):
        """Design capacity (Ah) at the nominal voltage."""
        return self.capacity_wh / self.nominal_voltage


class RateGate:
    """Says when a periodic publication is due, on simulation time; rate <= 0: never."""

    def __init__(self, rate_hz):
        self.period = 1.0 / rate_hz if rate_hz > 0.0 else None
        self.next_time = None

    def due(self, t):
        """True (and schedule the next one) when a publication is due at time t (s)."""
        if self.period is None:
            return False
        if self.next_time is None or t + 1e-9 >= self.next_time:
            self.next_time = (t if self.next_time is None else self.next_time) + self.period
            if self.next_time <= t:  # fell behind (a pause): restart from now
                self.next_time = t + self.period
            return True
        return False


@dataclass
class DriverConfig:
    """Parameters of skyloc_webots_driver (config/webots.yaml)."""

    max_speed: float = 12.0
    max_vertical_speed: float = 4.0
    max_yaw_rate: float = 1.0
    max_tilt: float = 0.35
    cmd_timeout: float = 2.0
    takeoff_altitude: float = 100.0
    hover_velocity: float = 68.5
    attitude_rate_d: float = 3.0
    ground_altitude: float = 0.0
    camera_gimbal: bool = True
    baro_rate: float = 20.0
    baro_noise_std: float = 2.0
    baro_reference_altitude: float = 0.0
    battery_capacity_wh: float = 59.3
    battery_cells: int = 4
    battery_rate: float = 1.0
    hover_power_w: float = 100.0
    idle_power_w: float = 5.0
    ground_truth_rate: float = 50.0
    camera_info_rate: float = 5.0
    noise_seed: int = 0


PARAMETER_DESCRIPTIONS = {
    'max_speed': 'm/s, horizontal speed limit of /cmd_vel (the norm of linear.x, linear.y)',
    'max_vertical_speed': 'm/s, limit of linear.z (climb rate) and of takeoff climbs',
    'max_yaw_rate': 'rad/s, limit of angular.z',
    'max_tilt': 'rad, roll/pitch limit of the velocity controller',
    'cmd_timeout': 's without /cmd_vel after which the drone hovers; 0 disables',
    'takeoff_altitude': 'm, altitude the drone climbs to at start; 0: stay landed',
    'hover_velocity': 'rad/s per propeller that about holds the drone (feed-forward)',
    'attitude_rate_d': 'rad/s of propeller velocity per rad/s of roll/pitch rate (damping)',
    'ground_altitude': 'm, world z of the ground under the drone (landed detection)',
    'camera_gimbal': 'level the camera gimbal (nadir view); false: fixed mount',
    'baro_rate': 'Hz of /baro',
    'baro_noise_std': 'Pa, standard deviation of the barometer noise',
    'baro_reference_altitude': 'm above mean sea level of the world origin (ISA pressure)',
    'battery_capacity_wh': 'Wh of the battery pack',
    'battery_cells': 'LiPo cells in series (voltage of /battery)',
    'battery_rate': 'Hz of /battery',
    'hover_power_w': 'W drawn by the motors at hover_velocity',
    'idle_power_w': 'W drawn by the electronics',
    'ground_truth_rate': 'Hz of /sim/ground_truth',
    'camera_info_rate': 'Hz of /camera/camera_info',
    'noise_seed': 'seed of the barometer noise',
}


def validate_config(config):
    """Raise ValueError naming the parameter when a value is out of range."""
    positive = ('max_speed', 'max_vertical_speed', 'max_yaw_rate', 'max_tilt',
                'hover_velocity', 'attitude_rate_d', 'battery_capacity_wh', 'battery_cells',
                'hover_power_w')
    for name in positive:
        if not getattr(config, name) > 0:
            raise ValueError(f"parameter '{name}' must be positive, got {getattr(config, name)}")
    non_negative = ('cmd_timeout', 'takeoff_altitude', 'baro_rate', 'baro_noise_std',
                    'battery_rate', 'idle_power_w', 'ground_truth_rate', 'camera_info_rate')
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ValueError(f"parameter '{name}' must be >= 0, got {getattr(config, name)}")
    if config.max_tilt >= 0.8:
        raise ValueError(f"parameter 'max_tilt' must be below 0.8 rad, got {config.max_tilt}")
    if config.hover_velocity >= MOTOR_MAX_VELOCITY:
        raise ValueError(f"parameter 'hover_velocity' must be below {MOTOR_MAX_VELOCITY} rad/s")


def driver_ros_args(environ=None):
    """Node-specific ROS arguments from the environment the launch file sets (see module doc)."""
    environ = os.environ if environ is None else environ
    args = []
    params_file = environ.get(PARAMS_ENV, '')
    if params_file:
        if not os.path.isabs(params_file):
            params_file = os.path.join(environ.get(ROOT_ENV, '') or os.getcwd(), params_file)
        if not os.path.isfile(params_file):
            raise FileNotFoundError(f'{PARAMS_ENV}={params_file}: parameter file not found')
        args += ['--params-file', params_file]
    use_sim_time = environ.get(USE_SIM_TIME_ENV, '')
    if use_sim_time:
        value = use_sim_time.strip().lower() in ('1', 'true', 'yes', 'on')
        args += ['-p', f'use_sim_time:={"true" if value else "false"}']
    return ['--ros-args'] + args if args else []


class SkylocDriver:
    """webots_ros2_driver Python plugin: ``init(webots_node, properties)`` then ``step()``."""

    SPIN_PER_STEP = 4  # callbacks served per Webots step (/clock, /cmd_vel, services)

    def init(self, webots_node, properties):
        """Take the devices, create the ROS node, publishers and the /cmd_vel subscription."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import BatteryState, CameraInfo, FluidPressure

        self._msgs = {'Odometry': Odometry, 'BatteryState': BatteryState,
                      'CameraInfo': CameraInfo, 'FluidPressure': FluidPressure}
        self._properties = dict(properties or {})
        self._robot = webots_node.robot
        self._timestep_ms = int(self._robot.getBasicTimeStep())

        if not rclpy.ok():
            rclpy.init(args=None)
        self._node = rclpy.create_node(NODE_NAME, cli_args=driver_ros_args())
        self._config = self._read_parameters()
        cfg = self._config
        self._log = self._node.get_logger()

        # Devices
        self._gps = self._enable(GPS_NAME)
        self._inertial_unit = self._enable(INERTIAL_UNIT_NAME)
        self._gyro = self._enable(GYRO_NAME)
        self._motors = []
        for name in MOTOR_NAMES:
            motor = self._device(name)
            motor.setPosition(float('inf'))
            motor.setVelocity(0.0)
            self._motors.append(motor)
        self._gimbal = [self._robot.getDevice(name) for name in GIMBAL_MOTOR_NAMES]
        camera = self._robot.getDevice(CAMERA_NAME)
        self._camera_geometry = ((camera.getWidth(), camera.getHeight(), camera.getFov())
                                 if camera is not None else None)

        # Models
        self._limits = CommandLimits(max_speed=cfg.max_speed,
                                     max_vertical_speed=cfg.max_vertical_speed,
                                     max_yaw_rate=cfg.max_yaw_rate)
        gains = ControllerGains(hover_velocity=cfg.hover_velocity, max_tilt=cfg.max_tilt,
                                ground_altitude=cfg.ground_altitude,
                                roll_rate_d=cfg.attitude_rate_d,
                                pitch_rate_d=cfg.attitude_rate_d)
        self._controller = MulticopterController(gains, self._limits)
        if cfg.takeoff_altitude > 0.0:
            self._controller.set_altitude_target(cfg.ground_altitude + cfg.takeoff_altitude)
        self._battery = BatteryModel(cfg.battery_capacity_wh, cfg.battery_cells,
                                     cfg.idle_power_w, cfg.hover_power_w, cfg.hover_velocity)
        self._rng = random.Random(cfg.noise_seed)
        self._gates = {'baro': RateGate(cfg.baro_rate),
                       'battery': RateGate(cfg.battery_rate),
                       'ground_truth': RateGate(cfg.ground_truth_rate),
                       'camera_info': RateGate(cfg.camera_info_rate)}

        # State
        self._command = (0.0, 0.0, 0.0, 0.0)
        self._command_time = None
        self._timed_out = False
        self._last_time = None
        self._last_position = None

        # ROS interface
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._node.create_subscription(Twist, CMD_VEL_TOPIC, self._on_cmd_vel, reliable)
        self._baro_pub = self._node.create_publisher(FluidPressure, BARO_TOPIC,
                                                     qos_profile_sensor_data)
        self._battery_pub = self._node.create_publisher(BatteryState, BATTERY_TOPIC,
                                                        qos_profile_sensor_data)
        self._camera_info_pub = self._node.create_publisher(CameraInfo, CAMERA_INFO_TOPIC,
                                                            qos_profile_sensor_data)
        self._truth_pub = self._node.create_publisher(Odometry, GROUND_TRUTH_TOPIC, reliable)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self._node)
        self._log.info(
            f'driving {self._robot.getName()} at {self._timestep_ms} ms steps; limits '
            f'{cfg.max_speed} m/s, {cfg.max_vertical_speed} m/s, {cfg.max_yaw_rate} rad/s; '
            f'takeoff to {cfg.takeoff_altitude} m')

    @property
    def command(self):
        """The last accepted /cmd_vel as (vx, vy, vz, yaw_rate), after clamping."""
        return self._command

    def shutdown(self):
        """Destroy the ROS node (webots_ros2 never calls this; tests and embedders may)."""
        self._executor.shutdown(timeout_sec=0)
        self._node.destroy_node()

    # -- setup helpers ------------------------------------------------------------------------

    def _read_parameters(self):
        from rcl_interfaces.msg import ParameterDescriptor

        values = {}
        for f in fields(DriverConfig):
            default = f.default
            descriptor = ParameterDescriptor(description=PARAMETER_DESCRIPTIONS.get(f.name, ''))
            value = self._node.declare_parameter(f.name, default, descriptor).value
            values[f.name] = type(default)(value)
        config = DriverConfig(**values)
        validate_config(config)
        return config

    def _device(self, name):
        device = self._robot.getDevice(name)
        if device is None:
            raise RuntimeError(f"{NODE_NAME}: the robot has no device '{name}' (is it a "
                               'Mavic2Pro as in worlds/skyloc.wbt?)')
        return device

    def _enable(self, name):
        device = self._device(name)
        device.enable(self._timestep_ms)
        return device

    # -- ROS callbacks ------------------------------------------------------------------------

    def _on_cmd_vel(self, msg):
        command, problem = sanitize_command(msg.linear.x, msg.linear.y, msg.linear.z,
                                            msg.angular.z, self._limits)
        if problem:
            self._log.warning(f'{CMD_VEL_TOPIC}: {problem}', throttle_duration_sec=5.0)
        if command is None:
            return
        self._command = command
        self._command_time = self._robot.getTime()
        self._timed_out = False

    # -- simulation step ----------------------------------------------------------------------

    def step(self):
        """One Webots step: serve ROS callbacks, control the motors, publish what is due."""
        for _ in range(self.SPIN_PER_STEP):
            self._executor.spin_once(timeout_sec=0)
        t = self._robot.getTime()
        state, quaternion = self._read_state(t)
        if state is None:  # sensors not ready on the first step
            return
        dt = self._timestep_ms / 1000.0 if self._last_time is None else t - self._last_time
        self._last_time = t

        command = self._command
        cfg = self._config
        if (cfg.cmd_timeout > 0.0 and self._command_time is not None
                and t - self._command_time > cfg.cmd_timeout):
            if not self._timed_out:
                self._log.warning(f'no {CMD_VEL_TOPIC} for {cfg.cmd_timeout} s: hovering')
                self._timed_out = True
            command = (0.0, 0.0, 0.0, 0.0)
        motors = self._controller.update(command, state, dt).as_tuple()
        for motor, velocity in zip(self._motors, motors):
            motor.setVelocity(velocity)
        if cfg.camera_gimbal:
            for motor, position in zip(self._gimbal, gimbal_angles(state.roll, state.pitch)):
                if motor is not None:
                    motor.setPosition(position)
        self._battery.update(motors, dt)

        if self._gates['baro'].due(t):
            self._publish_baro(t, state)
        if self._gates['battery'].due(t):
            self._publish_battery(t)
        if self._gates['ground_truth'].due(t):
            self._publish_ground_truth(t, state, quaternion)
        if self._gates['camera_info'].due(t) and self._camera_geometry:
            self._publish_camera_info(t)

    def _read_state(self, t):
        position = self._gps.getValues()
        roll, pitch, yaw = self._inertial_unit.getRollPitchYaw()
        rates = self._gyro.getValues()
        values = list(position) + [roll, pitch, yaw] + list(rates)
        if not all(math.isfinite(v) for v in values):
            return None, None
        speed_vector = getattr(self._gps, 'getSpeedVector', None)
        velocity = speed_vector() if speed_vector else None
        if velocity is None or not all(math.isfinite(v) for v in velocity):
            if self._last_position is None or self._last_time is None or t <= self._last_time:
                velocity = (0.0, 0.0, 0.0)
            else:
                velocity = tuple((p - q) / (t - self._last_time)
                                 for p, q in zip(position, self._last_position))
        self._last_position = tuple(position)
        state = VehicleState(roll=roll, pitch=pitch, yaw=yaw, roll_rate=rates[0],
                             pitch_rate=rates[1], yaw_rate=rates[2], x=position[0],
                             y=position[1], z=position[2], vx=velocity[0], vy=velocity[1],
                             vz=velocity[2])
        return state, tuple(self._inertial_unit.getQuaternion())

    # -- publishers ---------------------------------------------------------------------------

    @staticmethod
    def _stamp(header, t):
        header.stamp.sec, header.stamp.nanosec = stamp_from_seconds(t)

    def _publish_baro(self, t, state):
        cfg = self._config
        msg = self._msgs['FluidPressure']()
        self._stamp(msg.header, t)
        msg.header.frame_id = BASE_FRAME
        altitude = cfg.baro_reference_altitude + state.z
        msg.fluid_pressure = isa_pressure(altitude) + self._rng.gauss(0.0, cfg.baro_noise_std)
        msg.variance = cfg.baro_noise_std ** 2
        self._baro_pub.publish(msg)

    def _publish_battery(self, t):
        BatteryState = self._msgs['BatteryState']
        b = self._battery
        msg = BatteryState()
        self._stamp(msg.header, t)
        msg.header.frame_id = BASE_FRAME
        msg.voltage = b.voltage
        msg.current = -b.current  # negative while discharging (sensor_msgs/BatteryState)
        msg.charge = b.capacity_ah * b.fraction
        msg.capacity = b.capacity_ah
        msg.design_capacity = b.capacity_ah
        msg.percentage = b.fraction
        msg.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_DISCHARGING
        msg.power_supply_health = (BatteryState.POWER_SUPPLY_HEALTH_GOOD if b.fraction > 0.0
                                   else BatteryState.POWER_SUPPLY_HEALTH_DEAD)
        msg.power_supply_technology = BatteryState.POWER_SUPPLY_TECHNOLOGY_LIPO
        msg.present = True
        msg.temperature = float('nan')
        msg.cell_voltage = [b.voltage / b.cells] * b.cells
        msg.cell_temperature = [float('nan')] * b.cells
        self._battery_pub.publish(msg)

    def _publish_ground_truth(self, t, state, quaternion):
        msg = self._msgs['Odometry']()
        self._stamp(msg.header, t)
        msg.header.frame_id = MAP_FRAME
        msg.child_frame_id = BASE_FRAME
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        p.x, p.y, p.z = state.x, state.y, state.z
        q.x, q.y, q.z, q.w = quaternion
        v = world_to_body(quaternion, (state.vx, state.vy, state.vz))
        lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
        lin.x, lin.y, lin.z = v
        ang.x, ang.y, ang.z = state.roll_rate, state.pitch_rate, state.yaw_rate
        self._truth_pub.publish(msg)

    def _publish_camera_info(self, t):
        width, height, fov = self._camera_geometry
        msg = self._msgs['CameraInfo']()
        self._stamp(msg.header, t)
        msg.header.frame_id = CAMERA_FRAME
        msg.width, msg.height = int(width), int(height)
        f = width / (2.0 * math.tan(fov / 2.0))  # Webots' fieldOfView is horizontal
        cx, cy = width / 2.0, height / 2.0
        msg.distortion_model = 'plumb_bob'
        msg.d = [0.0] * 5
        msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        self._camera_info_pub.publish(msg)
