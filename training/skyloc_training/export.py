"""Export a model bundle (DESIGN.md "Files") for the embedder: ONNX, optional INT8, vocabulary.

    python -m skyloc_training.export --out BUNDLE --kind local_vlad|global
        (--checkpoint CKPT | --arch ARCH [--weights W]) [--map MAP.yaml]
        [--layer 9 --facet value] [--quantize none|dynamic|static] [--pca-dim 256] [--k 32]
        [--img-size 224] [--tiles 300] [--calib 32 | --calibration DIR] [--fp32-out DIR]

Kinds:
    local_vlad  the backbone (LoRA merged when it comes from a GeoModel checkpoint) truncated
                at ``--layer`` / ``--facet`` (``vit_torch.TruncatedVit``), per-patch tokens out;
                the VLAD vocabulary (cosine k-means, ``--k``) and the PCA-whitening
                (``--pca-dim``) are fitted on the FP32 model's dense features of ``--tiles``
                crops of ``--map``.
    global      the whole network: a GeoModel checkpoint with its LoRA merged and its MLP head
                (output [1, 256], L2-normalised); from ``--arch`` alone, the mean of the final
                patch tokens, L2-normalised ([1, embed_dim]).
Quantization: ``dynamic`` (default) is ``vit_onnx.quantize_int8_cpu`` (fused attention, INT8
MatMuls per channel), ``static`` is ``vit_torch.quantize_static_qdq`` calibrated on ``--calib``
map crops (or the images of ``--calibration DIR``); ``none`` keeps FP32. ``--fp32-out`` also
writes the FP32 bundle with the same vocabulary and PCA (what ``skyloc_training.verify``
compares the INT8 one against). bundle.json records arch, layer, facet, quantization and the
source checkpoint's sha256. Exit codes: 0 done, 2 bad input (one-line message on stderr).
"""

import argparse
from dataclasses import dataclass, field
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np

log = logging.getLogger('skyloc_training.export')

KINDS = ('local_vlad', 'global')
QUANTIZE = ('none', 'dynamic', 'static')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
ONNX_NAME = 'model.onnx'


@dataclass
class Source:
    """The model to export: ``backbone`` (a timm ViT, LoRA merged) and, from a GeoModel
    checkpoint, ``model`` (the whole GeoModel: backbone + head)."""

    backbone: object
    arch: str
    img_size: int
    model: object = None
    info: dict = field(default_factory=dict)


def load_source(checkpoint=None, arch=None, weights=None, img_size=None, depth=None, seed=0):
    """Build the model to export.

    Args:
        checkpoint: a GeoModel checkpoint (``skyloc_training.model.save_checkpoint``); its
            LoRA is merged into the weights. ``weights`` then overrides its backbone file.
        arch: timm name, when there is no checkpoint (``weights``: local backbone file in the
            official DINOv2/DINOv3 or timm layout; None: random init from ``seed``).
        img_size: input side, px; None: the checkpoint's, else 224.
        depth: blocks of an ``arch`` model (tests, small experiments; None: the arch's own).

    Returns:
        Source, with ``info`` = {arch, source, source_sha256, weights, weights_sha256,
        lora_merged, seed} for bundle.json.

    Raises:
        ValueError: neither or both of checkpoint/arch, an unreadable checkpoint, a weights file
            of another architecture (naming the missing/unexpected keys), an img_size that
            differs from the checkpoint's.
    """
    from skyloc_perception.bundle import file_sha256
    from skyloc_perception.vit_torch import build_vit
    if (checkpoint is None) == (arch is None):
        raise ValueError('give exactly one of --checkpoint CKPT or --arch ARCH')
    info = {'weights': None if weights is None else os.path.abspath(weights),
            'weights_sha256': None}
    if weights is not None:
        if not os.path.isfile(weights):
            raise ValueError(f'weights file not found: {weights}')
        info['weights_sha256'] = file_sha256(weights)
    if checkpoint is not None:
        from skyloc_training.lora import merge_lora
        from skyloc_training.model import load_checkpoint
        model = load_checkpoint(checkpoint) if weights is None else \
            load_checkpoint(checkpoint, weights=weights)
        if img_size is not None and int(img_size) != model.img_size:
            raise ValueError(f'--img-size {img_size} differs from the checkpoint\'s '
                             f'{model.img_size} px ({checkpoint})')
        info.update(lora_merged=merge_lora(model), source=os.path.abspath(checkpoint),
                    source_sha256=file_sha256(checkpoint), seed=model.config.get('seed'))
        if weights is None and model.config.get('weights'):
            info['weights'] = model.config['weights']
        model.eval()
        return Source(model.backbone, model.config['arch'], model.img_size, model, info)
    size = 224 if img_size is None else int(img_size)
    kwargs = {} if depth is None else {'depth': int(depth)}
    backbone = build_vit(arch, size, weights=weights, seed=seed, **kwargs)
    info.update(lora_merged=0, source=info['weights'], source_sha256=info['weights_sha256'],
                seed=None if weights else int(seed))
    return Source(backbone, arch, size, None, info)


