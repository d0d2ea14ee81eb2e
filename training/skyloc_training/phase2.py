"""Phase 2 of the seed plan, measured: INT4 weight-only, mixed precision, distillation.

    python -m skyloc_training.phase2 (--checkpoint CKPT | --arch ARCH [--weights W])
        --map MAP.yaml --out DIR [--kind local_vlad|global] [--layer 9 --facet value]
        [--student-depth 6] [--student-width W] [--distill-steps 60] [--queries 40]

Variants of the exported model (each written as a bundle DIR/<variant>/ with the FP32 bundle's
vocabulary and PCA, so the embedder can load any of them):
    fp32               the reference (``skyloc_training.export`` with --quantize none)
    int8_dynamic       the deployed INT8 (``vit_onnx.quantize_int8_cpu``)
    int4_weight_only   every MatMul with a constant weight -> com.microsoft MatMulNBits, 4-bit
                       weights in blocks of 32 along K with an FP32 scale each (ONNX Runtime's
                       own block packer), activations FP32
    mixed_mlp_int8     attention (qkv, proj, the facet projection) kept FP32, the MLP's
                       fc1/fc2 dynamic INT8 (``quantize_dynamic(nodes_to_quantize=...)``)
    student_fp32/int8  knowledge distillation: a shallower student (teacher blocks sampled
                       evenly, ``--student-depth``; or a narrower random one, ``--student-width``,
                       with a linear projection to the teacher's width) trained for
                       ``--distill-steps`` AdamW steps on map crops to match the teacher's
                       output (1 - cosine per token / per descriptor), then exported FP32 and
                       dynamic INT8
For each: ONNX size (MB), one-thread latency (ms, median), cosine vs the FP32 teacher on
held-out map crops (as ``skyloc_training.verify``), Recall@1 on verify's benchmark. One JSON
(DIR/phase2.json) and a printed table.
"""

import argparse
import copy
import logging
import os
import sys
import tempfile
import time

import numpy as np

log = logging.getLogger('skyloc_training.phase2')

VARIANTS = ('fp32', 'int8_dynamic', 'int4_weight_only', 'mixed_mlp_int8', 'student_fp32',
            'student_int8')


# --------------------------------------------------------------------------------- INT4 (RTN)

