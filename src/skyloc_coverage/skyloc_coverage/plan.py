"""Plan a coverage path over a map_server map from the command line.

    python -m skyloc_coverage.plan MAP.yaml --width W [--radius R] [--start X,Y]
        [--overlap F] [--unknown-free] [--plot PNG] --out PATH.csv

Writes x,y waypoints (map frame, metres) to PATH.csv and prints one JSON line of metrics:
coverage_percent, path_length_m, turns, total_rotation_deg, planning_time_s,
unreachable_free_area_m2 (and more). Unknown cells are obstacles unless --unknown-free.
Exit status 2 with a one-line error for a bad map or an impossible plan.
"""

import argparse
import json
import sys

import numpy as np

from skyloc_coverage.grid import load_map, MapError
from skyloc_coverage.planner import CoveragePlanner, PlanningError


def _point(text):
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected X,Y in metres, got '{text}'") from exc
    return x, y


def plot_plan(grid, plan, path_png, title=''):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    res = grid.resolution
    extent = (grid.origin[0], grid.origin[0] + grid.width * res,
              grid.origin[1], grid.origin[1] + grid.height * res)
    h, w = grid.data.shape
    fig, ax = plt.subplots(figsize=(8, 8 * h / max(w, 1) + 0.6))
    shade = np.where(grid.data >= 50, 0.0, np.where(grid.data < 0, 0.6, 1.0))
    shade = np.where((shade == 1.0) & plan.blocked, 0.85, shade)
    ax.imshow(shade, origin='lower', cmap='gray', vmin=0, vmax=1, extent=extent,
              interpolation='nearest')
    pts = plan.path
    if len(pts) > 1:
        segs = np.stack([pts[:-1], pts[1:]], axis=1)
        lc = LineCollection(segs, cmap='viridis', linewidths=1.2)
        lc.set_array(np.arange(len(segs)))
        ax.add_collection(lc)
    ax.plot(*pts[0], 'o', color='tab:green', label='start')
    ax.plot(*pts[-1], 's', color='tab:red', label='end')
    m = plan.metrics
    ax.set_title(title or f"coverage {m['coverage_percent']:.1f}%, {m['path_length_m']:.0f} m, "
                 f"{m['turns']} turns, {1000 * m['planning_time_s']:.0f} ms")
    ax.set_xlabel('x (m, map frame)')
    ax.set_ylabel('y (m)')
    ax.legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m skyloc_coverage.plan',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('map_yaml', help='Nav2 map_server YAML (image, resolution, origin, '
                        'occupied_thresh, free_thresh, negate)')
    parser.add_argument('--width', type=float, required=True, help='swath width, m')
    parser.add_argument('--radius', type=float, default=0.0, help='vehicle radius, m')
    parser.add_argument('--start', type=_point, default=None,
                        help='start X,Y in the map frame (default: the map centre; moved to '
                        'the nearest free cell if needed)')
    parser.add_argument('--overlap', type=float, default=0.0, help='side overlap fraction')
    parser.add_argument('--unknown-free', action='store_true',
                        help='plan through unknown cells (default: they are obstacles)')
    parser.add_argument('--out', required=True, help='CSV of x,y waypoints')
    parser.add_argument('--plot', help='also write a PNG of the map and the path')
    args = parser.parse_args(argv)
    try:
        grid = load_map(args.map_yaml)
        planner = CoveragePlanner(args.width, args.radius, side_overlap=args.overlap,
                                  unknown_is_free=args.unknown_free)
        start = args.start or (grid.origin[0] + grid.width * grid.resolution / 2,
                               grid.origin[1] + grid.height * grid.resolution / 2)
        plan = planner.plan(grid, start)
    except (MapError, PlanningError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    for text in plan.warnings:
        print(f'warning: {text}', file=sys.stderr)
    np.savetxt(args.out, plan.path, delimiter=',', fmt='%.4f', header='x,y', comments='')
    if args.plot:
        plot_plan(grid, plan, args.plot)
    print(json.dumps({k: (float(v) if isinstance(v, np.floating) else v)
                      for k, v in plan.metrics.items()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
