"""Occupancy mapping, map_server files, coverage tracking and the path follower (no ROS)."""

import math

import numpy as np
import pytest

from skyloc_coverage.follower import FollowerConfig, PurePursuit
from skyloc_coverage.grid import GridMap, inflate, load_map, MapError, save_map
from skyloc_coverage.mapping import OccupancyMapper
from skyloc_coverage.tracking import at_path_end, CoverageTracker, mop_up_decision


def wall_scan(distance, n=360):
    angles = np.linspace(-math.pi, math.pi, n, endpoint=False)
    ranges = np.full(n, np.inf)
    front = np.abs(angles) < math.radians(20)
    ranges[front] = distance / np.cos(angles[front])     # a wall x = distance
    return angles, ranges


def test_scan_marks_the_wall_occupied_and_the_way_free():
    m = OccupancyMapper((100, 100), 0.1, (-5.0, -5.0))
    angles, ranges = wall_scan(3.0)
    for k in range(3):
        m.integrate(0.0, 0.0, 0.0, angles, ranges, 0.1, 4.0, stamp_s=k * 0.1)
    occ = m.occupancy()
    row = 50                                          # y = 0
    assert occ[row, int((3.0 + 5.0) / 0.1)] == 100    # the wall
    assert (occ[row, 51:75] == 0).all()               # free before it
    assert occ[row, int((4.5 + 5.0) / 0.1)] == -1     # behind the wall: unknown
    assert occ[int((-3.0 + 5.0) / 0.1), 50] == 0      # +inf beams: free up to range_max


def test_nan_and_negative_infinity_are_skipped():
    m = OccupancyMapper((50, 50), 0.1, (-2.5, -2.5))
    angles = np.linspace(0, 2 * math.pi, 8, endpoint=False)
    ranges = np.array([np.nan, -np.inf, np.nan, 0.01, np.nan, -np.inf, np.nan, np.nan])
    new_occ, new_free, used = m.integrate(0, 0, 0, angles, ranges, 0.05, 2.0)
    assert used == 0 and len(new_occ) == 0
    assert (m.occupancy() == -1).all()


def test_dynamic_layer_decays_static_layer_stays():
    static = np.zeros((60, 60), np.int8)
    static[:, 0] = 100
    grid = GridMap(static, 0.1, (-3.0, -3.0))
    m = OccupancyMapper.from_static(grid, decay_s=5.0)
    angles, ranges = wall_scan(1.0)
    for k in range(4):
        new_occ, _, _ = m.integrate(0, 0, 0, angles, ranges, 0.1, 2.5, stamp_s=k * 0.1)
        if k == 2:                                    # three hits make an obstacle
            assert len(new_occ) > 0                   # reported when it becomes occupied
    wall = (slice(28, 32), int((1.0 + 3.0) / 0.1))
    assert (m.occupancy()[wall] == 100).any()
    new_occ, new_free = m.decay_to(60.0)              # not seen for a minute
    assert len(new_free) > 0
    assert not (m.occupancy()[wall] == 100).any()
    assert (m.occupancy()[:, 0] == 100).all()         # the static layer does not decay


def test_inflation_distance():
    occ = np.zeros((41, 41), bool)
    occ[20, 20] = True
    grown = inflate(occ, 0.1, 0.5)
    assert grown[20, 25] and not grown[20, 26]
    assert grown[24, 23] and not grown[24, 24]        # sqrt(32) * 0.1 > 0.5


def test_map_server_round_trip_and_negate(tmp_path):
    data = np.zeros((30, 40), np.int8)
    data[5:10, 5:10] = 100
    data[20:, 30:] = -1
    path = save_map(GridMap(data, 0.05, (1.0, -2.0)), str(tmp_path / 'm.yaml'))
    back = load_map(path)
    assert (back.data == data).all()
    assert back.resolution == 0.05 and back.origin == (1.0, -2.0)
    text = (tmp_path / 'm.yaml').read_text().replace('negate: 0', 'negate: 1')
    (tmp_path / 'n.yaml').write_text(text)
    neg = load_map(str(tmp_path / 'n.yaml'))
    assert (neg.data[5:10, 5:10] == 0).all() and (neg.data[0:3, 0:3] == 100).all()


