"""Hand-made cases for the independent coverage evaluator (bench/coverage_eval.py).

Run: .venv/bin/python -m pytest bench/test_coverage_eval.py
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import coverage_eval as ce  # noqa: E402

RES = 0.05
ORIGIN = (-3.0, 2.0)


def centre(row, col, res=RES, origin=ORIGIN):
    return origin[0] + (col + 0.5) * res, origin[1] + (row + 0.5) * res


def strip_map():
    """Walls on rows 0 and 20, free between, 200 columns: with radius 0.2 m (4 cells) the free
    C-space is rows 5..15."""
    occ = np.zeros((21, 200), dtype=bool)
    occ[0, :] = True
    occ[20, :] = True
    return occ


def test_blocked_is_inclusive_radius():
    occ = np.zeros((21, 21), dtype=bool)
    occ[10, 10] = True
    blocked = ce.blocked_mask(occ, RES, 0.2)
    assert blocked[10, 14] and blocked[14, 10]  # exactly 4 cells = 0.2 m: blocked (<=)
    assert not blocked[10, 15]
    assert blocked[13, 12] and not blocked[13, 13]  # sqrt(13) < 4 < sqrt(18)
    assert blocked.sum() == sum(1 for r in range(21) for c in range(21)
                                if (r - 10) ** 2 + (c - 10) ** 2 <= 16)


def test_straight_line_over_strip_covers_it():
    occ = strip_map()
    a, b = centre(10, 0), centre(10, 199)
    r = ce.evaluate(occ, RES, ORIGIN, 0.2, 0.6, a, np.array([a, b]))
    assert r['reachable_area_m2'] == pytest.approx(11 * 200 * RES * RES)
    assert r['coverage_percent'] == pytest.approx(100.0)
    assert r['collision_m'] == 0.0
    assert r['path_length_m'] == pytest.approx(199 * RES)
    assert r['ideal_length_eroded_m'] == pytest.approx(11 * 200 * RES * RES / 0.6)
    assert r['length_ratio_eroded'] == pytest.approx(199 * RES / (11 * 200 * RES * RES / 0.6))
    assert r['turns'] == 0 and r['total_rotation_deg'] == pytest.approx(0.0)
    assert r['unreachable_free_area_m2'] == 0.0
    # the floor: free rows 1..19, each within 4 cells (the radius) of the C-space rows 5..15
    assert r['floor_area_m2'] == pytest.approx(19 * 200 * RES * RES)
    assert r['ideal_length_m'] == pytest.approx(19 * 200 * RES * RES / 0.6)
    assert r['length_ratio'] == pytest.approx(199 * RES * 0.6 / (19 * 200 * RES * RES))


def test_narrow_swath_misses_the_edges():
    occ = strip_map()
    a, b = centre(10, 0), centre(10, 199)
    # half swath 0.2 m = 4 cells: rows 6..14 of the 11 rows 5..15
    r = ce.evaluate(occ, RES, ORIGIN, 0.2, 0.4, a, np.array([a, b]))
    assert r['coverage_percent'] == pytest.approx(100.0 * 9 / 11)
    assert r['missed_area_m2'] == pytest.approx(2 * 200 * RES * RES)


def test_line_offset_inside_its_cells_is_exact():
    """A line a quarter cell above the row centres: the swept rows depend on the exact distance,
    not on the cell the line runs through."""
    occ = np.zeros((40, 60), dtype=bool)
    y = centre(20, 0)[1] + 0.25 * RES
    path = np.array([[centre(20, 0)[0], y], [centre(20, 59)[0], y]])
    swept = ce.swept_mask(occ.shape, RES, ORIGIN, 2 * 3.5 * RES, path)
    # rows whose centre is within 3.5 cells of y = row 20.25: 17 (3.25) .. 23 (2.75), not 24 (3.75)
    rows = np.nonzero(swept[:, 30])[0]
    assert rows.min() == 17 and rows.max() == 23


def test_path_through_a_wall():
    occ = np.zeros((100, 100), dtype=bool)
    occ[:, 50] = True  # radius 0.2 m blocks columns 46..54
    a, b = centre(50, 20), centre(50, 80)
    r = ce.evaluate(occ, RES, ORIGIN, 0.2, 0.4, a, np.array([a, b]))
    assert r['collision_m'] == pytest.approx(9 * RES, abs=1e-9)
    assert r['reachable_area_m2'] == pytest.approx(100 * 46 * RES * RES)
    assert r['unreachable_free_area_m2'] == pytest.approx(100 * 45 * RES * RES)
    assert r['path_length_m'] == pytest.approx(60 * RES)


def test_path_outside_the_map_is_a_collision():
    occ = np.zeros((20, 20), dtype=bool)
    a = centre(10, 10)
    b = (ORIGIN[0] - 0.5, a[1])  # 0.5 m beyond the left edge
    r = ce.evaluate(occ, RES, ORIGIN, 0.2, 0.4, a, np.array([a, b]))
    assert r['collision_m'] == pytest.approx(0.5, abs=1e-9)


def test_one_point_path_covers_a_disc():
    occ = np.zeros((50, 50), dtype=bool)
    p = centre(25, 25)
    for path in (np.array([p]), np.array([p, p, p])):
        swept = ce.swept_mask(occ.shape, RES, ORIGIN, 0.5, path)
        rr, cc = np.mgrid[0:50, 0:50]
        assert np.array_equal(swept, (rr - 25) ** 2 + (cc - 25) ** 2 <= 25)
    assert not ce.swept_mask(occ.shape, RES, ORIGIN, 0.5, np.zeros((0, 2))).any()


def test_swept_matches_brute_force():
    rng = np.random.default_rng(3)
    h, w, res, origin = 37, 53, 0.1, (1.3, -2.2)
    path = np.column_stack([rng.uniform(origin[0] - 0.5, origin[0] + w * res + 0.5, 12),
                            rng.uniform(origin[1] - 0.5, origin[1] + h * res + 0.5, 12)])
    rr, cc = np.mgrid[0:h, 0:w]
    px = origin[0] + (cc + 0.5) * res
    py = origin[1] + (rr + 0.5) * res
    dist = np.full((h, w), np.inf)
    for (x0, y0), (x1, y1) in zip(path[:-1], path[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        dist = np.minimum(dist, np.hypot(px - x0 - t * dx, py - y0 - t * dy))
    for swath in (0.3, 0.75, 1.6):
        swept = ce.swept_mask((h, w), res, origin, swath, path)
        clear = np.abs(dist - swath / 2) > 1e-3 * res  # leave knife-edge cells out
        assert np.array_equal(swept[clear], (dist <= swath / 2)[clear])


def test_turns_and_rotation():
    assert ce.turn_stats(np.array([[0, 0], [1, 0], [1, 1], [0, 1]])) == (2, pytest.approx(180))
    assert ce.turn_stats(np.array([[0, 0], [1, 0], [0, 0]])) == (1, pytest.approx(180))
    # duplicates and collinear points change nothing
    t, rot = ce.turn_stats(np.array([[0, 0], [0.5, 0], [0.5, 0], [1, 0], [1, 1]]))
    assert (t, rot) == (1, pytest.approx(90))
    # small wiggles add rotation but no turn
    t, rot = ce.turn_stats(np.array([[0, 0], [1, 0], [2, 0.1], [3, 0.1]]))
    assert t == 0 and rot == pytest.approx(2 * np.degrees(np.arctan(0.1)))


def test_blocked_start_uses_nearest_free_cell():
    occ = strip_map()
    start = centre(1, 100)  # inside the inflated wall
    reach, blocked, cell = ce.reachable_mask(occ, RES, ORIGIN, 0.2, start)
    assert blocked[1, 100] and cell == (5, 100)
    assert reach.sum() == 11 * 200


def test_replan_collision_path_only_counts_the_remainder():
    occ = np.zeros((100, 100), dtype=bool)
    occ[:, 50] = True
    a, b = centre(50, 20), centre(50, 80)
    r = ce.evaluate(occ, RES, ORIGIN, 0.2, 0.4, a, np.array([a, b]),
                    collision_path=np.array([a, centre(50, 30)]))
    assert r['collision_m'] == 0.0


def test_maps_are_valid_and_deterministic(tmp_path):
    import coverage_maps
    maps = coverage_maps.all_maps()
    assert len(maps) >= 12
    assert {m['kind'] for m in maps} == {'room', 'field'}
    again = coverage_maps.all_maps()
    for m, m2 in zip(maps, again):
        assert np.array_equal(m['occupied'], m2['occupied'])
        assert max(m['occupied'].shape) <= 400
        reach, blocked, cell = ce.reachable_mask(m['occupied'], m['resolution'], m['origin'],
                                                 m['radius'], m['start'])
        rows, cols = ce.point_cells([m['start']], m['resolution'], m['origin'])
        assert cell == (rows[0], cols[0]), m['name']  # the start is free
        ox, oy, orad = m['new_obstacle']
        rows, cols = ce.point_cells([(ox, oy)], m['resolution'], m['origin'])
        assert reach[rows[0], cols[0]], m['name']
        assert reach.sum() >= 0.95 * (~blocked).sum(), m['name']
        from scipy import ndimage
        assert ndimage.label(~blocked)[1] == 1, m['name']  # no corner-to-corner passages
    m = maps[0]
    yaml_path = coverage_maps.write_map_server(m, str(tmp_path))
    occ, res, origin = coverage_maps.read_map_server(yaml_path)
    assert np.array_equal(occ, m['occupied']) and res == m['resolution']
    assert origin == pytest.approx(m['origin'])


def test_baseline_polygon_edges_stay_in_reachable_cells():
    import coverage_maps
    import cpp_baseline
    m = coverage_maps.room_lshape()
    outer, holes = cpp_baseline.reachable_polygons(m['occupied'], m['resolution'], m['origin'],
                                                   m['radius'], m['start'])
    assert len(holes) >= 3
    blocked = ce.blocked_mask(m['occupied'], m['resolution'], m['radius'])
    for poly in [outer] + holes:
        ring = np.vstack([poly, poly[:1]])
        assert ce.collision_length(blocked, m['resolution'], m['origin'], ring) == 0.0


def test_touching_a_blocked_cell_is_not_a_collision():
    blocked = np.zeros((10, 10), dtype=bool)
    blocked[5, 5] = True
    blocked[0:2, :] = True
    res, origin = 1.0, (0.0, 0.0)
    # a diagonal through the corners of cell (5, 5), with a piece midpoint exactly on a corner
    diag = np.array([[3.5, 6.5], [6.5, 3.5]])
    assert ce.collision_length(blocked, res, origin, diag) == 0.0
    # along the edge between a blocked row and a free row: touching
    assert ce.collision_length(blocked, res, origin, np.array([[1.0, 2.0], [8.0, 2.0]])) == 0.0
    # along the edge between two blocked rows: inside
    assert ce.collision_length(blocked, res, origin,
                               np.array([[1.0, 1.0], [8.0, 1.0]])) == pytest.approx(7.0)
    # across the blocked cell: one cell of it
    assert ce.collision_length(blocked, res, origin,
                               np.array([[3.5, 5.5], [7.5, 5.5]])) == pytest.approx(1.0)