def global_network(source):
    """The torch module exported for kind ``global``: [B, 3, S, S] -> [B, D], unit rows.

    A GeoModel (LoRA merged) is exported as it is (head output, 256-d); a bare backbone as the
    mean of its final patch tokens (GeoModel's default pooling), L2-normalised.
    """
    import torch
    import torch.nn.functional as F

    if source.model is not None:
        return source.model.eval()

    class _MeanPatchTokens(torch.nn.Module):
        def __init__(self, vit):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens:]
            return F.normalize(tokens.mean(dim=1), dim=-1)

    return _MeanPatchTokens(source.backbone).eval()


def export_global_onnx(net, path, input_size, opset=17):
    """Export a global network to ONNX: input 'image' [1, 3, S, S], output 'descriptor'
    [1, D] float32; IR version capped for onnxruntime 1.31.1, checked by a load. Returns path."""
    import warnings

    import torch

    from skyloc_perception import vit_torch
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(net, (torch.zeros(1, 3, int(input_size), int(input_size)),), tmp,
                          input_names=['image'], output_names=['descriptor'],
                          opset_version=int(opset), dynamo=False, do_constant_folding=True)
    vit_torch._finalise_onnx(tmp, path)
    vit_torch.check_onnx_loads(path)
    return path


def export_fp32(source, kind, path, layer=9, facet='value'):
    """Export the FP32 ONNX of ``kind``; returns (path, torch module it computes, drop_tokens).

    local_vlad: ``TruncatedVit(source.backbone, layer, facet)`` -> 'tokens' [1, T, Dh];
    global: ``global_network(source)`` -> 'descriptor' [1, D].
    """
    from skyloc_perception import vit_torch
    if kind == 'local_vlad':
        trunc = vit_torch.TruncatedVit(source.backbone, layer, facet)
        vit_torch.export_onnx(trunc, path, source.img_size)
        return path, trunc, trunc.num_prefix_tokens
    net = global_network(source)
    export_global_onnx(net, path, source.img_size)
    return path, net, 0


def onnx_torch_max_diff(module, onnx_path, images, input_size):
    """Largest |ONNX Runtime output - PyTorch output| over ``images`` (H x W x 3 uint8)."""
    import onnxruntime as ort
    import torch

    from skyloc_perception.vit_onnx import preprocess
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, sess_options=opts,
                                providers=['CPUExecutionProvider'])
    name = sess.get_inputs()[0].name
    worst = 0.0
    for img in images:
        x = preprocess(img, input_size)
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        out = sess.run(None, {name: x})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def read_calibration_dir(folder):
    """RGB uint8 images of a folder (sorted by name); ValueError if it holds none."""
    import cv2
    if not os.path.isdir(folder):
        raise ValueError(f'calibration folder not found: {folder}')
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f'calibration set is empty: {folder} holds no image '
                         f'({", ".join(IMAGE_EXTENSIONS)})')
    images = []
    for n in names:
        img = cv2.imread(os.path.join(folder, n), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f'{os.path.join(folder, n)}: cannot read image')
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return images


def quantize(fp32_path, out_path, mode, calibration_images=None, keep_fp32=()):
    """Write the deployed model for ``mode`` (none: a copy; dynamic; static); returns info.

    ``keep_fp32``: ONNX node-name prefixes left in FP32 by dynamic quantization (the global
    kind's MLP head, '/head': 1.3 M of its 23 M weights, and the layers whose INT8 error
    reaches the 256-d descriptor unaveraged; with it quantized the descriptor cosine of a
    trained model fell to 0.99 against the 0.999 goal).
    """
    from skyloc_perception import vit_torch
    from skyloc_perception.vit_onnx import quantize_int8_cpu
    if mode == 'none':
        shutil.copyfile(fp32_path, out_path)
        return {}
    if mode == 'dynamic':
        info = quantize_int8_cpu(fp32_path, out_path, exclude_prefixes=tuple(keep_fp32))
        return {'fused_attention': info['attention'], 'folded_layerscale': info['layerscale'],
                'fp32_nodes': info.get('fp32_nodes', 0)}
    if mode == 'static':
        images = list(calibration_images or [])
        if not images:
            raise ValueError('static quantization needs a non-empty calibration set')
        vit_torch.quantize_static_qdq(fp32_path, out_path, images)
        return {'calibration_images': len(images)}
    raise ValueError(f'quantize must be one of {QUANTIZE}, got {mode!r}')


