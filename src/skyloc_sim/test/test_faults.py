"""Fault scenarios (skyloc_sim.faults): the verdict logic on made-up series, and the short
scenario run for real (the sim graph over DDS with the simulator's fault events)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from skyloc_sim import faults
from skyloc_sim.graph import workspace_root
from skyloc_sim.simulation import parse_event_line


def _series(t_end=200.0, step=0.5, bump=None):
    t = np.arange(0.0, t_end, step)
    err = np.full(len(t), 2.0)
    if bump:
        lo, hi, value = bump
        err[(t >= lo) & (t < hi)] = value
    return t, err


def test_schedules_are_valid_simulator_events():
    for schedule in (faults.FULL, faults.SHORT):
        names = {name for _, name, _, _ in schedule}
        assert names == {'camera_blackout', 'imu_nan_burst', 'baro_step', 'lidar_dropout',
                         'kidnap'}
        for t, name, args, _ in schedule:
            line = f"{t:g} {name} {' '.join(f'{a:g}' for a in args)}"
            assert parse_event_line(line) == (t, name, args)
        kidnap = next(args for _, name, args, _ in schedule if name == 'kidnap')
        assert np.hypot(*kidnap) >= 150.0


def test_scenario_params_replace_the_events_and_keep_the_rest(tmp_path):
    root = workspace_root()
    path = faults.scenario_params(root, faults.SHORT, str(tmp_path / 'p.yaml'))
    with open(path) as stream:
        params = yaml.safe_load(stream)
    with open(os.path.join(root, 'config', 'sim.yaml')) as stream:
        base = yaml.safe_load(stream)
    assert params['sim']['ros__parameters']['events'][0] == '50 camera_blackout 10'
    assert len(params['sim']['ros__parameters']['events']) == len(faults.SHORT)
    assert params['localizer'] == base['localizer']


def test_a_fault_seen_and_recovered_within_the_limit_passes():
    t, err = _series(bump=(50.0, 90.0, 60.0))        # error high until 30 s after the end
    diags = [(55.0, 'localizer: pose', 1, 'no fix for 10 s', {'state': 'DEGRADED'}),
             (56.0, 'follower: path', 1, 'no recent pose', {}),     # not a watcher: ignored
             (95.0, 'localizer: pose', 0, 'ok', {'state': 'OK'})]
    (v,) = faults.judge([(50.0, 'camera_blackout', [10.0], 10.0)], diags, t, err, 5.0, 200.0)
    assert v['detected'] and v['reported_by'] == ['localizer: pose']
    assert v['localizer_states'] == ['DEGRADED']       # seen up to 15 s after the end
    assert v['localizer_ok_again_s'] == 35.0
    # the 10 s rolling median falls below 5 m 5 s after the bump ends at 90 s
    assert v['recovered_after_s'] == pytest.approx(35.0, abs=0.6)
    assert v['recovered'] and v['passed']
    assert v['max_error_m'] == 60.0


def test_a_fault_nobody_reported_or_never_recovered_fails():
    t, err = _series(bump=(50.0, 200.0, 80.0))
    schedule = [(50.0, 'kidnap', [200.0, 0.0], 0.0)]
    (v,) = faults.judge(schedule, [], t, err, 5.0, 200.0)
    assert not v['detected'] and not v['recovered'] and not v['passed']
    # recovered after 70 s: beyond the 60 s limit
    t, err = _series(bump=(50.0, 115.0, 80.0))
    diags = [(52.0, 'localizer: pose', 2, 'kidnapped', {'state': 'LOST'})]
    (v,) = faults.judge(schedule, diags, t, err, 5.0, 200.0)
    assert v['detected'] and v['recovered_after_s'] > 60.0 and not v['passed']


def test_an_unobservable_fault_passes_on_recovery_alone():
    t, err = _series()
    (v,) = faults.judge([(90.0, 'baro_step', [10.0], 0.0)], [], t, err, 5.0, 200.0)
    assert not v['observable'] and not v['detected']
    assert v['recovered_after_s'] == 10.0 and v['passed']   # searched from t1 + 10 s


def test_short_fault_scenario_end_to_end(tmp_path):
    """The sim graph (simulator, embedder, localizer, map handler, coverage, follower,
    mission) with a camera blackout, a NaN IMU burst, a LIDAR dropout, a barometer step and a
    150 m kidnap: no node dies, each observable fault is reported on /diagnostics, and the
    pose is within 5 m (10 s median) again <= 60 s after each fault."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    last = None
    for attempt, domain in enumerate((208, 209)):
        out = tmp_path / f'try{attempt}'
        proc = subprocess.run([sys.executable, '-m', 'skyloc_sim.faults', '--short',
                               '--out', str(out), '--domain-id', str(domain)],
                              env=env, capture_output=True, text=True, timeout=900)
        runs = sorted(out.glob('*')) if out.exists() else []
        result_file = runs[-1] / 'faults.json' if runs else None
        assert result_file is not None and result_file.is_file(), proc.stdout[-3000:] + \
            proc.stderr[-3000:]
        last = json.loads(result_file.read_text())
        lines = '\n'.join(faults.table(last))
        # a DDS participant pair that never connected (a known rare Fast DDS event) shows as
        # a node that never got its input: tried once more on another domain
        if last['all_passed'] or attempt == 1:
            break
        print(f'attempt {attempt} failed, once more:\n{lines}')
    lines = '\n'.join(faults.table(last))
    assert last['no_node_died'], lines
    assert len(last['faults']) == len(faults.SHORT)
    for verdict in last['faults']:
        assert verdict['passed'], lines
    assert os.path.isfile(last['plot'])


def test_soak_parameters_cover_the_area_and_last_long_enough(tmp_path):
    assert faults.soak_speed(60) == pytest.approx(6000.0 / 3600.0)
    assert faults.soak_speed(5) == 10.0 and faults.soak_speed(1000) == 1.0
    extra = dict(faults.SOAK_PARAMS, follower={'speed': faults.soak_speed(60)})
    path = faults.scenario_params(workspace_root(), [], str(tmp_path / 'soak.yaml'), extra)
    with open(path) as stream:
        params = yaml.safe_load(stream)
    assert params['sim']['ros__parameters']['events'] == ['']   # none (a typed empty list)
    assert params['follower']['ros__parameters']['speed'] == pytest.approx(1.667, abs=1e-3)
    assert params['follower']['ros__parameters']['lookahead_m'] == 20.0    # the rest kept
    area = np.array(params['coverage']['ros__parameters']['area']).reshape(-1, 2)
    mh = params['map_handler']['ros__parameters']
    lo, size = np.array(mh['origin']), np.array(mh['size_m'])
    assert np.all(area >= lo) and np.all(area <= lo + size)   # the grid holds the area
