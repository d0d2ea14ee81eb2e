"""Perception benchmarks: ViT backbone speed (PyTorch FP32 vs ONNX FP32/INT8, one thread),
INT8 quantization error (with and without emulated DINOv2 outlier channels), and the peak RSS of
a process running the INT8 model.

All models are randomly initialised (no weights can be downloaded here): speed and memory do not
depend on the weights; the quantization error does, hence the outlier emulation. Exported models
are cached under .cache/bench/ (gitignored). Functions return plain JSON-able dicts.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(ROOT, '.cache', 'bench')
PERCEPTION_SRC = os.path.join(ROOT, 'src', 'skyloc_perception')

DEFAULT_ARCH = 'vit_small_patch14_dinov2'
DEFAULT_LAYER, DEFAULT_FACET, INPUT_SIZE = 9, 'value', 224
GOAL_SPEEDUP, GOAL_COSINE = 10.0, 0.999


def _vit():
    if PERCEPTION_SRC not in sys.path:
        sys.path.insert(0, PERCEPTION_SRC)
    from skyloc_perception import vit_torch
    return vit_torch


def _mb(path):
    return round(os.path.getsize(path) / 2 ** 20, 2)


def _key(**cfg):
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]


def bench_images(n=16, size=INPUT_SIZE, seed=0, condition='summer'):
    """``n`` RGB uint8 crops (size x size px) of the procedural world's orthophoto.

    ``condition`` 'map' gives map crops (calibration), 'summer' the other season (evaluation).
    Falls back to synthetic images (smooth colour fields + rectangles + lines) when skyloc_sim
    is not importable; returns (images, source).
    """
    rng = np.random.default_rng(seed)
    try:
        from skyloc_sim.world import load_world, procedural_world
        world = load_world(procedural_world(os.path.join(ROOT, '.cache', 'worlds'), 7, 1200.0,
                                            0.5, conditions=('summer',), log=lambda *_: None))
        image = world.camera_image(condition)
        crop = 2 * size  # 2 px -> 1 px: about the query's scale (m/px) at 100-150 m altitude
        import cv2
        out = []
        for _ in range(n):
            r = int(rng.integers(0, image.shape[0] - crop))
            c = int(rng.integers(0, image.shape[1] - crop))
            out.append(cv2.resize(np.ascontiguousarray(image[r:r + crop, c:c + crop]),
                                  (size, size), interpolation=cv2.INTER_AREA))
        return out, f'procedural world seed 7, {condition} orthophoto crops'
    except ImportError:
        return _synthetic_images(n, size, rng), 'synthetic'


def _synthetic_images(n, size, rng):
    import cv2
    out = []
    for _ in range(n):
        low = rng.random((6, 6, 3)).astype(np.float32)
        img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) * 160 + 40
        img += rng.normal(0, 8, img.shape).astype(np.float32)
        for _ in range(int(rng.integers(3, 10))):
            x, y = (int(v) for v in rng.integers(0, size, 2))
            w, h = (int(v) for v in rng.integers(6, size // 4, 2))
            cv2.rectangle(img, (x, y), (x + w, y + h), [float(v) for v in rng.uniform(0, 255, 3)],
                          -1)
        for _ in range(int(rng.integers(1, 4))):
            p = [int(v) for v in rng.integers(0, size, 4)]
            cv2.line(img, (p[0], p[1]), (p[2], p[3]), (120, 120, 120), int(rng.integers(2, 6)))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def vit_models(arch=DEFAULT_ARCH, layer=DEFAULT_LAYER, facet=DEFAULT_FACET, size=INPUT_SIZE,
               seed=0, layerscale=None, outliers=False, smooth_alpha=None, static_qdq=False):
    """Export (once, cached) a random truncated ViT: FP32, dynamic INT8 and optionally static
    QDQ INT8 ONNX files. Returns {'fp32': path, 'int8_dynamic': path[, 'int8_static_qdq']}
    plus 'outliers' / 'smooth_quant' (what those steps reported, if used)."""
    vt = _vit()
    tag = _key(arch=arch, layer=layer, facet=facet, size=size, seed=seed, layerscale=layerscale,
               outliers=outliers, smooth_alpha=smooth_alpha, v=1)
    base = os.path.join(CACHE, f'{arch}_L{layer}_{facet}_{size}_{tag}')
    paths = {'fp32': base + '_fp32.onnx', 'int8_dynamic': base + '_int8_dynamic.onnx'}
    if static_qdq:
        paths['int8_static_qdq'] = base + '_int8_static_qdq.onnx'
    meta_path = base + '.json'
    os.makedirs(CACHE, exist_ok=True)
    if not os.path.isfile(paths['fp32']) or not os.path.isfile(meta_path):
        model = vt.build_vit(arch, img_size=size, seed=seed)
        meta = {}
        if layerscale is not None:
            vt.set_layerscale(model, layerscale)
        if outliers:
            meta['outliers'] = vt.inject_outliers(model)
        if smooth_alpha is not None:
            calib, _ = bench_images(32, size, seed=1, condition='map')
            meta['smooth_quant'] = vt.smooth_quant(model, calib, alpha=smooth_alpha)
        vt.export_onnx(vt.TruncatedVit(model, layer, facet), paths['fp32'], size)
        with open(meta_path, 'w') as f:
            json.dump(meta, f)
    if not os.path.isfile(paths['int8_dynamic']):
        vt.quantize_int8(paths['fp32'], paths['int8_dynamic'], per_channel=True)
    if static_qdq and not os.path.isfile(paths['int8_static_qdq']):
        calib, _ = bench_images(32, size, seed=1, condition='map')
        vt.quantize_static_qdq(paths['fp32'], paths['int8_static_qdq'], calib)
    with open(meta_path) as f:
        paths.update(json.load(f))
    return paths


def _interleaved_ms(fns, runs, rounds=2):
    """Time several callables side by side: ``rounds`` rounds, alternately in forward and reverse
    order, each callable 1 warm-up + runs / rounds consecutive timed runs per round (steady
    state, warm caches, as in the node's loop; load drift on a shared machine spread over all).
    Returns {name: {median_ms, min_ms}}."""
    times = {name: [] for name in fns}
    per = max(1, int(round(runs / rounds)))
    names = list(fns)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fns[name]()
            for _ in range(per):
                t0 = time.perf_counter()
                fns[name]()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: {'median_ms': round(float(np.median(t)), 1), 'min_ms': round(min(t), 1)}
            for name, t in times.items()}


def bench_vit_speed(threads=1, runs=10):
    """Median ms of one 224x224 image through each backbone, side by side, ``threads`` threads.

    Rows: PyTorch FP32 ViT-B/14 (``vit_base_patch14_dinov2``) full forward (all 12 blocks + final
    norm, as the seed's hook-based extractor runs it); PyTorch FP32 ViT-S/14 full forward and
    truncated at L9/value; ONNX Runtime FP32, INT8 dynamic (per channel) and INT8 static QDQ of
    ViT-S/14 truncated at L9/value. Network only (input already preprocessed), all models
    timed in one process in alternating rounds (``_interleaved_ms``); ``features_ms``:
    ``OnnxVitBackbone.features`` of the INT8 model on a 640x480 camera frame (resize,
    normalise, network, L2). Returns the table, model file sizes (MB) and the speed-up
    FP32 ViT-B / INT8 ViT-S (goal >= 10x).
    """
    import torch
    vt = _vit()
    from skyloc_perception.vit_onnx import OnnxVitBackbone, preprocess
    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        imgs, source = bench_images(1)
        x = preprocess(imgs[0], INPUT_SIZE)
        xt = torch.from_numpy(x)
        paths = vit_models(static_qdq=True)
        vitb = vt.build_vit('vit_base_patch14_dinov2', INPUT_SIZE)
        vits = vt.build_vit(DEFAULT_ARCH, INPUT_SIZE)
        trunc = vt.TruncatedVit(vits, DEFAULT_LAYER, DEFAULT_FACET)
        onnx_rows = (('fp32', 'onnx_fp32_vits14_L9_value'),
                     ('int8_dynamic', 'onnx_int8_dynamic_vits14_L9_value'),
                     ('int8_static_qdq', 'onnx_int8_static_qdq_vits14_L9_value'))
        sess = {label: OnnxVitBackbone(paths[key], INPUT_SIZE, name=label, threads=int(threads))
                for key, label in onnx_rows}
        sizes = {label: _mb(paths[key]) for key, label in onnx_rows}
        frame = np.ascontiguousarray(np.tile(imgs[0], (3, 3, 1))[:480, :640])
        int8 = sess['onnx_int8_dynamic_vits14_L9_value']
        fns = {'torch_fp32_vitb14_full': lambda: vitb.forward_features(xt),
               'torch_fp32_vits14_full': lambda: vits.forward_features(xt),
               'torch_fp32_vits14_L9_value': lambda: trunc(xt)}
        fns.update({label: (lambda bb=bb: bb._run(x)) for label, bb in sess.items()})
        fns['onnx_int8_dynamic_vits14_L9_value_features'] = lambda: int8.features(frame)
        with torch.no_grad():
            rows = _interleaved_ms(fns, runs)
    finally:
        torch.set_num_threads(prev)
    rows['onnx_int8_dynamic_vits14_L9_value']['features_ms'] = rows.pop(
        'onnx_int8_dynamic_vits14_L9_value_features')['median_ms']
    ratio = rows['torch_fp32_vitb14_full']['median_ms'] / \
        rows['onnx_int8_dynamic_vits14_L9_value']['median_ms']
    return {'threads': int(threads), 'runs': int(runs), 'input_px': INPUT_SIZE,
            'weights': 'random (speed does not depend on them)', 'image': source,
            'models': rows, 'file_mb': sizes,
            'speedup_torch_vitb14_fp32_over_onnx_int8_vits14': round(ratio, 1),
            'goal_speedup': GOAL_SPEEDUP, 'pass': bool(ratio >= GOAL_SPEEDUP)}


def _cosines(a, b):
    """Per-patch cosine between two [N, D] row-normalised feature sets: [N]."""
    return np.sum(a * b, axis=1)


def bench_quantization_error(outliers=True, n_images=16, layerscale=0.1, smooth_alpha=0.5):
    """Per-patch cosine INT8 vs FP32 of ViT-S/14 L9/value at 224 (mean, p1, min over all patches
    of ``n_images`` crops), for dynamic per-channel and static QDQ INT8.

    Variants (all random weights, seed 0):
        random_timm_init: timm's init (LayerScale gammas 1e-5: the blocks barely change the
            residual stream; the figure DESIGN.md quotes);
        random_active: LayerScale gammas set to ``layerscale`` so that every block contributes;
        random_active_outliers (if ``outliers``): as random_active plus ``inject_outliers``
            (3 residual channels ~100x the others from block 1 on, like trained DINOv2);
        random_active_outliers_smoothquant (if ``outliers`` and ``smooth_alpha``): the same
            model after ``smooth_quant(alpha=smooth_alpha)`` on 32 map crops (FP32-exact).
    FP32 reference: each variant's own FP32 ONNX model. Calibration (QDQ, SmoothQuant) on map
    crops, evaluation on crops of the other season. Goal: mean cosine >= 0.999.
    """
    _vit()
    from skyloc_perception.vit_onnx import OnnxVitBackbone
    images, source = bench_images(n_images, condition='summer')
    variants = {'random_timm_init': {}, 'random_active': {'layerscale': layerscale}}
    if outliers:
        variants['random_active_outliers'] = {'layerscale': layerscale, 'outliers': True}
        if smooth_alpha is not None:
            variants['random_active_outliers_smoothquant'] = {
                'layerscale': layerscale, 'outliers': True, 'smooth_alpha': smooth_alpha}
    out = {'model': f'{DEFAULT_ARCH}/L{DEFAULT_LAYER}/{DEFAULT_FACET} at {INPUT_SIZE}',
           'images': f'{n_images} x {source}', 'goal_mean_cosine': GOAL_COSINE, 'variants': {}}
    for name, cfg in variants.items():
        paths = vit_models(static_qdq=True, **cfg)
        ref = OnnxVitBackbone(paths['fp32'], INPUT_SIZE)
        feats = [ref.features(img) for img in images]
        res = {}
        for k in ('outliers', 'smooth_quant'):
            if k in paths:
                res[k] = paths[k]
        for q in ('int8_dynamic', 'int8_static_qdq'):
            bb = OnnxVitBackbone(paths[q], INPUT_SIZE)
            cos = np.concatenate([_cosines(f, bb.features(img)) for f, img in zip(feats, images)])
            res[q] = {'mean': round(float(cos.mean()), 5),
                      'p1': round(float(np.percentile(cos, 1)), 5),
                      'min': round(float(cos.min()), 5),
                      'pass': bool(cos.mean() >= GOAL_COSINE)}
        out['variants'][name] = res
    return out


_RSS_CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
def status():
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(('VmHWM', 'VmRSS')):
                k, v = line.split(':')
                out[k] = int(v.split()[0]) / 1024.0
    return out
import numpy as np
from skyloc_perception.vit_onnx import OnnxVitBackbone
imported = status()
bb = OnnxVitBackbone(sys.argv[2], int(sys.argv[3]), threads=1)
rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
f = bb.features(rgb)
done = status()
print(json.dumps({'imports_rss_mb': round(imported['VmRSS'], 1),
                  'peak_rss_mb': round(done['VmHWM'], 1),
                  'rss_after_mb': round(done['VmRSS'], 1), 'features': list(f.shape)}))
'''


def bench_onnx_rss():
    """Peak RSS (MB, the child's VmHWM) of a fresh process that imports numpy, OpenCV and ONNX
    Runtime, loads the INT8 dynamic ViT-S/14 L9/value model and embeds one 640x480 frame (one
    thread). No ROS, no torch: the inference core of the Pi node. Also the RSS after the imports
    alone. (VmHWM of the child rather than ``RUSAGE_CHILDREN.ru_maxrss``, which is the largest
    of all children this process ever waited for.)"""
    paths = vit_models()
    proc = subprocess.run([sys.executable, '-c', _RSS_CHILD, PERCEPTION_SRC,
                           paths['int8_dynamic'], str(INPUT_SIZE)],
                          capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res['model_mb'] = _mb(paths['int8_dynamic'])
    res['model'] = f'{DEFAULT_ARCH}/L{DEFAULT_LAYER}/{DEFAULT_FACET} INT8 dynamic, {INPUT_SIZE}'
    return res
