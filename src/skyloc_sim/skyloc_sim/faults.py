"""Fault scenarios: the survey mission of `make demo` with faults injected by the simulator.

    python -m skyloc_sim.faults [--short] [--rate 1.5] [--out runs/faults] [--sim-seconds S]

The faults are the simulator's own events (skyloc_interfaces/SimEvent names), scheduled through
its `events` parameter in a copy of config/sim.yaml: a camera blackout, a burst of NaN IMU
samples, a barometer step, a LIDAR dropout and a kidnap (the vehicle moved 150-200 m). The run
is recorded like `make demo` (bag, logs, report.html); then each fault is judged from the bag:

- detected: a node that should see the fault (the embedder or the localizer a camera blackout
  or NaN IMU samples, the map handler a LIDAR dropout, the localizer a kidnap) went WARN or
  ERROR on /diagnostics (the localizer: or DEGRADED / LOST) between the fault's start and 15 s
  after its end (a barometer step has no second altitude source to be seen against: it is
  reported, not required);
- back to OK: the localizer's state is OK again after the fault;
- recovered: the horizontal error (a 10 s rolling median, ground truth from /sim/ground_truth,
  read only here) is within `--goal-m` again, and stays there for 5 s, <= 60 s after the
  fault ends (searched from 10 s after its end on, when the median holds only later errors);
- no node died (the runner's exit code).

Writes RUN_DIR/faults.json, RUN_DIR/faults.png (error over time with the fault windows) and
prints a table. `--short` is the version `make test` runs (faults of 2-10 s, 200 s simulated).
"""

import argparse
from datetime import datetime
import json
import os
from pathlib import Path
import sys
import time

import numpy as np
import yaml

RECOVERY_LIMIT_S = 60.0
DETECT_GRACE_S = 15.0
ROLLING_S = 10.0
HOLD_S = 5.0           # 'within the goal again': and staying there this long

# (t_s, event, args, duration_s): the fault lasts duration_s (0: a step, it happens at once)
FULL = [
    (60.0, 'camera_blackout', [20.0], 20.0),
    (130.0, 'imu_nan_burst', [3.0], 3.0),
    (160.0, 'baro_step', [15.0], 0.0),
    (190.0, 'lidar_dropout', [20.0], 20.0),
    (240.0, 'kidnap', [200.0, 0.0], 0.0),
]
SHORT = [
    (50.0, 'camera_blackout', [10.0], 10.0),
    (80.0, 'imu_nan_burst', [2.0], 2.0),
    (85.0, 'lidar_dropout', [5.0], 5.0),
    (100.0, 'baro_step', [10.0], 0.0),
    (120.0, 'kidnap', [150.0, 0.0], 0.0),
]
# the nodes that should see each fault (a barometer step has nothing to be compared with)
WATCHERS = {'camera_blackout': ('embedder', 'localizer'), 'imu_nan_burst': ('embedder',
            'localizer'), 'lidar_dropout': ('map_handler',), 'kidnap': ('localizer',)}
OBSERVABLE = set(WATCHERS)
LEVEL_NAMES = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}


def scenario_params(root, schedule, out_path, extra=None):
    """config/sim.yaml with the simulator's `events` replaced by the schedule; returns the
    path of the written copy."""
    with open(os.path.join(root, 'config', 'sim.yaml')) as stream:
        params = yaml.safe_load(stream)
    events = [f"{t:g} {name} {' '.join(f'{a:g}' for a in args)}".strip()
              for t, name, args, _ in schedule]
    # (an empty list has no type for ROS 2: the simulator's own default, [''], is "none")
    params['sim']['ros__parameters']['events'] = events or ['']
    for node, values in (extra or {}).items():
        params.setdefault(node, {}).setdefault('ros__parameters', {}).update(values)
    with open(out_path, 'w') as stream:
        yaml.safe_dump(params, stream, sort_keys=False)
    return out_path


