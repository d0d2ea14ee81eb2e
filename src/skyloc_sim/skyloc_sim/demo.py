"""`make demo`: fly the survey mission over the default world and write runs/<timestamp>/.

    python -m skyloc_sim.demo [--sim-seconds 900] [--rate 1.5] [--world procedural]

Runs the `sim` graph (config/graphs/sim.yaml: simulator, embedder, localizer, map handler,
coverage planner, follower, mission) with the graph runner until the mission has landed
(/mission/progress reaches 100) or --sim-seconds, records every topic to a rosbag2 MCAP bag
(camera as JPEG CompressedImage at 1 Hz), then draws the world with the flown track
(track.png), writes run.json and the mission report (report.html, report.json).
"""

import argparse
from datetime import datetime
import json
import math
import os
import sys
import time

import numpy as np
import yaml

from skyloc_sim import runner
from skyloc_sim.graph import workspace_root
from skyloc_sim.world import procedural_world, real_satellite_world, room_world


def _sim_params(root):
    with open(os.path.join(root, 'config', 'sim.yaml')) as stream:
        return yaml.safe_load(stream)['sim']['ros__parameters']


def prepare_world(root, world, params):
    """Generate (or find cached) the world before the clock starts; returns its YAML path."""
    cache = os.path.join(root, params.get('world_cache_dir', '.cache/worlds'))
    if world == 'procedural':
        conditions = sorted({'summer', params.get('condition', 'summer')} - {'map'})
        t0 = time.monotonic()
        path = procedural_world(cache, params.get('world_seed', 7),
                                params.get('world_size_m', 1200.0),
                                params.get('world_resolution', 0.5), conditions=conditions,
                                log=lambda m: print(f'[demo] {m}', flush=True))
        print(f'[demo] world ready in {time.monotonic() - t0:.1f} s: {path}', flush=True)
        return path
    if world == 'room':
        return room_world(cache, params.get('world_seed', 7))
    if world == 'real_satellite':
        return real_satellite_world(cache)
    return os.path.abspath(world)


def export_webots_texture(root=None):
    """Copy the default procedural orthophoto to worlds/textures/ for skyloc.wbt."""
    import shutil
    root = root or workspace_root()
    params = _sim_params(root)
    world_yaml = prepare_world(root, 'procedural', params)
    out = os.path.join(root, 'src', 'skyloc_sim', 'worlds', 'textures')
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, 'orthophoto.png')
    shutil.copyfile(os.path.join(os.path.dirname(world_yaml), 'orthophoto_map.png'), target)
    print(f'[demo] Webots ground texture: {target} (re-run colcon build to install it)')
    return target


def prepare_bundle(root, world_yaml, log=print):
    """The default RootSIFT bundle, fitted once on the world's map (cached per world)."""
    import json
    import shutil
    from skyloc_perception.build_bundle import build, parser
    out = os.path.join(root, '.cache', 'bundles', 'default')
    manifest = os.path.join(out, 'bundle.json')
    want = parser().parse_args(['--map', world_yaml, '--out', out])
    if os.path.isfile(manifest):
        with open(manifest) as stream:
            meta = json.load(stream)
        if meta.get('map_yaml') == world_yaml and meta.get('rootsift') == {
                'step_px': want.rootsift_step, 'patch_px': want.rootsift_patch}:
            return out
    shutil.rmtree(out, ignore_errors=True)
    log(f'building the default RootSIFT bundle from {world_yaml} (once; cached)')
    args = parser().parse_args(['--backend', 'rootsift', '--map', world_yaml, '--out', out])
    build(args, log=lambda m: log(m))
    return out


def trained_bundle(root, world_yaml, log=print):
    """The bundle `make model` selected for this world (it beat the default on its benchmark
    and passed its INT8 check), or None: .cache/models/selected.json names it."""
    import json
    from skyloc_perception.bundle import BundleError, load_bundle
    pointer = os.path.join(root, '.cache', 'models', 'selected.json')
    if not os.path.isfile(pointer):
        return None
    try:
        with open(pointer) as stream:
            choice = json.load(stream)
    except (OSError, ValueError) as exc:
        log(f'{pointer}: unreadable ({exc}): the default bundle is used')
        return None
    if not choice.get('bundle'):
        log(f"make model's last run kept the default bundle ({choice.get('reason')})")
        return None
    if choice.get('map_yaml') != os.path.abspath(world_yaml):
        log(f"make model's bundle was selected on another world ({choice.get('map_yaml')}): "
            f'the default bundle is used')
        return None
    try:
        bundle = load_bundle(choice['bundle'])
    except BundleError as exc:
        log(f"make model's bundle cannot be used ({exc}): the default bundle is used")
        return None
    log(f"using make model's bundle {bundle.path} ({choice.get('reason')})")
    return bundle.path


def prepare_database(root, world_yaml, bundle_dir, log=print, name='default'):
    """The map database of the world for a bundle, .cache/databases/<name> (cached: rebuilt
    when the bundle's model_id or the map changes)."""
    import json
    import shutil
    from skyloc_localization.database import build_database, DatabaseError, load_database
    from skyloc_perception.bundle import load_bundle
    bundle = load_bundle(bundle_dir)
    out = os.path.join(root, '.cache', 'databases', name)
    if os.path.isfile(os.path.join(out, 'db.json')):
        try:
            db = load_database(out, bundle)
            if db.meta.get('map_yaml') == os.path.abspath(world_yaml):
                return out
        except DatabaseError as exc:
            log(f'default database out of date ({exc}): rebuilding')
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    log(f'building the default map database from {world_yaml} (once; cached)')
    db = build_database(world_yaml, bundle, out)
    log(f'database: {len(db)} tiles in {time.monotonic() - t0:.0f} s '
        f'({json.dumps([b["count"] for b in db.bands])} per band)')
    return out


