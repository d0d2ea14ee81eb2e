"""Memory of the Raspberry Pi graph: all its nodes in one process, and one process per node.

    python bench/bench_pi.py [--seconds 120] [--tiles 10000]

The Pi graph (config/graphs/pi.yaml: embedder, localizer, map handler, coverage, follower,
mission, health; camera:=false) with config/pi.yaml, the bundle and a `--tiles` database
(derived from the default one as bench_cold_start.py does), fed by the built-in simulator in
a process of its own (camera, IMU, barometer, LIDAR; the mission flies it). Run twice for
`--seconds` of wall time each: `skyloc run pi --single-process` (the process's RSS sampled
every second: peak and last) and `skyloc run pi` (each node process's peak RSS from the
runner's resources.json). The goal: the single process <= 300 MB.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def _params(tmp, bundle, database):
    with open(os.path.join(ROOT, 'config', 'pi.yaml')) as stream:
        params = yaml.safe_load(stream)
    for node in ('embedder', 'localizer'):
        params[node]['ros__parameters'].update({'bundle': bundle, 'database': database})
    path = os.path.join(tmp, 'pi_bench.yaml')
    with open(path, 'w') as stream:
        yaml.safe_dump(params, stream)
    return path


def _start_sim(world_yaml, domain, tmp):
    from ament_index_python.packages import get_package_prefix
    exe = os.path.join(get_package_prefix('skyloc_sim'), 'lib', 'skyloc_sim', 'sim')
    log = open(os.path.join(tmp, f'sim_{domain}.log'), 'w')
    return subprocess.Popen(
        [exe, '--ros-args', '--params-file', os.path.join(ROOT, 'config', 'sim.yaml'),
         '-p', f'world:={world_yaml}', '-p', 'rate:=1.0', '-p', 'use_sim_time:=false'],
        env=dict(os.environ, ROS_DOMAIN_ID=str(domain)), stdout=log, stderr=subprocess.STDOUT)


def _run_graph(args_list, domain, seconds, sample_pid=False):
    """`skyloc run pi ...` for `seconds`; (exit code, peak RSS MB, last RSS MB, output tail)."""
    from skyloc_sim.resources import ResourceSampler
    cmd = [sys.executable, '-m', 'skyloc_sim.runner', 'run', 'pi', '--root', ROOT,
           '--domain-id', str(domain), '--duration', str(seconds)] + args_list
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    sampler = ResourceSampler(period_s=1.0)
    if sample_pid:
        sampler.add('pi', proc.pid)
        sampler.start()
    lines = []
    import threading

    def drain():
        for line in proc.stdout:
            lines.append(line.rstrip())
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    peak = last = 0.0
    while proc.poll() is None:
        if sample_pid:
            summary = sampler.summary().get('pi', {})
            peak = max(peak, summary.get('peak_rss_mb') or 0.0)
            last = summary.get('rss_last_mb') or last
        time.sleep(1.0)
    reader.join(timeout=5)
    return proc.returncode, peak, last, lines[-40:]


def bench_pi(seconds=120.0, tiles=10000, domain=None):
    from bench_cold_start import make_database
    from skyloc_sim.dds import configure_dds
    configure_dds(start=ROOT)
    bundle = os.path.join(ROOT, '.cache', 'bundles', 'default')
    database = make_database(tiles)
    with open(os.path.join(database, 'db.json')) as stream:
        db = json.load(stream)
    world_yaml = db['map_yaml']
    domain = domain or 60 + os.getpid() % 8
    out = {'tiles': db['count'], 'seconds': seconds, 'database': database, 'goal_mb': 300.0}
    with tempfile.TemporaryDirectory() as tmp:
        params = _params(tmp, bundle, database)
        graph_args = ['camera:=false', 'use_sim_time:=true', f'params_file:={params}']
        for mode in ('single_process', 'multi_process'):
            sim = _start_sim(world_yaml, domain, tmp)
            try:
                time.sleep(3.0)
                if mode == 'single_process':
                    code, peak, last, tail = _run_graph(['--single-process'] + graph_args,
                                                        domain, seconds, sample_pid=True)
                    out[mode] = {'exit_code': code, 'peak_rss_mb': round(peak, 1),
                                 'last_rss_mb': round(last, 1)}
                else:
                    logs = os.path.join(tmp, 'logs')
                    code, _, _, tail = _run_graph(['--log-dir', logs] + graph_args, domain,
                                                  seconds)
                    with open(os.path.join(logs, 'resources.json')) as stream:
                        res = json.load(stream)
                    nodes = {name: round(r.get('peak_rss_mb', 0.0), 1)
                             for name, r in res.items()
                             if isinstance(r, dict)}
                    out[mode] = {'exit_code': code, 'peak_rss_mb_per_node': nodes,
                                 'sum_peak_rss_mb': round(sum(nodes.values()), 1)}
                out[mode]['output_tail'] = [t for t in tail if 'WARN' in t or 'ERROR' in t
                                            or 'summary' in t][-8:]
            finally:
                sim.terminate()
                try:
                    sim.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    sim.kill()
            domain += 1
    single = out.get('single_process', {}).get('peak_rss_mb')
    out['meets_goal'] = single is not None and 0 < single <= out['goal_mb']
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seconds', type=float, default=120.0)
    p.add_argument('--tiles', type=int, default=10000)
    args = p.parse_args(argv)
    print(json.dumps(bench_pi(args.seconds, args.tiles), indent=2))


if __name__ == '__main__':
    main()
