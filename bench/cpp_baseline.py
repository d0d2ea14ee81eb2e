"""Baseline: the PyPI C++ coverage planner `coverage-path-planner` (CaSSAndRA core), fixed.

The area it plans is the reachable free C-space of the evaluator (coverage_eval.reachable_mask:
the map eroded by the robot radius, the component of the start), as a polygon with holes
(cv2.findContours RETR_CCOMP through the centres of the boundary cells, simplified as
cv2.approxPolyDP does with epsilon 0.5 cell but with no edge leaving the reachable cells, in
map-frame metres, every vertex then moved by < 0.01 cell: see simplify() and jitter()).
Settings, the same on every map: pattern 'lines', line spacing (offset) = swath width,
distanceToBorder 0 (the polygon is already eroded by the radius), angle 0 and 90 degrees (the
better one is kept: higher coverage, rounded to 0.1 %, then the shorter path), and either no
border laps or one border lap (perimeter and obstacle borders alike); the two lap settings are
two separate baselines.
"""

import math
import time

import cv2
import numpy as np

import coverage_eval


def reachable_polygons(occupied, resolution, origin, radius, start, epsilon_cells=0.5,
                       with_mask=False):
    """(outer, holes): the reachable C-space as a polygon with holes, N x 2 arrays in metres
    (and the reachable mask, with_mask=True)."""
    reach, _, _ = coverage_eval.reachable_mask(occupied, resolution, origin, radius, start)
    contours, hierarchy = cv2.findContours(reach.astype(np.uint8), cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError('no reachable free space')
    hierarchy = hierarchy[0]
    outers = [i for i in range(len(contours)) if hierarchy[i][3] < 0]
    outer = max(outers, key=lambda i: cv2.contourArea(contours[i]))

    def metres(contour):
        pts = simplify(contour.reshape(-1, 2), reach, epsilon_cells).astype(float)
        return np.column_stack([origin[0] + (pts[:, 0] + 0.5) * resolution,
                                origin[1] + (pts[:, 1] + 0.5) * resolution])

    holes = [metres(contours[i]) for i in range(len(contours)) if hierarchy[i][3] == outer]
    holes = [h for h in holes if len(h) >= 3]
    if with_mask:
        return metres(contours[outer]), holes, reach
    return metres(contours[outer]), holes


def chord_inside(a, b, mask):
    """True if the segment a-b (cell-index coordinates, (col, row), centres on integers) stays
    in `mask` cells, sampled every <= 1/4 cell as the evaluator does."""
    n = max(1, int(math.ceil(math.hypot(b[0] - a[0], b[1] - a[1]) / 0.25)))
    t = (np.arange(n) + 0.5) / n
    cols = np.floor(a[0] + (b[0] - a[0]) * t + 0.5).astype(int)
    rows = np.floor(a[1] + (b[1] - a[1]) * t + 0.5).astype(int)
    h, w = mask.shape
    if (rows < 0).any() or (cols < 0).any() or (rows >= h).any() or (cols >= w).any():
        return False
    return bool(mask[rows, cols].all())


def simplify(pts, mask, epsilon):
    """Douglas-Peucker on a closed contour (the cv2.approxPolyDP rule, epsilon in cells), with
    one more condition: every edge stays in `mask` cells. Plain approxPolyDP cuts the corners of
    obstacles by up to epsilon, into blocked cells: the baseline would be charged collisions of
    our polygon, not of its planner."""
    n = len(pts)
    if n <= 3:
        return pts
    p = pts.astype(float)
    far = int(np.argmax(np.hypot(*(p - p[0]).T)))
    keep = {0, far}
    stack = [(0, far), (far, n)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = p[i], p[j % n]
        mid = p[i + 1:j]
        ab = b - a
        norm = math.hypot(ab[0], ab[1])
        if norm > 0:
            d = np.abs(ab[0] * (mid[:, 1] - a[1]) - ab[1] * (mid[:, 0] - a[0])) / norm
        else:
            d = np.hypot(*(mid - a).T)
        k = int(np.argmax(d))
        if d[k] > epsilon or not chord_inside(a, b, mask):
            keep.add(i + 1 + k)
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return pts[sorted(keep)]


def jitter(polygons, resolution, origin, outside, amplitude_cells=0.01, seed=0):
    """Move every vertex by up to 0.01 cell (fixed seed). The vertices lie on the half-cell
    lattice and so do the planner's lines (spaced from the border): a line running exactly
    through two vertices of an obstacle is a degenerate case the C++ planner does not clip (it
    crosses the obstacle). An edge that the move would push into `outside` cells (a diagonal
    edge touching a blocked corner) keeps its original end points. The jitter gives the
    baseline the benefit of the doubt."""
    rng = np.random.default_rng(seed)
    out = []
    for p in polygons:
        q = p + rng.uniform(-amplitude_cells, amplitude_cells, p.shape) * resolution
        n = len(q)
        for _ in range(n):
            bad = [i for i in range(n) if coverage_eval.collision_length(
                outside, resolution, origin, q[[i, (i + 1) % n]]) > 0]
            if not bad:
                break
            for i in bad:
                q[i], q[(i + 1) % n] = p[i], p[(i + 1) % n]
        out.append(q)
    return out


def _settings(cpp, swath_width, angle, laps):
    s = cpp.PathSettings()
    s.pattern = 'lines'
    s.offset = float(swath_width)
    s.angle = float(angle)
    s.distanceToBorder = 0.0
    s.mowArea = True
    s.mowBorder = laps > 0
    s.borderLaps = int(laps)
    s.mowBorderCcw = False
    s.mowExclusionsBorder = laps > 0
    s.exclusionsBorderLaps = int(laps)
    s.mowExclusionsBorderCcw = False
    return s


def plan_once(outer, holes, start, swath_width, angle, laps):
    """One call of the C++ planner: (path N x 2, seconds)."""
    import coverage_path_planner as cpp

    def polygon(pts):
        return cpp.Polygon([cpp.Point(float(x), float(y)) for x, y in pts])

    t0 = time.perf_counter()
    env = cpp.Environment(polygon(outer))
    for hole in holes:
        env.addObstacle(polygon(hole))
    result = cpp.PathService().computeFullTask(env, _settings(cpp, swath_width, angle, laps),
                                               cpp.Point(float(start[0]), float(start[1])))
    path = np.array([(p.x, p.y) for p in result.path.getPoints()], dtype=float).reshape(-1, 2)
    return path, time.perf_counter() - t0


def plan_baseline(m, laps):
    """Plan map `m` (coverage_maps dict) with the baseline, `laps` border laps (0 or 1).

    Returns {'ok', 'path' (N x 2), 'planning_time_s' (the kept angle's C++ call),
    'polygon_time_s' (grid -> polygon, Python, once for both angles), 'angle_deg',
    'candidates': {angle: {...}}, 'error'}; never raises."""
    out = {'ok': False, 'laps': laps, 'path': np.zeros((0, 2)), 'planning_time_s': None,
           'angle_deg': None, 'candidates': {}, 'error': None}
    try:
        t0 = time.perf_counter()
        outer, holes, reach = reachable_polygons(m['occupied'], m['resolution'], m['origin'],
                                                 m['radius'], m['start'], with_mask=True)
        outer, *holes = jitter([outer] + holes, m['resolution'], m['origin'], ~reach)
        out['polygon_time_s'] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - a failed baseline is reported, not raised
        out['error'] = f'polygon: {type(exc).__name__}: {exc}'
        return out
    out['polygon_vertices'] = int(len(outer) + sum(len(h) for h in holes))
    out['holes'] = len(holes)
    best = None
    for angle_deg in (0, 90):
        try:
            path, seconds = plan_once(outer, holes, m['start'], m['swath_width'],
                                      math.radians(angle_deg), laps)
        except Exception as exc:  # noqa: BLE001
            out['candidates'][angle_deg] = {'error': f'{type(exc).__name__}: {exc}'}
            continue
        if len(path) == 0:
            out['candidates'][angle_deg] = {'error': 'empty path'}
            continue
        ev = coverage_eval.evaluate(m['occupied'], m['resolution'], m['origin'], m['radius'],
                                    m['swath_width'], m['start'], path)
        out['candidates'][angle_deg] = {'planning_time_s': seconds,
                                        'coverage_percent': ev['coverage_percent'],
                                        'path_length_m': ev['path_length_m'],
                                        'collision_m': ev['collision_m']}
        key = (-round(ev['coverage_percent'], 1), ev['path_length_m'])
        if best is None or key < best[0]:
            best = (key, angle_deg, path, seconds)
    if best is None:
        out['error'] = '; '.join(f"{a}: {c['error']}" for a, c in out['candidates'].items())
        return out
    _, out['angle_deg'], out['path'], out['planning_time_s'] = best
    out['ok'] = True
    return out
