"""Node `sim`: the built-in simulator on ROS 2 topics (topic contract in DESIGN.md).

Publishes /camera/image_raw + /camera/camera_info, /imu/data, /baro, /scan, /battery,
/sim/ground_truth, /odom (ground robot), /clock and /diagnostics; follows /cmd_vel; takes
runtime events on the service ~/event (skyloc_interfaces/SimEvent) and from the `events`
parameter ("t_s name args..."). Simulated time runs in its own thread at `rate` x real time.
"""

from dataclasses import dataclass
import math
import os
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import BatteryState, CameraInfo, FluidPressure, Image, Imu, LaserScan
from skyloc_interfaces.srv import SimEvent

from skyloc_sim.geo import MapError
from skyloc_sim.graph import workspace_root
from skyloc_sim.node_main import declare_parameters, run_node
from skyloc_sim.sensors import BaroConfig, BatteryConfig, ImuConfig, LidarConfig
from skyloc_sim.simulation import parse_event_line, SimConfig, Simulation
from skyloc_sim.vehicle import Limits
from skyloc_sim.world import load_world, procedural_world, real_satellite_world, room_world

PARAMETERS = [
    # name, default, description
    ('world', 'procedural', "World: 'procedural' (generated and cached), 'room' (ground robot), "
     "'real_satellite' (../shared/data/real_satellite) or the path of a world/map YAML "
     '(image, resolution, origin, datum[, heights])'),
    ('world_seed', 7, 'Seed of the procedural world / room'),
    ('world_size_m', 1200.0, 'Side of the procedural world, metres'),
    ('room_size_m', [12.0, 9.0], "Width and depth of the 'room' world, metres"),
    ('world_resolution', 0.5, 'Metres per pixel of the procedural orthophoto'),
    ('world_cache_dir', '.cache/worlds', 'Where generated worlds are cached (relative: to the '
     'workspace root)'),
    ('condition', 'summer', "Appearance the camera sees: map, summer, autumn, winter, evening, "
     "haze (the database is built from 'map')"),
    ('condition_seed', 1, 'Seed of the appearance change of a real-image world'),
    ('vehicle', 'multirotor', "'multirotor' (drone) or 'ground' (robot with wheel odometry)"),
    ('rate', 1.0, 'Simulated seconds per wall-clock second (faster than real time if > 1)'),
    ('start', [0.0, 0.0, 0.0, math.pi / 2], 'Start pose x, y, z (m, map frame), yaw (rad, '
     'REP 103)'),
    ('max_speed', 12.0, 'Horizontal speed limit, m/s (commands are clamped)'),
    ('max_vertical_speed', 4.0, 'Vertical speed limit, m/s'),
    ('max_accel', 4.0, 'Acceleration limit, m/s^2'),
    ('max_yaw_rate', 1.0, 'Yaw-rate limit, rad/s'),
    ('wind', [0.0, 0.0], 'Mean wind east, north, m/s (pushes the drone: no GNSS to cancel it)'),
    ('wind_gust_std', 0.0, 'Gust standard deviation, m/s'),
    ('camera_width', 640, 'Camera image width, px'),
    ('camera_height', 480, 'Camera image height, px'),
    ('camera_hfov_deg', 90.0, 'Camera horizontal field of view, degrees'),
    ('camera_rate', 5.0, 'Camera rate, Hz'),
    ('camera_gimbal', True, 'Gimbal-stabilised nadir camera; false: fixed mount, tilts with '
     'the vehicle'),
    ('camera_noise', 3.0, 'Camera pixel noise standard deviation, 8-bit levels'),
    ('imu_rate', 100.0, 'IMU rate and physics step rate, Hz'),
    ('imu_yaw_bias_deg', 2.0, 'Constant heading error of the IMU orientation, degrees'),
    ('baro_rate', 20.0, 'Barometer rate, Hz'),
    ('baro_noise_pa', 3.0, 'Barometer white noise, Pa (1 Pa is about 8 cm)'),
    ('scan_rate', 10.0, 'LIDAR rate, Hz'),
    ('lidar_beams', 360, 'LIDAR beams per revolution'),
    ('lidar_range_max', 100.0, 'LIDAR maximum range, m'),
    ('battery_capacity_wh', 90.0, 'Battery capacity, Wh'),
    ('seed', 0, 'Seed of all sensor noise'),
    ('events', [''], "Scheduled events 't_s name args...', e.g. '120 add_obstacle 150 40 160 "
     "4' (names as skyloc_interfaces/srv/SimEvent)"),
]


