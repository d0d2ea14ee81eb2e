"""Build a model bundle from a georeferenced map (no torch needed for the RootSIFT backend).

    python -m skyloc_perception.build_bundle --backend rootsift --map MAP.yaml --out BUNDLE
        [--k 32] [--pca-dim 256] [--tiles 600] [--footprints 80,110,140] [--input-size 224]
    python -m skyloc_perception.build_bundle --backend onnx --onnx MODEL.onnx --map MAP.yaml
        --out BUNDLE [--layer 9 --facet value]

Samples north-up map tiles of the given ground footprints (metres) at random positions, fits
the VLAD vocabulary (cosine k-means, the domain vocabulary of AnyLoc) on their local features
and a PCA-whitening of their VLAD vectors, and writes the bundle of DESIGN.md ("Files").
"""

import argparse
import sys
import time

import numpy as np


def sample_tiles(orthophoto, grid, footprints, count, input_size, seed=0):
    """`count` north-up tiles (input_size px) at random map positions and footprints."""
    from skyloc_perception.normalize import map_tile
    rng = np.random.default_rng(seed)
    width_m, height_m = grid.width * grid.resolution, grid.height * grid.resolution
    tiles = []
    for i in range(count):
        footprint = float(footprints[i % len(footprints)])
        half = footprint / 2.0
        if width_m < footprint or height_m < footprint:
            raise ValueError(f'map ({width_m:.0f} x {height_m:.0f} m) is smaller than the '
                             f'footprint {footprint:.0f} m')
        x = grid.origin_x + rng.uniform(half, width_m - half)
        y = grid.origin_y + rng.uniform(half, height_m - half)
        tiles.append(map_tile(orthophoto, grid, x, y, footprint, input_size))
    return tiles


def build(args, log=print):
    """Build the bundle described by the parsed arguments; returns the loaded Bundle."""
    import cv2
    from tqdm import tqdm

    from skyloc_perception.bundle import write_bundle
    from skyloc_perception.vlad import fit_vocabulary, Pca, Vlad
    from skyloc_sim.geo import load_map_yaml, MapGrid

    meta = load_map_yaml(args.map)
    image = cv2.imread(meta.image_path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'{args.map}: cannot read image {meta.image_path}')
    orthophoto = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    grid = MapGrid.from_meta(meta, orthophoto.shape[1], orthophoto.shape[0])
    footprints = [float(f) for f in args.footprints.split(',')]
    t0 = time.monotonic()
    tiles = sample_tiles(orthophoto, grid, footprints, args.tiles, args.input_size, args.seed)
    if args.backend == 'rootsift':
        from skyloc_perception.rootsift import RootSiftBackbone
        backbone = RootSiftBackbone(args.rootsift_step, args.rootsift_patch, args.input_size)
    else:
        from skyloc_perception.vit_onnx import OnnxVitBackbone
        backbone = OnnxVitBackbone(args.onnx, args.input_size, threads=args.threads)
    features = [backbone.features(t) for t in tqdm(tiles, desc='local features', unit='tile',
                                                   disable=args.quiet)]
    stacked = np.concatenate(features)
    log(f'{len(tiles)} tiles, {len(stacked)} local features of dim {stacked.shape[1]}: '
        f'fitting {args.k} centres')
    centres = fit_vocabulary(stacked, k=args.k, seed=args.seed)
    vlad = Vlad(centres)
    vectors = np.stack([vlad.encode(f) for f in tqdm(features, desc='VLAD', unit='tile',
                                                     disable=args.quiet)])
    pca = None
    if args.pca_dim:
        dim = min(args.pca_dim, len(vectors) - 1, vectors.shape[1])
        pca = Pca().fit(vectors, dim, whiten=True)
        log(f'PCA-whitening {vectors.shape[1]} -> {dim}')
    extra = {'map_yaml': args.map, 'footprints_m': footprints, 'tiles': len(tiles),
             'seed': args.seed, 'built_s': round(time.monotonic() - t0, 1)}
    if args.backend == 'rootsift':
        extra['rootsift'] = backbone.config  # the bundle keeps its grid if defaults change
    bundle = write_bundle(args.out, args.backend, args.input_size, centres, pca,
                          onnx_file=args.onnx if args.backend == 'onnx' else None,
                          layer=args.layer, facet=args.facet, extra=extra)
    log(f'bundle {args.out}: {bundle.backend}, descriptor dim {bundle.descriptor_dim}, '
        f'model_id {bundle.model_id[:12]} ({extra["built_s"]} s)')
    return bundle


def parser():
    p = argparse.ArgumentParser(prog='python -m skyloc_perception.build_bundle',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--backend', choices=('rootsift', 'onnx'), default='rootsift')
    p.add_argument('--map', required=True, help='map YAML (image, resolution, origin, datum)')
    p.add_argument('--out', required=True, help='bundle folder to write')
    p.add_argument('--onnx', help='exported ViT (backend onnx)')
    p.add_argument('--layer', type=int, default=None, help='ViT layer the ONNX model ends at')
    p.add_argument('--facet', default=None, help='ViT facet of the ONNX model')
    p.add_argument('--k', type=int, default=32, help='VLAD centres')
    p.add_argument('--pca-dim', type=int, default=256, help='PCA-whitened dimension (0: none)')
    p.add_argument('--tiles', type=int, default=600, help='map tiles to fit on')
    p.add_argument('--footprints', default='80,110,140',
                   help='tile ground footprints, metres (the altitude bands)')
    p.add_argument('--input-size', type=int, default=224, help='crop side in pixels')
    p.add_argument('--rootsift-step', type=int, default=16, help='RootSIFT grid step, px')
    p.add_argument('--rootsift-patch', type=float, default=80.0,
                   help='RootSIFT patch side, px (large patches tolerate heading error)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.backend == 'onnx' and not args.onnx:
        print('build_bundle: --backend onnx needs --onnx MODEL.onnx', file=sys.stderr)
        return 2
    try:
        build(args, log=lambda m: print(f'[build_bundle] {m}', flush=True))
    except (OSError, ValueError) as exc:
        print(f'build_bundle: error: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
