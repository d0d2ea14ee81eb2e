"""`make room`: a ground robot covers a furnished room on its own wheel odometry.

    python -m skyloc_coverage.room_demo [--rate 2] [--max-sim-seconds 1500] [--goal 99]

Runs the `room` graph (config/graphs/room.yaml: simulator, map_handler, coverage, follower)
until the coverage node reports the goal on /coverage/progress or the time limit passes,
records every topic, and writes runs/<timestamp>/: bag/ (MCAP), coverage.png (the room, the
plan, the odometry and true tracks, the swept cells), run.json and logs/. The pipeline runs on
/odom (drifting wheel odometry); ground truth is read here, after the run, only to say how
much of the room was really swept and how far the odometry drifted.
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

from skyloc_coverage.planner import swept_mask


def _params(root):
    with open(os.path.join(root, 'config', 'room.yaml')) as stream:
        return yaml.safe_load(stream)


def read_last(bag_dir, topics):
    """{topic: (count, last message)} of the topics in a bag (rosbags, any message type)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore, Stores
    out = {}
    with AnyReader([Path(bag_dir)], default_typestore=get_typestore(Stores.LATEST)) as reader:
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, _, raw in reader.messages(connections=conns):
            count = out.get(conn.topic, (0, None))[0]
            out[conn.topic] = (count + 1, (conn, raw))
        return {t: (n, reader.deserialize(raw, conn.msgtype)) for t, (n, (conn, raw))
                in out.items()}


def _grid(msg):
    info = msg.info
    data = np.asarray(msg.data, np.int8).reshape(info.height, info.width)
    return data, float(info.resolution), (info.origin.position.x, info.origin.position.y)


def summarise(run_dir, swath_width, wall_s, code, goal):
    """coverage.png + run.json from the bag; returns the summary dict."""
    from skyloc_sim.track_plot import read_track
    bag = os.path.join(run_dir, 'bag')
    odom = read_track(bag, '/odom')
    truth = read_track(bag, '/sim/ground_truth')
    last = read_last(bag, {'/coverage/grid', '/coverage/path', '/map', '/coverage/progress'})
    if '/coverage/grid' not in last:
        raise RuntimeError(f'{bag}: no /coverage/grid recorded (did the coverage node plan?)')
    cov, res, origin = _grid(last['/coverage/grid'][1])
    target = cov >= 0
    # the truth's own sweep of the same target cells: what the odometry-driven robot really did
    true_cells = (truth[:, 1:3] - np.asarray(origin)) / res
    true_swept = swept_mask(cov.shape, [true_cells], swath_width / 2.0 / res)
    truth_percent = 100.0 * (true_swept & target).sum() / max(1, target.sum())
    progress = float(last['/coverage/progress'][1].data) if '/coverage/progress' in last \
        else float('nan')
    path_msg = last.get('/coverage/path')
    plan = np.array([(p.pose.position.x, p.pose.position.y) for p in path_msg[1].poses]) \
        if path_msg else np.zeros((0, 2))
    t_end = min(odom[-1, 0], truth[-1, 0])
    o_end = odom[np.searchsorted(odom[:, 0], t_end) - 1, 1:3]
    g_end = truth[np.searchsorted(truth[:, 0], t_end) - 1, 1:3]
    drift = float(np.hypot(*(o_end - g_end)))
    dist = float(np.hypot(*np.diff(truth[:, 1:3], axis=0).T).sum())
    summary = {
        'exit_code': code, 'goal_percent': goal,
        'coverage_percent_odometry': round(progress, 2),
        'coverage_percent_ground_truth': round(float(truth_percent), 2),
        'target_area_m2': round(float(target.sum()) * res * res, 2),
        'sim_seconds': round(float(truth[-1, 0] - truth[0, 0]), 1),
        'wall_seconds': round(wall_s, 1), 'distance_m': round(dist, 1),
        'odometry_drift_end_m': round(drift, 3),
        'paths_published': path_msg[0] if path_msg else 0,
        'bag': bag, 'coverage_png': os.path.join(run_dir, 'coverage.png'),
    }
    plot(summary, last.get('/map'), cov, res, origin, plan, odom, truth)
    with open(os.path.join(run_dir, 'run.json'), 'w') as stream:
        json.dump(summary, stream, indent=2)
    return summary


