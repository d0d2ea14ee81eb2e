"""Export a simulator world's obstacles as a Nav2 map_server map (the static layer).

    python -m skyloc_coverage.world_map WORLD.yaml --min-height H --out MAP.yaml

Cells of the world's height map at least H metres tall are occupied, the rest free.
"""

import argparse
import sys

import numpy as np

from skyloc_coverage.grid import FREE, GridMap, MapError, OCCUPIED, save_map


def world_occupancy(world_yaml, min_height):
    from skyloc_sim.world import load_world
    world = load_world(world_yaml)
    occupied = np.flipud(world.heights >= min_height)      # world rows: north first
    data = np.where(occupied, OCCUPIED, FREE).astype(np.int8)
    g = world.grid
    return GridMap(data, g.resolution, (g.origin_x, g.origin_y))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m skyloc_coverage.world_map',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('world_yaml')
    parser.add_argument('--min-height', type=float, default=0.1,
                        help='obstacles at least this tall are occupied, m')
    parser.add_argument('--out', required=True, help='map_server YAML to write (+ .pgm)')
    args = parser.parse_args(argv)
    try:
        save_map(world_occupancy(args.world_yaml, args.min_height), args.out)
    except (MapError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
