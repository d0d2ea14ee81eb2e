"""Complete-coverage planning: boustrophedon cellular decomposition on an inflated grid.

The plan, for one sweep direction (lanes along grid rows; lanes along columns are the same
computation on the transposed grid, lanes at any other angle on the grid turned by it, see
step 7):

1. Where the vehicle centre may go (``free``): obstacles inflated by the vehicle radius, the
   survey area, the component reachable from the start. What must be swept (``todo``): the
   free cells not covered yet (all of them for a first plan, the remainder when replanning).
2. Boustrophedon decomposition of ``todo`` (small island obstacles filled in: lanes pass them
   on an A* bypass instead of splitting the area): a sweep line moves row by row; a run of free
   cells continues the cell of the run below it when they overlap one to one, otherwise
   (an obstacle begins or ends: a split or merge event) a new cell starts.
3. Lanes: every cell takes the rows of one global lattice spaced by the swath width, so lanes
   of neighbouring cells line up and no cell adds a lane of its own (measured: 5-15% shorter
   than spreading each cell's lanes evenly); strips the lattice leaves (above or below an
   obstacle, at the area's edge) are swept in step 5, or by one more lane at the cell's edge.
   The lattice's offset (up to 12 tried), the edge lanes and the per-cell spread layout are
   compared before routing: lane length, one swath per lane change, and the out-and-back
   strips the missed patches would need.
4. Route: cells are ordered greedily (neighbouring cells first, one step of look-ahead), the
   order improved by or-opt moves and each cell's boustrophedon variant (bottom-up or
   top-down, first lane left or right) chosen by dynamic programming, then runs of cells
   flown backwards where that is shorter (2-opt; both tours are routed, the cheaper kept,
   as every choice below is compared after routing); consecutive lanes are
   joined straight when that is free, lanes bypass small obstacles on their row, transits
   between cells are A* legs (on a 4x coarser grid first when long) shortened by line of
   sight.
5. What the footprint of the route still misses (dents in a cell's boundary, slanted edges,
   the far side of a bypassed tree) is swept by strips along the rows. A patch one strip can
   sweep gets the strip nearest the path that still reaches all of it (a sliver just beyond
   a lane's swath is swept from just beyond the lane: the out-and-back is a few metres, not
   twice the way to the sliver's middle). The strips are tried as lanes of their own, each
   inserted into the tour where it adds the least (possibly with the lanes after it flown
   the other way) when that beats its out-and-back, and as short out-and-back detours off
   the nearest leg (reached round a corner when that is shorter); the cheaper tour is kept
   (length + a turn cost).
6. The chosen path's corners are pulled straight where that loses nothing: a vertex is
   dropped, or moved toward the chord of its neighbours, when the new segments are free and
   every cell the old ones swept is still within the half swath (exact centre-to-segment
   distances, with a twentieth of a cell to spare): A* staircase corners, the return leg
   of an out-and-back strip (0.1-2% shorter on the bench maps).
   Every segment of the result is checked exactly against the inflated grid: no part of the
   path enters it.
7. Directions: 0 and 90 degrees, and (edge_directions) along the longest sides of the area's
   outline (cv2.approxPolyDP of its contour; the sides that hold 15% of it or more). Another
   angle is planned on the grid turned by it (each turned cell takes the state of the cell
   its centre falls in; the outline smoothed along the rows, where two grids alias into
   teeth that would split a row into runs; holes kept as they are), the path turned back,
   its legs checked on the real grid (A* where one clips a blocked cell) and what it misses
   there swept by detours measured exactly, before the plans are compared. A 300 x 200 m
   field turned 10-45 degrees to the map axes: 1.034-1.038 x the ideal, as when aligned
   (1.039), against 1.13-1.17 with the axis directions alone.

Footprint: a disc of diameter ``swath_width`` around the path (the swept width of a camera
footprint with side overlap, or of a ground robot's tool).
"""

from dataclasses import dataclass, field
import math
import time

import cv2
import numpy as np

from skyloc_coverage import gridpath
from skyloc_coverage.grid import blocked_mask, MapError

__all__ = ['CoveragePlanner', 'CoveragePlan', 'PlanningError', 'decompose', 'swept_mask']


class PlanningError(ValueError):
    """No plan is possible (empty map, no free cell, nothing reachable); the message says why."""


@dataclass
class CoveragePlan:
    """A coverage path in the map frame and what the planner knows about it."""

    path: np.ndarray                 # N x 2, metres, map frame
    metrics: dict
    blocked: np.ndarray = None       # the inflated grid the path avoids (row 0 = bottom)
    todo: np.ndarray = None          # the cells this plan set out to sweep
    lanes: list = field(default_factory=list)   # [(x0, y0, x1, y1)] lane segments, map frame
    warnings: list = field(default_factory=list)


def _runs(row):
    padded = np.concatenate(([0], row.astype(np.int8), [0]))
    d = np.diff(padded)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def decompose(mask):
    """Boustrophedon cells of a bool mask, sweeping rows bottom to top.

    Returns (label, cells, adjacency): label[row, col] = cell id or -1; cells[i] = dict of
    arrays rows, x0, x1 (inclusive runs); adjacency = set of (lower cell, upper cell) pairs.
    """
    h, _ = mask.shape
    label = np.full(mask.shape, -1, np.int32)
    cells, adjacency = [], set()
    prev_s = prev_e = np.zeros(0, int)
    prev_id = []
    for r in range(h):
        s, e = _runs(mask[r])
        ids = []
        if len(s):
            if len(prev_s):
                overlap = (prev_s[None, :] <= e[:, None]) & (prev_e[None, :] >= s[:, None])
                n_cur, n_prev = overlap.sum(axis=1), overlap.sum(axis=0)
            for i in range(len(s)):
                cid = None
                if len(prev_s):
                    below = np.flatnonzero(overlap[i])
                    if n_cur[i] == 1 and n_prev[below[0]] == 1:
                        cid = prev_id[below[0]]
                if cid is None:
                    cid = len(cells)
                    cells.append({'rows': [], 'x0': [], 'x1': []})
                    if len(prev_s):
                        for j in np.flatnonzero(overlap[i]):
                            adjacency.add((prev_id[j], cid))
                cells[cid]['rows'].append(r)
                cells[cid]['x0'].append(int(s[i]))
                cells[cid]['x1'].append(int(e[i]))
                label[r, s[i]:e[i] + 1] = cid
                ids.append(cid)
        prev_s, prev_e, prev_id = s, e, ids
    for c in cells:
        for k in ('rows', 'x0', 'x1'):
            c[k] = np.asarray(c[k], int)
    return label, cells, adjacency


def path_distance(shape, polylines, upsample=1, exact_near=None):
    """Distance, cells, from each cell centre to the nearest polyline (cell coordinates);
    inf everywhere when nothing is drawn.

    The polylines are drawn on a canvas `upsample` times finer (1 or 3: a cell centre is a
    pixel centre, so lanes along rows or columns through cell centres are measured exactly;
    slanted segments within half a cell, or a quarter with 3), then a distance transform is
    sampled at the cell centres; with `exact_near` (cells) the cells within a cell of that
    distance are measured exactly.
    """
    k = int(upsample)
    h, w = shape
    canvas = np.full((h * k, w * k), 255, np.uint8)
    shift = 3
    drawn = False
    for pts in polylines:
        arr = np.asarray(pts, float).reshape(-1, 2) * k - 0.5    # -> fine pixel coords
        if len(arr) == 0:
            continue
        drawn = True
        if len(arr) == 1:
            r, c = int(round(arr[0, 1])), int(round(arr[0, 0]))
            if 0 <= r < h * k and 0 <= c < w * k:
                canvas[r, c] = 0
            continue
        p = np.round(arr * (1 << shift)).astype(np.int32)
        cv2.polylines(canvas, [p.reshape(-1, 1, 2)], False, 0, 1, cv2.LINE_8, shift)
    if not drawn or canvas.min() > 0:
        return np.full(shape, np.inf, np.float32)
    dist = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    centre = k // 2
    dist = dist[centre::k, centre::k] / k
    if exact_near is not None:
        _refine(dist, polylines, float(exact_near))
    return dist


def _refine(dist, polylines, near):
    """dist (path_distance's raster) with the cells within a cell of `near` measured exactly
    (cell centre to segment): whether a cell is within the half swath of a slanted leg does
    not depend on how the leg was drawn."""
    rr, cc = np.nonzero(np.abs(dist - near) <= 1.0)
    if len(rr) == 0:
        return
    px, py = cc + 0.5, rr + 0.5
    segs = [(np.asarray(p, float).reshape(-1, 2)) for p in polylines]
    a = np.vstack([q[:-1] for q in segs if len(q) > 1] or [np.zeros((0, 2))])
    b = np.vstack([q[1:] for q in segs if len(q) > 1] or [np.zeros((0, 2))])
    if len(a) == 0:
        return
    best = np.full(len(px), np.inf)
    lo, hi = np.minimum(a, b) - near - 1.5, np.maximum(a, b) + near + 1.5
    for k in range(len(a)):
        sel = np.flatnonzero((px >= lo[k, 0]) & (px <= hi[k, 0]) & (py >= lo[k, 1])
                             & (py <= hi[k, 1]))
        if len(sel):
            d = _segment_distance(px[sel], py[sel], a[k], b[k])[:, 0]
            best[sel] = np.minimum(best[sel], d)
    ok = np.isfinite(best)
    dist[rr[ok], cc[ok]] = best[ok]