def read_diagnostics(bag_dir):
    """Every /diagnostics status in the bag: [(t, name, level int, message, {key: value})],
    sorted by time (header stamps)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore, Stores
    out = []
    with AnyReader([Path(bag_dir)], default_typestore=get_typestore(Stores.LATEST)) as reader:
        conns = [c for c in reader.connections if c.topic == '/diagnostics']
        for conn, log_ns, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 or log_ns * 1e-9
            for status in msg.status:
                level = status.level
                level = level[0] if isinstance(level, (bytes, bytearray)) else int(level)
                out.append((t, status.name, int(level), status.message,
                            {kv.key: kv.value for kv in status.values}))
    out.sort(key=lambda row: row[0])
    return out


def rolling_median(t, values, window_s=ROLLING_S):
    """Median of the values in (t - window_s, t] at every sample."""
    out = np.empty(len(values))
    start = 0
    for i in range(len(values)):
        while t[start] <= t[i] - window_s:
            start += 1
        out[i] = np.median(values[start:i + 1])
    return out


def _stays_within(t, smooth, goal_m, hold_s):
    """Mask: from this sample on the smoothed error stays within the goal for hold_s (or to
    the end of the series)."""
    bad = smooth > goal_m
    next_bad = np.full(len(t), np.inf)
    upcoming = np.inf
    for i in range(len(t) - 1, -1, -1):
        if bad[i]:
            upcoming = t[i]
        next_bad[i] = upcoming
    return ~bad & (next_bad > t + hold_s)


def judge(schedule, diagnostics, t_err, err, goal_m, t_end):
    """One verdict per fault (see the module docstring); t_err/err: the error samples while
    airborne; t_end: the last simulated time of the run."""
    smooth = rolling_median(t_err, err) if len(err) else err
    localizer = [(t, v.get('state', '')) for t, name, _, _, v in diagnostics
                 if 'localizer' in name.lower() and v.get('state')]
    verdicts = []
    for t0, name, args, duration in schedule:
        t1 = t0 + duration
        watchers = WATCHERS.get(name, ())
        seen = [(t, n, LEVEL_NAMES.get(lvl, str(lvl)), m) for t, n, lvl, m, _ in diagnostics
                if t0 <= t <= t1 + DETECT_GRACE_S and lvl >= 1
                and n.split(':')[0].strip() in watchers]
        states = sorted({s for t, s in localizer if t0 <= t <= t1 + DETECT_GRACE_S})
        nodes = sorted({n for _, n, _, _ in seen})
        back_ok = next((t for t, s in localizer if t > t1 and s == 'OK'), None)
        verdict = {'t_s': t0, 'fault': name, 'args': args, 'duration_s': duration,
                   'observable': name in OBSERVABLE,
                   'detected': bool(seen) or any(s in ('DEGRADED', 'LOST') for s in states),
                   'reported_by': nodes,
                   'first_report': seen[0][3] if seen else None,
                   'localizer_states': states,
                   'localizer_ok_again_s': None if back_ok is None else round(back_ok - t1, 1)}
        after = t_err >= t1
        # the trailing median holds only post-fault errors from t1 + ROLLING_S on
        within = (t_err >= t1 + ROLLING_S) & _stays_within(t_err, smooth, goal_m, HOLD_S)
        if not after.any():
            verdict['recovered_after_s'] = None
            verdict['note'] = 'the run ended (or landed) before the fault ended'
        elif within.any():
            verdict['recovered_after_s'] = round(float(max(0.0, t_err[within][0] - t1)), 1)
        else:
            verdict['recovered_after_s'] = None
        until = t1 + (verdict['recovered_after_s'] if verdict['recovered_after_s'] is not None
                      else RECOVERY_LIMIT_S)
        window = (t_err >= t0) & (t_err <= max(until, t0 + 1.0))
        verdict['max_error_m'] = float(err[window].max()) if window.any() else None
        left = t_end - t1
        verdict['recovered'] = (verdict['recovered_after_s'] is not None
                                and verdict['recovered_after_s'] <= RECOVERY_LIMIT_S)
        if verdict['recovered_after_s'] is None and left < RECOVERY_LIMIT_S:
            verdict['note'] = f'only {left:.0f} s of the run after the fault'
        verdict['passed'] = verdict['recovered'] and (verdict['detected']
                                                      or not verdict['observable'])
        verdicts.append(verdict)
    return verdicts


# the soak: an 800 m x 800 m survey flown slowly on a large battery, so that the whole
# pipeline works for the requested time (the mast scenario and its replan included). The
# area keeps 200 m from the 1200 m world's edges: a first soak over 1000 m x 1000 m started
# in a corner where the 200 m camera footprint saw off the map, and the localizer went LOST
SOAK_PARAMS = {
    'sim': {'battery_capacity_wh': 2000.0},
    'coverage': {'area': [-400.0, -350.0, 400.0, -350.0, 400.0, 450.0, -400.0, 450.0]},
    'map_handler': {'size_m': [1120.0, 1120.0], 'origin': [-560.0, -510.0]},
    # a LOST spell holds (and climbs) until the localizer recovers instead of ending the
    # flight after 60 s: the soak is about the pipeline running, not the failsafe
    'mission': {'hold_timeout_s': 1.0e6},
}
SOAK_MIN_ALTITUDE_M = 50.0   # topic gaps are judged while at least this high (no queries
#                              below the survey bands during take-off and landing)
STALL_TOPICS = ('/imu/data', '/baro', '/scan', '/skyloc/pose', '/skyloc/descriptor',
                '/camera/camera_info', '/coverage/progress', '/diagnostics')
STALL_S = 10.0        # no message on a topic for this long above 50 m: a stall
RSS_GROWTH_LIMIT = 10.0   # percent, from a quarter into the run to its end


def _truth_and_error(bag, truth_required=True):
    """(ground truth track, t, horizontal error, airborne mask) of a recorded run; without
    /sim/ground_truth: ValueError, or empty arrays when not truth_required."""
    from skyloc_sim.report import ESTIMATE_TOPICS, horizontal_error
    from skyloc_sim.track_plot import bag_topics, read_track
    topics = bag_topics(bag)
    if truth_required or '/sim/ground_truth' in topics:
        truth = read_track(bag, '/sim/ground_truth')
    else:
        truth = np.zeros((0, 4))
    est_topic = next((t for t in ESTIMATE_TOPICS if t in topics), None)
    estimate = read_track(bag, est_topic) if est_topic else np.zeros((0, 4))
    t, err, _, airborne = horizontal_error(truth, estimate)
    return truth, t, err, airborne


def soak_speed(minutes):
    """Follower speed that makes the soak survey last about `minutes` (~6 km of path)."""
    return float(min(10.0, max(1.0, 6000.0 / (minutes * 60.0))))


def topic_gaps(bag_dir, topics, t_from, t_to):
    """Longest gap (s, log time) between messages of each topic inside [t_from, t_to]; a
    topic with no message there has the whole span as its gap."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore, Stores
    last = {t: t_from for t in topics}
    gaps = {t: 0.0 for t in topics}
    with AnyReader([Path(bag_dir)], default_typestore=get_typestore(Stores.LATEST)) as reader:
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, log_ns, _ in reader.messages(connections=conns):
            t = log_ns * 1e-9
            if t < t_from or t > t_to:
                continue
            gaps[conn.topic] = max(gaps[conn.topic], t - last[conn.topic])
            last[conn.topic] = t
    for topic in topics:
        gaps[topic] = round(max(gaps[topic], t_to - last[topic]), 2)
    return gaps


