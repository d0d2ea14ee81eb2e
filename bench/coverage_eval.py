"""Independent coverage evaluator (issue 5): scores any coverage path on an occupancy grid.

It imports nothing from skyloc_coverage or from the baseline planner, so that both planners are
scored by the same rules. Grid convention (nav_msgs/OccupancyGrid): row 0 is the bottom row
(smallest y); cell (row, col) has its centre at x = origin_x + (col + 0.5) * resolution,
y = origin_y + (row + 0.5) * resolution; a point (x, y) lies in cell
(floor((y - origin_y) / res), floor((x - origin_x) / res)).

Definitions:
- blocked: cells whose centre is within `radius` (<=) of the centre of an occupied cell, and
  everything outside the map;
- reachable: the 8-connected component of free (not blocked) cells that holds the start (the
  nearest free cell when the start is blocked); other free cells are unreachable;
- swept: cells whose centre is within swath_width / 2 of the path polyline;
- coverage_percent = 100 |swept & reachable| / |reachable|;
- collision_m: length of the polyline inside blocked cells or outside the map (running along
  the edge of a blocked cell, or through its corner, is touching, not entering it);
- floor_area_m2: the free cells (not occupied) within `radius` of a reachable cell, the floor
  a vehicle there can stand over (the free area it can reach, not eroded);
- ideal_length_m = floor area / swath width; length_ratio = path length / ideal: the goal's
  ratio, the issue's "ideal (free area / swath width)" (the erosion by the radius is named for
  coverage, not for the ideal; with it, a plain boustrophedon of an empty 300 x 200 m field at
  a 20 m swath and a 3 m radius is already 1.09);
- ideal_length_eroded_m = reachable area / swath width; length_ratio_eroded = path length /
  that (informational: the stricter reading);
- turns: vertices where the heading changes by more than 10 degrees (duplicate points merged;
  collinear vertices change nothing), total_rotation_deg: sum of the absolute heading changes.
"""

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

TURN_THRESHOLD_DEG = 10.0
EIGHT = np.ones((3, 3), dtype=bool)


def blocked_mask(occupied, resolution, radius):
    """Cells whose centre is within `radius` metres (<=) of an occupied cell's centre."""
    occupied = np.asarray(occupied, dtype=bool)
    if not occupied.any():
        return np.zeros(occupied.shape, dtype=bool)
    dist_cells = ndimage.distance_transform_edt(~occupied)
    return dist_cells <= radius / resolution + 1e-9