@dataclass
class Publishers:
    image: object
    info: object
    imu: object
    baro: object
    scan: object
    battery: object
    truth: object
    odom: object
    clock: object
    diag: object


class SimNode(Node):
    """The built-in simulator as a ROS 2 node."""

    def __init__(self, **kwargs):
        super().__init__('sim', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        if self.get_parameter('use_sim_time').value:
            # the simulator is the clock: it never waits for /clock itself
            self.set_parameters([Parameter('use_sim_time', Parameter.Type.BOOL, False)])
        self.rate = float(p['rate'])
        if not self.rate > 0:
            raise ValueError(f"parameter 'rate' must be positive, got {self.rate}")
        self.world = self._load_world(p)
        cfg = SimConfig(
            vehicle=p['vehicle'], start=tuple(p['start']) + (0.0,) * (4 - len(p['start'])),
            limits=Limits(p['max_speed'], p['max_vertical_speed'], p['max_accel'],
                          p['max_yaw_rate']),
            wind=tuple(p['wind']), wind_gust_std=p['wind_gust_std'],
            camera_width=p['camera_width'], camera_height=p['camera_height'],
            camera_hfov_deg=p['camera_hfov_deg'], camera_rate=p['camera_rate'],
            camera_gimbal=p['camera_gimbal'], camera_noise=p['camera_noise'],
            imu=ImuConfig(rate=p['imu_rate'], yaw_bias_deg=p['imu_yaw_bias_deg']),
            baro=BaroConfig(rate=p['baro_rate'], noise_pa=p['baro_noise_pa']),
            lidar=LidarConfig(rate=p['scan_rate'], beams=p['lidar_beams'],
                              range_max=p['lidar_range_max'] if p['vehicle'] != 'ground'
                              else min(p['lidar_range_max'], 12.0),
                              range_min=0.3 if p['vehicle'] != 'ground' else 0.12),
            battery=BatteryConfig(capacity_wh=p['battery_capacity_wh']), seed=p['seed'])
        if self.world.kind == 'room' and cfg.vehicle != 'ground':
            self.get_logger().warning("room world: switching vehicle to 'ground'")
            cfg.vehicle = 'ground'
        for name, value in (('camera_rate', cfg.camera_rate), ('imu_rate', cfg.imu.rate),
                            ('baro_rate', cfg.baro.rate), ('scan_rate', cfg.lidar.rate)):
            if not value > 0:
                raise ValueError(f"parameter '{name}' must be positive, got {value}")
        orthophoto = self.world.camera_image(p['condition'], p['condition_seed'])
        self.sim = Simulation(self.world, orthophoto, cfg)
        self.schedule = sorted(parse_event_line(e) for e in p['events'] if str(e).strip())
        self.lock = threading.Lock()
        self.warned = {}
        self.stats = {'steps': 0, 'late_steps': 0, 'images': 0, 'render_ms': 0.0,
                      'ignored_cmds': 0, 'clamped_cmds': 0}
        self.pubs = self._make_publishers()
        self.create_subscription(Twist, '/cmd_vel', self._on_cmd_vel, 10)
        self.create_service(SimEvent, '~/event', self._on_event)
        self.create_timer(1.0, self._publish_diagnostics)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name='sim-loop', daemon=True)
        x, y, z, yaw = cfg.start
        self.get_logger().info(
            f"world {self.world.meta.yaml_path} ({self.world.grid.size_m[0]:.0f} x "
            f"{self.world.grid.size_m[1]:.0f} m at {self.world.grid.resolution} m/px), camera "
            f"condition '{p['condition']}', vehicle {cfg.vehicle} at ({x:.1f}, {y:.1f}, {z:.1f}) "
            f'yaw {math.degrees(yaw):.0f} deg, rate {self.rate:g}x, {len(self.schedule)} '
            'scheduled events')
        self.thread.start()

    def _load_world(self, p):
        world = str(p['world'])
        cache = p['world_cache_dir']
        if not os.path.isabs(cache):
            try:
                cache = os.path.join(workspace_root(), cache)
            except ValueError:
                cache = os.path.abspath(cache)
        if world == 'procedural':
            path = procedural_world(cache, p['world_seed'], p['world_size_m'],
                                    p['world_resolution'],
                                    conditions=sorted({'summer', p['condition']} - {'map'}),
                                    log=self.get_logger().info)
        elif world == 'room':
            size = [float(v) for v in p['room_size_m']]
            path = room_world(cache, p['world_seed'], size[0], size[1])
        elif world == 'real_satellite':
            path = real_satellite_world(cache)
        else:
            path = world
        try:
            return load_world(path)
        except MapError as exc:
            self.get_logger().fatal(str(exc))
            raise

    def _make_publishers(self):
        s = qos_profile_sensor_data
        return Publishers(
            image=self.create_publisher(Image, '/camera/image_raw', s),
            info=self.create_publisher(CameraInfo, '/camera/camera_info', s),
            imu=self.create_publisher(Imu, '/imu/data', s),
            baro=self.create_publisher(FluidPressure, '/baro', s),
            scan=self.create_publisher(LaserScan, '/scan', s),
            battery=self.create_publisher(BatteryState, '/battery', s),
            # deep history: a busy recorder or report must not lose reliable ground truth
            truth=self.create_publisher(Odometry, '/sim/ground_truth', 200),
            odom=self.create_publisher(Odometry, '/odom', s)
            if self.sim.cfg.vehicle == 'ground' else None,
            clock=self.create_publisher(Clock, '/clock', 10),
            diag=self.create_publisher(DiagnosticArray, '/diagnostics', 10))

    def _warn_once_per(self, key, text, period=5.0):
        now = time.monotonic()
        if now - self.warned.get(key, -1e9) >= period:
            self.warned[key] = now
            self.get_logger().warning(text)

    def _on_cmd_vel(self, msg):
        with self.lock:
            result = self.sim.set_command(msg.linear.x, msg.linear.y, msg.linear.z,
                                          msg.angular.z)
        if result == 'ignored':
            self.stats['ignored_cmds'] += 1
            self._warn_once_per('nan', '/cmd_vel with NaN/inf ignored (keeping the last '
                                'command)')
        elif result == 'clamped':
            self.stats['clamped_cmds'] += 1
            self._warn_once_per('clamp', '/cmd_vel beyond the limits: clamped')

    def _on_event(self, request, response):
        with self.lock:
            response.success, response.message = self.sim.apply_event(request.name,
                                                                      list(request.args))
        # rclpy ties a severity to a call site: one call per severity
        if response.success:
            self.get_logger().info(f'event {request.name}: {response.message}')
        else:
            self.get_logger().warning(f'event {request.name} refused: {response.message}')
        return response

    def _run(self):
        wall0 = time.monotonic()
        while not self._stop.is_set() and rclpy.ok(context=self.context):
            with self.lock:
                while self.schedule and self.schedule[0][0] <= self.sim.t:
                    t, name, args = self.schedule.pop(0)
                    ok, message = self.sim.apply_event(name, args)
                    self.get_logger().info(f'scheduled event at {t:g} s: {name}: {message}')
                t0 = time.perf_counter()
                samples = self.sim.step()
                if samples.image is not None and not isinstance(samples.image, str):
                    self.stats['render_ms'] += (time.perf_counter() - t0) * 1e3
                    self.stats['images'] += 1
                truth = self._truth_state()
            try:
                self._publish(samples, truth)
            except Exception as exc:  # a publisher torn down during shutdown
                if not rclpy.ok(context=self.context):
                    break
                self.get_logger().error(f'publish failed: {exc}')
            self.stats['steps'] += 1
            delay = wall0 + samples.t / self.rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -0.05:
                self.stats['late_steps'] += 1

    def _truth_state(self):
        v = self.sim.vehicle
        return (v.position.copy(), v.velocity.copy(), v.yaw, v.roll, v.pitch,
                v.yaw_rate, getattr(v, 'odom_pose', None), getattr(v, 'odom_twist', None))

    def _stamp(self, t):
        sec = int(t)
        return sec, int(round((t - sec) * 1e9))

    def _header(self, msg, t, frame):
        msg.header.stamp.sec, msg.header.stamp.nanosec = self._stamp(t)
        msg.header.frame_id = frame

    def _publish(self, s, truth):
        from skyloc_sim.sensors import quaternion_from_rpy
        pubs = self.pubs
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = self._stamp(s.t)
        pubs.clock.publish(clock)
        pos, vel, yaw, roll, pitch, yaw_rate, odom_pose, odom_twist = truth
        if s.imu is not None:
            imu = Imu()
            self._header(imu, s.t, 'base_link')
            if s.imu == 'nan':
                q, gyro, accel = (math.nan,) * 4, (math.nan,) * 3, (math.nan,) * 3
            else:
                q, gyro, accel = s.imu
            imu.orientation.x, imu.orientation.y, imu.orientation.z, imu.orientation.w = \
                (float(c) for c in q)
            imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = \
                (float(c) for c in gyro)
            imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z = \
                (float(c) for c in accel)
            cfg = self.sim.cfg.imu
            att = math.radians(cfg.attitude_noise_deg) ** 2
            yaw_var = math.radians(cfg.yaw_noise_deg) ** 2 + math.radians(cfg.yaw_bias_deg) ** 2
            imu.orientation_covariance = [att, 0.0, 0.0, 0.0, att, 0.0, 0.0, 0.0, yaw_var]
            g = (cfg.gyro_noise_density ** 2) * cfg.rate
            a = (cfg.accel_noise_density ** 2) * cfg.rate
            imu.angular_velocity_covariance = [g, 0.0, 0.0, 0.0, g, 0.0, 0.0, 0.0, g]
            imu.linear_acceleration_covariance = [a, 0.0, 0.0, 0.0, a, 0.0, 0.0, 0.0, a]
            pubs.imu.publish(imu)
        if s.baro is not None:
            baro = FluidPressure()
            self._header(baro, s.t, 'base_link')
            baro.fluid_pressure = float(s.baro)
            baro.variance = float(self.sim.baro.variance)
            pubs.baro.publish(baro)
        if s.scan is not None and not isinstance(s.scan, str):
            lid = self.sim.lidar
            scan = LaserScan()
            self._header(scan, s.t, 'base_link')
            scan.angle_min = float(lid.angles[0])
            scan.angle_max = float(lid.angles[-1])
            scan.angle_increment = float(lid.angle_increment)
            scan.scan_time = 1.0 / lid.cfg.rate
            scan.range_min = float(lid.cfg.range_min)
            scan.range_max = float(lid.cfg.range_max)
            scan.ranges = s.scan.tolist()
            pubs.scan.publish(scan)
        if s.image is not None and not isinstance(s.image, str):
            self._publish_image(s.image, s.t)
        if s.battery:
            bat = self.sim.battery
            msg = BatteryState()
            self._header(msg, s.t, 'base_link')
            msg.voltage = float(bat.voltage)
            msg.percentage = float(bat.percentage)
            msg.charge = float(bat.energy_wh / bat.cfg.full_voltage)
            msg.capacity = msg.design_capacity = float(bat.cfg.capacity_wh / bat.cfg.full_voltage)
            msg.current = -float(getattr(bat, 'power_w', 0.0) / max(bat.voltage, 1.0))
            msg.power_supply_status = BatteryState.POWER_SUPPLY_STATUS_DISCHARGING
            msg.power_supply_technology = BatteryState.POWER_SUPPLY_TECHNOLOGY_LIPO
            msg.present = True
            pubs.battery.publish(msg)
        odo = Odometry()
        self._header(odo, s.t, 'map')
        odo.child_frame_id = 'base_link'
        p = odo.pose.pose
        p.position.x, p.position.y, p.position.z = (float(c) for c in pos)
        q = quaternion_from_rpy(roll, pitch, yaw)
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = q
        c, sn = math.cos(yaw), math.sin(yaw)
        odo.twist.twist.linear.x = float(c * vel[0] + sn * vel[1])
        odo.twist.twist.linear.y = float(-sn * vel[0] + c * vel[1])
        odo.twist.twist.linear.z = float(vel[2])
        odo.twist.twist.angular.z = float(yaw_rate)
        pubs.truth.publish(odo)
        if s.odom and odom_pose is not None:
            wheel = Odometry()
            self._header(wheel, s.t, 'odom')
            wheel.child_frame_id = 'base_link'
            wheel.pose.pose.position.x = float(odom_pose[0])
            wheel.pose.pose.position.y = float(odom_pose[1])
            q = quaternion_from_rpy(0.0, 0.0, float(odom_pose[2]))
            o = wheel.pose.pose.orientation
            o.x, o.y, o.z, o.w = q
            wheel.pose.covariance[0] = wheel.pose.covariance[7] = 0.01 + 0.01 * s.t
            wheel.pose.covariance[35] = 0.001 + 0.0005 * s.t
            wheel.twist.twist.linear.x = float(odom_twist[0])
            wheel.twist.twist.angular.z = float(odom_twist[1])
            pubs.odom.publish(wheel)

    def _publish_image(self, rgb, t):
        img = Image()
        self._header(img, t, 'camera_link')
        img.height, img.width = rgb.shape[:2]
        img.encoding = 'rgb8'
        img.step = img.width * 3
        img.data = np.ascontiguousarray(rgb).tobytes()
        self.pubs.image.publish(img)
        info = CameraInfo()
        self._header(info, t, 'camera_link')
        d = self.sim.camera.camera_info_dict()
        info.width, info.height = d['width'], d['height']
        info.distortion_model = 'plumb_bob'
        info.d, info.k, info.r, info.p = d['d'], d['k'], d['r'], d['p']
        self.pubs.info.publish(info)

    def _publish_diagnostics(self):
        st = self.stats
        sim_t = self.sim.t
        wall = time.monotonic()
        prev = getattr(self, '_diag_prev', None)
        self._diag_prev = (wall, sim_t)
        rtf = (sim_t - prev[1]) / (wall - prev[0]) if prev and wall > prev[0] else 0.0
        status = DiagnosticStatus(name='sim: simulator', hardware_id='skyloc_sim')
        late = st['late_steps'] / max(st['steps'], 1)
        ignored = st['ignored_cmds'] - getattr(self, '_diag_ignored', 0)
        self._diag_ignored = st['ignored_cmds']
        status.level = DiagnosticStatus.OK
        status.message = f'running at {rtf:.2f}x real time'
        if late >= 0.1:
            status.level = DiagnosticStatus.WARN
            status.message = f'falling behind: {100 * late:.0f}% of steps late (lower rate)'
        if ignored:
            status.level = DiagnosticStatus.WARN
            status.message = f'{ignored} /cmd_vel messages with NaN/inf ignored'
        values = {'sim_time_s': f'{sim_t:.2f}', 'real_time_factor': f'{rtf:.2f}',
                  'target_rate': f'{self.rate:g}', 'late_steps': st['late_steps'],
                  'camera_render_ms_mean': f"{st['render_ms'] / max(st['images'], 1):.1f}",
                  'ignored_cmd_vel': st['ignored_cmds'], 'clamped_cmd_vel': st['clamped_cmds'],
                  'battery_percentage': f'{100 * self.sim.battery.percentage:.1f}',
                  'events': len(self.sim.events_log)}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp.sec, msg.header.stamp.nanosec = self._stamp(sim_t)
        msg.status = [status]
        self.pubs.diag.publish(msg)

    def destroy_node(self):
        # also called by rclpy's context cleanup on a node whose __init__ failed
        if hasattr(self, 'thread'):
            self._stop.set()
            if self.thread.is_alive():
                self.thread.join(timeout=2.0)
        super().destroy_node()


NODE_CLASS = SimNode


def main(args=None):
    run_node(SimNode, args, startup_errors=(MapError, ValueError))
