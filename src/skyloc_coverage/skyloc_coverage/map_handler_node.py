"""Node `map_handler`: LaserScan + pose -> occupancy grid (/map), its inflation, its changes.

Subscribes /scan (sensor_msgs/LaserScan, base_link, horizontal) and the vehicle pose
(nav_msgs/Odometry on `pose_topic`: /skyloc/odometry for the drone, /odom for the ground
robot). Publishes /map (static layer + LIDAR obstacles; reliable, transient local),
/map/inflated (obstacles grown by `radius`), /map/changes (skyloc_interfaces/MapChange: which
cells changed since the previous /map) and /diagnostics.
"""

from collections import deque
import math
import os
import time

from diagnostic_msgs.msg import DiagnosticStatus
from nav_msgs.msg import Odometry, OccupancyGrid
import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import LaserScan
from skyloc_interfaces.msg import MapChange
from skyloc_sim.node_main import declare_parameters, run_node, workspace_path

from skyloc_coverage.grid import GridMap, inflate, load_map, MapError, UNKNOWN
from skyloc_coverage.mapping import OccupancyMapper
from skyloc_coverage.ros_common import (checked_pose, Diagnostics, grid_to_msg, LATCHED,
                                        POSE_QOS, stamp_seconds)

PARAMETERS = [
    ('static_map', '', 'Nav2 map_server YAML of known obstacles (static layer); relative '
     'paths from the workspace root. Empty: no static layer, the grid is size_m at origin'),
    ('static_map_wait_s', 30.0, 'How long to wait for a static map file that does not exist '
     'yet (a simulator writing it), s'),
    ('resolution', 0.5, 'Cell size when there is no static map, m'),
    ('size_m', [400.0, 400.0], 'Grid width, height when there is no static map, m'),
    ('origin', [-200.0, -200.0], 'Map-frame (x, y) of the grid lower-left corner when there '
     'is no static map, m'),
    ('pose_topic', '/skyloc/odometry', 'nav_msgs/Odometry of the vehicle in the map frame '
     '(/odom for the ground robot)'),
    ('scan_topic', '/scan', 'sensor_msgs/LaserScan, horizontal, in base_link'),
    ('radius', 0.2, 'Vehicle radius: obstacles are inflated by it on /map/inflated, m'),
    ('decay_s', 120.0, 'Time constant of the dynamic layer: an obstacle no longer seen fades '
     'to unknown, s (0: never)'),
    ('static_match_m', 0.3, 'LIDAR returns this close to a static-map obstacle are that '
     'obstacle (seen from a drifted pose), not a new one, m'),
    ('obstacle_max_range_m', 0.0, 'Returns farther than this do not mark obstacles (a '
     'heading error moves them by range x error); 0: the sensor range_max, m'),
    ('raytrace_max_range_m', 0.0, 'Free space is cleared up to this range; 0: range_max, m'),
    ('max_pose_age_s', 0.06, 'A scan is used only with poses this close around its stamp '
     '(interpolated between them), s'),
    ('min_scan_altitude_m', 0.0, 'Scans taken lower than this (pose z, m above the start) are '
     'not integrated: a drone maps obstacles at its survey altitude, not the houses and trees '
     'its LIDAR sweeps during take-off and landing, which it clears vertically. 0: every scan'),
    ('scan_timeout_s', 2.0, 'No /scan for this long after the first one (LIDAR dropout, '
     'driver down): WARN on /diagnostics, obstacles are not being mapped, s (sim time)'),
    ('max_scan_rate', 5.0, 'Most scans integrated per second of scan time, Hz (the rest are '
     'dropped; ray tracing costs CPU)'),
    ('publish_rate', 2.0, 'Most /map messages per second (only when something changed), Hz'),
    ('max_cells', 5000, 'Most cell indices listed in one /map/changes message'),
]


class MapHandlerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('map_handler', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        self.diag = Diagnostics(self, 'map_handler: occupancy grid')
        self.mapper = None
        self.dirty = True
        self.stats = {'scans': 0, 'skipped': 0, 'throttled': 0, 'maps': 0, 'occupied': 0,
                      'low': 0}
        self.scans = deque(maxlen=20)
        self.last_scan_t = -math.inf
        self.last_scan_rx = None      # node-clock seconds of the last /scan received
        self.static_error = ''
        self._static_deadline = None
        if p['static_map'] and not self._load_static(final=False):
            self._static_deadline = time.monotonic() + float(p['static_map_wait_s'])
            self.get_logger().info(f"waiting up to {p['static_map_wait_s']:g} s for the static "
                                   f"map {p['static_map']}")
            self._static_timer = self.create_timer(
                1.0, self._retry_static, clock=Clock(clock_type=ClockType.STEADY_TIME))
        elif not p['static_map']:
            self._empty_grid()
        self.poses = deque(maxlen=400)
        self.pending_occ = np.zeros(0, np.int64)
        self.pending_free = np.zeros(0, np.int64)
        self.dirty = True
        self.create_subscription(Odometry, p['pose_topic'], self._on_pose,
                                 POSE_QOS)
        self.create_subscription(LaserScan, p['scan_topic'], self._on_scan,
                                 qos_profile_sensor_data)
        self.map_pub = self.create_publisher(OccupancyGrid, '/map', LATCHED)
        self.inflated_pub = self.create_publisher(OccupancyGrid, '/map/inflated', LATCHED)
        self.change_pub = self.create_publisher(MapChange, '/map/changes', 10)
        rate = max(0.1, float(p['publish_rate']))
        self.create_timer(1.0 / rate, self._publish_map)
        self.create_timer(1.0, self._publish_diagnostics)

    def _load_static(self, final):
        """Load the static layer; False while the file does not exist yet (not final)."""
        p = self.cfg
        path = workspace_path(p['static_map'])
        if not final and not os.path.exists(path):
            return False
        try:
            static = load_map(path)
        except MapError as exc:
            self.static_error = f'static map not loaded, mapping without it: {exc}'
            self.get_logger().error(self.static_error)
            self._empty_grid()
            return True
        self.mapper = OccupancyMapper.from_static(static, static_match_m=float(
            p['static_match_m']), **self._mapper_options())
        self.dirty = True
        self.get_logger().info(f"static map {p['static_map']}: {static.width}x"
                               f'{static.height} cells at {static.resolution:g} m')
        return True

    def _mapper_options(self):
        p = self.cfg
        return {'decay_s': float(p['decay_s']),
                'obstacle_max_range': float(p['obstacle_max_range_m']),
                'raytrace_max_range': float(p['raytrace_max_range_m'])}

    def _retry_static(self):
        final = time.monotonic() > self._static_deadline
        if self._load_static(final):
            self._static_timer.cancel()

    def _empty_grid(self):
        p = self.cfg
        res = float(p['resolution'])
        size = [float(v) for v in p['size_m']]
        if res <= 0 or len(size) != 2 or min(size) <= 0:
            raise ValueError(f'resolution {res} and size_m {size} must be positive')
        shape = (int(math.ceil(size[1] / res)), int(math.ceil(size[0] / res)))
        self.mapper = OccupancyMapper(shape, res, tuple(p['origin'][:2]),
                                      **self._mapper_options())
        self.dirty = True
        self.get_logger().info(f'no static map: {shape[1]}x{shape[0]} cells at {res:g} m '
                               f"from origin {tuple(p['origin'][:2])}")

    def _on_pose(self, msg):
        pose = checked_pose(self, self.diag, msg)
        if pose is None:
            return
        t = stamp_seconds(msg.header.stamp)
        if self.poses and t < self.poses[-1][0]:
            return          # out of order (best effort): keep the history sorted
        self.poses.append((t, pose))
        if self.scans and self.mapper is not None:
            self._process_scans()

    def _pose_at(self, t):
        """Pose interpolated at stamp t between the poses around it; (pose, gap s)."""
        if not self.poses:
            return None, math.inf
        stamps = np.fromiter((s for s, _ in self.poses), float, len(self.poses))
        k = int(np.searchsorted(stamps, t))
        if 0 < k < len(stamps):
            (t0, p0), (t1, p1) = self.poses[k - 1], self.poses[k]
            u = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
            dyaw = (p1[3] - p0[3] + math.pi) % (2 * math.pi) - math.pi
            pose = tuple(a + u * (b - a) for a, b in zip(p0[:3], p1[:3])) + (p0[3] + u * dyaw,)
            return pose, max(t - t0, t1 - t)
        i = 0 if k == 0 else len(stamps) - 1
        return self.poses[i][1], abs(stamps[i] - t)

    def _skip(self, text):
        self.stats['skipped'] += 1
        self.diag.problem_seen(text)
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _on_scan(self, msg):
        self.last_scan_rx = self.get_clock().now().nanoseconds * 1e-9
        if self.mapper is None:
            self._skip('scan skipped: waiting for the static map')
            return
        n = len(msg.ranges)
        if n == 0 or not math.isfinite(msg.angle_increment) or msg.angle_increment == 0:
            self._skip(f'scan skipped: {n} ranges, angle_increment {msg.angle_increment}')
            return
        if not (math.isfinite(msg.range_max) and msg.range_max > max(0.0, msg.range_min)):
            self._skip(f'scan skipped: range_min {msg.range_min}, range_max {msg.range_max}')
            return
        t = stamp_seconds(msg.header.stamp)
        if t - self.last_scan_t < 1.0 / max(0.1, float(self.cfg['max_scan_rate'])):
            self.stats['throttled'] += 1
            return
        self.last_scan_t = t
        self.scans.append((t, msg))
        self._process_scans()

    def _process_scans(self):
        """Integrate the buffered scans that have a pose after their stamp (interpolated)."""
        newest = self.poses[-1][0] if self.poses else -math.inf
        while self.scans and self.scans[0][0] <= newest:
            t, msg = self.scans.popleft()
            pose, gap = self._pose_at(t)
            if pose is None or gap > float(self.cfg['max_pose_age_s']):
                self._skip(f"scan skipped: no pose within {self.cfg['max_pose_age_s']} s of "
                           f'its stamp (nearest {gap:.2f} s)')
                continue
            floor = float(self.cfg['min_scan_altitude_m'])
            if floor > 0 and pose[2] < floor:
                self.stats['low'] += 1       # expected (take-off, landing): not a problem
                continue
            self._integrate(t, msg, pose)
        while self.scans and self.scans[0][0] < newest - 2.0:
            self.scans.popleft()
            self._skip('scan skipped: no pose after it for 2 s')

    def _integrate(self, t, msg, pose):
        n = len(msg.ranges)
        angles = msg.angle_min + msg.angle_increment * np.arange(n)
        new_occ, new_free, used = self.mapper.integrate(
            pose[0], pose[1], pose[3], angles, np.asarray(msg.ranges, np.float64),
            float(msg.range_min), float(msg.range_max), stamp_s=t)
        self.stats['scans'] += 1
        if used == 0:
            self.diag.problem_seen('scan with no usable range (all NaN/-inf/below range_min)')
        if len(new_occ) or len(new_free):
            self.pending_occ = np.union1d(self.pending_occ, new_occ)
            self.pending_free = np.union1d(self.pending_free, new_free)
            self.dirty = True

    def _publish_map(self):
        if self.static_error:
            self.diag.problem_seen(self.static_error, DiagnosticStatus.ERROR)
        if not self.dirty or self.mapper is None:
            return
        self.dirty = False
        stamp = self.get_clock().now().to_msg()
        m = self.mapper
        data = m.occupancy()
        self.map_pub.publish(grid_to_msg(data, m.resolution, m.origin, stamp))
        occupied = data >= 50
        inflated = np.where(inflate(occupied, m.resolution, float(self.cfg['radius'])),
                            100, data).astype(np.int8)
        inflated[(inflated == UNKNOWN) & occupied] = 100
        self.inflated_pub.publish(grid_to_msg(inflated, m.resolution, m.origin, stamp))
        self.stats['maps'] += 1
        self.stats['occupied'] = int(occupied.sum())
        occ, free = self.pending_occ, self.pending_free
        self.pending_occ = np.zeros(0, np.int64)
        self.pending_free = np.zeros(0, np.int64)
        change = MapChange()
        change.header.stamp = stamp
        change.header.frame_id = 'map'
        change.newly_occupied, change.newly_free = len(occ), len(free)
        changed = np.concatenate([occ, free])
        if len(changed):
            w = m.shape[1]
            rows, cols = changed // w, changed % w
            change.min_x = m.origin[0] + float(cols.min()) * m.resolution
            change.max_x = m.origin[0] + float(cols.max() + 1) * m.resolution
            change.min_y = m.origin[1] + float(rows.min()) * m.resolution
            change.max_y = m.origin[1] + float(rows.max() + 1) * m.resolution
            change.occupied_cells = occ[:int(self.cfg['max_cells'])].astype(np.uint32).tolist()
            if len(occ):
                self.get_logger().info(
                    f'{len(occ)} cells newly occupied in x [{change.min_x:.1f}, '
                    f'{change.max_x:.1f}] y [{change.min_y:.1f}, {change.max_y:.1f}]')
        self.change_pub.publish(change)

    def _scan_silence(self):
        """Seconds since the last /scan when that is more than scan_timeout_s, else None
        (also None before the first scan: a graph without a LIDAR is not an error)."""
        if self.last_scan_rx is None or float(self.cfg['scan_timeout_s']) <= 0:
            return None
        silent = self.get_clock().now().nanoseconds * 1e-9 - self.last_scan_rx
        return silent if silent > float(self.cfg['scan_timeout_s']) else None

    def grid_map(self):
        return GridMap(self.mapper.occupancy(), self.mapper.resolution, self.mapper.origin)

    def _publish_diagnostics(self):
        if self.mapper is None:
            self.diag.publish('waiting for the static map', {'static_map': self.cfg['static_map']})
            return
        s = self.stats
        silent = self._scan_silence()
        if silent is not None:
            text = (f"no {self.cfg['scan_topic']} for {silent:.1f} s (LIDAR dropout?): "
                    'obstacles are not being mapped')
            self.diag.problem_seen(text)
            self.get_logger().warning(text, throttle_duration_sec=5.0)
        self.diag.publish(f"{s['scans']} scans, {s['occupied']} occupied cells",
                          {'scans_used': s['scans'], 'scans_skipped': s['skipped'],
                           'scans_throttled': s['throttled'],
                           'scans_below_min_altitude': s['low'],
                           'maps_published': s['maps'], 'occupied_cells': s['occupied'],
                           'grid': f'{self.mapper.shape[1]}x{self.mapper.shape[0]} @ '
                                   f'{self.mapper.resolution:g} m'})


NODE_CLASS = MapHandlerNode


def main(args=None):
    run_node(MapHandlerNode, args, startup_errors=(ValueError, MapError))


if __name__ == '__main__':
    main()
