"""Node `coverage`: /map + survey area -> coverage path, coverage grid, progress, replanning.

Subscribes /map (OccupancyGrid, transient local), /map/changes (MapChange) and the vehicle
pose (nav_msgs/Odometry on `pose_topic`). Plans once it has both; publishes /coverage/path
(nav_msgs/Path, map frame, transient local), /coverage/grid (OccupancyGrid: 100 swept, 0 still
to sweep, -1 outside the survey), /coverage/progress (std_msgs/Float32, percent) and
/diagnostics. When the map gains obstacles that touch the remaining path, only the uncovered
remainder is replanned, from the current pose. When the vehicle reaches the end of the path
with less than `mop_up_goal_percent` swept (odometry drift, a skipped waypoint, a strip the
follower cut), the uncovered remainder is planned again from there: a mop-up pass, at most
`max_mop_ups` of them, none once nothing reachable is left.
"""

import math
import time

from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, OccupancyGrid, Path
import numpy as np
from rclpy.node import Node
from skyloc_interfaces.msg import MapChange
from skyloc_sim.node_main import declare_parameters, run_node, workspace_path
from std_msgs.msg import Float32

from skyloc_coverage import gridpath
from skyloc_coverage.grid import MapError, polygon_mask
from skyloc_coverage.planner import CoveragePlanner, PlanningError
from skyloc_coverage.ros_common import (checked_pose, Diagnostics, grid_from_msg,
                                        grid_to_msg, LATCHED, POSE_QOS)
from skyloc_coverage.tracking import at_path_end, CoverageTracker, mop_up_decision

PARAMETERS = [
    ('swath_width', 0.0, 'Swept width of one lane, m (ground robot: the tool width). 0: from '
     'the camera footprint, 2 * altitude * tan(hfov / 2) * (1 - side_overlap)'),
    ('altitude', 100.0, 'Survey altitude above ground for the camera footprint, m'),
    ('camera_hfov_deg', 90.0, 'Camera horizontal field of view for the footprint, degrees'),
    ('side_overlap', 0.3, 'Fraction of the camera footprint shared by neighbouring lanes'),
    ('radius', 0.2, 'Vehicle radius: obstacles are inflated by it, m'),
    ('area', [0.0], 'Survey polygon in the map frame, flat [x0, y0, x1, y1, ...] m; fewer than '
     '3 points: the whole map'),
    ('area_latlon', [0.0], 'Survey polygon in WGS84, flat [lat0, lon0, ...]; needs '
     'map_yaml (its datum); used instead of area when it has 3 points or more'),
    ('no_fly', [''], "No-fly polygons inside the area, each 'x0,y0,x1,y1,...' in the map "
     'frame, m'),
    ('map_yaml', '', 'Georeferenced map YAML whose datum converts area_latlon'),
    ('pose_topic', '/skyloc/odometry', 'nav_msgs/Odometry of the vehicle in the map frame'),
    ('unknown_is_free', True, 'Plan through cells the map has not observed yet'),
    ('directions', [0.0, 90.0], 'Sweep directions tried, degrees from the map x axis (0 = lanes '
     'along x, 90 = along y, any other angle on the grid turned by it); the cheapest plan '
     '(length + a turn cost) is kept'),
    ('edge_directions', True, 'Also try lanes along and across the longest sides of the '
     "area's outline (a field that is not aligned with the map axes)"),
    ('replan', True, 'Replan the remainder when new obstacles touch the remaining path'),
    ('min_new_cells', 2, 'A /map/changes message with fewer newly occupied cells (LIDAR noise) '
     'does not trigger a replan check'),
    ('min_replan_interval_s', 2.0, 'Fewest seconds between two replans (changes in between '
     'are checked after it)'),
    ('coverage_goal_percent', 99.0, 'Progress at which the survey counts as complete'),
    ('mop_up_goal_percent', 99.5, 'At the end of the path with less progress than this, the '
     'uncovered remainder is planned again from the current pose (a mop-up pass)'),
    ('max_mop_ups', 3, 'Most mop-up passes in one survey (0: none)'),
    ('mop_up_squeeze', 0.5, 'When the uncovered remainder is cut off from the vehicle with '
     'the full radius (inflated LIDAR noise seen from a drifted pose can close a passage), a '
     'mop-up pass plans with this fraction of the radius; 1: never'),
    ('path_end_tolerance_m', 0.15, 'The vehicle has reached the end of the path on its last '
     'segment within this distance of the last waypoint, m'),
    ('path_end_idle_s', 10.0, 'Or when, having moved since the path was published, it has '
     'stood still this long anywhere (the follower gave up the waypoints left), s'),
    ('grid_rate', 1.0, 'How often /coverage/grid and /coverage/progress are published, Hz'),
]