def analyse_soak(run_dir, minutes, runner_code):
    """soak.json: RSS growth per node, topic stalls above 50 m, error figures."""
    from skyloc_sim.report import error_stats
    bag = os.path.join(run_dir, 'bag')
    # a run that never flew (a node that did not start) has no ground truth: it fails below
    truth, t, err, airborne = _truth_and_error(bag, truth_required=False)
    air = truth[truth[:, 3] > truth[0, 3] + SOAK_MIN_ALTITUDE_M, 0] if len(truth) else \
        np.zeros(0)
    t_from, t_to = (float(air[0]) + 10.0, float(air[-1])) if len(air) else (0.0, 0.0)
    gaps = topic_gaps(bag, STALL_TOPICS, t_from, t_to) if t_to > t_from else {}
    with open(os.path.join(run_dir, 'logs', 'resources.json')) as stream:
        resources = json.load(stream)
    growth = {}
    for node, r in resources.items():
        q, last = r.get('rss_quarter_mb'), r.get('rss_last_mb')
        if q and last:
            growth[node] = {'rss_quarter_mb': q, 'rss_last_mb': last,
                            'growth_percent': round(100.0 * (last - q) / q, 1)}
    stalls = {k: v for k, v in gaps.items() if v > STALL_S}
    result = {'run_dir': run_dir, 'requested_minutes': minutes,
              'sim_seconds': round(float(truth[-1, 0]), 1) if len(truth) else 0.0,
              'above_50m_s': round(t_to - t_from + 10.0, 1) if t_to > t_from else 0.0,
              'runner_exit_code': runner_code, 'no_node_died': runner_code == 0,
              'rss_growth': growth, 'rss_growth_limit_percent': RSS_GROWTH_LIMIT,
              'max_topic_gap_s': gaps, 'stall_limit_s': STALL_S, 'stalls': stalls,
              'error': error_stats(err[airborne]) if len(err) else None}
    result['passed'] = bool(runner_code == 0 and len(truth) and not stalls and growth and all(
        g['growth_percent'] < RSS_GROWTH_LIMIT for g in growth.values()))
    with open(os.path.join(run_dir, 'soak.json'), 'w') as stream:
        json.dump(result, stream, indent=2)
    return result