def quantize_int4_weight_only(fp32_path, out_path, block_size=32, accuracy_level=4):
    """Weight-only 4-bit quantization: MatMul(A, W const [K, N]) -> MatMulNBits (com.microsoft).

    W is quantized per column in blocks of ``block_size`` rows (K padded to a multiple) with
    one FP32 scale per block, symmetric (zero point 8), by onnxruntime's C++ packer
    (``quantize_matmul_4bits``, the one its MatMulNBitsQuantizer calls); activations stay FP32.
    ``accuracy_level`` 4: ONNX Runtime may compute with int8 activations (faster on x86/ARM).

    Returns:
        {'quantized': MatMuls rewritten, 'kept': MatMuls left FP32 (non-constant weight)}.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    from skyloc_perception import vit_torch
    model = onnx.load(os.fspath(fp32_path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    nodes, quantized, kept, drop = [], 0, 0, set()
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == 'MatMul' else None
        w = numpy_helper.to_array(weight) if weight is not None else None
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            kept += node.op_type == 'MatMul'
            nodes.append(node)
            continue
        k, n = w.shape
        blocks = (k + block_size - 1) // block_size
        padded = np.zeros((blocks * block_size, n), np.float32)
        padded[:k] = w
        packed = np.zeros((n, blocks, block_size // 2), np.uint8)
        scales = np.zeros((n, blocks), np.float32)
        zero_points = np.zeros((n, (blocks + 1) // 2), np.uint8)
        quantize_matmul_4bits(packed, padded, scales, zero_points, block_size, n, k, True)
        base = f'{weight.name}_int4_{quantized}'
        graph.initializer.extend([numpy_helper.from_array(packed, base + '_packed'),
                                  numpy_helper.from_array(scales.reshape(-1),
                                                          base + '_scales')])
        nodes.append(helper.make_node(
            'MatMulNBits', [node.input[0], base + '_packed', base + '_scales'], list(node.output),
            name=(node.name or base) + '_Q4', domain='com.microsoft', K=int(k), N=int(n),
            bits=4, block_size=int(block_size), accuracy_level=int(accuracy_level)))
        consumers[weight.name] -= 1
        if consumers[weight.name] == 0:
            drop.add(weight.name)
        quantized += 1
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == 'com.microsoft' for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid('com.microsoft', 1))
    tmp = os.fspath(out_path) + '.tmp'
    onnx.save(model, tmp)
    vit_torch._finalise_onnx(tmp, os.fspath(out_path))
    return {'quantized': quantized, 'kept': kept, 'block_size': int(block_size)}


# ------------------------------------------------------------------------- mixed precision

def mlp_matmuls(onnx_path):
    """Names of the MatMul nodes of the MLPs (fc1, fc2) of an exported timm ViT."""
    import onnx
    graph = onnx.load(os.fspath(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == 'MatMul' and '/mlp/' in n.name]


def quantize_mixed(fp32_path, out_path):
    """Dynamic INT8 (signed weights, per channel) of the MLP MatMuls only; attention (qkv,
    proj, the facet projection, Q.K^T, A.V) and the head stay FP32. Returns
    {'int8_matmuls', 'fp32_matmuls'}."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from skyloc_perception import vit_torch
    names = mlp_matmuls(fp32_path)
    if not names:
        raise ValueError(f'{fp32_path}: no MLP MatMul (node names with /mlp/) to quantize')
    total = sum(n.op_type == 'MatMul' for n in onnx.load(os.fspath(fp32_path)).graph.node)
    tmp = os.fspath(out_path) + '.q.tmp'
    with vit_torch._quiet_quantizer():
        quantize_dynamic(os.fspath(fp32_path), tmp, op_types_to_quantize=['MatMul'],
                         nodes_to_quantize=names, per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={'MatMulConstBOnly': True})
    vit_torch._finalise_onnx(tmp, os.fspath(out_path))
    return {'int8_matmuls': len(names), 'fp32_matmuls': total - len(names)}


# ---------------------------------------------------------------------------- distillation

def _teacher_blocks(depth, count):
    """``count`` indices in 0..depth-1, evenly spread, first and last included."""
    count = max(1, min(int(count), int(depth)))
    if count == 1:
        return [depth - 1]
    return sorted({int(round(i)) for i in np.linspace(0, depth - 1, count)})