def _polygon(flat, what):
    values = [float(v) for v in flat]
    if len(values) % 2 or any(not math.isfinite(v) for v in values):
        raise ValueError(f'{what}: expected an even number of finite values, got {flat}')
    return np.asarray(values).reshape(-1, 2)


class CoverageNode(Node):
    def __init__(self, **kwargs):
        super().__init__('coverage', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        width = float(p['swath_width'])
        if width <= 0:
            width = (2.0 * float(p['altitude']) * math.tan(math.radians(p['camera_hfov_deg']) / 2)
                     * (1.0 - float(p['side_overlap'])))
        self.planner = CoveragePlanner(width, float(p['radius']),
                                       unknown_is_free=bool(p['unknown_is_free']),
                                       directions=tuple(p['directions']),
                                       edge_directions=bool(p['edge_directions']))
        self.area, self.no_fly = self._survey_polygons(p)
        self.diag = Diagnostics(self, 'coverage: planner')
        self.grid = None
        self.pose = None
        self.plan = None
        self.active_planner, self.active_mop_up = self.planner, False   # of self.plan
        self.path_cells = None       # plan in cell coordinates, for checks against new maps
        self.progress_index = 0
        self.tracker = None
        self.replans = []
        self.pending_change = ''
        self.last_replan = -float('inf')
        self.goal_reached = False
        self.mop_ups = 0
        self.end_handled = False     # the end of the current path was reached and acted on
        self.still_since = None      # (time, x, y): where the vehicle has stood since when
        self.moved = False           # whether it has moved since the path was published
        self.last_error = ''
        self.create_subscription(OccupancyGrid, '/map', self._on_map, LATCHED)
        self.create_subscription(MapChange, '/map/changes', self._on_change, 10)
        self.create_subscription(Odometry, p['pose_topic'], self._on_pose,
                                 POSE_QOS)
        self.path_pub = self.create_publisher(Path, '/coverage/path', LATCHED)
        self.grid_pub = self.create_publisher(OccupancyGrid, '/coverage/grid', LATCHED)
        self.progress_pub = self.create_publisher(Float32, '/coverage/progress', 10)
        self.create_timer(1.0 / max(0.1, float(p['grid_rate'])), self._publish_progress)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(0.5, self._retry_pending)
        self.create_timer(0.5, self._check_path_end)
        self.get_logger().info(f'swath {width:.2f} m, radius {p["radius"]:g} m; area: '
                               + (f'{len(self.area)}-point polygon' if self.area is not None
                                  else 'the whole map')
                               + f', {len(self.no_fly)} no-fly polygon(s); waiting for /map '
                               f"and {p['pose_topic']}")

    def _survey_polygons(self, p):
        area = None
        latlon = [float(v) for v in p['area_latlon']]
        if len(latlon) >= 6:
            from skyloc_sim.geo import latlon_to_map, load_map_yaml
            meta = load_map_yaml(workspace_path(p['map_yaml']), require_datum=True)
            pts = _polygon(latlon, 'area_latlon')
            area = np.array([latlon_to_map(lat, lon, meta.datum) for lat, lon in pts])
        elif len(p['area']) >= 6:
            area = _polygon(p['area'], 'area')
        no_fly = [_polygon(s.replace(',', ' ').split(), 'no_fly') for s in p['no_fly']
                  if s.strip()]
        for poly in no_fly:
            if len(poly) < 3:
                raise ValueError(f'no_fly polygon with {len(poly)} points: needs 3 or more')
        return area, no_fly

    # ------------------------------------------------------------------ inputs
    def _on_pose(self, msg):
        pose = checked_pose(self, self.diag, msg)
        if pose is None:
            return
        self.pose = pose
        now = self._now()
        if self.still_since is None or \
                math.hypot(pose[0] - self.still_since[1], pose[1] - self.still_since[2]) > 0.05:
            self.moved = self.moved or self.still_since is not None
            self.still_since = (now, pose[0], pose[1])
        if self.tracker is not None:
            self.tracker.update(pose[0], pose[1])
        if self.plan is None and self.grid is not None:
            self._plan('first plan')

    def _on_map(self, msg):
        try:
            grid = grid_from_msg(msg)
        except (ValueError, MapError) as exc:
            self._error(f'/map ignored: {exc}')
            return
        old = self.grid
        self.grid = grid
        if old is None or not old.same_frame(grid):
            self.area_mask = self._area_mask(grid)
            if self.tracker is not None:
                self.get_logger().warning('/map geometry changed: coverage tracking restarts')
            self.tracker = None
            self.plan = None
        if self.plan is None and self.pose is not None:
            self._plan('first plan')
        elif self.plan is not None and self.pending_change:
            self._check_remaining(self.pending_change)

    def _on_change(self, msg):
        if msg.newly_occupied >= int(self.cfg['min_new_cells']) and self.plan is not None:
            self.pending_change = f'{msg.newly_occupied} new obstacle cells'
            self._check_remaining(self.pending_change)

    def _retry_pending(self):
        if self.pending_change and self.plan is not None:
            self._check_remaining(self.pending_change)

    def _now(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def _area_mask(self, grid):
        mask = np.ones(grid.data.shape, bool) if self.area is None else \
            polygon_mask(grid, self.area)
        for poly in self.no_fly:
            mask &= ~polygon_mask(grid, poly)
        return mask

    def _error(self, text):
        self.last_error = text
        self.diag.problem_seen(text, DiagnosticStatus.ERROR)
        self.get_logger().error(text, throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ planning
    def _plan(self, why, replan=False, mop_up=False):
        """Plan (or replan, or with `mop_up` plan what the progress still misses); publish
        the path. False when nothing was published (a planning error, or no mop-up left)."""
        grid, pose = self.grid, self.pose
        start = (pose[0], pose[1])
        covered = None
        if self.tracker is not None:
            covered = self.tracker.covered
            # cells now under (inflated) obstacles are no longer a target; those only cut off
            # from the current pose stay one (a drifted pose, a passage that LIDAR noise
            # closes for a while), or the progress would jump to 100% in such a pocket
            blocked = self.planner.blocked(grid, self.area_mask)
            self.tracker.set_target(self.tracker.target & ~blocked)
        planner = self.planner
        try:
            if mop_up:   # exactly what the progress counts: the target's uncovered cells
                covered = covered | ~self.tracker.target
                plan = planner.replan(grid, start, covered=covered, area=self.area_mask)
                squeeze = float(self.cfg['mop_up_squeeze'])
                missing = int((~covered).sum())
                if 2 * int(plan.todo.sum()) < missing and squeeze < 1.0:   # mostly cut off
                    tight = CoveragePlanner(
                        planner.swath_width, planner.radius * max(0.0, squeeze),
                        unknown_is_free=planner.unknown_is_free, directions=planner.directions,
                        edge_directions=planner.edge_directions)
                    tight.last_direction = planner.last_direction
                    squeezed = tight.replan(grid, start, covered=covered, area=self.area_mask)
                    if squeezed.todo.sum() > plan.todo.sum():
                        planner, plan = tight, squeezed
                        why += (' (the rest is cut off with the full radius: planned with '
                                f'{tight.radius:.2f} m)')
            elif replan:   # the rest of the current plan: repaired when the change is local
                planner = self.active_planner
                if self.active_mop_up:
                    covered = covered | ~self.tracker.target
                plan = planner.replan(grid, start, covered=covered, area=self.area_mask,
                                      previous=self.plan.path[self.progress_index + 1:])
            else:
                plan = planner.plan(grid, start, area=self.area_mask, covered=covered)
        except (PlanningError, MapError) as exc:
            self._error(f'cannot plan ({why}): {exc}')
            return False
        for text in plan.warnings:
            self.diag.problem_seen(text)
            self.get_logger().warning(text)
        if self.tracker is None:
            self.tracker = CoverageTracker(grid.data.shape, grid.resolution, grid.origin,
                                           self.planner.swath_width, target=plan.todo)
            self.mop_ups = 0
            self.tracker.update(pose[0], pose[1])
        if mop_up and not plan.todo.any():
            t = self.tracker
            self.get_logger().warning(
                f'{why}: nothing reachable is left to sweep: progress stays at '
                f'{t.progress_percent:.1f}%, the {self._missing_m2():.2f} m^2 uncovered cannot '
                f"be reached from here (unreachable free area "
                f"{plan.metrics['unreachable_free_area_m2']:.2f} m^2)")
            return False
        self.plan = plan
        self.active_planner, self.active_mop_up = planner, mop_up
        self.end_handled = False
        self.still_since, self.moved = None, False
        res, origin = grid.resolution, np.asarray(grid.origin)
        self.path_cells = (plan.path - origin) / res
        self.progress_index = 0
        m = plan.metrics
        self.get_logger().info(
            f"{why}: {'repaired, ' if m.get('repaired') else ''}"
            f"{m['path_length_m']:.1f} m, {m['waypoints']} waypoints, {m['turns']} "
            f"turns, {m['cells']} cells, lanes at {m['direction_deg']:g} deg, area "
            f"{m['todo_area_m2']:.1f} m^2, planned in {1000 * m['planning_time_s']:.0f} ms")
        self._publish_path()
        return True

    def _missing_m2(self):
        """Area of the target still uncovered, m^2."""
        t = self.tracker
        return float((t.target & ~t.covered).sum()) * self.grid.resolution ** 2

    def _advance_progress(self):
        """Index of the path segment the vehicle is on (monotone, a short window ahead)."""
        if self.pose is None or self.path_cells is None or len(self.path_cells) < 2:
            return self.progress_index
        res, origin = self.grid.resolution, np.asarray(self.grid.origin)
        p = (np.array(self.pose[:2]) - origin) / res
        a = self.path_cells[self.progress_index:self.progress_index + 12]
        if len(a) >= 2:
            d = np.diff(a, axis=0)
            l2 = np.maximum((d * d).sum(axis=1), 1e-12)
            t = np.clip(((p - a[:-1]) * d).sum(axis=1) / l2, 0, 1)
            dist = np.hypot(*(a[:-1] + t[:, None] * d - p).T)
            self.progress_index += int(np.argmin(dist))
        return self.progress_index

    def _check_remaining(self, why):
        """Replan when newly occupied cells block the rest of the path (at most once every
        min_replan_interval_s; a change that arrives sooner is checked after it)."""
        if not self.cfg['replan'] or self.grid is None or self.end_handled or \
                (self.goal_reached and not self.mop_ups):
            return
        now = self._now()
        if now - self.last_replan < float(self.cfg['min_replan_interval_s']):
            return
        self.pending_change = ''
        i = self._advance_progress()
        grid = self.grid
        free = ~self.active_planner.blocked(grid, self.area_mask)
        rest = self.path_cells[i:]
        hit = [k for k in range(len(rest) - 1)
               if not gridpath.segment_free(free, rest[k], rest[k + 1])]
        if not hit:
            return
        t0 = time.perf_counter()
        self.last_replan = now
        if self._plan(f'replan ({why} on the remaining path)', replan=True):
            ms = 1000 * (time.perf_counter() - t0)
            self.replans.append({'time': self.get_clock().now().nanoseconds * 1e-9,
                                 'ms': round(ms, 1), 'why': why,
                                 'path_length_m': self.plan.metrics['path_length_m']})

    def _check_path_end(self):
        """At the end of the path with progress below mop_up_goal_percent: a mop-up pass
        over the uncovered remainder, from the current pose (at most max_mop_ups)."""
        if self.plan is None or self.tracker is None or self.pose is None or self.end_handled:
            return
        i = self._advance_progress()
        x, y = self.pose[:2]
        still_s = self._now() - self.still_since[0] if self.still_since and self.moved else 0.0
        if not at_path_end(self.plan.path, i, (x, y), float(self.cfg['path_end_tolerance_m']),
                           still_s, float(self.cfg['path_end_idle_s'])):
            return
        self.end_handled = True
        t = self.tracker
        limit = int(self.cfg['max_mop_ups'])
        again, why = mop_up_decision(t.progress_percent, float(self.cfg['mop_up_goal_percent']),
                                     self.mop_ups, limit)
        if not again:
            self.get_logger().info(f'end of the path at ({x:.2f}, {y:.2f}): {why}; done')
            return
        self.mop_ups += 1
        self.get_logger().info(
            f'end of the path at ({x:.2f}, {y:.2f}): {why}: mop-up pass {self.mop_ups} of '
            f'{limit} over the {self._missing_m2():.2f} m^2 still uncovered')
        self._plan(f'mop-up {self.mop_ups}/{limit}', mop_up=True)

    # ------------------------------------------------------------------ outputs
    def _publish_path(self):
        msg = Path()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = 'map'
        path = self.plan.path
        for k, (x, y) in enumerate(path):
            pose = PoseStamped()
            pose.header = msg.header
            pose.pose.position.x, pose.pose.position.y = float(x), float(y)
            nxt = path[min(k + 1, len(path) - 1)] - path[max(k - 1, 0)] if len(path) > 1 \
                else np.zeros(2)
            yaw = math.atan2(nxt[1], nxt[0])
            pose.pose.orientation.z, pose.pose.orientation.w = math.sin(yaw / 2), \
                math.cos(yaw / 2)
            msg.poses.append(pose)
        self.path_pub.publish(msg)

    def _publish_progress(self):
        if self.tracker is None:
            return
        t = self.tracker
        data = np.full(t.covered.shape, -1, np.int8)
        data[t.target] = 0
        data[t.covered & (t.target | self.area_mask)] = 100
        g = self.grid
        self.grid_pub.publish(grid_to_msg(data, g.resolution, g.origin,
                                          self.get_clock().now().to_msg()))
        progress = t.progress_percent
        self.progress_pub.publish(Float32(data=float(progress)))
        if not self.goal_reached and progress >= float(self.cfg['coverage_goal_percent']):
            self.goal_reached = True
            self.get_logger().info(f'coverage goal reached: {progress:.1f}% of '
                                   f'{t.target.sum() * g.resolution ** 2:.1f} m^2')

    def _publish_diagnostics(self):
        values = {'progress_percent': f'{self.tracker.progress_percent:.1f}'
                  if self.tracker else 'n/a', 'replans': len(self.replans),
                  'mop_ups': self.mop_ups, 'goal_reached': self.goal_reached}
        if self.plan is not None:
            m = self.plan.metrics
            keys = ('path_length_m', 'turns', 'planning_time_s', 'unreachable_free_area_m2')
            values.update({k: m[k] for k in keys})
            values['plan_radius_m'] = self.active_planner.radius
        if self.replans:
            values['last_replan_ms'] = self.replans[-1]['ms']
        state = ('waiting for /map and pose' if self.plan is None else
                 'coverage goal reached' if self.goal_reached else
                 'mopping up' if self.mop_ups else 'covering')
        self.diag.publish(state, values)


NODE_CLASS = CoverageNode


def main(args=None):
    run_node(CoverageNode, args, startup_errors=(ValueError, MapError))


if __name__ == '__main__':
    main()
