"""Verification report of a quantized bundle against its FP32 twin (issue 6 goals).

    python -m skyloc_training.verify --fp32 BUNDLE_FP32 --int8 BUNDLE_INT8 --map MAP.yaml
        [--queries 40] [--crops 16] [--stride 50] [--condition summer] --out report.json

Goals, each reported pass/fail (the exit code is 0 either way, 2 on bad input):
    feature cosine   INT8 vs FP32 backbone output on map crops (local_vlad: per-patch
                     features, averaged per crop; global: the descriptor), mean over crops
                     >= 0.999 (p1 and min reported beside it);
    Recall@1 drop    FP32 minus INT8 Recall@1 on a small retrieval benchmark <= 1 point.
The benchmark is bench/bench_retrieval.py's: north-up map tiles (100 m footprint, ``--stride``)
against camera views rendered by the simulator's renderer over the map in ``--condition`` at
random poses (100 m +-10%), normalised with a noisy yaw (+-3 deg) and altitude (+-7%);
a query is recalled when its best tile's centre is within half a footprint (50 m).
"""

import argparse
from dataclasses import dataclass
import json
import logging
import os
import sys
import time

import numpy as np

log = logging.getLogger('skyloc_training.verify')

COSINE_GOAL = 0.999
RECALL_DROP_GOAL_POINTS = 1.0


# ------------------------------------------------------------------------------------ cosines

def row_cosines(a, b, eps=1e-12):
    """Cosine similarity of matching rows of two [N, D] arrays (any norms): [N] float64.

    Rows that are zero in either array count as cosine 0.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f'row_cosines needs two [N, D] arrays of one shape, got {a.shape} and '
                         f'{b.shape}')
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > eps) & (nb > eps)
    out = np.zeros(len(a))
    out[ok] = np.sum(a[ok] * b[ok], axis=1) / (na[ok] * nb[ok])
    return out


def crop_cosines(backbone_a, backbone_b, crops):
    """Per crop: the mean cosine of the two backbones' feature rows ([N, D] per-patch features,
    or the [1, D] global descriptor): [crops] float64."""
    return np.array([row_cosines(backbone_a.features(c), backbone_b.features(c)).mean()
                     for c in crops])


def stats(values):
    """{'mean', 'p1', 'min'} of a 1-D array (p1: the 1st percentile), rounded to 6 decimals."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise ValueError('stats of an empty set')
    return {'mean': round(float(v.mean()), 6), 'p1': round(float(np.percentile(v, 1)), 6),
            'min': round(float(v.min()), 6)}


def onnx_latency_ms(onnx_path, input_size, runs=10, threads=1, warmup=2):
    """Median wall time (ms) of one ONNX Runtime inference at ``threads`` intra-op threads."""
    from skyloc_perception.vit_onnx import OnnxVitBackbone
    backbone = OnnxVitBackbone(onnx_path, input_size, threads=threads, drop_tokens=0,
                               low_memory=False)
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size))
    x = x.astype(np.float32)
    for _ in range(warmup):
        backbone._run(x)
    times = []
    for _ in range(max(1, int(runs))):
        t0 = time.perf_counter()
        backbone._run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 2)


# ---------------------------------------------------------------------------------- retrieval

def _bench_retrieval():
    """bench/bench_retrieval.py of this workspace (its tiles, queries and Recall@1)."""
    bench = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                          '..', 'bench'))
    if not os.path.isfile(os.path.join(bench, 'bench_retrieval.py')):
        raise ImportError(f'bench/bench_retrieval.py not found at {bench} (skyloc_training '
                          f'runs from the workspace checkout)')
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import bench_retrieval
    return bench_retrieval