def make_student(source, kind, layer=9, facet='value', depth=6, width=None, seed=0):
    """A smaller network with the teacher's output: (student module, info dict).

    local_vlad: the teacher is ``TruncatedVit(backbone, layer, facet)``; the student a
    ``TruncatedVit`` of ``depth`` blocks (< layer) before the same cut. global: the teacher
    is ``export.global_network(source)``; the student pools ``depth`` blocks (< the
    backbone's) the same way and applies a copy of the teacher's head.
    Without ``width`` the student's blocks are copies of evenly spaced teacher blocks (and the
    cut block's norm1/qkv, the final norm) - the student starts close to the teacher; with
    ``width`` (e.g. 192, ViT-Tiny) it is a random ViT of that width with ``width // 64``
    heads and a Linear projection to the teacher's width.
    """
    import torch.nn as nn
    import torch.nn.functional as F

    from skyloc_perception.vit_torch import build_vit, TruncatedVit
    teacher_vit = source.backbone
    total = len(teacher_vit.blocks)
    cut = int(layer) if kind == 'local_vlad' else total
    if cut < 2 or int(depth) < 1:
        raise ValueError(f'a student needs 1 <= depth < the teacher\'s {cut} blocks before its '
                         f'output, got depth {depth}')
    if int(depth) >= cut:
        log.warning('student depth %d capped at %d (the teacher has %d blocks before its '
                    'output)', depth, cut - 1, cut)
    depth = min(int(depth), cut - 1)
    extra = 0 if kind == 'global' or facet == 'token' else 1  # the cut block's norm1 + qkv
    if width is None:
        picked = _teacher_blocks(cut, depth)
        student_vit = copy.deepcopy(teacher_vit)
        blocks = [copy.deepcopy(teacher_vit.blocks[i]) for i in picked]
        if extra:
            blocks.append(copy.deepcopy(teacher_vit.blocks[cut]))
        student_vit.blocks = nn.Sequential(*blocks) if isinstance(teacher_vit.blocks,
                                                                  nn.Sequential) \
            else nn.ModuleList(blocks)
        info = {'student': 'teacher blocks', 'teacher_blocks': picked}
    else:
        width = int(width)
        if width % 64:
            raise ValueError(f'--student-width must be a multiple of 64 (heads of 64), got '
                             f'{width}')
        student_vit = build_vit(source.arch, source.img_size, seed=seed, depth=depth + extra,
                                embed_dim=width, num_heads=width // 64)
        info = {'student': 'random', 'width': width}
    info['depth'] = depth
    for p in student_vit.parameters():
        p.requires_grad_(True)

    if kind == 'local_vlad':
        trunk = TruncatedVit(student_vit, depth, facet)
        out_dim = TruncatedVit(teacher_vit, cut, facet).dim
        proj = nn.Linear(trunk.dim, out_dim) if trunk.dim != out_dim else nn.Identity()

        class LocalStudent(nn.Module):
            def __init__(self):
                super().__init__()
                self.trunk, self.proj = trunk, proj
                self.input_size = trunk.input_size
                self.num_prefix_tokens = trunk.num_prefix_tokens

            def forward(self, x):
                return self.proj(self.trunk(x))

        return LocalStudent(), info

    pool = source.model.config.get('pool', 'mean') if source.model is not None else 'mean'
    head = copy.deepcopy(source.model.head) if source.model is not None else nn.Identity()
    head_in = source.model.head[0].in_features if source.model is not None else \
        teacher_vit.embed_dim
    proj = nn.Linear(student_vit.embed_dim, head_in) if student_vit.embed_dim != head_in \
        else nn.Identity()

    class GlobalStudent(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit, self.proj, self.head = student_vit, proj, head

        def forward(self, x):
            tokens = self.vit.forward_features(x)
            pooled = tokens[:, 0] if pool == 'cls' else \
                tokens[:, self.vit.num_prefix_tokens:].mean(dim=1)
            return F.normalize(self.head(self.proj(pooled)), dim=-1)

    for p in head.parameters():
        p.requires_grad_(True)
    return GlobalStudent(), info


def distillation_loss(student_out, teacher_out):
    """Mean of 1 - cosine over the last axis (per token [B, T, D], per descriptor [B, D])."""
    import torch.nn.functional as F
    return (1.0 - F.cosine_similarity(student_out, teacher_out, dim=-1)).mean()


def distill(student, teacher, crops, input_size, steps=60, batch=8, lr=1e-4, seed=0,
            progress=True):
    """Train ``student`` to match ``teacher`` on ``crops`` (teacher outputs computed once).

    AdamW (weight decay 0.01), cosine learning-rate decay, gradient clipping at 1.0; batches
    drawn with ``seed``. Returns {'steps', 'loss_first', 'loss_last', 'seconds'}, the losses
    being the means over the first and over the last ``min(5, steps // 2)`` steps.
    """
    import torch
    from tqdm import tqdm

    from skyloc_perception.vit_onnx import preprocess
    if not crops:
        raise ValueError('distillation needs at least one crop')
    t0 = time.monotonic()
    x = torch.from_numpy(np.concatenate([preprocess(c, input_size) for c in crops]))
    teacher.eval()
    with torch.no_grad():
        targets = torch.cat([teacher(x[i:i + batch]) for i in range(0, len(x), batch)])
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, int(steps)))
    rng = np.random.default_rng(seed)
    losses = []
    for _ in tqdm(range(int(steps)), desc='distillation', unit='step', disable=not progress):
        idx = torch.from_numpy(rng.choice(len(x), min(batch, len(x)), replace=False))
        loss = distillation_loss(student(x[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    student.eval()
    n = max(1, min(5, len(losses) // 2))  # first and last steps, not overlapping
    return {'steps': int(steps), 'batch': int(batch), 'lr': float(lr), 'crops': len(crops),
            'loss_first': round(float(np.mean(losses[:n])), 6) if losses else None,
            'loss_last': round(float(np.mean(losses[-n:])), 6) if losses else None,
            'seconds': round(time.monotonic() - t0, 1)}


def export_student(student, kind, path, input_size):
    """Student -> ONNX with the teacher's interface ('tokens' [1, T, D] or 'descriptor')."""
    import warnings

    import torch

    from skyloc_perception import vit_torch

    from skyloc_training.export import export_global_onnx
    student.eval()
    if kind == 'global':
        return export_global_onnx(student, path, input_size)
    tmp = os.fspath(path) + '.tmp'
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(student, (torch.zeros(1, 3, input_size, input_size),), tmp,
                          input_names=['image'], output_names=['tokens'], opset_version=17,
                          dynamo=False, do_constant_folding=True)
    vit_torch._finalise_onnx(tmp, os.fspath(path))
    return path


# -------------------------------------------------------------------------------------- run

def check_variants(variants):
    """ValueError naming the variants that are not in VARIANTS."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f'unknown variants {unknown}; known: {", ".join(VARIANTS)}')


def run(source, map_yaml, out_dir, kind='local_vlad', layer=9, facet='value',
        variants=VARIANTS, student_depth=6, student_width=None, distill_steps=60,
        distill_crops=128, batch=8, lr=1e-4, tiles=300, k=32, pca_dim=256,
        footprints=(80.0, 110.0, 140.0), crops=16, queries=40, stride_m=50.0,
        condition='summer', latency_runs=10, threads=2, seed=0, progress=True):
    """Build and measure the variants; returns the report dict (also DIR/phase2.json)."""
    from skyloc_perception.bundle import DescriptorPipeline, write_bundle
    from skyloc_perception.vit_onnx import quantize_int8_cpu

    from skyloc_training import export, verify
    from skyloc_training.vocab import map_crops
    check_variants(variants)
    t0 = time.monotonic()
    os.makedirs(out_dir, exist_ok=True)
    ref_dir = os.path.join(out_dir, 'fp32')
    ref = export.export_bundle(ref_dir, kind, source, map_yaml, layer, facet, 'none', pca_dim,
                               k, tiles, footprints, seed=seed, threads=threads,
                               progress=progress)
    size = ref.input_size
    drop_tokens = int(ref.meta['drop_tokens'])
    held_out = map_crops(map_yaml, crops, footprints, size, seed=seed + 1)
    bench = None
    if queries:
        bench = verify.RetrievalBench.from_map(map_yaml, queries, size, stride_m, condition,
                                               seed)
    report = {'source': source.info, 'arch': source.arch, 'kind': kind, 'img_size': size,
              'layer': ref.meta.get('layer'), 'facet': ref.meta.get('facet'),
              'map_yaml': os.path.abspath(map_yaml), 'held_out_crops': len(held_out),
              'benchmark': bench.info if bench else None, 'variants': {}}
    verify_pipe = DescriptorPipeline(ref, threads)

    def measure(name, onnx_path, info):
        folder = os.path.join(out_dir, name)
        if name == 'fp32':
            bundle = ref
        else:
            extra = {key: ref.meta[key] for key in ref.meta if key not in (
                'format_version', 'kind', 'backend', 'input_size', 'layer', 'facet',
                'drop_tokens', 'files', 'model_id')}
            extra.update(quantization=name, quantization_info=info,
                         name=f'{source.arch}/{name}')
            bundle = write_bundle(folder, 'onnx', size, ref.vocabulary, ref.pca,
                                  onnx_file=onnx_path, kind=kind, layer=ref.meta.get('layer'),
                                  facet=ref.meta.get('facet'), drop_tokens=drop_tokens,
                                  extra=extra)
        pipe = verify_pipe if name == 'fp32' else DescriptorPipeline(bundle, threads)
        cos = verify.crop_cosines(verify_pipe.backbone, pipe.backbone, held_out)
        row = {'bundle': os.path.abspath(bundle.path),
               'size_mb': round(os.path.getsize(bundle.onnx_path) / 1e6, 2),
               'latency_ms_1_thread': verify.onnx_latency_ms(bundle.onnx_path, size,
                                                             latency_runs),
               'cosine_vs_fp32': verify.stats(cos), **info}
        if bench is not None:
            row.update(bench.recall(pipe))
        report['variants'][name] = row
        log.info('%s: %.1f MB, %.1f ms, cosine %.5f%s', name, row['size_mb'],
                 row['latency_ms_1_thread'], row['cosine_vs_fp32']['mean'],
                 f", Recall@1 {row['recall_at_1']:.3f}" if 'recall_at_1' in row else '')

    with tempfile.TemporaryDirectory(prefix='skyloc_phase2_') as tmp:
        fp32_path = ref.onnx_path
        measure('fp32', fp32_path, {})

        def tmp_dir(name):
            os.makedirs(os.path.join(tmp, name))
            return os.path.join(tmp, name, export.ONNX_NAME)

        if 'int8_dynamic' in variants:
            path = tmp_dir('int8_dynamic')
            info = quantize_int8_cpu(fp32_path, path)
            measure('int8_dynamic', path, {'fused_attention': info['attention']})
        if 'int4_weight_only' in variants:
            path = tmp_dir('int4_weight_only')
            measure('int4_weight_only', path, quantize_int4_weight_only(fp32_path, path))
        if 'mixed_mlp_int8' in variants:
            path = tmp_dir('mixed_mlp_int8')
            measure('mixed_mlp_int8', path, quantize_mixed(fp32_path, path))
        if {'student_fp32', 'student_int8'} & set(variants):
            _, teacher, _ = export.export_fp32(source, kind, os.path.join(tmp, 'teacher.onnx'),
                                               layer, facet)
            student, sinfo = make_student(source, kind, layer, facet, student_depth,
                                          student_width, seed)
            train = map_crops(map_yaml, distill_crops, footprints, size, seed=seed + 2)
            sinfo.update(distill(student, teacher, train, size, distill_steps, batch, lr, seed,
                                 progress))
            report['distillation'] = sinfo
            path = tmp_dir('student_fp32')
            export_student(student, kind, path, size)
            if 'student_fp32' in variants:
                measure('student_fp32', path, {'student_depth': sinfo['depth']})
            if 'student_int8' in variants:
                qpath = tmp_dir('student_int8')
                quantize_int8_cpu(path, qpath)
                measure('student_int8', qpath, {'student_depth': sinfo['depth']})
    report['elapsed_s'] = round(time.monotonic() - t0, 1)
    verify.write_json(report, os.path.join(out_dir, 'phase2.json'))
    return report


def format_table(report):
    """One line per variant: size, latency, cosine vs FP32 (mean, p1), Recall@1."""
    rows = [('variant', 'size MB', 'ms (1 thr)', 'cos mean', 'cos p1', 'Recall@1')]
    for name, r in report['variants'].items():
        rows.append((name, f"{r['size_mb']:.1f}", f"{r['latency_ms_1_thread']:.1f}",
                     f"{r['cosine_vs_fp32']['mean']:.5f}", f"{r['cosine_vs_fp32']['p1']:.5f}",
                     f"{r['recall_at_1']:.3f}" if 'recall_at_1' in r else '-'))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    d = report.get('distillation')
    if d:
        lines.append(f"distillation: depth {d['depth']} ({d['student']}), {d['steps']} steps on "
                     f"{d['crops']} crops, loss {d['loss_first']:.4f} -> {d['loss_last']:.4f} "
                     f"({d['seconds']} s)")
    return '\n'.join(lines)


def parser():
    p = argparse.ArgumentParser(prog='python -m skyloc_training.phase2',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--checkpoint', help='GeoModel checkpoint (LoRA merged)')
    src.add_argument('--arch', help='timm architecture without a checkpoint')
    p.add_argument('--weights', help='local backbone weights (default: random init / the '
                                     "checkpoint's own)")
    p.add_argument('--map', required=True, help='map YAML: vocabulary, crops, benchmark')
    p.add_argument('--out', required=True, help='folder for the bundles and phase2.json')
    p.add_argument('--kind', choices=('local_vlad', 'global'), default='local_vlad')
    p.add_argument('--layer', type=int, default=9, help='ViT layer (local_vlad)')
    p.add_argument('--facet', choices=('value', 'key', 'query', 'token'), default='value')
    p.add_argument('--img-size', type=int, default=None,
                   help="input side, px (default: the checkpoint's, else 224)")
    p.add_argument('--depth', type=int, default=None, help='blocks of an --arch model (tests)')
    p.add_argument('--variants', default=','.join(VARIANTS),
                   help='comma-separated subset of the variants')
    p.add_argument('--student-depth', type=int, default=6,
                   help='student blocks before the output (capped below the teacher\'s)')
    p.add_argument('--student-width', type=int, default=None,
                   help='random student of this width (e.g. 192) instead of teacher blocks')
    p.add_argument('--distill-steps', type=int, default=60, help='distillation AdamW steps')
    p.add_argument('--distill-crops', type=int, default=128, help='map crops to distil on')
    p.add_argument('--batch', type=int, default=8, help='distillation batch size')
    p.add_argument('--lr', type=float, default=1e-4, help='distillation learning rate')
    p.add_argument('--tiles', type=int, default=300, help='crops for the vocabulary')
    p.add_argument('--k', type=int, default=32, help='VLAD centres')
    p.add_argument('--pca-dim', type=int, default=256, help='PCA dimension (0: none)')
    p.add_argument('--footprints', default='80,110,140', help='crop footprints, metres')
    p.add_argument('--crops', type=int, default=16, help='held-out crops for the cosine')
    p.add_argument('--queries', type=int, default=40, help='benchmark queries (0: skip)')
    p.add_argument('--stride', type=float, default=50.0, help='benchmark tile stride, m')
    p.add_argument('--condition', default='summer', help="the queries' appearance")
    p.add_argument('--latency-runs', type=int, default=10, help='timed runs per variant')
    p.add_argument('--threads', type=int, default=2, help='torch / ONNX Runtime threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from skyloc_perception.bundle import BundleError
    from skyloc_sim.geo import load_map_yaml, MapError

    from skyloc_training import export
    export.setup_logging('phase2')
    try:
        import torch
        torch.set_num_threads(max(1, args.threads))
        load_map_yaml(args.map)
        footprints = export._footprints(args.footprints)
        variants = [v.strip() for v in args.variants.split(',') if v.strip()]
        check_variants(variants)
        source = export.load_source(args.checkpoint, args.arch, args.weights, args.img_size,
                                    args.depth, args.seed)
        report = run(source, args.map, args.out, args.kind, args.layer, args.facet, variants,
                     args.student_depth, args.student_width, args.distill_steps,
                     args.distill_crops, args.batch, args.lr, args.tiles, args.k, args.pca_dim,
                     footprints, args.crops, args.queries, args.stride, args.condition,
                     args.latency_runs, args.threads, args.seed, progress=not args.quiet)
    except (BundleError, MapError, ValueError, OSError) as exc:
        print(f'phase2: error: {exc}', file=sys.stderr)
        return 2
    print(format_table(report))
    log.info('report: %s', os.path.join(args.out, 'phase2.json'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