def check_request(kind, quantize_mode, map_yaml=None, calib=32, calibration_dir=None):
    """Validate the request before any work (ValueError naming the problem).

    Returns the calibration images read from ``calibration_dir`` (static only), else None.
    """
    from skyloc_sim.geo import load_map_yaml
    if kind not in KINDS:
        raise ValueError(f'--kind must be one of {KINDS}, got {kind!r}')
    if quantize_mode not in QUANTIZE:
        raise ValueError(f'--quantize must be one of {QUANTIZE}, got {quantize_mode!r}')
    if kind == 'local_vlad' and not map_yaml:
        raise ValueError('kind local_vlad needs --map MAP.yaml (the vocabulary and PCA are '
                         'fitted on it)')
    if map_yaml:
        load_map_yaml(map_yaml)
    if quantize_mode != 'static':
        return None
    if calibration_dir:
        return read_calibration_dir(calibration_dir)
    if not map_yaml:
        raise ValueError('static quantization needs a calibration set: --map (crops) or '
                         '--calibration DIR')
    if int(calib) < 1:
        raise ValueError(f'calibration set is empty: --calib {calib} (static quantization '
                         f'needs at least one crop)')
    return None


def export_bundle(out, kind, source, map_yaml=None, layer=9, facet='value',
                  quantize_mode='dynamic', pca_dim=256, k=32, tiles=300,
                  footprints=(80.0, 110.0, 140.0), calib=32, calibration_images=None,
                  seed=0, threads=1, fp32_out=None, progress=True):
    """Export ``source`` as a bundle folder ``out`` (and the FP32 one at ``fp32_out``).

    Call ``check_request`` first (it reads a calibration folder). Returns the loaded Bundle.
    """
    from skyloc_perception.bundle import file_sha256, write_bundle
    from skyloc_perception.vit_onnx import OnnxVitBackbone

    from skyloc_training import vocab
    t0 = time.monotonic()
    footprints = [float(f) for f in footprints]
    with tempfile.TemporaryDirectory(prefix='skyloc_export_') as tmp:
        os.makedirs(os.path.join(tmp, 'fp32'))
        os.makedirs(os.path.join(tmp, 'q'))
        fp32 = os.path.join(tmp, 'fp32', ONNX_NAME)
        log.info('exporting %s %s @ %d px to ONNX', kind, source.arch, source.img_size)
        _, module, drop_tokens = export_fp32(source, kind, fp32, layer, facet)
        crops = []
        if map_yaml and (kind == 'local_vlad' or quantize_mode == 'static'):
            count = int(tiles) if kind == 'local_vlad' else 0
            if quantize_mode == 'static' and calibration_images is None:
                count = max(count, int(calib))
            crops = vocab.map_crops(map_yaml, count, footprints, source.img_size, seed)
        check_images = crops[:2] or [np.full((source.img_size, source.img_size, 3), 128,
                                             np.uint8)]
        diff = onnx_torch_max_diff(module, fp32, check_images, source.img_size)
        log.info('ONNX vs PyTorch: max |diff| %.2e over %d images', diff, len(check_images))
        centres = pca = None
        extra_kind = {}
        if kind == 'local_vlad':
            backbone = OnnxVitBackbone(fp32, source.img_size, threads=threads,
                                       drop_tokens=drop_tokens)
            features = vocab.dense_features(backbone, crops, progress)
            centres, pca, _ = vocab.fit_vlad(features, k=k, pca_dim=pca_dim, seed=seed)
            del backbone
            extra_kind = {'k': int(k), 'pca_dim': None if pca is None else pca.dim,
                          'tiles': len(crops), 'footprints_m': footprints}
        else:
            extra_kind = {'output_dim': _output_dim(module, source.img_size)}
        calibration = calibration_images
        if quantize_mode == 'static' and calibration is None:
            calibration = crops[:int(calib)]
        q = os.path.join(tmp, 'q', ONNX_NAME)
        log.info('quantization: %s', quantize_mode)
        qinfo = quantize(fp32, q, quantize_mode, calibration,
                         keep_fp32=('/head',) if kind == 'global' else ())
        base = {'arch': source.arch, 'img_size': source.img_size,
                'exported_by': 'skyloc_training.export', 'onnx_torch_max_abs_diff': diff,
                'map_yaml': os.path.abspath(map_yaml) if map_yaml else None,
                'map_sha256': file_sha256(map_yaml) if map_yaml else None, 'seed': int(seed),
                **source.info, **extra_kind}
        tag = f'L{layer}/{facet}' if kind == 'local_vlad' else 'global'
        lay, fac = (int(layer), facet) if kind == 'local_vlad' else (None, None)
        written = {}
        for folder, onnx_file, mode, more in ((out, q, quantize_mode, qinfo),
                                              (fp32_out, fp32, 'none', {})):
            if not folder:
                continue
            extra = dict(base, quantization=mode, quantization_info=more,
                         name=f'{source.arch}/{tag}/{mode}',
                         built_s=round(time.monotonic() - t0, 1))
            written[folder] = write_bundle(folder, 'onnx', source.img_size, centres, pca,
                                           onnx_file=onnx_file, kind=kind, layer=lay,
                                           facet=fac, drop_tokens=drop_tokens, extra=extra)
            b = written[folder]
            log.info('bundle %s: %s %s, descriptor dim %d, %.1f MB ONNX, model_id %s',
                     folder, kind, mode, b.descriptor_dim, os.path.getsize(b.onnx_path) / 1e6,
                     b.model_id[:12])
    return written[out]