@dataclass
class RetrievalBench:
    """Tiles and queries of one map, shared by every model compared on it."""

    centres: np.ndarray      # [M, 2] tile centres, map frame, m
    tiles: list              # M north-up crops, input_size px
    truth: np.ndarray        # [Q, 2] true query positions, map frame, m
    queries: list            # Q normalised query crops
    footprint_m: float
    info: dict

    @classmethod
    def from_map(cls, map_yaml, count=40, input_size=224, stride_m=50.0,
                 condition='summer', seed=0):
        """Render the benchmark of ``map_yaml``; ValueError if the map is too small."""
        from skyloc_sim.world import load_world
        br = _bench_retrieval()
        world = load_world(map_yaml)
        footprint = float(br.FOOTPRINT_M)
        margin = 0.6 * footprint
        w, h = world.grid.size_m
        if min(w, h) < 2 * margin + stride_m:
            raise ValueError(f'{map_yaml}: map {w:.0f} x {h:.0f} m is too small for the '
                             f'retrieval benchmark (needs {2 * margin + stride_m:.0f} m a side)')
        centres, tiles = br.database_tiles(world, stride_m, footprint, input_size,
                                           margin_m=margin)
        truth, crops = br.queries(world, condition, int(count), input_size, seed,
                                  margin_m=margin)
        info = {'tiles': len(tiles), 'queries': int(count), 'condition': condition,
                'stride_m': float(stride_m), 'footprint_m': footprint,
                'radius_m': footprint / 2, 'yaw_noise_deg': 3.0,
                'altitude_noise_percent': 7.0, 'seed': int(seed)}
        return cls(centres, tiles, truth, crops, footprint, info)

    def recall(self, pipeline):
        """{'recall_at_1', 'median_error_m'} of a DescriptorPipeline on this benchmark."""
        br = _bench_retrieval()
        db = np.stack([pipeline.describe(t) for t in self.tiles]).astype(np.float32)
        q = np.stack([pipeline.describe(c) for c in self.queries]).astype(np.float32)
        r1, median = br.recall_at_1(db, self.centres, q, self.truth, self.footprint_m / 2)
        return {'recall_at_1': round(r1, 4), 'median_error_m': round(median, 1)}


# ------------------------------------------------------------------------------------- report

def _bundle_summary(bundle):
    return {'path': os.path.abspath(bundle.path), 'model_id': bundle.model_id,
            'kind': bundle.kind, 'quantization': bundle.meta.get('quantization'),
            'name': bundle.meta.get('name'), 'descriptor_dim': bundle.descriptor_dim,
            'onnx_mb': round(os.path.getsize(bundle.onnx_path) / 1e6, 2)}


def check_pair(fp32, int8):
    """ValueError unless the two bundles are ONNX bundles of one kind and input size."""
    for b in (fp32, int8):
        if b.backend != 'onnx':
            raise ValueError(f'{b.path}: backend {b.backend}, verify compares ONNX bundles')
    if fp32.kind != int8.kind or fp32.input_size != int8.input_size:
        raise ValueError(f'{fp32.path} ({fp32.kind}, {fp32.input_size} px) and {int8.path} '
                         f'({int8.kind}, {int8.input_size} px) are not the same model')


def verify(fp32_path, int8_path, map_yaml, queries=40, crops=16, stride_m=50.0,
           condition='summer', seed=0, threads=1, latency_runs=10, progress=True):
    """The report (a dict; see the module docstring)."""
    from tqdm import tqdm

    from skyloc_perception.bundle import DescriptorPipeline, load_bundle

    from skyloc_training.vocab import DEFAULT_FOOTPRINTS, map_crops
    t0 = time.monotonic()
    fp32, int8 = load_bundle(fp32_path), load_bundle(int8_path)
    check_pair(fp32, int8)
    if int(crops) < 1:
        raise ValueError(f'--crops must be >= 1, got {crops}')
    size = fp32.input_size
    footprints = fp32.meta.get('footprints_m') or DEFAULT_FOOTPRINTS
    sample = map_crops(map_yaml, crops, footprints, size, seed=seed + 1)
    pipes = {'fp32': DescriptorPipeline(fp32, threads), 'int8': DescriptorPipeline(int8, threads)}
    log.info('feature cosine on %d map crops', len(sample))
    feat = crop_cosines(pipes['fp32'].backbone, pipes['int8'].backbone, sample)
    desc = np.array([float(pipes['fp32'].describe(c) @ pipes['int8'].describe(c))
                     for c in sample])
    feature = dict(stats(feat), goal=f'mean >= {COSINE_GOAL}',
                   passed=bool(feat.mean() >= COSINE_GOAL))
    report = {'fp32': _bundle_summary(fp32), 'int8': _bundle_summary(int8),
              'map_yaml': os.path.abspath(map_yaml), 'crops': len(sample),
              'feature_cosine': feature, 'descriptor_cosine': stats(desc)}
    if int(queries) > 0:
        log.info('retrieval benchmark: rendering %d queries', queries)
        bench = RetrievalBench.from_map(map_yaml, queries, size, stride_m, condition, seed)
        recall = {'benchmark': bench.info}
        for name in tqdm(('fp32', 'int8'), desc='Recall@1', unit='model', disable=not progress):
            recall[name] = bench.recall(pipes[name])
        drop = 100.0 * (recall['fp32']['recall_at_1'] - recall['int8']['recall_at_1'])
        recall.update(drop_points=round(drop, 2), goal=f'drop <= {RECALL_DROP_GOAL_POINTS} pt',
                      passed=bool(drop <= RECALL_DROP_GOAL_POINTS + 1e-9))
        report['recall'] = recall
    if latency_runs:
        report['latency_ms_1_thread'] = {
            name: onnx_latency_ms(b.onnx_path, size, latency_runs)
            for name, b in (('fp32', fp32), ('int8', int8))}
    report['passed'] = bool(feature['passed'] and report.get('recall', {}).get('passed', True))
    report['elapsed_s'] = round(time.monotonic() - t0, 1)
    return report