@pytest.mark.parametrize('content, message', [
    ('image: m.pgm\norigin: [0, 0, 0]\n', "'resolution' is missing"),
    ('resolution: 0.1\n', "'image' is missing"),
    ('image: nothere.pgm\nresolution: 0.1\n', 'does not exist'),
    ('image: m.pgm\nresolution: 0.1\nfree_thresh: 0.9\n', 'free_thresh'),
    ('image: m.pgm\nresolution: 0.1\norigin: [0, 0, 0.5]\n', 'rotated origin'),
    ('[1, 2', 'cannot parse'),
])
def test_bad_map_yaml_names_the_problem(tmp_path, content, message):
    save_map(GridMap(np.zeros((4, 4), np.int8), 0.1), str(tmp_path / 'm.yaml'))
    bad = tmp_path / 'bad.yaml'
    bad.write_text(content)
    with pytest.raises(MapError, match=message):
        load_map(str(bad))


def test_unreadable_image(tmp_path):
    (tmp_path / 'junk.pgm').write_bytes(b'P5 nonsense')
    (tmp_path / 'bad.yaml').write_text('image: junk.pgm\nresolution: 0.1\n')
    with pytest.raises(MapError, match='cannot read'):
        load_map(str(tmp_path / 'bad.yaml'))


def test_tracker_sweeps_the_footprint():
    t = CoverageTracker((100, 100), 0.1, (0.0, 0.0), swath_width=1.0)
    for x in np.linspace(2.0, 8.0, 13):              # poses 0.5 m apart
        t.update(x, 5.0)
    col = int(5.0 / 0.1)
    assert t.covered[int(5.0 / 0.1), col] and t.covered[int(5.45 / 0.1), col]
    assert not t.covered[int(5.7 / 0.1), col]
    expected = (6.0 * 1.0 + math.pi * 0.25) / 100.0 * 100
    assert abs(t.progress_percent - expected) < 1.0
    t.update(float('nan'), 1.0)                       # ignored
    before = t.covered.sum()
    t.update(8.0, 9.5)                                # a jump (relocalised): not swept
    assert not t.covered[int(7 / 0.1), int(8.0 / 0.1)]
    assert t.covered.sum() - before < 100


def test_path_end_is_the_last_waypoint_on_the_last_segment_or_standing_still():
    path = np.array([(0.0, 0.0), (4.0, 0.0), (4.0, 1.0), (0.0, 1.0)])
    # near the last waypoint, but still on the first lane (it passes close to the end)
    assert not at_path_end(path, 0, (0.05, 0.9), 0.15, 5.0, 10.0)
    assert at_path_end(path, 0, (2.0, 0.0), 0.15, 10.0, 10.0)         # stopped: given up
    assert not at_path_end(path, 2, (2.0, 1.0), 0.15, 1.0, 10.0)      # on its way
    assert at_path_end(path, 2, (0.1, 1.0), 0.15, 0.0, 10.0)          # arrived
    assert at_path_end(path, 2, (1.0, 1.0), 0.15, 12.0, 10.0)         # gave the end up
    assert not at_path_end(path[:1], 0, (3.0, 3.0), 0.15, 0.0, 10.0)  # one point: go there
    assert at_path_end(path[:1], 0, (0.1, 0.0), 0.15, 0.0, 10.0)
    assert at_path_end(np.zeros((0, 2)), 0, (3.0, 3.0), 0.15, 0.0, 10.0)


def test_mop_up_decision():
    assert mop_up_decision(97.0, 99.5, 0, 3) == (True, 'coverage 97.0% < 99.5%')
    assert mop_up_decision(99.2, 99.5, 2, 3)[0]
    again, why = mop_up_decision(99.2, 99.5, 3, 3)
    assert not again and '3 of 3 mop-up passes spent' in why
    assert not mop_up_decision(99.6, 99.5, 0, 3)[0]
    assert not mop_up_decision(50.0, 99.5, 0, 0)[0]                   # mop-ups off


