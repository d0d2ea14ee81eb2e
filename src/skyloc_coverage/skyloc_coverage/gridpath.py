"""Paths on a boolean grid: exact segment tests, A*, line-of-sight shortcuts.

Coordinates are *cell coordinates*: cell (col, row) covers [col, col+1) x [row, row+1) and
its centre is (col + 0.5, row + 0.5). ``free[row, col]`` says where the vehicle centre may be.
"""

import heapq
import math

import numpy as np

SQRT2 = math.sqrt(2.0)
_STEPS = ((1, 0, 1.0), (-1, 0, 1.0), (0, 1, 1.0), (0, -1, 1.0),
          (1, 1, SQRT2), (1, -1, SQRT2), (-1, 1, SQRT2), (-1, -1, SQRT2))


def segment_cells(p0, p1):
    """Every cell the segment p0-p1 passes through or touches, as (cols, rows) arrays.

    Exact: the parameters where the segment crosses a grid line split it into pieces that each
    lie in one cell; the midpoint of each piece names that cell, and the crossing points name
    the cells the segment touches at a corner (floor() of a point on a grid line).
    """
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    ts = [np.array([0.0, 1.0])]
    if abs(dx) > 1e-12:
        xs = np.arange(math.floor(min(x0, x1)) + 1, math.ceil(max(x0, x1)))
        ts.append((xs - x0) / dx)
    if abs(dy) > 1e-12:
        ys = np.arange(math.floor(min(y0, y1)) + 1, math.ceil(max(y0, y1)))
        ts.append((ys - y0) / dy)
    # sorted (repeats only add zero-length pieces whose midpoint is a crossing point, which
    # is checked anyway)
    t = np.sort(np.clip(np.concatenate(ts), 0.0, 1.0))
    mid = (t[:-1] + t[1:]) * 0.5 if len(t) > 1 else t
    # the crossing points too: a segment through a grid corner touches the cell that a
    # sample exactly on that corner falls in (conservative, and what floor() reports)
    # (on both sides within 1e-6, so that rounding in another frame changes nothing)
    cx, cy = x0 + t * dx, y0 + t * dy
    e = 1e-6
    xs = [x0 + mid * dx, cx - e, cx + e, cx - e, cx + e]
    ys = [y0 + mid * dy, cy - e, cy - e, cy + e, cy + e]
    return (np.floor(np.concatenate(xs)).astype(int), np.floor(np.concatenate(ys)).astype(int))


def segment_free(free, p0, p1):
    """True when every cell the segment touches is inside the grid and free."""
    h, w = free.shape
    (x0, y0), (x1, y1) = p0, p1
    # fast path: along a row or a column, strictly inside cells (lanes and their joins)
    if y0 == y1 and y0 % 1.0 not in (0.0,) and x0 % 1.0 != 0.0 and x1 % 1.0 != 0.0:
        r, a, b = int(math.floor(y0)), int(math.floor(min(x0, x1))), int(math.floor(max(x0, x1)))
        return 0 <= r < h and a >= 0 and b < w and bool(free[r, a:b + 1].all())
    if x0 == x1 and x0 % 1.0 != 0.0 and y0 % 1.0 != 0.0 and y1 % 1.0 != 0.0:
        c, a, b = int(math.floor(x0)), int(math.floor(min(y0, y1))), int(math.floor(max(y0, y1)))
        return 0 <= c < w and a >= 0 and b < h and bool(free[a:b + 1, c].all())
    cols, rows = segment_cells(p0, p1)
    if (cols < 0).any() or (rows < 0).any() or (cols >= w).any() or (rows >= h).any():
        return False
    return bool(free[rows, cols].all())


def path_free(free, points):
    """True when every segment of a polyline (cell coordinates) is free."""
    return all(segment_free(free, points[i], points[i + 1]) for i in range(len(points) - 1))


_FLAT_CACHE = {}


def _flat(free):
    """free as bytes over flat indices (fast scalar reads), cached for the last few grids."""
    key = (id(free), free.shape, free.__array_interface__['data'][0])
    hit = _FLAT_CACHE.get(key)
    if hit is None or hit[0] is not free:
        if len(_FLAT_CACHE) > 8:
            _FLAT_CACHE.clear()
        hit = (free, np.ascontiguousarray(free, np.uint8).tobytes())
        _FLAT_CACHE[key] = hit
    return hit[1]