def soak_lines(result):
    lines = [f"soak: {result['sim_seconds']:.0f} s simulated ({result['above_50m_s']:.0f} s "
             f"above 50 m), no node died: {result['no_node_died']}"]
    for node, g in sorted(result['rss_growth'].items()):
        lines.append(f"  {node:<12} RSS {g['rss_quarter_mb']:.0f} -> {g['rss_last_mb']:.0f} MB "
                     f"({g['growth_percent']:+.1f}%)")
    for topic, gap in result['max_topic_gap_s'].items():
        lines.append(f'  {topic:<22} longest gap {gap:.1f} s'
                     + ('  STALL' if gap > result['stall_limit_s'] else ''))
    if result['error']:
        lines.append(f"  error while airborne: RMSE {result['error']['rmse_m']:.1f} m, p95 "
                     f"{result['error']['p95_m']:.1f} m")
    lines.append(f"  passed: {result['passed']}")
    return lines


def plot(path, t_err, err, smooth, verdicts, goal_m, localizer):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = {'OK': '#34c759', 'DEGRADED': '#ff9500', 'LOST': '#ff3b30'}
    for (t, state), nxt in zip(localizer, localizer[1:] + [(t_err[-1] if len(t_err) else 0,
                                                            None)]):
        ax.axvspan(t, nxt[0], ymin=0.0, ymax=0.03, color=colours.get(state, '#8e8e93'), lw=0)
    for v in verdicts:
        t0, t1 = v['t_s'], v['t_s'] + v['duration_s']
        ax.axvspan(t0, max(t1, t0 + 1.0), color='#ff3b30' if not v['passed'] else '#ffcc00',
                   alpha=0.3, lw=0)
        ax.text(t0, 0.97, f" {v['fault']}", rotation=90, va='top', fontsize=8,
                transform=ax.get_xaxis_transform())
        if v['recovered_after_s'] is not None:
            ax.axvline(t1 + v['recovered_after_s'], color='#34c759', ls=':', lw=1)
    ax.plot(t_err, err, color='#8e8e93', lw=0.8, label='horizontal error')
    ax.plot(t_err, smooth, color='#007aff', lw=1.5, label=f'{ROLLING_S:g} s rolling median')
    ax.axhline(goal_m, color='#ff3b30', ls='--', lw=1, label=f'goal {goal_m:g} m')
    ax.set_yscale('symlog', linthresh=10.0)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel('simulated time, s')
    ax.set_ylabel('error, m')
    ax.set_title('Faults: error over time (bands: fault windows; dotted: back within the goal;'
                 ' bottom strip: localizer state)', fontsize=10)
    ax.legend(loc='upper right', fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def analyse(run_dir, schedule, goal_m, runner_code):
    """faults.json + faults.png of a recorded run; returns the result dict."""
    from skyloc_sim.report import transitions
    bag = os.path.join(run_dir, 'bag')
    truth, t, err, airborne = _truth_and_error(bag)
    t_err, err = t[airborne], err[airborne]
    diagnostics = read_diagnostics(bag)
    t_end = float(truth[-1, 0]) if len(truth) else 0.0
    verdicts = judge(schedule, diagnostics, t_err, err, goal_m, t_end)
    localizer = transitions([(t_, v.get('state')) for t_, name, _, _, v in diagnostics
                             if 'localizer' in name.lower() and v.get('state')])
    smooth = rolling_median(t_err, err) if len(err) else err
    png = plot(os.path.join(run_dir, 'faults.png'), t_err, err, smooth, verdicts, goal_m,
               localizer) if len(err) else None
    result = {'run_dir': run_dir, 'goal_m': goal_m, 'recovery_limit_s': RECOVERY_LIMIT_S,
              'runner_exit_code': runner_code, 'no_node_died': runner_code == 0,
              'sim_seconds': round(t_end, 1), 'faults': verdicts,
              'all_passed': runner_code == 0 and all(v['passed'] for v in verdicts),
              'rmse_m': float(np.sqrt(np.mean(err ** 2))) if len(err) else None,
              'plot': png}
    with open(os.path.join(run_dir, 'faults.json'), 'w') as stream:
        json.dump(result, stream, indent=2)
    return result


def table(result):
    lines = [f"{'t, s':>6}  {'fault':<16} {'detected by':<40} {'max err':>8} "
             f"{'recovered':>10} {'loc. OK':>8}  verdict"]
    for v in result['faults']:
        det = ', '.join(n.split(':')[0] for n in v['reported_by']) or \
            ('-' if v['observable'] else '(not observable)')
        rec = '-' if v['recovered_after_s'] is None else f"{v['recovered_after_s']:.0f} s"
        ok = '-' if v['localizer_ok_again_s'] is None else f"{v['localizer_ok_again_s']:.0f} s"
        mx = '-' if v['max_error_m'] is None else f"{v['max_error_m']:.0f} m"
        lines.append(f"{v['t_s']:>6.0f}  {v['fault']:<16} {det[:40]:<40} {mx:>8} {rec:>10} "
                     f"{ok:>8}  {'pass' if v['passed'] else 'FAIL'}"
                     + (f"  ({v['note']})" if v.get('note') else ''))
    lines.append(f"no node died: {result['no_node_died']}; RMSE while airborne "
                 f"{result['rmse_m'] if result['rmse_m'] is None else round(result['rmse_m'], 1)}"
                 f" m; all passed: {result['all_passed']}")
    return lines


def main(argv=None):
    from skyloc_sim import demo, runner
    from skyloc_sim.graph import workspace_root
    parser = argparse.ArgumentParser(prog='python -m skyloc_sim.faults',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--short', action='store_true',
                        help='the short scenario make test runs (200 s simulated)')
    parser.add_argument('--rate', type=float, default=1.5,
                        help='simulated seconds per wall second (default 1.5, as make demo)')
    parser.add_argument('--sim-seconds', type=float, default=None,
                        help='simulated time (default: 210 short; full: until landed, '
                             'at most 900)')
    parser.add_argument('--goal-m', type=float, default=None,
                        help='error goal the pose must be within again after each fault '
                             '(10 s rolling median), m (default 5, the mission RMSE goal; '
                             '--short: 15, as make test runs it on a shared, loaded machine)')
    parser.add_argument('--out', default=os.path.join('runs', 'faults'),
                        help='parent folder of the run folder (default runs/faults)')
    parser.add_argument('--domain-id', type=int, default=None)
    parser.add_argument('--soak', type=float, metavar='MINUTES', default=None,
                        help='instead of faults: a soak of this many simulated minutes (a '
                             'slow 800 m x 800 m survey), judged on RSS growth per node '
                             '(< 10%% from a quarter in) and topic stalls above 50 m '
                             '(none > 10 s)')
    parser.add_argument('--analyse', metavar='RUN_DIR', default=None,
                        help='only judge a recorded run folder again')
    args = parser.parse_args(argv)
    schedule = [] if args.soak else SHORT if args.short else FULL
    if args.goal_m is None:
        args.goal_m = 15.0 if args.short else 5.0
    if args.analyse and args.soak:
        print('\n'.join(soak_lines(analyse_soak(args.analyse, args.soak, 0))))
        return 0
    if args.analyse:
        result = analyse(args.analyse, schedule, args.goal_m, 0)
        print('\n'.join(table(result)))
        return 0 if result['all_passed'] else 1
    root = workspace_root()
    say = lambda m: print(f'[faults] {m}', flush=True)  # noqa: E731
    params = demo._sim_params(root)
    world_yaml = demo.prepare_world(root, 'procedural', params)
    bundle_dir = demo.prepare_bundle(root, world_yaml, log=say)
    database = demo.prepare_database(root, world_yaml, bundle_dir, log=say)
    out = args.out if os.path.isabs(args.out) else os.path.join(root, args.out)
    run_dir = os.path.join(out, datetime.now().strftime('%Y%m%d-%H%M%S') +
                           ('-short' if args.short else '-soak' if args.soak else ''))
    os.makedirs(run_dir)
    extra = None
    if args.soak:
        extra = dict(SOAK_PARAMS, follower={'speed': soak_speed(args.soak)})
    params_file = scenario_params(root, schedule, os.path.join(run_dir, 'params.yaml'), extra)
    sim_seconds = args.sim_seconds or (200.0 if args.short else args.soak * 60.0 if args.soak
                                       else 900.0)
    domain = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100
    what = 'soak, no faults' if args.soak else f"{len(schedule)} faults: " + ', '.join(
        f'{n} at {t:g} s' for t, n, _, _ in schedule)
    say(f'{what}; {sim_seconds:g} s simulated at most, at {args.rate:g}x; run folder {run_dir}')
    cmd = ['run', 'sim', '--root', root, '--domain-id', str(domain),
           '--sim-duration', str(sim_seconds), '--progress',
           '--record', os.path.join(run_dir, 'bag'), '--log-dir', os.path.join(run_dir, 'logs')]
    if not args.short:   # the full scenario ends with the mission (landed) like make demo
        cmd += ['--stop-when', '/mission/progress>=100']
    cmd += [f'world:={world_yaml}', f'rate:={args.rate}', f'bundle:={bundle_dir}',
            f'database:={database}', f'params_file:={params_file}']
    t0 = time.monotonic()
    code = runner.main(cmd)
    wall = time.monotonic() - t0
    with open(os.path.join(run_dir, 'run.json'), 'w') as stream:
        json.dump({'world': world_yaml, 'exit_code': code, 'wall_seconds': round(wall, 1),
                   'requested_rate': args.rate, 'schedule': schedule}, stream, indent=2)
    if args.soak:
        result = analyse_soak(run_dir, args.soak, code)
        print('\n'.join(soak_lines(result)))
        return 0 if result['passed'] else 1
    result = analyse(run_dir, schedule, args.goal_m, code)
    try:
        from skyloc_sim.report import write_report
        write_report(run_dir, world_yaml)
    except Exception as exc:  # noqa: BLE001 (the verdicts are written; the report is extra)
        say(f'report failed ({exc}): python -m skyloc_sim.report {run_dir}')
    print('\n'.join(table(result)))
    say(f"{'all faults passed' if result['all_passed'] else 'FAILED'} "
        f'({wall:.0f} s wall); {run_dir}/faults.json, faults.png, report.html')
    return 0 if result['all_passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