def plot(summary, map_entry, cov, res, origin, plan, odom, truth):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    h, w = cov.shape
    extent = (origin[0], origin[0] + w * res, origin[1], origin[1] + h * res)
    fig = Figure(figsize=(9, 9 * h / w + 0.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    if map_entry is not None:
        occ, mres, morigin = _grid(map_entry[1])
        mh, mw = occ.shape
        shade = np.where(occ >= 50, 0.0, np.where(occ < 0, 0.55, 1.0))
        ax.imshow(shade, origin='lower', cmap='gray', vmin=0, vmax=1, interpolation='nearest',
                  extent=(morigin[0], morigin[0] + mw * mres, morigin[1], morigin[1] + mh * mres))
    swept = np.ma.masked_where(cov != 100, np.ones_like(cov, float))
    ax.imshow(swept, origin='lower', cmap=ListedColormap(['#34c759']), alpha=0.35,
              extent=extent, interpolation='nearest')
    if len(plan):
        ax.plot(plan[:, 0], plan[:, 1], '-', color='#8e8e93', lw=0.6, label='last plan')
    ax.plot(truth[:, 1], truth[:, 2], '-', color='black', lw=0.9, label='ground truth')
    ax.plot(odom[:, 1], odom[:, 2], '--', color='#007aff', lw=0.9,
            label='wheel odometry (the pose used)')
    ax.plot(truth[0, 1], truth[0, 2], 'o', color='#ff9500', label='start')
    s = summary
    ax.set_title(f"room coverage: {s['coverage_percent_odometry']:.1f}% on odometry, "
                 f"{s['coverage_percent_ground_truth']:.1f}% on ground truth\n"
                 f"{s['distance_m']:.0f} m driven in {s['sim_seconds']:.0f} s simulated, "
                 f"odometry drift {s['odometry_drift_end_m']:.2f} m at the end")
    ax.set_xlabel('x (m, map frame)')
    ax.set_ylabel('y (m)')
    ax.set_aspect('equal')
    ax.legend(loc='upper right', fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(summary['coverage_png'], dpi=110)


def main(argv=None):
    from skyloc_sim import runner
    from skyloc_sim.graph import workspace_root
    from skyloc_sim.world import room_world
    parser = argparse.ArgumentParser(prog='make room', description=__doc__.split('\n\n')[0])
    parser.add_argument('--rate', type=float, default=2.0,
                        help='simulated seconds per wall second (default 2: four node '
                        'processes share two cores)')
    parser.add_argument('--max-sim-seconds', type=float, default=1500.0,
                        help='stop here if the goal is not reached (default 1500)')
    parser.add_argument('--goal', type=float, default=None,
                        help='coverage percent that ends the run (default: the coverage '
                        "node's coverage_goal_percent in config/room.yaml)")
    parser.add_argument('--out', default='runs', help='parent folder of the run folder')
    parser.add_argument('--domain-id', type=int, default=None)
    args = parser.parse_args(argv)
    root = workspace_root()
    params = _params(root)
    sim = params['sim']['ros__parameters']
    cov = params['coverage']['ros__parameters']
    goal = args.goal if args.goal is not None else float(cov['coverage_goal_percent'])
    size = sim.get('room_size_m', [12.0, 9.0])
    world = room_world(os.path.join(root, sim.get('world_cache_dir', '.cache/worlds')),
                       sim.get('world_seed', 3), float(size[0]), float(size[1]))
    run_dir = os.path.join(root, args.out, datetime.now().strftime('%Y%m%d-%H%M%S') + '-room')
    os.makedirs(run_dir)
    domain = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100
    print(f'[room] {world}; run folder {run_dir}; until {goal:g}% covered or '
          f'{args.max_sim_seconds:g} s simulated, at {args.rate:g}x', flush=True)
    t0 = time.monotonic()
    code = runner.main(['run', 'room', '--root', root, '--domain-id', str(domain),
                        '--sim-duration', str(args.max_sim_seconds), '--progress',
                        '--stop-when', f'/coverage/progress>={goal}',
                        '--record', os.path.join(run_dir, 'bag'),
                        '--log-dir', os.path.join(run_dir, 'logs'),
                        f'world:={world}', f'rate:={args.rate}'])
    wall = time.monotonic() - t0
    s = summarise(run_dir, float(cov['swath_width']), wall, code, goal)
    print('\n[room] summary')
    print(f"  coverage         {s['coverage_percent_odometry']:.1f}% on the robot's odometry, "
          f"{s['coverage_percent_ground_truth']:.1f}% on ground truth "
          f"(of {s['target_area_m2']:.1f} m^2; goal {goal:g}%)")
    print(f"  driven           {s['distance_m']:.0f} m in {s['sim_seconds']:.0f} s simulated, "
          f"{wall:.0f} s wall")
    print(f"  odometry drift   {s['odometry_drift_end_m']:.2f} m at the end")
    print(f"  plans            {s['paths_published']} (first plan + replans)")
    print(f"  picture          {s['coverage_png']}")
    print(f"  bag, logs        {s['bag']}, {os.path.join(run_dir, 'logs')}")
    ok = code == 0 and s['coverage_percent_odometry'] >= goal
    print(f"[room] {'done' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