def _output_dim(module, size):
    import torch
    with torch.no_grad():
        return int(module(torch.zeros(1, 3, int(size), int(size))).shape[-1])


def parser():
    p = argparse.ArgumentParser(prog='python -m skyloc_training.export',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='bundle folder to write')
    p.add_argument('--kind', choices=KINDS, default='local_vlad',
                   help='local_vlad: truncated backbone + VLAD vocabulary; global: whole '
                        'network + head, one 256-d vector')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--checkpoint', help='GeoModel checkpoint (skyloc_training.train); its '
                                          'LoRA is merged')
    src.add_argument('--arch', help='timm architecture without a checkpoint, e.g. '
                                    'vit_small_patch14_dinov2')
    p.add_argument('--weights', help='local backbone weights (official DINOv2/DINOv3 or timm '
                                     'layout); default: random init (--arch) or the '
                                     "checkpoint's own")
    p.add_argument('--map', help='map YAML: vocabulary/PCA (local_vlad) and static '
                                 'calibration crops are taken from it')
    p.add_argument('--layer', type=int, default=9, help='ViT layer to cut at (local_vlad)')
    p.add_argument('--facet', choices=('value', 'key', 'query', 'token'), default='value',
                   help='ViT facet (local_vlad)')
    p.add_argument('--quantize', choices=QUANTIZE, default='dynamic',
                   help='INT8: dynamic (fused, per channel) or static QDQ; none: FP32')
    p.add_argument('--pca-dim', type=int, default=256, help='PCA-whitened dimension (0: none)')
    p.add_argument('--k', type=int, default=32, help='VLAD centres')
    p.add_argument('--img-size', type=int, default=None,
                   help="input side, px (default: the checkpoint's, else 224)")
    p.add_argument('--tiles', type=int, default=300, help='map crops the vocabulary is '
                                                          'fitted on')
    p.add_argument('--footprints', default='80,110,140',
                   help='crop ground footprints, metres (the altitude bands)')
    p.add_argument('--calib', type=int, default=32,
                   help='map crops for static calibration')
    p.add_argument('--calibration', help='folder of calibration images (static), instead of '
                                         'map crops')
    p.add_argument('--fp32-out', help='also write the FP32 bundle (same vocabulary) here')
    p.add_argument('--depth', type=int, default=None,
                   help='blocks of an --arch model (tests and small experiments only)')
    p.add_argument('--threads', type=int, default=2, help='CPU threads (torch, ONNX Runtime)')
    p.add_argument('--seed', type=int, default=0, help='crop sampling, k-means, random init')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def setup_logging(tag):
    """INFO lines '[tag] message' on stderr from the skyloc_training loggers only (the
    onnxruntime quantizer logs every tensor through the root logger)."""
    logger = logging.getLogger('skyloc_training')
    for handler in [h for h in logger.handlers if getattr(h, 'skyloc_cli', False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)  # the current stderr (pytest swaps it)
    handler.setFormatter(logging.Formatter(f'[{tag}] %(message)s'))
    handler.skyloc_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _footprints(text):
    try:
        values = [float(v) for v in str(text).split(',')]
    except ValueError as exc:
        raise ValueError(f'--footprints must be comma-separated metres, got {text!r}') from exc
    if not values or min(values) <= 0:
        raise ValueError(f'--footprints must be positive metres, got {text!r}')
    return values


def main(argv=None):
    args = parser().parse_args(argv)
    setup_logging('export')
    from skyloc_perception.bundle import BundleError
    from skyloc_sim.geo import MapError
    try:
        import torch
        torch.set_num_threads(max(1, args.threads))
        footprints = _footprints(args.footprints)
        calibration = check_request(args.kind, args.quantize, args.map, args.calib,
                                    args.calibration)
        source = load_source(args.checkpoint, args.arch, args.weights, args.img_size,
                             args.depth, args.seed)
        export_bundle(args.out, args.kind, source, args.map, args.layer, args.facet,
                      args.quantize, args.pca_dim, args.k, args.tiles, footprints, args.calib,
                      calibration, args.seed, args.threads, args.fp32_out,
                      progress=not args.quiet)
    except (BundleError, MapError, ValueError, OSError) as exc:
        print(f'export: error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