def summarise(run_dir, world_yaml, args, wall_s, code):
    """Track PNG + run.json from the bag; returns the summary dict."""
    from skyloc_sim.track_plot import bag_topics, plot_track, read_track
    bag = os.path.join(run_dir, 'bag')
    track = read_track(bag, '/sim/ground_truth')
    steps = np.diff(track[:, 1:3], axis=0)
    distance = float(np.hypot(steps[:, 0], steps[:, 1]).sum()) if len(track) > 1 else 0.0
    sim_s = float(track[-1, 0] - track[0, 0]) if len(track) > 1 else 0.0
    png = plot_track(world_yaml, {'ground truth': track}, os.path.join(run_dir, 'track.png'),
                     title=f'skyloc demo: {distance:.0f} m flown in {sim_s:.0f} s simulated')
    with open(os.path.join(bag, 'metadata.yaml')) as stream:
        meta = yaml.safe_load(stream)['rosbag2_bagfile_information']
    counts = {t['topic_metadata']['name']: t['message_count']
              for t in meta['topics_with_message_count']}
    size = sum(os.path.getsize(os.path.join(bag, f)) for f in os.listdir(bag))
    summary = {
        'exit_code': code, 'world': world_yaml, 'sim_seconds': round(sim_s, 2),
        'wall_seconds': round(wall_s, 2),
        'real_time_factor': round(sim_s / wall_s, 2) if wall_s > 0 else None,
        'requested_rate': args.rate, 'distance_m': round(distance, 1),
        'max_altitude_m': round(float(track[:, 3].max()), 1) if len(track) else 0.0,
        'bag': bag, 'bag_mb': round(size / 1e6, 2), 'message_counts': counts,
        'topics': bag_topics(bag), 'track_png': png,
    }
    with open(os.path.join(run_dir, 'run.json'), 'w') as stream:
        json.dump(summary, stream, indent=2)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog='make demo', description=__doc__.split('\n\n')[0])
    parser.add_argument('--sim-seconds', type=float, default=900.0,
                        help='most simulated time: the run ends when the mission has landed '
                             '(/mission/progress reaches 100) or at this time (default 900 s)')
    parser.add_argument('--rate', type=float, default=1.5,
                        help='simulated seconds per wall second (default 1.5: on a 2-core '
                             'machine a faster clock starves the localizer of CPU and the '
                             'closed-loop error grows, 2.2 m RMSE at 1.5x, 22 m at 2.3x)')
    parser.add_argument('--world', default='procedural',
                        help="'procedural', 'room', 'real_satellite' or a world YAML")
    parser.add_argument('--out', default='runs', help='parent folder of the run folder')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID (default: derived from the process id)')
    args = parser.parse_args(argv)
    root = workspace_root()
    params = _sim_params(root)
    world_yaml = prepare_world(root, args.world, params)
    say = lambda m: print(f'[demo] {m}', flush=True)  # noqa: E731
    bundle_dir = trained_bundle(root, world_yaml, log=say)
    if bundle_dir is None:
        bundle_dir = prepare_bundle(root, world_yaml, log=say)
        database = prepare_database(root, world_yaml, bundle_dir, log=say)
    else:
        database = prepare_database(root, world_yaml, bundle_dir, log=say, name='trained')
    run_dir = os.path.join(root, args.out, datetime.now().strftime('%Y%m%d-%H%M%S'))
    os.makedirs(run_dir)
    domain = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100
    print(f'[demo] run folder {run_dir}; {args.sim_seconds:g} s simulated at {args.rate:g}x '
          f'(about {args.sim_seconds / args.rate:.0f} s)', flush=True)
    t0 = time.monotonic()
    code = runner.main(['run', 'sim', '--root', root, '--domain-id', str(domain),
                        '--sim-duration', str(args.sim_seconds), '--progress',
                        '--stop-when', '/mission/progress>=100',
                        '--record', os.path.join(run_dir, 'bag'),
                        '--log-dir', os.path.join(run_dir, 'logs'),
                        f'world:={world_yaml}', f'rate:={args.rate}',
                        f'bundle:={bundle_dir}', f'database:={database}'])
    wall = time.monotonic() - t0
    summary = summarise(run_dir, world_yaml, args, wall, code)
    print('\n[demo] summary')
    print(f"  simulated        {summary['sim_seconds']:.0f} s in {wall:.0f} s wall "
          f"({summary['real_time_factor']}x; requested {args.rate:g}x)")
    print(f"  flown            {summary['distance_m']:.0f} m, up to "
          f"{summary['max_altitude_m']:.0f} m above ground")
    counts = summary['message_counts']
    for topic in ('/camera/image_raw/compressed', '/imu/data', '/baro', '/scan',
                  '/sim/ground_truth', '/skyloc/descriptor'):
        print(f'  {topic:<30} {counts.get(topic, 0)} messages')
    print(f"  bag              {summary['bag']} ({summary['bag_mb']} MB, MCAP, rosbag2)")
    print(f"  track            {summary['track_png']}")
    print(f"  logs             {os.path.join(run_dir, 'logs')}")
    try:
        from skyloc_sim.report import summary_lines, write_report
        report = write_report(run_dir, world_yaml)
        print('\n'.join(summary_lines(report)) + f"\n  report           {report['report']}")
    except Exception:  # noqa: BLE001 (the run is recorded: the report can be made again)
        import traceback
        traceback.print_exc()
        print(f'[demo] report failed: python -m skyloc_sim.report {run_dir} to retry')
    ok = code == 0 and not math.isnan(summary['distance_m']) and summary['distance_m'] > 0
    print(f"[demo] {'done' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