def test_a_mop_up_pass_sweeps_what_the_first_pass_missed():
    """What the node does at the end of a path: plan the target's uncovered cells from the
    current pose; following that path brings the progress to the goal."""
    from skyloc_coverage.planner import CoveragePlanner
    data = np.zeros((50, 60), np.int8)
    data[0, :] = data[-1, :] = data[:, 0] = data[:, -1] = 100
    data[20:30, 25:35] = 100
    grid = GridMap(data, 0.1, (0.0, 0.0))
    planner = CoveragePlanner(0.5, 0.2)
    plan = planner.plan(grid, (0.5, 0.5))
    t = CoverageTracker(data.shape, 0.1, (0.0, 0.0), 0.5, target=plan.todo)
    path = plan.path
    for a, b in zip(path[:-1], path[1:]):    # the first pass, with the lanes beside the
        if a[1] == b[1] and 2.0 < a[1] < 3.5 and a[0] != b[0]:     # block left out
            t._last = None      # not swept from a (a jump): only the disc at b
            t.update(*b)
            t._last = None
            continue
        for s in np.linspace(0.0, 1.0, 10):
            t.update(*(a + s * (b - a)))
    first = t.progress_percent
    again, _ = mop_up_decision(first, 99.5, 0, 3)
    assert again and first < 97.0
    mop = planner.replan(grid, tuple(path[-1]), covered=t.covered | ~t.target)
    assert mop.todo.sum() == (t.target & ~t.covered).sum()
    assert mop.metrics['path_length_m'] < plan.metrics['path_length_m'] / 2
    for a, b in zip(mop.path[:-1], mop.path[1:]):
        for s in np.linspace(0.0, 1.0, 10):
            t.update(*(a + s * (b - a)))
    assert t.progress_percent >= 99.5
    assert not mop_up_decision(t.progress_percent, 99.5, 1, 3)[0]


def track(path, holonomic, seconds=120.0):
    from skyloc_sim.vehicle import GroundRobot, Limits, Multirotor
    limits = Limits(max_speed=0.6, max_vertical_speed=1.0, max_accel=1.0, max_yaw_rate=1.5)
    x, y = path[0]
    v = Multirotor(limits, x, y, 10.0) if holonomic else GroundRobot(limits, x, y, 0.0)
    pp = PurePursuit(FollowerConfig(lookahead_m=0.3, speed=0.4, max_yaw_rate=1.5,
                                    goal_tolerance_m=0.05, holonomic=holonomic))
    pp.set_path(path)
    out, t = [], 0.0
    while not pp.done and t < seconds:
        vx, vy, wz = pp.command(v.position[0], v.position[1], v.yaw)
        v.command = (vx, vy, 0.0, wz)
        v.step(0.02)
        t += 0.02
        out.append(v.position[:2].copy())
    return pp, np.array(out)


@pytest.mark.parametrize('holonomic', [False, True])
def test_follower_flies_a_boustrophedon_without_cutting_corners(holonomic):
    path = [(0, 0), (4, 0), (4, 0.5), (0, 0.5), (0, 1.0), (4, 1.0)]
    pp, trace = track(path, holonomic)
    assert pp.done
    assert np.hypot(*(trace[-1] - np.array(path[-1]))) < 0.1
    pts = np.array(path, float)
    a, b = pts[:-1], pts[1:]
    d = b - a
    for p in trace[::5]:
        t = np.clip(((p - a) * d).sum(1) / (d * d).sum(1), 0, 1)
        assert np.hypot(*(a + t[:, None] * d - p).T).min() < 0.08
    for corner in pts[1:-1]:   # every corner is reached, not cut
        assert np.hypot(*(trace - corner).T).min() < 0.08


def test_workspace_path(monkeypatch, tmp_path):
    from skyloc_sim.node_main import workspace_path
    monkeypatch.setenv('SKYLOC_ROOT', str(tmp_path))
    assert workspace_path('maps/a.yaml') == str(tmp_path / 'maps' / 'a.yaml')
    assert workspace_path('/abs/a.yaml') == '/abs/a.yaml'
    assert workspace_path('') == ''
    monkeypatch.delenv('SKYLOC_ROOT')
    monkeypatch.chdir(tmp_path)
    assert workspace_path('a.yaml') == str(tmp_path / 'a.yaml')
