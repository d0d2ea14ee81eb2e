"""Build the map database of a georeferenced orthophoto (DESIGN.md "Files").

    python -m skyloc_localization.build_db --map MAP.yaml [--bundle BUNDLE] --out DB
        [--bands 70-90,90-120,120-150] [--footprint M[,M...]] [--stride M[,M...]]
        [--dtype float16|float32] [--margin M] [--quiet]

Without --bundle the project's default bundle (.cache/bundles/default, the one `make demo`
uses) is used, built from this map with skyloc_perception.build_bundle if it does not exist.
Footprints default to the band's nominal altitude (x 1.0: fully inside a 90 deg HFOV 4:3
view at any heading), strides to a quarter of the footprint; see skyloc_localization.database.
Exit codes: 0 done, 2 bad input (one-line message on stderr).
"""

import argparse
import os
import sys


def default_bundle_path():
    from skyloc_sim.graph import GraphError, workspace_root
    try:
        root = workspace_root()
    except GraphError:
        root = os.getcwd()
    return os.path.join(root, '.cache', 'bundles', 'default')


def resolve_bundle(path, map_yaml, log=print):
    """Load ``path``, or the default bundle (built from ``map_yaml`` if missing)."""
    from skyloc_perception.bundle import load_bundle
    if path:
        return load_bundle(path)
    path = default_bundle_path()
    if not os.path.isfile(os.path.join(path, 'bundle.json')):
        from skyloc_perception.build_bundle import build, parser
        log(f'default bundle {path} missing: building it from {map_yaml} (once)')
        build(parser().parse_args(['--backend', 'rootsift', '--map', map_yaml, '--out', path,
                                   '--quiet']), log=log)
    return load_bundle(path)


def _floats(text):
    if text is None:
        return None
    values = [float(v) for v in str(text).split(',')]
    return values[0] if len(values) == 1 else values


def parser():
    p = argparse.ArgumentParser(prog='python -m skyloc_localization.build_db',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--map', required=True, help='map YAML (image, resolution, origin, datum)')
    p.add_argument('--bundle', help='model bundle folder (default: .cache/bundles/default)')
    p.add_argument('--out', required=True, help='database folder to write')
    p.add_argument('--bands', default='70-90,90-120,120-150',
                   help='altitude bands LOW-HIGH in metres above ground, comma-separated')
    p.add_argument('--footprint', help='tile footprint m (one, or one per band); default '
                                       'the band nominal altitude')
    p.add_argument('--stride', help='tile stride m (one, or one per band); default a '
                                    'quarter of the footprint')
    p.add_argument('--dtype', choices=('float16', 'float32'), default='float16')
    p.add_argument('--margin', type=float, default=0.0,
                   help='keep tiles this far (m) inside the map edge')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from skyloc_localization.database import build_database, DatabaseError, parse_bands
    from skyloc_perception.bundle import BundleError
    from skyloc_sim.geo import load_map_yaml, MapError

    def log(message):
        print(f'[build_db] {message}', file=sys.stderr, flush=True)
    try:
        load_map_yaml(args.map)
        bands = parse_bands(args.bands)
        footprint, stride = _floats(args.footprint), _floats(args.stride)
        bundle = resolve_bundle(args.bundle, args.map, log)
        db = build_database(args.map, bundle, args.out, footprint, stride, bands,
                            dtype=args.dtype, margin_m=args.margin, progress=not args.quiet)
    except (DatabaseError, BundleError, MapError, ValueError, OSError) as exc:
        print(f'build_db: error: {exc}', file=sys.stderr)
        return 2
    per_band = ', '.join(f"{b['alt_min']:g}-{b['alt_max']:g} m: {b['count']}"
                         for b in db.bands)
    log(f'{args.out}: {len(db)} tiles ({per_band}), dim {db.dim} {db.meta["dtype"]}, '
        f'model_id {db.model_id[:12]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