def format_table(report):
    """The report as a few aligned lines (goal, FP32, INT8, result)."""
    f = report['feature_cosine']
    rows = [('check', 'value', 'goal', 'result'),
            ('feature cosine mean (p1, min)', f"{f['mean']:.6f} ({f['p1']:.6f}, {f['min']:.6f})",
             f['goal'], 'PASS' if f['passed'] else 'FAIL')]
    d = report['descriptor_cosine']
    rows.append(('descriptor cosine mean (p1)', f"{d['mean']:.6f} ({d['p1']:.6f})", '-', '-'))
    if 'recall' in report:
        r = report['recall']
        rows.append((f"Recall@1 FP32 -> INT8 ({r['benchmark']['queries']} q)",
                     f"{r['fp32']['recall_at_1']:.3f} -> {r['int8']['recall_at_1']:.3f} "
                     f"({r['drop_points']:+.1f} pt drop)", r['goal'],
                     'PASS' if r['passed'] else 'FAIL'))
    rows.append(('ONNX size MB FP32 -> INT8',
                 f"{report['fp32']['onnx_mb']} -> {report['int8']['onnx_mb']}", '-', '-'))
    if 'latency_ms_1_thread' in report:
        lat = report['latency_ms_1_thread']
        rows.append(('latency ms, 1 thread', f"{lat['fp32']} -> {lat['int8']}", '-', '-'))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"overall: {'PASS' if report['passed'] else 'FAIL'}")
    return '\n'.join(lines)


def write_json(report, path):
    """Write ``report`` as indented JSON (atomic); returns path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w') as stream:
        json.dump(report, stream, indent=2)
    os.replace(path + '.tmp', path)
    return path


def parser():
    p = argparse.ArgumentParser(prog='python -m skyloc_training.verify',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--fp32', required=True, help='FP32 bundle folder (export --quantize none '
                                                 'or --fp32-out)')
    p.add_argument('--int8', required=True, help='quantized bundle folder')
    p.add_argument('--map', required=True, help='map YAML: crops and the retrieval benchmark')
    p.add_argument('--queries', type=int, default=40,
                   help='rendered queries of the Recall@1 benchmark (0: skip it)')
    p.add_argument('--crops', type=int, default=16, help='map crops for the feature cosine')
    p.add_argument('--stride', type=float, default=50.0, help='benchmark tile stride, m')
    p.add_argument('--condition', default='summer',
                   help="the queries' appearance (a world condition or a photometric one)")
    p.add_argument('--latency-runs', type=int, default=10,
                   help='timed inferences per model (0: no latency)')
    p.add_argument('--threads', type=int, default=2, help='ONNX Runtime threads for the '
                                                          'benchmark (latency uses 1)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', required=True, help='report JSON to write')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from skyloc_perception.bundle import BundleError
    from skyloc_sim.geo import MapError

    from skyloc_training.export import setup_logging
    setup_logging('verify')
    try:
        report = verify(args.fp32, args.int8, args.map, args.queries, args.crops, args.stride,
                        args.condition, args.seed, args.threads, args.latency_runs,
                        progress=not args.quiet)
        write_json(report, args.out)
    except (BundleError, MapError, ValueError, OSError) as exc:
        print(f'verify: error: {exc}', file=sys.stderr)
        return 2
    print(format_table(report))
    log.info('report written to %s', args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
