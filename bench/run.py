#!/usr/bin/env python3
"""`make bench`: run every benchmark, write bench/results/*.json and BENCHMARKS.md.

Each figure is written beside its goal and the command that made it. Ratios are measured
side by side in one run (the machines are shared and noisy).
"""

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def machine():
    return {'python': platform.python_version(), 'machine': platform.machine(),
            'cpus': os.cpu_count(), 'date': time.strftime('%Y-%m-%d %H:%M:%S')}


def run_sim(args):
    import bench_sim
    from skyloc_sim.world import procedural_world
    world = procedural_world(os.path.join(ROOT, '.cache', 'worlds'), 7, 1200.0, 0.5,
                             conditions=('summer',))
    return {'camera_render': bench_sim.bench_camera_render(world),
            'sensor_rates_1x': bench_sim.bench_sensor_rates(world, seconds=args.seconds)}


SUITES = {'sim': run_sim}


def table(results):
    lines = ['# Benchmarks', '',
             f"Measured by `make bench` (`python bench/run.py`) on {results['machine']['date']},"
             f" {results['machine']['cpus']} CPUs, Python {results['machine']['python']}.",
             'Results in bench/results/*.json.', '',
             '| suite | figure | measured | goal | pass |', '|---|---|---|---|---|']
    sim = results.get('sim')
    if sim:
        cam = sim['camera_render']
        lines.append(f"| sim | camera render 640x480, one core, median / p95 | "
                     f"{cam['median_ms']} / {cam['p95_ms']} ms | <= {cam['goal_ms']} ms | "
                     f"{'yes' if cam['pass'] else 'NO'} |")
        for topic, r in sim['sensor_rates_1x'].items():
            lines.append(f"| sim | {topic} rate at 1x | {r['hz']} Hz ({r['error_percent']:+}%)"
                         f" | {r['goal_hz']} Hz +-10% | {'yes' if r['pass'] else 'NO'} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--suite', action='append', choices=sorted(SUITES),
                        help='run only these suites (default: all)')
    parser.add_argument('--seconds', type=float, default=10.0,
                        help='length of rate measurements, s')
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    results = {'machine': machine()}
    for name in args.suite or sorted(SUITES):
        print(f'[bench] {name} ...', flush=True)
        results[name] = SUITES[name](args)
        with open(os.path.join(HERE, 'results', f'{name}.json'), 'w') as stream:
            json.dump({'machine': results['machine'], name: results[name]}, stream, indent=2)
    text = table(results)
    with open(os.path.join(ROOT, 'BENCHMARKS.md'), 'w') as stream:
        stream.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