class SearchLimit(Exception):
    """A* expanded more cells than it was allowed to."""


def astar(free, start, goal, weight=2.0, max_expand=None):
    """8-connected A* between cells (col, row), no corner cutting; list of cells or None.

    `weight` > 1 inflates the heuristic (weighted A*: at most that factor longer than the
    shortest path, far fewer expansions); callers shorten the result by line of sight.
    `max_expand`: raise SearchLimit after expanding that many cells (a goal close by but
    behind a wall floods the region first; the caller then tries a coarser search).
    """
    h, w = free.shape
    start, goal = (int(start[0]), int(start[1])), (int(goal[0]), int(goal[1]))
    for c, r in (start, goal):
        if not (0 <= c < w and 0 <= r < h and free[r, c]):
            return None
    if start == goal:
        return [start]
    cells = _flat(free)
    gx, gy = goal
    s_idx, g_idx = start[1] * w + start[0], gy * w + gx
    steps = [(dc, dr, dr * w + dc, cost) for dc, dr, cost in _STEPS]
    g = {s_idx: 0.0}
    parent = {s_idx: -1}
    k = weight
    d2 = SQRT2 - 2.0
    heap = [(0.0, s_idx)]
    closed = set()
    push, pop = heapq.heappush, heapq.heappop
    inf = math.inf
    while heap:
        _, idx = pop(heap)
        if idx in closed:
            continue
        if idx == g_idx:
            path = []
            while idx != -1:
                path.append((idx % w, idx // w))
                idx = parent[idx]
            return path[::-1]
        closed.add(idx)
        if max_expand is not None and len(closed) > max_expand:
            raise SearchLimit(f'A* expanded more than {max_expand} cells')
        r, c = divmod(idx, w)
        base = g[idx]
        inner = 0 < c < w - 1 and 0 < r < h - 1     # no bounds checks needed
        for dc, dr, off, cost in steps:
            if not inner:
                nc, nr = c + dc, r + dr
                if nc < 0 or nc >= w or nr < 0 or nr >= h:
                    continue
            n = idx + off
            if not cells[n] or n in closed:
                continue
            if dr and dc and not (cells[idx + dc] and cells[idx + dr * w]):
                continue
            new = base + cost
            if new < g.get(n, inf):
                g[n] = new
                parent[n] = idx
                ax, ay = abs(c + dc - gx), abs(r + dr - gy)
                push(heap, (new + k * (ax + ay + d2 * (ax if ax < ay else ay)), n))
    return None


def _corners(points):
    """The points where a polyline changes direction (and its ends)."""
    if len(points) <= 2:
        return list(points)
    out = [points[0]]
    for i in range(1, len(points) - 1):
        (ax, ay), (bx, by), (cx, cy) = points[i - 1], points[i], points[i + 1]
        if (bx - ax) * (cy - by) - (by - ay) * (cx - bx) != 0 or \
                (bx - ax) * (cx - bx) + (by - ay) * (cy - by) <= 0:
            out.append(points[i])
    out.append(points[-1])
    return out


def shortcut(free, points):
    """Drop vertices while the straight segment that replaces them stays free (the
    corners of the polyline are the candidates: a straight run is free when its ends' run
    is)."""
    points = _corners(list(points))
    if len(points) <= 2:
        return list(points)
    out = [points[0]]
    i = 0
    n = len(points)
    while i < n - 1:
        j = i + 1
        # the farthest vertex still visible from i (visibility is checked in order)
        while j + 1 < n and segment_free(free, points[i], points[j + 1]):
            j += 1
        out.append(points[j])
        i = j
    return out


def centre(cell):
    return (cell[0] + 0.5, cell[1] + 0.5)


_COARSE_CACHE = {}


def _coarse(free, k):
    """Grid k times coarser: a coarse cell is free when all its k x k cells are."""
    key = (id(free), free.__array_interface__['data'][0], free.shape, k)
    hit = _COARSE_CACHE.get(key)
    if hit is None or hit[0] is not free:
        if len(_COARSE_CACHE) > 8:
            _COARSE_CACHE.clear()
        h, w = free.shape[0] // k * k, free.shape[1] // k * k
        coarse = free[:h, :w].reshape(h // k, k, w // k, k).all(axis=(1, 3))
        hit = (free, coarse)
        _COARSE_CACHE[key] = hit
    return hit[1]


def _coarse_route(free, p0, p1, k=4):
    """Long transits: A* on a k-times coarser grid, then straight legs on the fine grid.

    None when the coarse grid has no way (a passage narrower than k cells): the caller falls
    back to the fine A*.
    """
    coarse = _coarse(free, k)
    ch, cw = coarse.shape

    def nearest_free(p):
        c, r = int(p[0]) // k, int(p[1]) // k
        best = None
        for dr in range(-1, 2):
            for dc in range(-1, 2):
                cc, rr = c + dc, r + dr
                if 0 <= cc < cw and 0 <= rr < ch and coarse[rr, cc]:
                    d = abs(dc) + abs(dr)
                    if best is None or d < best[0]:
                        best = (d, (cc, rr))
        return None if best is None else best[1]

    a, b = nearest_free(p0), nearest_free(p1)
    if a is None or b is None:
        return None
    cells = astar(coarse, a, b)
    if cells is None:
        return None
    mid = k // 2
    pts = [(c * k + mid + 0.5, r * k + mid + 0.5) for c, r in cells]
    out = [p0]
    for q in pts + [p1]:
        if segment_free(free, out[-1], q):
            out.append(q)
            continue
        cells = astar(free, (int(out[-1][0]), int(out[-1][1])), (int(q[0]), int(q[1])))
        if cells is None:
            return None
        out.extend(centre(c) for c in cells[1:])
        out[-1] = q
    return shortcut(free, out)


NEAR_EXPAND = 3000   # cells a near connection's fine A* may expand before going coarse


def connect(free, p0, p1):
    """A free polyline from p0 to p1 (cell-coordinate points at cell centres), or None.

    A straight segment when it is free, otherwise A* shortened by line of sight (on a 4x
    coarser grid first for long transits, which is an order of magnitude faster; on a 2x
    coarser one for near ones whose fine search floods: a goal just behind a wall).
    """
    if segment_free(free, p0, p1):
        return [p0, p1]
    a, b = (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1]))
    if abs(p0[0] - p1[0]) + abs(p0[1] - p1[1]) > 48:
        pts = _coarse_route(free, p0, p1)
        if pts is not None:
            return pts
        cells = astar(free, a, b)
    else:
        try:
            cells = astar(free, a, b, max_expand=NEAR_EXPAND)
        except SearchLimit:
            # a near goal behind a wall: the way round on a 2x coarser grid (a door three
            # cells wide still passes there), else the full fine search
            pts = _coarse_route(free, p0, p1, k=2)
            if pts is not None:
                return pts
            cells = astar(free, a, b)
    return None if cells is None else polyline_of(free, cells, p0, p1)


def polyline_of(free, cells, p0, p1):
    """An A* cell path as a polyline from p0 to p1 through the cell centres between,
    shortened by line of sight."""
    pts = [centre(c) for c in cells]
    pts[0], pts[-1] = p0, p1
    return shortcut(free, pts)


def polyline_length(points):
    pts = np.asarray(points, float)
    if len(pts) < 2:
        return 0.0
    return float(np.hypot(*np.diff(pts, axis=0).T).sum())


def simplify(points, eps=1e-9):
    """Remove repeated and collinear vertices (same heading on both sides)."""
    pts = [tuple(p) for p in points]
    out = []
    for p in pts:
        if out and abs(p[0] - out[-1][0]) < eps and abs(p[1] - out[-1][1]) < eps:
            continue
        if len(out) >= 2:
            a, b = out[-2], out[-1]
            cross = (b[0] - a[0]) * (p[1] - b[1]) - (b[1] - a[1]) * (p[0] - b[0])
            dot = (b[0] - a[0]) * (p[0] - b[0]) + (b[1] - a[1]) * (p[1] - b[1])
            if abs(cross) < eps and dot > 0:
                out[-1] = p
                continue
        out.append(p)
    return out


def turns(points, min_deg=10.0):
    """(number of heading changes above min_deg, total absolute rotation in degrees)."""
    pts = np.asarray(simplify(points), float)
    if len(pts) < 3:
        return 0, 0.0
    d = np.diff(pts, axis=0)
    heading = np.arctan2(d[:, 1], d[:, 0])
    change = np.abs((np.diff(heading) + np.pi) % (2 * np.pi) - np.pi)
    deg = np.degrees(change)
    return int((deg > min_deg).sum()), float(deg.sum())
