"""Localise nadir camera images against a map database: one JSON object per image.

    python -m skyloc_localization.localize --db DB [--bundle BUNDLE] --altitude A --yaw-deg Y
        [--hfov-deg 90] [--top-k 5] [--method correlation|keypoints] IMAGE...

``--yaw-deg``: the vehicle's REP 103 yaw (ENU: 0 = east, counter-clockwise), image up =
vehicle forward, camera looking straight down; ``--altitude``: metres above ground.  Both
come from sensors and may be a few degrees / 5-10% off: the localiser searches a small range
of rotation and scale.  Each line: x, y (map frame, the fine fix; the best tile's centre
with ``"fix": "tile"`` when fine matching found none), lat, lon, similarity, geometric
score, uncertainty (m, 1 sigma, the covariance's major axis), the covariance, the heading /
scale corrections, and the top-K tiles with their scores.  Exit codes: 0 all images
localised with a fine fix, 1 some without, 2 bad input (one-line message on stderr).
"""

import argparse
import json
import math
import os
import sys


def parser():
    p = argparse.ArgumentParser(prog='python -m skyloc_localization.localize',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--db', required=True, help='database folder (build_db)')
    p.add_argument('--bundle', help='model bundle (default: .cache/bundles/default)')
    p.add_argument('--altitude', type=float, required=True, help='metres above ground')
    p.add_argument('--yaw-deg', type=float, required=True, help='REP 103 yaw, degrees')
    p.add_argument('--hfov-deg', type=float, default=90.0,
                   help='camera horizontal field of view, degrees (default 90)')
    p.add_argument('--top-k', type=int, default=5)
    p.add_argument('--method', choices=('correlation', 'keypoints'), default='correlation')
    p.add_argument('images', nargs='+', help='nadir camera images (any OpenCV format)')
    return p


def _round(v, n=3):
    return None if v is None or not math.isfinite(v) else round(float(v), n)


def result_json(image, result, datum):
    from skyloc_sim.geo import map_to_latlon
    lat = lon = None
    if datum is not None and math.isfinite(result.x):
        lat, lon = map_to_latlon(result.x, result.y, datum)
    fine = result.fine
    return {
        'image': image, 'fix': result.fix, 'x': _round(result.x, 2), 'y': _round(result.y, 2),
        'lat': _round(lat, 8), 'lon': _round(lon, 8),
        'similarity': _round(result.similarity, 4),
        'geometric_score': _round(result.geometric_score, 4),
        'uncertainty': _round(result.sigma_m, 2) if result.fix != 'none' else None,
        'covariance': [[_round(v, 3) for v in row] for row in result.covariance.tolist()],
        'band': result.band, 'footprint_m': result.footprint_m,
        'yaw_correction_deg': _round(fine.rotation_deg if fine is not None and fine.ok
                                     else None, 2),
        'altitude_scale': _round(fine.scale if fine is not None and fine.ok else None, 3),
        'reason': fine.reason if fine is not None and not fine.ok else '',
        'top_k': [c.as_dict() for c in result.candidates],
        'time_ms': _round(result.timings_ms.get('total'), 1)}


def main(argv=None):
    args = parser().parse_args(argv)
    import cv2

    from skyloc_localization.build_db import resolve_bundle
    from skyloc_localization.database import DatabaseError, load_database
    from skyloc_localization.retrieval import Localizer
    from skyloc_perception.bundle import BundleError, DescriptorPipeline
    from skyloc_perception.normalize import CameraIntrinsics
    from skyloc_sim.geo import MapError

    def fail(message):
        print(f'localize: error: {message}', file=sys.stderr)
        return 2
    if not (math.isfinite(args.altitude) and args.altitude > 0):
        return fail(f'--altitude must be a positive number of metres, got {args.altitude}')
    if not math.isfinite(args.yaw_deg):
        return fail(f'--yaw-deg must be finite, got {args.yaw_deg}')
    if not 1.0 <= args.hfov_deg < 180.0:
        return fail(f'--hfov-deg must be in [1, 180), got {args.hfov_deg}')
    images = []
    for path in args.images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if bgr is None:
            return fail(f'{path}: not found or not an image')
        images.append((path, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    try:
        db = load_database(args.db)
        bundle = resolve_bundle(args.bundle, db.meta['map_yaml'],
                                log=lambda m: print(f'[localize] {m}', file=sys.stderr))
        db = load_database(args.db, bundle)
        localizer = Localizer(db, DescriptorPipeline(bundle), top_k=args.top_k,
                              method=args.method)
        datum = db.map_image()[2].datum
    except (DatabaseError, BundleError, MapError, OSError) as exc:
        return fail(str(exc))
    all_fine = True
    for path, rgb in images:
        intrinsics = CameraIntrinsics.from_hfov(rgb.shape[1], rgb.shape[0], args.hfov_deg)
        try:
            result = localizer.localize(rgb, intrinsics, args.altitude,
                                        math.radians(args.yaw_deg))
        except ValueError as exc:
            return fail(f'{path}: {exc}')
        all_fine &= result.fix == 'fine'
        print(json.dumps(result_json(path, result, datum)), flush=True)
    return 0 if all_fine else 1


if __name__ == '__main__':
    sys.exit(main())