def point_cells(points, resolution, origin):
    """(row, col) integer indices of the cells holding each point (may lie outside the map)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    cols = np.floor((points[:, 0] - origin[0]) / resolution).astype(np.int64)
    rows = np.floor((points[:, 1] - origin[1]) / resolution).astype(np.int64)
    return rows, cols


def reachable_mask(occupied, resolution, origin, radius, start):
    """(reachable, blocked, start_cell): the free C-space component holding the start."""
    blocked = blocked_mask(occupied, resolution, radius)
    free = ~blocked
    h, w = free.shape
    rows, cols = point_cells([start], resolution, origin)
    r, c = int(rows[0]), int(cols[0])
    if not (0 <= r < h and 0 <= c < w and free[r, c]):
        fr, fc = np.nonzero(free)
        if fr.size == 0:
            return np.zeros_like(free), blocked, None
        xs = origin[0] + (fc + 0.5) * resolution
        ys = origin[1] + (fr + 0.5) * resolution
        i = int(np.argmin((xs - start[0]) ** 2 + (ys - start[1]) ** 2))
        r, c = int(fr[i]), int(fc[i])
    labels, _ = ndimage.label(free, structure=EIGHT)
    return labels == labels[r, c], blocked, (r, c)


def polyline_samples(path, step):
    """Points along the polyline, at most `step` apart, vertices included."""
    path = np.asarray(path, dtype=float).reshape(-1, 2)
    if len(path) < 2:
        return path.copy()
    seg = np.diff(path, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    n = np.maximum(1, np.ceil(lengths / step).astype(np.int64))
    idx = np.repeat(np.arange(len(seg)), n)
    t = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    t = t / np.repeat(n, n)
    pts = path[idx] + seg[idx] * t[:, None]
    return np.vstack([pts, path[-1:]])


def polyline_pieces(path, step):
    """Midpoints and lengths of pieces at most `step` long that tile the polyline."""
    path = np.asarray(path, dtype=float).reshape(-1, 2)
    if len(path) < 2:
        return np.zeros((0, 2)), np.zeros(0)
    seg = np.diff(path, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    n = np.maximum(1, np.ceil(lengths / step).astype(np.int64))
    idx = np.repeat(np.arange(len(seg)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    t = (k + 0.5) / np.repeat(n, n)
    mids = path[idx] + seg[idx] * t[:, None]
    return mids, (lengths / n)[idx]


def swept_mask(shape, resolution, origin, swath_width, path):
    """Cells whose centre is within swath_width / 2 of the path polyline.

    The polyline is sampled every resolution / 4 and the samples rasterised into a grid padded by
    the half swath (samples just outside the map still sweep cells inside it); a Euclidean
    distance transform of that mask settles every cell farther than one cell diagonal from the
    swath edge; the cells in that band are settled with their exact distance to the polyline
    (segment_distance), so a cell's result does not depend on where the path crosses its
    neighbours.
    """
    h, w = shape
    path = np.asarray(path, dtype=float).reshape(-1, 2)
    swept = np.zeros((h, w), dtype=bool)
    if len(path) == 0:
        return swept
    half = swath_width / 2.0
    samples = polyline_samples(path, resolution / 4.0)
    pad = int(math.ceil(half / resolution)) + 2
    rows, cols = point_cells(samples, resolution, origin)
    rows += pad
    cols += pad
    hp, wp = h + 2 * pad, w + 2 * pad
    inside = (rows >= 0) & (rows < hp) & (cols >= 0) & (cols < wp)
    if not inside.any():
        return swept
    marks = np.zeros((hp, wp), dtype=bool)
    marks[rows[inside], cols[inside]] = True
    edt = ndimage.distance_transform_edt(~marks)[pad:pad + h, pad:pad + w]
    half_cells = half / resolution
    slack = math.sqrt(0.5) + 1e-6  # a sample is at most half a cell diagonal from its centre
    swept[edt <= half_cells - slack] = True
    band = (edt > half_cells - slack) & (edt <= half_cells + slack)
    br, bc = np.nonzero(band)
    if br.size:
        centres = np.column_stack([origin[0] + (bc + 0.5) * resolution,
                                   origin[1] + (br + 0.5) * resolution])
        swept[br, bc] = segment_distance(path, centres, resolution) <= half + 1e-9
    return swept


def segment_distance(path, points, resolution):
    """Exact Euclidean distance from each point to the polyline (its nearest segment).

    Candidate segments come from the nearest samples (every resolution / 4, a k-d tree); the
    distance to each candidate segment is then computed exactly, so a cell centre exactly half
    a swath from a lane counts as swept (a sample-based distance would be up to 1/8 cell long).
    """
    path = np.asarray(path, dtype=float).reshape(-1, 2)
    if len(path) == 1:
        return np.hypot(*(points - path[0]).T)
    seg = np.diff(path, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    n = np.maximum(1, np.ceil(lengths / (resolution / 4.0)).astype(np.int64))
    seg_id = np.repeat(np.arange(len(seg)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    samples = path[seg_id] + seg[seg_id] * (k / np.repeat(n, n))[:, None]
    tree = cKDTree(samples)
    kk = min(6, len(samples))
    _, nearest = tree.query(points, k=kk)
    nearest = nearest.reshape(len(points), kk)
    best = np.full(len(points), np.inf)
    for j in range(kk):
        for shift in (0, -1):      # the sample's segment and the one before (a vertex)
            sid = np.clip(seg_id[nearest[:, j]] + shift, 0, len(seg) - 1)
            a, d = path[sid], seg[sid]
            l2 = np.maximum((d * d).sum(axis=1), 1e-18)
            t = np.clip(((points - a) * d).sum(axis=1) / l2, 0.0, 1.0)
            best = np.minimum(best, np.hypot(*(a + t[:, None] * d - points).T))
    return best


def collision_length(blocked, resolution, origin, path):
    """Length (m) of the polyline whose pieces (<= resolution / 4) lie in blocked cells or
    outside the map, a piece taken where its midpoint is. A midpoint exactly on a cell edge or
    corner (a path running along an edge, a diagonal through a corner) is in collision only if
    every cell that edge or corner belongs to is blocked: touching a blocked cell is not
    entering it."""
    mids, lengths = polyline_pieces(path, resolution / 4.0)
    if len(mids) == 0:
        return 0.0
    h, w = blocked.shape

    def candidates(u):
        near = np.round(u)
        on_edge = np.abs(u - near) < 1e-6
        lo = np.where(on_edge, near - 1, np.floor(u)).astype(np.int64)
        hi = np.where(on_edge, near, np.floor(u)).astype(np.int64)
        return lo, hi

    def blocked_at(rows, cols):
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        out = np.ones(len(rows), dtype=bool)
        out[inside] = blocked[rows[inside], cols[inside]]
        return out

    c0, c1 = candidates((mids[:, 0] - origin[0]) / resolution)
    r0, r1 = candidates((mids[:, 1] - origin[1]) / resolution)
    bad = blocked_at(r0, c0) & blocked_at(r0, c1) & blocked_at(r1, c0) & blocked_at(r1, c1)
    return float(lengths[bad].sum())


def turn_stats(path, threshold_deg=TURN_THRESHOLD_DEG):
    """(turns, total_rotation_deg) after merging duplicate points."""
    path = np.asarray(path, dtype=float).reshape(-1, 2)
    if len(path) < 3:
        return 0, 0.0
    keep = np.ones(len(path), dtype=bool)
    keep[1:] = np.hypot(*np.diff(path, axis=0).T) > 1e-6
    path = path[keep]
    if len(path) < 3:
        return 0, 0.0
    seg = np.diff(path, axis=0)
    heading = np.arctan2(seg[:, 1], seg[:, 0])
    change = np.degrees(np.abs((np.diff(heading) + np.pi) % (2 * np.pi) - np.pi))
    # a reversal wraps to -180 or +180: both are 180 degrees
    return int((change > threshold_deg).sum()), float(change.sum())


def path_length(path):
    path = np.asarray(path, dtype=float).reshape(-1, 2)
    if len(path) < 2:
        return 0.0
    return float(np.hypot(*np.diff(path, axis=0).T).sum())


def evaluate(occupied, resolution, origin, radius, swath_width, start, path_xy,
             collision_path=None):
    """Score a coverage path. Returns a dict of plain floats / ints (JSON-serialisable).

    collision_path: the part of the path that must avoid obstacles, when it differs from the
    whole (after a replan, the part flown before the obstacle appeared is not a collision).
    """
    occupied = np.asarray(occupied, dtype=bool)
    path = np.asarray(path_xy, dtype=float).reshape(-1, 2)
    cell_area = resolution * resolution
    reachable, blocked, _ = reachable_mask(occupied, resolution, origin, radius, start)
    swept = swept_mask(occupied.shape, resolution, origin, swath_width, path)
    n_reach = int(reachable.sum())
    n_cov = int((swept & reachable).sum())
    free_area = float((~blocked).sum()) * cell_area
    reach_area = n_reach * cell_area
    length = path_length(path)
    ideal = reach_area / swath_width
    near = ndimage.distance_transform_edt(~reachable) <= radius / resolution + 1e-9
    floor_area = float((near & ~occupied).sum()) * cell_area
    turns, rotation = turn_stats(path)
    collision = collision_length(blocked, resolution, origin,
                                 path if collision_path is None else collision_path)
    return {
        'coverage_percent': 100.0 * n_cov / n_reach if n_reach else 0.0,
        'covered_area_m2': n_cov * cell_area,
        'missed_area_m2': (n_reach - n_cov) * cell_area,
        'reachable_area_m2': reach_area,
        'unreachable_free_area_m2': free_area - reach_area,
        'collision_m': collision,
        'path_length_m': length,
        'floor_area_m2': floor_area,
        'ideal_length_m': floor_area / swath_width,
        'length_ratio': length * swath_width / floor_area if floor_area > 0 else float('inf'),
        'ideal_length_eroded_m': ideal,
        'length_ratio_eroded': length / ideal if ideal > 0 else float('inf'),
        'turns': turns,
        'total_rotation_deg': rotation,
        'points': int(len(path)),
    }