def swept_mask(shape, polylines, half_width_cells, upsample=1, exact=False):
    """Cells whose centre is within half_width_cells of any polyline (cell coordinates; see
    path_distance; exact: the cells near the edge of the swath measured exactly)."""
    return path_distance(shape, polylines, upsample,
                         half_width_cells if exact else None) <= half_width_cells + 1e-6


PHASES = 12        # lane lattice offsets tried per sweep direction
NEAR_WAY = 8.0      # cells: a detour's foot this near its strip may reach it round a corner
NEAR_WAY_EXPAND = 400   # cells the A* round that corner may expand
RUN_MAX = 24        # lanes a strip insertion may fly the other way (besides all the rest)
RELAX = (0.125, 0.25, 0.5)   # how far a corner that must stay is tried toward its chord
FINE_UPSAMPLE = 3   # the final footprint check: slanted legs measured to a sixth of a cell
TIGHT_SLACK = 0.05  # cells: what _tighten keeps swept stays this far inside the half swath
#                     (the routing's raster checks of a later replan still see it swept)


class CoveragePlanner:
    """Boustrophedon coverage planner on an occupancy grid (see the module docstring).

    swath_width: swept width of the footprint, m; radius: vehicle radius (obstacle
    inflation), m; side_overlap: fraction of the swath shared by neighbouring lanes;
    unknown_is_free: plan through unknown cells (a survey over a LIDAR map that has not seen
    everything yet); directions: sweep directions tried, degrees from the map's x axis, any
    angle (0 = lanes along x, 90 = along y; others are planned on the grid turned by that
    angle); edge_directions: also try lanes along and across the longest edges of the area's
    outline (a field that is not aligned with the map axes is swept along its own sides);
    the cheapest plan (length + turn_cost_m per turn, default half a swath: a turn
    costs about the time of flying that far) is kept; bypass_m: obstacles
    no taller (across the lanes) than this, surrounded by free space, are passed by the lanes
    instead of splitting the area into cells (default three swaths).
    """

    def __init__(self, swath_width, radius=0.0, side_overlap=0.0, unknown_is_free=True,
                 directions=(0.0, 90.0), turn_cost_m=None, detour_rounds=8, bypass_m=None,
                 edge_directions=True):
        if not (math.isfinite(swath_width) and swath_width > 0):
            raise ValueError(f'swath_width must be positive, got {swath_width}')
        if not (math.isfinite(radius) and radius >= 0):
            raise ValueError(f'radius must be >= 0, got {radius}')
        if not 0.0 <= side_overlap < 0.9:
            raise ValueError(f'side_overlap must be in [0, 0.9), got {side_overlap}')
        bad = [d for d in directions if not math.isfinite(float(d))]
        if bad or not len(directions):
            raise ValueError(f'directions must be finite angles in degrees, got '
                             f'{list(directions)}')
        self.swath_width = float(swath_width)
        self.radius = float(radius)
        self.side_overlap = float(side_overlap)
        self.unknown_is_free = bool(unknown_is_free)
        self.directions = tuple(float(d) % 180.0 for d in directions)
        self.turn_cost_m = 0.5 * swath_width if turn_cost_m is None else float(turn_cost_m)
        self.detour_rounds = int(detour_rounds)
        self.bypass_m = 3.0 * swath_width if bypass_m is None else float(bypass_m)
        self.edge_directions = bool(edge_directions)
        self.last_direction = None

    # -- public API ----------------------------------------------------------------------

    def blocked(self, grid, area=None):
        """Where this planner keeps the vehicle centre out of (bool mask, row 0 = bottom):
        obstacles (and unknown cells unless unknown_is_free) inflated by the radius plus a
        quarter cell, and everything outside `area` (bool mask, default the whole grid)."""
        return blocked_mask(grid, self.radius, self.unknown_is_free, area,
                            margin=0.25 * grid.resolution)

    def plan(self, grid, start, area=None, covered=None, previous=None, tighten=True):
        """Plan a coverage path over `grid` from `start` (x, y, map frame).

        area: bool mask (row 0 = bottom) of where the survey is, default the whole grid;
        covered: bool mask of cells already swept (they are not planned again);
        previous: the rest of the plan being replaced (N x 2, map frame): when the map change
        is local, that path is repaired (legs around the new obstacle, detours for what it
        hides) instead of planned anew; a full plan when the repair would miss too much;
        tighten: pull the final path's corners straight where that sweeps as much
        (_tighten: 0.5-3% shorter, up to half a second on a furnished room; replan() skips it,
        replanning is on the clock). Raises PlanningError when nothing can be planned.
        """
        t0 = time.perf_counter()
        if grid.empty:
            raise PlanningError('the map is empty (0 cells)')
        res = grid.resolution
        warnings = []
        blocked = self.blocked(grid, area)
        free_all = ~blocked
        if not free_all.any():
            raise PlanningError('no free cell: every cell is an obstacle, unknown, outside the '
                                'area or within the vehicle radius of an obstacle')
        col, row = grid.cell_of(start[0], start[1])
        start_cell, moved = self._start_cell(free_all, int(col), int(row))
        if moved > 0:
            warnings.append(f'start ({start[0]:.2f}, {start[1]:.2f}) is not free: moved '
                            f'{moved * res:.2f} m to the nearest free cell')
        # 4-connected: what A* (8 moves, no corner cutting) can reach is exactly this
        n, comp = cv2.connectedComponents(free_all.astype(np.uint8), connectivity=4)
        free = comp == comp[start_cell[1], start_cell[0]]
        unreachable = int((free_all & ~free).sum())
        unreachable_m2 = float(unreachable) * res * res
        if unreachable >= 10:
            warnings.append(f'{unreachable_m2:.1f} m^2 of free space cannot be reached from '
                            'the start and is left out')
        todo = free.copy()
        if covered is not None:
            covered = np.asarray(covered, bool)
            if covered.shape != todo.shape:
                raise MapError(f'covered mask shape {covered.shape} does not match the map '
                               f'{todo.shape}')
            todo &= ~covered
        best = None
        if previous is not None and len(previous) and todo.any():
            prev = (np.asarray(previous, float).reshape(-1, 2) - np.asarray(grid.origin)) / res
            # back onto the cell centres it was made of (float noise off), except the
            # corners _tighten moved off them
            centre = np.floor(prev + 1e-6) + 0.5
            prev = np.where(np.abs(prev - centre) < 1e-6, centre, prev)
            repaired = self._repair(free, todo, (start_cell[0] + 0.5, start_cell[1] + 0.5),
                                    [tuple(p) for p in prev], res)
            if repaired is not None:
                best = (0.0, self.last_direction if self.last_direction is not None
                        else self.directions[0], repaired[0], [], repaired[1])
        half = self.swath_width / 2.0 / res
        if best is None and todo.any():
            directions = list(self.directions)
            if self.edge_directions and previous is None:
                directions += [d for d in edge_angles(free)
                               if min(abs((d - e + 90.0) % 180.0 - 90.0)
                                      for e in directions) > ANGLE_SAME]
            start_pt = (start_cell[0] + 0.5, start_cell[1] + 0.5)
            plans = []
            for direction in directions:
                if direction in (0.0, 90.0):
                    transpose = direction == 90.0
                    f, t = (free.T, todo.T) if transpose else (free, todo)
                    s = (start_pt[1], start_pt[0]) if transpose else start_pt
                    pts, lanes, info = self._plan_oriented(f, t, s, res)
                    if transpose:
                        pts = [(y, x) for x, y in pts]
                        lanes = [(b, a, d, c) for a, b, c, d in lanes]
                else:
                    turned = self._plan_turned(free, todo, start_pt, res, direction)
                    if turned is None:
                        if plans or direction != directions[-1]:
                            continue
                        # no turned grid held anything to sweep: along x after all
                        direction, turned = 0.0, self._plan_oriented(free, todo, start_pt, res)
                    pts, lanes, info = turned
                plans.append([self._cost(pts, res), direction, pts, lanes, info])
            # a turned plan's small detours (where the turned grid's edge is off the real
            # one) are corners that _tighten mostly pulls straight: with one in the running,
            # the plans near the cheapest are compared tightened (one pass)
            if tighten and len(plans) > 1 and any(p[1] not in (0.0, 90.0) for p in plans):
                keep = todo | self._margin_band(grid, area, free, covered, half)[1]
                low = min(p[0] for p in plans)
                for p in plans:
                    if p[0] <= (1.0 + TIGHT_COMPARE) * low:
                        p[2], _ = _tighten(free, keep, p[2], half, passes=1)
                        p[0] = self._cost(p[2], res)
                        p[4] = dict(p[4], tightened=True)
            best = min(plans, key=lambda p: p[0])
        elif best is None:
            best = (0.0, self.directions[0], [(start_cell[0] + 0.5, start_cell[1] + 0.5)],
                    [], {'cells': 0, 'detours': 0, 'missed_cells': 0, 'lanes': 'none'})
        _, direction, pts, lanes, info = best
        self.last_direction = direction
        if todo.any():
            # a last detour pass for what the routing's checks cannot see: cells of the
            # C-space that the path's safety margin (a quarter cell) keeps it out of, which
            # only the swath can sweep, and cells just beyond half a swath off a slanted leg
            # (the routing's raster draws it up to half a cell off; this pass measures the
            # cells near the swath's edge exactly). The independent evaluator found 3-6 such
            # cells per furnished room.
            band, parts = self._margin_band(grid, area, free, covered, half)
            pts, extra = self._detours(free, todo | band, list(pts), half,
                                       self._lane_spacing(res), upsample=FINE_UPSAMPLE,
                                       exact=True)
            info = dict(info, detours=info['detours'] + extra)
        if todo.any() and tighten:
            # the corners that sweep nothing of their own pulled straight (exact distances)
            pts, _ = _tighten(free, todo | parts, pts, half,
                              passes=1 if info.get('tightened') else 2)
        if not gridpath.path_free(free, pts):     # the guarantee; never expected to fire
            raise PlanningError('internal error: planned path crosses the inflated grid')
        pts = gridpath.simplify(pts)
        origin = np.asarray(grid.origin, float)
        path = origin + np.asarray(pts, float) * res
        n_turns, rotation = gridpath.turns(pts)
        swept = swept_mask(free.shape, [pts], half, upsample=FINE_UPSAMPLE, exact=True)
        todo_n = int(todo.sum())
        metrics = {
            'planning_time_s': round(time.perf_counter() - t0, 4),
            'direction_deg': direction,
            'path_length_m': round(gridpath.polyline_length(pts) * res, 2),
            'waypoints': len(pts),
            'turns': n_turns,
            'total_rotation_deg': round(rotation, 1),
            'cells': info['cells'],
            'detours': info['detours'],
            'lane_layout': info.get('lanes', 'none'),
            'repaired': info.get('lanes') == 'repaired',
            'todo_area_m2': round(todo_n * res * res, 2),
            'coverage_percent': round(100.0 * (swept & todo).sum() / todo_n, 3)
            if todo_n else 100.0,
            'ideal_length_m': round(todo_n * res * res / self.swath_width, 2),
            'unreachable_free_area_m2': round(unreachable_m2, 2),
            'start_moved_m': round(moved * res, 3),
        }
        lanes_m = [tuple(float(v) for v in np.tile(origin, 2) + np.asarray(seg, float) * res)
                   for seg in lanes]
        return CoveragePlan(path, metrics, blocked=~free, todo=todo, lanes=lanes_m,
                            warnings=warnings)

    def replan(self, grid, current, covered=None, area=None, direction=None, previous=None):
        """Plan only the uncovered remainder from the current pose (after a map change).

        direction: the sweep direction, by default that of this planner's last plan (one
        routing instead of one per direction: replanning is on the clock); previous: the rest
        of the path being replaced, repaired when the change is local (see plan()).
        """
        if direction is None:
            direction = self.last_direction
        if direction is None:
            return self.plan(grid, current, area=area, covered=covered, previous=previous,
                             tighten=False)
        saved = self.directions, self.edge_directions
        self.directions, self.edge_directions = (float(direction) % 180.0,), False
        try:
            return self.plan(grid, current, area=area, covered=covered, previous=previous,
                             tighten=False)
        finally:
            self.directions, self.edge_directions = saved

    # -- internals -----------------------------------------------------------------------

    def _repair(self, free, todo, start, previous, res, max_missed=0.005):
        """The previous path from `start`, its waypoints that are no longer free dropped and
        its legs routed around what blocks them (a lane keeps its row or column); detours for
        what the new obstacle's bypasses leave. None when that still misses more than
        `max_missed` of what is left to sweep or grows the path by more than 5% and a few
        swaths (the change is not local, or cheaper to plan anew)."""
        keep = [p for p in previous
                if 0 <= int(p[1]) < free.shape[0] and 0 <= int(p[0]) < free.shape[1]
                and free[int(p[1]), int(p[0])]]
        pts = [start]
        for q in keep:
            a = pts[-1]
            if gridpath.segment_free(free, a, q):
                pts.append(q)
                continue
            try:
                if a[1] == q[1]:
                    leg = self._lane_path(free, a, q)
                elif a[0] == q[0]:
                    leg = [(x, y) for y, x in
                           self._lane_path(free.T, (a[1], a[0]), (q[1], q[0]))]
                else:       # a slanted lane (a turned plan's points are off the centres)
                    leg = _line_bypass(free, a, q)
            except PlanningError:
                return None
            if leg is None:
                return None
            pts.extend(leg[1:])
        half = self.swath_width / 2.0 / res
        spacing = self._lane_spacing(res)
        # (fine: the previous path's corners that _tighten pulled are slanted)
        pts, detours = self._detours(free, todo, pts, half, spacing, upsample=FINE_UPSAMPLE,
                                     exact=True)
        missed = int((todo & ~swept_mask(todo.shape, [pts], half, upsample=FINE_UPSAMPLE,
                                         exact=True)).sum())
        before = gridpath.polyline_length([start] + list(previous))
        if missed > max_missed * todo.sum() or \
                gridpath.polyline_length(pts) > 1.05 * before + 4 * spacing:
            return None
        return pts, {'cells': 0, 'detours': detours, 'missed_cells': missed, 'lanes': 'repaired'}

    @staticmethod
    def _start_cell(free, col, row):
        h, w = free.shape
        if 0 <= col < w and 0 <= row < h and free[row, col]:
            return (col, row), 0.0
        rows, cols = np.nonzero(free)
        d2 = (cols - col) ** 2 + (rows - row) ** 2
        i = int(np.argmin(d2))
        return (int(cols[i]), int(rows[i])), float(math.sqrt(d2[i]))

    def _cost(self, pts, res):
        """What plans are compared on: length, m, + turn_cost_m per turn."""
        return gridpath.polyline_length(pts) * res + self.turn_cost_m * gridpath.turns(pts)[0]

    def _lane_spacing(self, res):
        return max(1, int(math.floor(self.swath_width * (1.0 - self.side_overlap) / res
                                     + 1e-6)))

    def _plan_oriented(self, free, todo, start, res):
        """Lanes along rows; returns (points, lanes, info), all in cell coordinates."""
        spacing = self._lane_spacing(res)
        half = self.swath_width / 2.0 / res
        filled = self._fill_small_obstacles(free, todo, self.bypass_m / res)
        label, cells, adjacency = decompose(filled)
        # choose the lane layout before routing (routing is the expensive part): lane length
        # + one swath per lane change + the detours its missed strips would need
        options = []
        layouts = [(name, self._lattice_lanes(cells, filled, spacing, phase, edges))
                   for phase in self._phases(spacing, half)
                   for name, edges in (('lattice', None), ('lattice+edges', half))]
        layouts.append(('spread', self._cell_lanes(cells, spacing, half)))
        for name, lanes in layouts:
            lanes = [[lane for lane in (self._trim(free, *ln) for ln in per_cell) if lane]
                     for per_cell in lanes]
            flat = [(r, x0, x1) for per_cell in lanes for r, x0, x1 in per_cell]
            swept = swept_mask(todo.shape, self._lane_polylines(lanes), half)
            estimate = (sum(x1 - x0 for _, x0, x1 in flat) + spacing * len(flat)
                        + self._detour_estimate(todo & ~swept, spacing))
            options.append((estimate, name, lanes))
        _, name, lanes = min(options, key=lambda o: o[0])
        stitch = _Stitcher(free, start, self._lane_path)
        seqs = self._route(free, cells, lanes, start, adjacency)
        routes = [stitch(q) for q in seqs]
        # what the lanes miss (dents, slanted edges) flown one way, each strip put where it
        # adds the least to the tour, instead of out and back from the nearest leg
        k = min(range(len(routes)), key=lambda i: gridpath.polyline_length(routes[i]))
        dist = path_distance(todo.shape, [routes[k]])
        unswept = todo & (dist > half + 1e-6)
        if unswept.any():
            tried = []
            for near in (None, dist):
                strips = self._missed_strips(free, unswept, spacing, half, near)
                if strips and strips not in tried:
                    tried.append(strips)
                    # a strip joins the tour only where that adds less than flying it out
                    # and back from the route (the detour pass sweeps the others)
                    routes.append(stitch(_insert_strips(seqs[k], strips, start,
                                                        _detour_costs(strips, dist))))
        best = None
        for pts in routes:
            pts, detours = self._detours(free, todo, pts, half, spacing)
            cost = self._cost(pts, res)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, pts, detours)
        _, pts, detours = best
        covered = swept_mask(todo.shape, [pts], half)
        flat = [(x0 + 0.5, r + 0.5, x1 + 0.5, r + 0.5)
                for per_cell in lanes for r, x0, x1 in per_cell]
        return pts, flat, {'cells': len(cells), 'detours': detours,
                           'missed_cells': int((todo & ~covered).sum()), 'lanes': name}

    def _plan_turned(self, free, todo, start, res, angle):
        """Lanes along `angle` (degrees from the x axis): _plan_oriented on the grid turned
        by -angle, the path turned back (a point that lands in a blocked cell moved to the
        nearest free one), every leg that clips a blocked cell planned again on the grid, and
        what it misses there swept by detours (so that it is compared with the axis-aligned
        plans on the same footing). None when the turned grid holds nothing to sweep from
        the start."""
        turn = _Turn(free.shape, angle)
        # the turned raster's edges are ragged (two grids alias: teeth of about half a cell):
        # a row along an edge would break into many runs, each a cell of its own. Smoothed
        # here (blurred, thresholded at the middle: the edge where it is on average)
        # (obstacles inside the area, holes in it, are not smoothed: a tree stays round)
        f = turn.smooth(free) & ~turn.holes(free)
        s, _ = self._start_cell(f, *(int(math.floor(v)) for v in turn.forward(start)))
        _, comp = cv2.connectedComponents(f.astype(np.uint8), connectivity=4)
        f = comp == comp[s[1], s[0]]
        # what to sweep reaches past that edge, to the ragged one (else the lanes along an
        # edge leave a strip a cell wide for the detours there)
        t = turn.smooth(todo, TURN_REACH) & cv2.dilate(f.astype(np.uint8),
                                                       np.ones((3, 3), np.uint8)).astype(bool)
        if not t.any():
            return None
        pts, lanes, info = self._plan_oriented(f, t, (s[0] + 0.5, s[1] + 0.5), res)
        back = _onto_free_points(free, [turn.backward(p) for p in pts])
        out = [start]
        for q in back:
            leg = _free_leg(free, out[-1], q)
            if leg is None:
                return None
            out.extend(leg[1:])
        half = self.swath_width / 2.0 / res
        out, extra = self._detours(free, todo, gridpath.simplify(out), half,
                                   self._lane_spacing(res), exact=True)
        lanes = [turn.backward((a, b)) + turn.backward((c, d)) for a, b, c, d in lanes]
        return out, lanes, dict(info, detours=info['detours'] + extra)

    @staticmethod
    def _detour_estimate(missed, spacing):
        """Length the detours for `missed` (bool mask) would add, cells: every patch is swept
        by strips along the rows, `spacing` apart, each out and back, plus the way there."""
        n, _, stats, _ = cv2.connectedComponentsWithStats(missed.astype(np.uint8),
                                                          connectivity=8)
        if n <= 1:
            return 0.0
        w, h = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
        strips = np.ceil(h / max(1, spacing))
        return float((2.0 * strips * w + 2.0 * spacing).sum())

    @staticmethod
    def _phases(spacing, half):
        """Offsets of the lane lattice from the area's first row that are tried: every row
        up to the half swath (at most 12 of them, spread evenly)."""
        top = max(0, min(int(math.floor(half + 1e-9)), spacing - 1))
        n = min(top + 1, PHASES)
        return sorted({int(round(k * top / max(1, n - 1))) for k in range(n)})

    @staticmethod
    def _lattice_lanes(cells, todo, spacing, phase=None, edge_half=None):
        """Lanes of each cell on one global lattice of rows: list per cell of (row, x0, x1).

        Lanes of neighbouring cells line up, so no cell adds a lane of its own; strips the
        lattice leaves (above or below an obstacle) are swept by detours afterwards, or, with
        `edge_half` (the half swath, cells), by one more lane at the cell's edge where the
        strip is wider than that (a lane is flown once, a detour out and back).
        """
        rows = np.flatnonzero(todo.any(axis=1))
        first = rows[0] + (spacing // 2 if phase is None else int(phase))
        lanes = []
        for c in cells:
            r = c['rows']
            k0 = math.ceil((r[0] - first) / spacing)
            k1 = math.floor((r[-1] - first) / spacing)
            lattice = [first + k * spacing for k in range(k0, k1 + 1)]
            if not lattice:   # thinner than the spacing: one lane through its middle
                lattice = [int(r[len(r) // 2])]
            elif edge_half is not None:
                # the edge lane as far in as still sweeps the edge row (a slanted cell is
                # widest there), never on a lattice row
                edge = int(math.floor(edge_half + 1e-9))
                if lattice[0] - r[0] > edge_half:
                    lattice.insert(0, min(int(r[0]) + edge, lattice[0] - 1))
                if r[-1] - lattice[-1] > edge_half:
                    lattice.append(max(int(r[-1]) - edge, lattice[-1] + 1))
            idx = np.asarray(lattice) - r[0]
            lanes.append([(int(r[i]), int(c['x0'][i]), int(c['x1'][i])) for i in idx])
        return lanes

    @staticmethod
    def _cell_lanes(cells, spacing, half):
        """Lanes of each cell, evenly spread: list per cell of (row, x0, x1).

        The fewest lanes whose footprints reach every row of the cell: the first and last
        lane at most half a swath from the cell's bottom and top rows, neighbours at most
        `spacing` rows apart.
        """
        edge = int(math.floor(half + 1e-9))
        lanes = []
        for c in cells:
            r = c['rows']
            lo, hi = r[0] + edge, r[-1] - edge
            if hi <= lo:
                rows = [(r[0] + r[-1]) // 2]
            else:
                n = math.ceil((hi - lo) / spacing) + 1
                rows = [lo + int(round(k * (hi - lo) / (n - 1))) for k in range(n)]
            idx = np.asarray(rows) - r[0]
            lanes.append([(int(r[i]), int(c['x0'][i]), int(c['x1'][i])) for i in idx])
        return lanes

    @staticmethod
    def _lane_polylines(lanes):
        return [[(x0 + 0.5, r + 0.5), (x1 + 0.5, r + 0.5)]
                for per_cell in lanes for r, x0, x1 in per_cell]

    @staticmethod
    def _component(comp, stats, k):
        x, y, w, h = stats[k, :4]
        rr, cc = np.nonzero(comp[y:y + h, x:x + w] == k)
        return rr + y, cc + x

    def _route(self, free, cells, lanes, start, adjacency=()):
        """Visit every cell's lanes boustrophedon-wise; A* transits between cells.

        Order: greedy with one step of look-ahead over (cell, variant) choices, cost =
        distance to the cell's entry + distance from its exit to the nearest entry of a cell
        still to visit (so that a cell is not left behind as an isolated dead end). Cells
        that share a boundary with the current one come first: a straight-line distance
        through a wall says nothing of the way round. The greedy order is then improved by
        moving single cells (or-opt) and re-choosing every cell's variant (dynamic
        programming) on straight-line transit costs, non-neighbours weighted 1.3.
        """
        units = [i for i in range(len(cells)) if lanes[i]]
        unit_of = {c: k for k, c in enumerate(units)}
        neighbours = [set() for _ in units]
        for a, b in adjacency:
            if a in unit_of and b in unit_of:
                neighbours[unit_of[a]].add(unit_of[b])
                neighbours[unit_of[b]].add(unit_of[a])
        variants = [self._variants(lanes[i]) for i in units]
        nv = max((len(v) for v in variants), default=1)
        n = len(units)
        entry = np.full((n, nv, 2), np.inf)
        exit_ = np.full((n, nv, 2), np.inf)
        for j, vs in enumerate(variants):
            for v, seq in enumerate(vs):
                entry[j, v], exit_[j, v] = seq[0][0], seq[-1][1]
        flat_entry = entry.reshape(-1, 2)
        with np.errstate(invalid='ignore'):
            cross = np.hypot(*(exit_.reshape(-1, 1, 2) - flat_entry[None]).transpose(2, 0, 1))
        cross = np.nan_to_num(cross, nan=np.inf, posinf=np.inf).reshape(n, nv, n, nv)
        left = np.ones(n, bool)
        cur = start
        current = None
        order = []
        while left.any():
            with np.errstate(invalid='ignore'):
                d1 = np.hypot(entry[..., 0] - cur[0], entry[..., 1] - cur[1])
            candidates = left.copy()
            if current is not None:
                near = np.zeros(n, bool)
                near[list(neighbours[current])] = True
                if (near & left).any():
                    candidates &= near
            d1 = np.where(candidates[:, None], np.nan_to_num(d1, nan=np.inf), np.inf)
            look = np.zeros((n, nv))
            if left.sum() > 1:
                masked = np.where(left[None, None, :, None], cross, np.inf)
                for j in np.flatnonzero(left):
                    masked[j, :, j, :] = np.inf
                look = masked.reshape(n, nv, -1).min(axis=2)
                look[~np.isfinite(look)] = 0.0
            j, v = np.unravel_index(int(np.argmin(d1 + look)), d1.shape)
            left[j] = False
            current = j
            order.append((int(j), int(v)))
            cur = tuple(exit_[j, v])
        if n > 2:
            with np.errstate(invalid='ignore'):
                d0 = np.hypot(entry[..., 0] - start[0], entry[..., 1] - start[1])
            d0 = np.nan_to_num(d0, nan=np.inf)
            penalty = np.full((n, n), 1.3)
            for j, near in enumerate(neighbours):
                penalty[j, list(near)] = 1.0
            cost = cross * penalty[:, None, :, None]
            order = _improve_order(order, d0, cost)
            orders = [order, _two_opt(order, d0, cost, _reversed_variants(variants))]
        else:
            orders = [order]
        # the orders were compared on straight-line transits: the caller routes each on the
        # grid and keeps the cheapest
        out = []
        for order in orders:
            seq = [ab for j, v in order for ab in variants[j][v]]
            if seq not in out:
                out.append(seq)
        return out

    @staticmethod
    def _lane_path(free, a, b):
        """A lane from a to b along its row: straight over free runs, A* only around the
        obstacles it bypasses (so the lane stays on its row everywhere else)."""
        row = int(a[1])
        lo, hi = sorted((int(a[0]), int(b[0])))
        starts, ends = _runs(free[row, lo:hi + 1])
        runs = [(lo + int(s0), lo + int(e0)) for s0, e0 in zip(starts, ends)]
        if a[0] > b[0]:
            runs = [(e0, s0) for s0, e0 in runs[::-1]]
        pts = [a]
        for k, (s0, e0) in enumerate(runs):
            p0, p1 = (s0 + 0.5, row + 0.5), (e0 + 0.5, row + 0.5)
            if k > 0:
                leg = gridpath.connect(free, pts[-1], p0)
                if leg is None:
                    raise PlanningError(f'no free way around an obstacle on row {row}')
                pts.extend(leg[1:])
            if p1 != pts[-1]:
                pts.append(p1)
        return pts

    @staticmethod
    def _fill_small_obstacles(free, todo, max_cells):
        """todo with small enclosed obstacles filled in: lanes pass them (bypassed on the
        grid) instead of splitting the area into cells around every tree or mast."""
        if max_cells <= 0:
            return todo
        holes = (~free).astype(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=8)
        h, w = free.shape
        out = todo.copy()
        for k in range(1, n):
            x, y, bw, bh, _ = stats[k]
            if bh > max_cells or bw > 4 * max_cells:
                continue
            if x == 0 or y == 0 or x + bw >= w or y + bh >= h:
                continue            # touches the edge: a boundary, not an island
            ring = cv2.dilate((comp[y - 1:y + bh + 1, x - 1:x + bw + 1] == k).astype(np.uint8),
                              np.ones((3, 3), np.uint8)).astype(bool)
            box = (slice(y - 1, y + bh + 1), slice(x - 1, x + bw + 1))
            around = ring & (comp[box] != k)
            if free[box][around].all():     # an island in free space
                out[box] |= comp[box] == k
        return out

    @staticmethod
    def _trim(free, row, x0, x1):
        """A lane's ends moved inwards onto free cells (a run may end in a filled obstacle)."""
        cols = np.flatnonzero(free[row, x0:x1 + 1])
        if len(cols) == 0:
            return None
        return (row, x0 + int(cols[0]), x0 + int(cols[-1]))

    @staticmethod
    def _variants(cell_lanes):
        """The boustrophedon orders of one cell's lanes: [(start, end) per lane]."""
        out = []
        for order in (cell_lanes, cell_lanes[::-1]):
            for first_right in (False, True):
                seq = []
                for k, (r, x0, x1) in enumerate(order):
                    a, b = (x0 + 0.5, r + 0.5), (x1 + 0.5, r + 0.5)
                    if (k % 2 == 1) != first_right:
                        a, b = b, a
                    seq.append((a, b))
                out.append(seq)
            if len(cell_lanes) == 1 and cell_lanes[0][1] == cell_lanes[0][2]:
                break
        return out

    def _margin_band(self, grid, area, free, covered, half):
        """Cells of the vehicle's C-space (obstacles inflated by the radius alone) that the
        path's margin keeps it out of: those of the C-space's parts (8-connected) that hold
        reachable free cells, and within the half swath (cells) of a free cell, where a
        strip can sweep them (a thin corridor that the margin closes, between a wall and
        furniture, is swept from its ends). Returns (band, every cell of those parts not
        covered yet: what the path may sweep by chance and _tighten keeps swept)."""
        exact = ~blocked_mask(grid, self.radius, self.unknown_is_free, area, margin=0.0)
        n, comp = cv2.connectedComponents(exact.astype(np.uint8), connectivity=8)
        parts = np.zeros(n, bool)
        parts[np.unique(comp[free])] = True
        parts[0] = False
        dist = cv2.distanceTransform(np.where(free, 0, 255).astype(np.uint8),
                                     cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        reach = exact & parts[comp]
        if covered is not None:
            reach &= ~np.asarray(covered, bool)
        return reach & ~free & (dist <= half - 0.25), reach

    @staticmethod
    def _onto_free(free, missed):
        """missed (uint8 mask) with each cell that is not free moved to its nearest free cell:
        a detour can only fly free cells, and its swath reaches the cell from there."""
        off = missed.astype(bool) & ~free
        if not off.any():
            return missed
        src = np.where(free, 0, 255).astype(np.uint8)
        _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        rows, cols = np.nonzero(free)
        where = np.zeros(int(labels.max()) + 1, np.int64)
        where[labels[rows, cols]] = np.arange(len(rows))
        rr, cc = np.nonzero(off)
        k = where[labels[rr, cc]]
        out = missed.copy()
        out[rr, cc] = 0
        out[rows[k], cols[k]] = 1
        return out

    def _detours(self, free, todo, pts, half, spacing, upsample=1, exact=False):
        """Sweep what the route's footprint misses with short detours off the nearest leg.

        Each missed patch becomes one or more short strips (lanes through it); a strip is
        swept out and back from the foot of its nearest path segment, which stays whole:
        ... -> p -> foot -> strip start -> strip end -> strip start -> foot -> q -> ...
        """
        detours = 0
        left = None
        for _ in range(self.detour_rounds):
            dist = path_distance(todo.shape, [pts], upsample, half if exact else None)
            unswept = todo & (dist > half + 1e-6)
            n_unswept = int(unswept.sum())
            if not n_unswept or (left is not None and n_unswept >= left):
                break       # all swept, or the last round swept nothing more
            left = n_unswept
            strips = self._missed_strips(free, unswept, spacing, half, dist)
            if not strips:
                break
            arr = np.asarray(pts, float)
            placed = []
            for a, b in strips:
                i = _visible_segment(free, arr, a)
                t = _foot_param(arr[i], arr[min(i + 1, len(arr) - 1)], a)
                placed.append((i, t, a, b))
            # insert from the end so that earlier indices stay valid; detours off one leg
            # from its far end back (each goes in right after the leg's start), so that they
            # follow each other along the leg instead of zig-zagging up and down it
            placed.sort(key=lambda e: (-e[0], -e[1]))
            for i, _, a, b in placed:
                piece = self._strip_detour(free, pts[i], pts[i + 1] if i + 1 < len(pts)
                                           else None, a, b)
                if piece is None:
                    continue
                pts[i + 1:i + 1] = piece
                detours += 1
        return pts, detours

    def _missed_strips(self, free, unswept, spacing, half, dist=None):
        """Strips (pairs of cell-centre points along a row) that sweep the unswept cells.

        With `dist` (each cell's distance to the path, cells; `half`: the half swath): a
        patch one strip can sweep gets the strip nearest the path that still reaches all of
        it (:meth:`_shallow_strip`: a sliver just beyond a lane's swath is swept from just
        beyond the lane, not from its middle). Every other patch gets ceil(height / spacing)
        strips, evenly spread through it."""
        strips = []
        if dist is not None:
            n, comp, stats, _ = cv2.connectedComponentsWithStats(unswept.astype(np.uint8),
                                                                 connectivity=8)
            rest = np.zeros(unswept.shape, bool)
            for k in range(1, n):
                rr, cc = self._component(comp, stats, k)
                strip = self._shallow_strip(free, rr, cc, half, dist)
                if strip is None:
                    rest[rr, cc] = True
                else:
                    strips.append(strip)
            unswept = rest
            if not unswept.any():
                return strips
        missed = self._onto_free(free, unswept.astype(np.uint8))
        n, comp, stats, _ = cv2.connectedComponentsWithStats(missed, connectivity=8)
        for k in range(1, n):
            rr, cc = self._component(comp, stats, k)
            ya, yb = int(rr.min()), int(rr.max())
            count = max(1, math.ceil((yb - ya + 1) / spacing))
            for j in range(count):
                row = ya + int((j + 0.5) * (yb - ya + 1) / count)
                strip = self._strip(free, row, int(cc.min()), int(cc.max()), rr, cc)
                if strip is not None:
                    strips.append(strip)
        return strips

    @staticmethod
    def _shallow_strip(free, rr, cc, half, dist, margin=0.25):
        """The cheapest single strip along a row that sweeps every cell (rr, cc) of a patch:
        for each row within reach (half swath less `margin` cells) of all of them, the
        shortest span of free cells whose disc footprint of that radius reaches every cell;
        cost = twice
        (the distance from the path + the span), as the detour flies it out and back. None
        when no row can (a patch taller than a swath, or no free span)."""
        h, w = free.shape
        reach = half - margin
        ya, yb = int(rr.min()), int(rr.max())
        best = None
        for r in range(max(0, int(math.ceil(yb - reach))),
                       min(h - 1, int(math.floor(ya + reach))) + 1):
            across = np.sqrt(np.maximum(reach * reach - (rr - r) ** 2.0, 0.0))
            lo = int(math.floor(float(np.min(cc + across)) + 1e-9))   # the span must start
            hi = int(math.ceil(float(np.max(cc - across)) - 1e-9))    # by lo and end from hi
            if lo >= hi:      # one point sweeps it: the free one nearest the path in [hi, lo]
                c0, c1 = max(0, hi), min(w - 1, lo)
                if c0 > c1:
                    continue
                row_d = np.where(free[r, c0:c1 + 1], dist[r, c0:c1 + 1], np.inf)
                j = int(np.argmin(row_d))
                if not np.isfinite(row_d[j]):
                    continue
                lo = hi = c0 + j
                d = float(row_d[j])
            else:
                if not free[r, lo:hi + 1].all():
                    continue
                d = float(np.min(dist[r, lo:hi + 1]))
            cost = 2.0 * (d + (hi - lo))
            if best is None or cost < best[0]:
                best = (cost, (lo + 0.5, r + 0.5), (hi + 0.5, r + 0.5))
        return None if best is None else best[1:]

    @staticmethod
    def _strip(free, row, c0, c1, rr, cc):
        """The strip (two cell-centre points) through a missed patch along `row`."""
        on_row = cc[rr == row]
        if len(on_row) == 0:
            j = int(np.argmin(np.abs(rr - row)))
            row, on_row = int(rr[j]), cc[rr == rr[j]]
        lo, hi = int(on_row.min()), int(on_row.max())
        line = free[row, lo:hi + 1]
        if not line.all():   # keep the longest free run
            s, e = _runs(line)
            k = int(np.argmax(e - s))
            lo, hi = lo + int(s[k]), lo + int(e[k])
        return (lo + 0.5, row + 0.5), (hi + 0.5, row + 0.5)

    @staticmethod
    def _strip_detour(free, p, q, a, b):
        """Points to insert after p (before q): along the leg to the foot of the strip, out
        over the strip and back to the same foot; the leg itself is still flown whole."""
        if q is None:
            q = p
        # the foot on the leg itself (a leg is free, so are its parts): a foot snapped to a
        # cell centre would bend a slanted lane by up to half a cell along its whole length
        foot = _foot(p, q, a)
        out = []
        for x, y in ((p, foot), (foot, a), (a, b), (b, a), (a, foot), (foot, q)):
            if x == y:
                continue
            leg = _free_leg(free, x, y)
            if leg is None:
                return None
            out.extend(leg[1:])
        if not out or out[-1] != q:
            return None
        out.pop()           # q itself follows in the path
        return out


class _Stitcher:
    """A lane sequence [(entry, exit)] from the start as a path: A* transits between lanes,
    lanes along their rows; legs and lanes that several sequences share are planned once."""

    def __init__(self, free, start, lane_path):
        self.free, self.start, self.lane_path = free, start, lane_path
        self.legs, self.lanes = {}, {}

    def __call__(self, seq):
        pts = [self.start]
        cur = self.start
        for a, b in seq:
            if (cur, a) not in self.legs:
                self.legs[(cur, a)] = gridpath.connect(self.free, cur, a)
            leg = self.legs[(cur, a)]
            if leg is None:       # cannot happen inside one free component
                raise PlanningError(f'no free connection from {cur} to {a}')
            pts.extend(leg[1:])
            key = (a, b) if a <= b else (b, a)
            if key not in self.lanes:
                self.lanes[key] = self.lane_path(self.free, *key)
            lane = self.lanes[key] if key == (a, b) else self.lanes[key][::-1]
            pts.extend(lane[1:])
            cur = b
        return pts


def _detour_costs(strips, dist):
    """What each strip (a, b) along a row costs flown out and back from the path: twice
    (its distance from the path + its length), cells."""
    out = []
    for a, b in strips:
        row, lo, hi = int(a[1]), int(min(a[0], b[0])), int(max(a[0], b[0]))
        out.append(2.0 * (float(np.min(dist[row, lo:hi + 1])) + (hi - lo)))
    return out


def _insert_strips(seq, strips, start, limits=None):
    """Each strip [(a, b)] inserted into the lane sequence where it adds the least
    straight-line transit, flown a -> b or b -> a; cheapest insertion, one strip at a time.

    Besides the plain insertion before lane g, the lanes g..h-1 after the strip may be flown
    the other way (a strip along an edge then leads into the lanes at their far end): either
    as a run reversed (each lane flipped, the order reversed: the run's inner transits keep
    their lengths) or each lane flipped in place (the order kept: its inner transits join
    the other ends). The run is up to RUN_MAX lanes long, or all the lanes after the strip.
    limits: per strip, the most it may add to the tour, its own length included (a strip
    that would add more is left out)."""
    seq = list(seq)
    s0 = np.asarray(start, float)
    for k, (a, b) in enumerate(strips):
        n = len(seq)
        ent = np.asarray([e for e, _ in seq], float).reshape(-1, 2)
        ext = np.vstack([s0[None], np.asarray([x for _, x in seq], float).reshape(-1, 2)])
        # old[g]: ext[g] -> ent[g], the link into lane g (ext[0] is the start; old[n] = 0)
        old = np.append(np.hypot(*(ent - ext[:-1]).T), 0.0)
        flip = np.hypot(*(ent[:-1] - ext[2:]).T)     # entry i -> exit i+1, i = 0..n-2
        # what flipping lanes g..h-1 in place changes inside the run: prefix[h-1] - prefix[g]
        prefix = np.concatenate([[0.0], np.cumsum(flip - old[1:n])]) if n else np.zeros(1)
        after = np.append(np.hypot(*(ent[:-1] - ent[1:]).T), 0.0)   # entry h-1 -> entry h
        best = None
        for first, last in ((a, b), (b, a)):
            into = np.hypot(*(ext - np.asarray(first, float)).T)   # ext[g] -> the strip
            add = into.copy()
            add[:-1] += np.hypot(*(ent - np.asarray(last, float)).T)
            d = add - old
            g = int(np.argmin(d))
            if best is None or d[g] < best[0]:
                best = (float(d[g]), g, g, (first, last), False)
            out = np.hypot(*(ext[1:] - np.asarray(last, float)).T)  # strip -> ext[h], h=1..n
            for g in range(n):
                hs = np.arange(g + 1, min(n, g + RUN_MAX) + 1)      # the run is g..h-1
                if hs[-1] != n:
                    hs = np.append(hs, n)
                # reversed: strip -> exit of h-1 (ext[h]), ..., entry of g -> entry of h
                # (nothing at the end); replaced: ext[g] -> ent[g] and ext[h] -> ent[h]
                nxt = np.where(hs < n, np.hypot(*(ent[np.minimum(hs, n - 1)] - ent[g]).T),
                               0.0)
                total = into[g] + out[hs - 1] + nxt - old[g] - old[hs]
                m = int(np.argmin(total))
                if total[m] < best[0] - 1e-9:
                    best = (float(total[m]), g, int(hs[m]), (first, last), False)
                # flipped in place: strip -> exit of g, ..., entry i -> exit i+1, ...,
                # entry of h-1 -> entry of h
                total = (into[g] + out[g] - old[g] + prefix[hs - 1] - prefix[g]
                         + after[hs - 1] - old[hs])
                m = int(np.argmin(total))
                if total[m] < best[0] - 1e-9:
                    best = (float(total[m]), g, int(hs[m]), (first, last), True)
        delta, g, h, piece, in_place = best
        if limits is None or delta + math.hypot(b[0] - a[0], b[1] - a[1]) < limits[k]:
            seq[g:h] = [(y, x) for x, y in (seq[g:h] if in_place else seq[g:h][::-1])]
            seq.insert(g, piece)
    return seq


def _reversed_variants(variants):
    """rev[j][v]: the variant of cell j that flies variant v backwards (-1 if none)."""
    rev = []
    for vs in variants:
        keys = [tuple(seq) for seq in vs]
        back = [tuple((b, a) for a, b in seq[::-1]) for seq in vs]
        rev.append([keys.index(k) if k in keys else -1 for k in back])
    return rev


def _two_opt(order, d0, cost, rev, passes=20):
    """2-opt over a (cell, variant) tour from the start: a run of cells flown backwards (each
    cell's variant reversed) when that shortens the transits; the tour's end is free."""
    def back(cv):
        return cv[0], rev[cv[0]][cv[1]]

    order = list(order)
    n = len(order)
    for _ in range(passes):
        improved = False
        for i in range(n):
            prev = order[i - 1] if i > 0 else None
            # links inside the run, forwards and backwards, as running sums over j
            inner_old = inner_new = 0.0
            for j in range(i, n):
                if back(order[j])[1] < 0:
                    break
                if j == i:
                    continue
                inner_old += _link(cost, d0, order[j - 1], order[j])
                inner_new += _link(cost, d0, back(order[j]), back(order[j - 1]))
                nxt = order[j + 1] if j + 1 < n else None
                old = _link(cost, d0, prev, order[i]) + _link(cost, d0, order[j], nxt)
                new = _link(cost, d0, prev, back(order[j])) + _link(cost, d0, back(order[i]), nxt)
                if new + inner_new < old + inner_old - 1e-9:
                    order[i:j + 1] = [back(cv) for cv in order[i:j + 1][::-1]]
                    improved = True
                    break
        if not improved:
            break
    return order


def _link(cost, d0, a, b):
    """Transit cost from (cell, variant) a (None: the start) to b (None: the end)."""
    if b is None:
        return 0.0
    if a is None:
        return float(d0[b])
    return float(cost[a[0], a[1], b[0], b[1]])


def _best_variants(cells, d0, cost):
    """Variant of each cell in a fixed order minimising the transits (dynamic programming)."""
    dp = d0[cells[0]].copy()
    back = []
    for a, b in zip(cells[:-1], cells[1:]):
        total = dp[:, None] + cost[a, :, b, :]
        back.append(total.argmin(axis=0))
        dp = total.min(axis=0)
    v = int(np.argmin(dp))
    out = [v]
    for arg in reversed(back):
        v = int(arg[v])
        out.append(v)
    return out[::-1]


def _improve_order(order, d0, cost, rounds=3, passes=30):
    """Or-opt over a (cell, variant) tour from the start, then optimal variants; repeat."""
    order = list(order)
    n, nv = d0.shape
    for _ in range(rounds):
        improved_any = False
        for _ in range(passes):
            improved = False
            for p in range(len(order)):
                k = order[p]
                prev = order[p - 1] if p > 0 else None
                nxt = order[p + 1] if p + 1 < len(order) else None
                gain = (_link(cost, d0, prev, k) + _link(cost, d0, k, nxt)
                        - _link(cost, d0, prev, nxt))
                rest = order[:p] + order[p + 1:]
                best = (gain - 1e-9, None)
                for g in range(len(rest) + 1):
                    a = rest[g - 1] if g > 0 else None
                    b = rest[g] if g < len(rest) else None
                    base = _link(cost, d0, a, b)
                    for v in range(nv):
                        kv = (k[0], v)
                        add = _link(cost, d0, a, kv) + _link(cost, d0, kv, b) - base
                        if add < best[0]:
                            best = (add, (g, kv))
                if best[1] is not None:
                    g, kv = best[1]
                    order = rest[:g] + [kv] + rest[g:]
                    improved = improved_any = True
            if not improved:
                break
        cells = [j for j, _ in order]
        variants = _best_variants(cells, d0, cost)
        new = list(zip(cells, variants))
        if new == order and not improved_any:
            break
        order = new
    return order


def _visible_segment(free, arr, point, candidates=12):
    """Index of the path segment from whose nearest point `point` is the shortest way on the
    grid: a straight free line, else an A* way round (the nearest segment beyond a wall
    would cost a long way round; a point just past a staircase boundary is reached round a
    corner); the nearest segment when no way is found."""
    if len(arr) == 1:
        return 0
    a, b = arr[:-1], arr[1:]
    d = b - a
    l2 = np.maximum((d * d).sum(axis=1), 1e-12)
    t = np.clip(((point - a) * d).sum(axis=1) / l2, 0.0, 1.0)
    foot = a + t[:, None] * d
    dist = np.hypot(*(foot - point).T)
    order = np.argsort(dist)[:candidates]
    best = (math.inf, int(order[0]))
    target = (float(point[0]), float(point[1]))
    for i in order:
        if dist[i] >= best[0]:
            break       # a straight line is the shortest way there
        f = (math.floor(foot[i, 0]) + 0.5, math.floor(foot[i, 1]) + 0.5)
        if not free[int(f[1]), int(f[0])]:
            continue
        if gridpath.segment_free(free, f, target):
            way = float(np.hypot(f[0] - target[0], f[1] - target[1]))
        elif dist[i] <= NEAR_WAY:
            try:        # round a corner: a short, bounded search (a wall: not this leg)
                cells = gridpath.astar(free, (int(f[0]), int(f[1])),
                                       (int(target[0]), int(target[1])),
                                       max_expand=NEAR_WAY_EXPAND)
            except gridpath.SearchLimit:
                continue
            if cells is None:
                continue
            way = gridpath.polyline_length(gridpath.polyline_of(free, cells, f, target))
        else:
            continue
        if way < best[0]:
            best = (way, int(i))
    return best[1]


def _segment_distance(px, py, a, b):
    """Distance from points (px, py) (arrays of K) to segments a -> b (M x 2 each): K x M."""
    a = np.asarray(a, float).reshape(-1, 2)
    d = np.asarray(b, float).reshape(-1, 2) - a
    length2 = np.maximum((d * d).sum(axis=1), 1e-12)
    vx, vy = px[:, None] - a[None, :, 0], py[:, None] - a[None, :, 1]
    t = np.clip((vx * d[None, :, 0] + vy * d[None, :, 1]) / length2[None], 0.0, 1.0)
    return np.hypot(vx - t * d[None, :, 0], vy - t * d[None, :, 1])


def _tighten(free, keep, pts, half, passes=2):
    """The path with the vertices dropped whose removal keeps it free and keeps every `keep`
    cell that it sweeps swept: a corner of a transit leg pulled straight, the return leg of an
    out-and-back strip that need not reach its far end again. Swept means the cell centre
    within `half` (cells) of the polyline, measured exactly (centre to segment, as the
    independent evaluator does), not on a raster. Returns (points, vertices dropped)."""
    pts = gridpath.simplify(pts)
    dropped = moved = 0
    h, w = keep.shape
    for _ in range(passes):
        n = len(pts)
        if n < 3:
            break
        # every segment ever alive in this pass: the path's, then each chord that replaces two
        seg_a = np.zeros((2 * n, 2))
        seg_b = np.zeros((2 * n, 2))
        seg_a[:n - 1], seg_b[:n - 1] = pts[:-1], pts[1:]
        alive = np.zeros(2 * n, bool)
        alive[:n - 1] = True
        count = n - 1
        out = [pts[0]]
        s_in = 0
        before = dropped + moved
        for j in range(1, n - 1):
            a, v, b = out[-1], pts[j], pts[j + 1]
            s_out = j
            if gridpath.segment_free(free, a, b) and \
                    _still_swept(keep, a, v, b, half, seg_a, seg_b, alive, (s_in, s_out), h, w):
                alive[s_in] = alive[s_out] = False
                seg_a[count], seg_b[count] = a, b
                alive[count] = True
                s_in = count
                count += 1
                dropped += 1
                continue
            # else moved toward the chord, as far as stays free and sweeps what v did
            # (the shortest move first: most corners cannot move at all)
            foot = _foot(a, b, v)
            best = None
            for t in RELAX:
                u = (v[0] + t * (foot[0] - v[0]), v[1] + t * (foot[1] - v[1]))
                if not (gridpath.segment_free(free, a, u) and gridpath.segment_free(free, u, b)
                        and _still_swept(keep, a, v, b, half, seg_a, seg_b, alive,
                                         (s_in, s_out), h, w, chord=(a, u, b))):
                    break
                best = u
            if best is not None:
                v = best
                moved += 1
            seg_b[s_in] = v
            seg_a[s_out] = v
            out.append(v)
            s_in = s_out
        out.append(pts[-1])
        pts = gridpath.simplify(out)
        if dropped + moved == before:
            break
    return pts, dropped


def _foot_param(a, b, v):
    """Where along segment a-b (0 at a, 1 at b) the point nearest v lies."""
    d = (b[0] - a[0], b[1] - a[1])
    length2 = d[0] * d[0] + d[1] * d[1]
    return 0.0 if length2 < 1e-12 else min(1.0, max(0.0, ((v[0] - a[0]) * d[0]
                                                          + (v[1] - a[1]) * d[1]) / length2))


def _foot(a, b, v):
    """The point of segment a-b nearest v."""
    t = _foot_param(a, b, v)
    return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))


def _still_swept(keep, a, v, b, half, seg_a, seg_b, alive, removed, h, w, chord=None,
                 eps=TIGHT_SLACK):
    """Whether every `keep` cell that a -> v -> b (segments `removed`) or the other alive
    segments sweep is still swept when `chord` (a polyline, default a -> b) replaces
    a -> v -> b. The cells round v are checked first (where a corner cut loses cells)."""
    chord = (a, b) if chord is None else chord
    xs, ys = (a[0], v[0], b[0]), (a[1], v[1], b[1])
    near_v = ((v[0] - half - 1.0, v[0] + half + 1.0), (v[1] - half - 1.0, v[1] + half + 1.0))
    whole = ((min(xs) - half, max(xs) + half), (min(ys) - half, max(ys) + half))
    for (x_lo, x_hi), (y_lo, y_hi) in (near_v, whole):
        c0, c1 = max(0, int(math.floor(x_lo))), min(w, int(math.ceil(x_hi)) + 1)
        r0, r1 = max(0, int(math.floor(y_lo))), min(h, int(math.ceil(y_hi)) + 1)
        rr, cc = np.nonzero(keep[r0:r1, c0:c1])
        if len(rr) and not _cells_kept(cc + c0 + 0.5, rr + r0 + 0.5, a, v, b, chord, half,
                                       seg_a, seg_b, alive, removed, eps):
            return False
    return True


def _cells_kept(px, py, a, v, b, chord, half, seg_a, seg_b, alive, removed, eps):
    """_still_swept on the cell centres (px, py)."""
    d_old = _segment_distance(px, py, (a, v), (v, b)).min(axis=1)
    near = d_old <= half + 1e-9
    if not near.any():
        return True
    px, py = px[near], py[near]
    need = _segment_distance(px, py, chord[:-1], chord[1:]).min(axis=1) > half - eps
    if not need.any():
        return True
    px, py = px[need], py[need]
    x_lo, x_hi, y_lo, y_hi = px.min() - half, px.max() + half, py.min() - half, py.max() + half
    others = alive & (np.minimum(seg_a[:, 0], seg_b[:, 0]) <= x_hi) & \
        (np.maximum(seg_a[:, 0], seg_b[:, 0]) >= x_lo) & \
        (np.minimum(seg_a[:, 1], seg_b[:, 1]) <= y_hi) & \
        (np.maximum(seg_a[:, 1], seg_b[:, 1]) >= y_lo)
    others[list(removed)] = False
    if not others.any():
        return False
    d = _segment_distance(px, py, seg_a[others], seg_b[others]).min(axis=1)
    return bool((d <= half - eps).all())


ANGLE_SAME = 2.0    # degrees: sweep directions closer than this are the same
TIGHT_COMPARE = 0.06  # plans within this share of the cheapest are compared tightened
TURN_BLUR = 4.0     # cells: the smoothing of a turned grid's edges along its rows (sigma)
TURN_REACH = 0.1    # what to sweep on a turned grid: the smoothed todo above this
EDGE_SHARE = 0.15   # an outline direction is tried when its edges are this share of it


def edge_angles(free, count=3):
    """Directions (degrees in [0, 180)) of the longest straight edges of the outline of
    `free` (bool mask: its largest part), at most `count`, each holding at least EDGE_SHARE
    of the outline's length; edges within ANGLE_SAME degrees of the longest one of a
    direction count with it (parallel sides, a side broken by the raster)."""
    contours, _ = cv2.findContours(free.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    outline = max(contours, key=cv2.contourArea)
    perimeter = cv2.arcLength(outline, True)
    if perimeter <= 0:
        return []
    poly = cv2.approxPolyDP(outline, 2.0, True).reshape(-1, 2)
    d = np.roll(poly, -1, axis=0) - poly
    length = np.hypot(d[:, 0], d[:, 1])
    angle = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 180.0
    groups = []     # [the longest edge's angle, total length]
    for k in np.argsort(-length):
        for g in groups:
            if abs((angle[k] - g[0] + 90.0) % 180.0 - 90.0) <= ANGLE_SAME:
                g[1] += length[k]
                break
        else:
            groups.append([float(angle[k]), float(length[k])])
    groups.sort(key=lambda g: -g[1])
    return [round(a, 2) for a, total in groups[:count] if total >= EDGE_SHARE * perimeter]


class _Turn:
    """Cell coordinates of a grid and of the same grid turned by -angle about its centre
    (lanes along `angle` become rows); the turned grid is large enough to hold all of it."""

    def __init__(self, shape, angle):
        h, w = shape
        a = math.radians(angle)
        self.c, self.s = math.cos(a), math.sin(a)
        self.shape = (int(math.ceil(w * abs(self.s) + h * abs(self.c))) + 2,
                      int(math.ceil(w * abs(self.c) + h * abs(self.s))) + 2)
        self.centre = (w / 2.0, h / 2.0)
        self.turned_centre = (self.shape[1] / 2.0, self.shape[0] / 2.0)

    def forward(self, p):
        x, y = p[0] - self.centre[0], p[1] - self.centre[1]
        return (self.c * x + self.s * y + self.turned_centre[0],
                -self.s * x + self.c * y + self.turned_centre[1])

    def backward(self, p):
        x, y = p[0] - self.turned_centre[0], p[1] - self.turned_centre[1]
        return (self.c * x - self.s * y + self.centre[0],
                self.s * x + self.c * y + self.centre[1])

    def smooth(self, mask, level=0.5):
        """The turned grid's cells where `mask`, sampled (sample()) and blurred along the
        rows (TURN_BLUR cells), is above `level` (half true): an edge along the rows keeps to
        one row over long stretches instead of breaking the row into runs."""
        return cv2.GaussianBlur(self.sample(mask).astype(np.float32), (0, 0),
                                sigmaX=TURN_BLUR, sigmaY=0.5) > level

    def holes(self, mask):
        """The cells of the turned grid in the holes of `mask` (sampled): its false parts that
        do not reach the turned grid's border, grown by a cell."""
        out = ~self.sample(mask)
        _, label = cv2.connectedComponents(out.astype(np.uint8), connectivity=8)
        border = np.unique(np.concatenate([label[0], label[-1], label[:, 0], label[:, -1]]))
        out &= ~np.isin(label, border)
        return cv2.dilate(out.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)

    def sample(self, mask):
        """The turned grid's cells: each the value of the cell of `mask` its centre is in
        (False outside it)."""
        h, w = mask.shape
        rows, cols = np.mgrid[0:self.shape[0], 0:self.shape[1]]
        x, y = self.backward((cols + 0.5, rows + 0.5))
        c, r = np.floor(x).astype(int), np.floor(y).astype(int)
        inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        out = np.zeros(self.shape, bool)
        out[inside] = mask[r[inside], c[inside]]
        return out


def _free_leg(free, p, q):
    """A free polyline from p to q, points anywhere in free cells: straight when that is
    free, else through the centres of their cells and an A* way between them."""
    if gridpath.segment_free(free, p, q):
        return [p, q]
    cp, cq = gridpath.centre((int(p[0]), int(p[1]))), gridpath.centre((int(q[0]), int(q[1])))
    mid = gridpath.connect(free, cp, cq)
    if mid is None:
        return None
    return [p] + [m for m in mid if m not in (p, q)] + [q]


def _onto_free_points(free, points):
    """Each point whose cell is not free moved to the centre of the nearest free cell."""
    h, w = free.shape
    out, off = [], []
    for p in points:
        c, r = int(math.floor(p[0])), int(math.floor(p[1]))
        if 0 <= c < w and 0 <= r < h and free[r, c]:
            out.append(p)
        else:
            off.append(len(out))
            out.append(None)
    if off:
        rows, cols = np.nonzero(free)
        for k in off:
            x, y = points[k]
            i = int(np.argmin((cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2))
            out[k] = (cols[i] + 0.5, rows[i] + 0.5)
    return out


def _line_bypass(free, a, q):
    """A free polyline from a to q (in free cells) that keeps to the straight line between
    them and leaves it only round what blocks it (an A* way from the last free point before
    each blocked stretch to the first after it): a slanted lane bypasses a new obstacle the
    way _lane_path bypasses one on a row. None when there is no way."""
    if gridpath.segment_free(free, a, q):
        return [a, q]
    h, w = free.shape
    n = max(2, int(math.ceil(2.0 * math.hypot(q[0] - a[0], q[1] - a[1]))))
    t = np.linspace(0.0, 1.0, n + 1)
    xs, ys = a[0] + t * (q[0] - a[0]), a[1] + t * (q[1] - a[1])
    c, r = np.floor(xs).astype(int), np.floor(ys).astype(int)
    ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
    ok[ok] = free[r[ok], c[ok]]
    starts, ends = _runs(ok)
    out = [a]
    for k, (s0, e0) in enumerate(zip(starts, ends)):
        p0 = (float(xs[s0]), float(ys[s0])) if k else a
        p1 = (float(xs[e0]), float(ys[e0])) if k < len(starts) - 1 else q
        for x, y in ((out[-1], p0), (p0, p1)):
            if x == y:
                continue
            leg = [x, y] if gridpath.segment_free(free, x, y) else _free_leg(free, x, y)
            if leg is None:
                return None
            out.extend(leg[1:])
    return out
