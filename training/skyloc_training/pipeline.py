"""`make model`: the whole training pipeline on a small configuration, on the CPU.

    python -m skyloc_training.pipeline [--out .cache/models/small] [--world procedural]
        [--weights DINOV2.pth] [--steps 120] [--img-size 112] [--pairs 480]

Steps, each logged with its time (a progress bar where it is long):

1. pairs: drone views of the demo's world (``--world``; ``procedural`` is the one
   ``make demo`` flies) rendered by the simulator and normalised as the embedder does at run
   time, with their map tiles and IoU (``skyloc_training.pairs``); also of the real satellite
   tiles of ../shared/data/real_satellite when they are there (a second source, evaluated on
   its own);
2. train: LoRA fine-tuning of the ViT-S global descriptor (``skyloc_training.train``),
   Recall@1/5/10 per source on held-out views;
3. export: the trained model as both bundle kinds, INT8 (dynamic) with an FP32 twin:
   ``global`` (LoRA merged, MLP head, 256-d) and ``local_vlad`` (backbone cut at a layer,
   VLAD vocabulary and PCA fitted on the world's map);
4. verify: each INT8 bundle against its FP32 twin (feature cosine, Recall@1 drop);
5. compare: Recall@1 of both INT8 bundles and of the weights-free default RootSIFT bundle
   (the one ``make demo`` builds) on one retrieval benchmark of the world (the same
   rendered queries for all), and the selection: ``OUT/selected.json`` names the best
   trained bundle when it beats the default, and ``make demo`` then uses it (it never needs
   torch to run it; ``.cache/models/selected.json`` points at the latest selection).

Writes OUT/report.json (every figure, the commands, the times), OUT/report.md (a table) and
OUT/training.png (loss and Recall@1 over the steps).  Without ``--weights`` the backbone is
randomly initialised (no weights can be downloaded here): the pipeline then proves that every
part runs and is measured, and the default bundle stays selected unless the trained one wins.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time

log = logging.getLogger('skyloc_training.pipeline')


def workspace_root():
    """The checkout this package lives in (training/skyloc_training/ -> the root)."""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                         '..'))


def demo_world(root, world):
    """YAML path of ``world``: 'procedural' is make demo's own world (config/sim.yaml)."""
    from skyloc_sim.demo import _sim_params, prepare_world
    return prepare_world(root, world, _sim_params(root))


class Steps:
    """Times each step, logs it and keeps the figures for the report."""

    def __init__(self):
        self.times = {}

    def run(self, name, func, *args, **kwargs):
        log.info('--- %s', name)
        t0 = time.monotonic()
        result = func(*args, **kwargs)
        from skyloc_training.export import setup_logging
        setup_logging('model')   # the step's own command set its tag
        self.times[name] = round(time.monotonic() - t0, 1)
        log.info('--- %s done in %.1f s', name, self.times[name])
        return result


def _check(code, what):
    if code != 0:
        raise RuntimeError(f'{what} failed (exit code {code}); see the lines above')


def make_pairs(out, world_yaml, count, seed, real_count, cache_dir):
    """Pair folders: {source: folder}."""
    from skyloc_training import pairs
    sources = {}
    folder = os.path.join(out, 'pairs', 'world')
    _check(pairs.main(['--map', world_yaml, '--out', folder, '--count', str(count),
                       '--drone-view', 'normalized', '--image-size', '224',
                       '--name', 'world', '--seed', str(seed), '--quiet',
                       '--cache-dir', cache_dir]), 'pairs (world)')
    sources['world'] = folder
    from skyloc_sim.world import shared_real_satellite_dir
    if real_count and shared_real_satellite_dir():
        folder = os.path.join(out, 'pairs', 'real_satellite')
        _check(pairs.main(['--map', 'real_satellite', '--out', folder, '--count',
                           str(real_count), '--drone-view', 'normalized', '--image-size',
                           '224', '--conditions', 'autumn', '--name', 'real_satellite',
                           '--seed', str(seed), '--quiet', '--cache-dir', cache_dir]),
               'pairs (real_satellite)')
        sources['real_satellite'] = folder
    elif real_count:
        log.info('no ../shared/data/real_satellite here: training on the world only')
    return sources


def run_training(out, sources, args):
    from skyloc_training import train
    argv = ['--train-json'] + [os.path.join(f, 'pairs_train.json') for f in sources.values()]
    argv += ['--test-json'] + [os.path.join(f, 'pairs_test.json') for f in sources.values()]
    argv += ['--out', os.path.join(out, 'train'), '--arch', args.arch,
             '--img-size', str(args.img_size), '--epochs', '1000', '--max-steps',
             str(args.steps), '--batch-size', str(args.batch_size), '--lr', str(args.lr),
             '--warmup-steps', str(max(1, args.steps // 10)), '--eval-every',
             str(max(1, args.steps // 3)), '--lora-rank', str(args.lora_rank),
             '--lora-alpha', str(2.0 * args.lora_rank), '--threads', str(args.threads),
             '--seed', str(args.seed)]
    if args.quiet:
        argv.append('--no-progress')
    if args.weights:
        argv += ['--weights', args.weights]
    if args.depth:
        argv += ['--depth', str(args.depth)]
    _check(train.main(argv), 'training')
    return os.path.join(out, 'train')


def run_exports(out, checkpoint, world_yaml, args):
    """{kind: (int8 folder, fp32 folder)}."""
    from skyloc_training import export
    bundles = {}
    for kind in args.kinds:
        int8 = os.path.join(out, 'bundles', f'{kind}_int8')
        fp32 = os.path.join(out, 'bundles', f'{kind}_fp32')
        argv = ['--out', int8, '--fp32-out', fp32, '--kind', kind, '--checkpoint', checkpoint,
                '--map', world_yaml, '--quantize', 'dynamic', '--threads', str(args.threads),
                '--seed', str(args.seed), '--tiles', str(args.vocab_tiles)]
        if kind == 'local_vlad':
            argv += ['--layer', str(args.layer), '--facet', 'value']
        if args.quiet:
            argv.append('--quiet')
        _check(export.main(argv), f'export ({kind})')
        bundles[kind] = (int8, fp32)
    return bundles


def run_verify(bundles, world_yaml, args):
    from skyloc_training.verify import verify
    return {kind: verify(fp32, int8, world_yaml, queries=args.queries, crops=16,
                         threads=args.threads, progress=not args.quiet)
            for kind, (int8, fp32) in bundles.items()}


def compare(bundles, default_bundle, world_yaml, args):
    """Recall@1 of every INT8 bundle and the default on one benchmark of the world."""
    from skyloc_perception.bundle import DescriptorPipeline, load_bundle

    from skyloc_training.verify import RetrievalBench
    candidates = {'default': default_bundle}
    candidates.update({f'{kind}_int8': int8 for kind, (int8, _) in bundles.items()})
    benches, results = {}, {}
    for name, path in candidates.items():
        bundle = load_bundle(path)
        size = bundle.input_size
        if size not in benches:   # the same poses (seed) rendered at each input size
            benches[size] = RetrievalBench.from_map(world_yaml, args.queries, size,
                                                    args.stride, 'summer', args.seed + 100)
        t0 = time.monotonic()
        r = benches[size].recall(DescriptorPipeline(bundle, threads=args.threads))
        r.update(path=os.path.abspath(path), model_id=bundle.model_id,
                 backend=bundle.backend, kind=bundle.kind, input_size=size,
                 seconds=round(time.monotonic() - t0, 1))
        results[name] = r
        log.info('%-18s Recall@1 %.3f, median error %.1f m (%s, %d px)', name,
                 r['recall_at_1'], r['median_error_m'], bundle.backend, size)
    info = next(iter(benches.values())).info
    return {'benchmark': info, 'results': results}


def select(comparison, verification, out, cache_root, world_yaml):
    """The selection: the best trained INT8 bundle if it beats the default and passes its
    INT8 verification, else the default."""
    results = comparison['results']
    default = results['default']['recall_at_1']
    trained = sorted(((r['recall_at_1'], name) for name, r in results.items()
                      if name != 'default'), reverse=True)
    choice = {'selected': 'default', 'bundle': None, 'default_recall_at_1': default,
              'map_yaml': os.path.abspath(world_yaml),
              'reason': 'no trained bundle'}
    if trained:
        best_recall, best = trained[0]
        kind = best.replace('_int8', '')
        verified = verification.get(kind, {}).get('passed', False)
        if best_recall > default and verified:
            choice.update(selected=best, bundle=results[best]['path'],
                          model_id=results[best]['model_id'], recall_at_1=best_recall,
                          reason=f'Recall@1 {best_recall:.3f} > default {default:.3f}, '
                                 f'INT8 verification passed')
        else:
            why = (f'INT8 verification of {kind} failed' if best_recall > default
                   else f'best trained Recall@1 {best_recall:.3f} ({best}) <= default '
                        f'{default:.3f}')
            choice.update(reason=why, best_trained=best, best_trained_recall_at_1=best_recall)
    with open(os.path.join(out, 'selected.json'), 'w') as stream:
        json.dump(choice, stream, indent=2)
    pointer = os.path.join(cache_root, '.cache', 'models', 'selected.json')
    os.makedirs(os.path.dirname(pointer), exist_ok=True)
    with open(pointer, 'w') as stream:
        json.dump(dict(choice, run=os.path.abspath(out)), stream, indent=2)
    return choice


def read_metrics(train_dir):
    rows = []
    path = os.path.join(train_dir, 'metrics.jsonl')
    if os.path.isfile(path):
        with open(path) as stream:
            rows = [json.loads(line) for line in stream if line.strip()]
    return rows


def plot_training(rows, path):
    """Loss over the steps and Recall@1 at each evaluation (PNG); False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [(r['step'], r['loss']) for r in rows if r.get('kind') == 'step']
    evals = [r for r in rows if r.get('kind') == 'eval']
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    if steps:
        a.plot([s for s, _ in steps], [v for _, v in steps], lw=1)
    a.set_xlabel('step')
    a.set_ylabel('WeightedInfoNCE loss')
    a.set_title('training loss')
    for key in sorted({k for r in evals for k in r['results']}):
        xs = [r['step'] for r in evals if key in r['results']]
        ys = [100 * r['results'][key]['R@1'] for r in evals if key in r['results']]
        b.plot(xs, ys, marker='o', label=key)
    b.set_xlabel('step')
    b.set_ylabel('Recall@1 (%)')
    b.set_title('held-out views, per source')
    if b.lines:
        b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(out, report):
    with open(os.path.join(out, 'report.json'), 'w') as stream:
        json.dump(report, stream, indent=2)
    lines = ['# make model report', '',
             f"Run {report['started']} ({report['total_s']:.0f} s in all): "
             f"{report['config']['arch']} at {report['config']['img_size']} px, "
             f"{report['config']['steps']} steps, weights "
             f"{report['config']['weights'] or 'random init (none given)'}.", '',
             '| step | seconds |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in report['times_s'].items()]
    lines += ['', '| model | Recall@1 | median error m | kind | input px |',
              '|---|---|---|---|---|']
    for name, r in report['comparison']['results'].items():
        lines.append(f"| {name} | {r['recall_at_1']:.3f} | {r['median_error_m']} | "
                     f"{r['kind']} ({r['backend']}) | {r['input_size']} |")
    lines += ['', '| INT8 check | feature cosine mean (p1) | Recall@1 FP32 / INT8 (drop) | '
                  'pass |', '|---|---|---|---|']
    for kind, v in report['verification'].items():
        cos = v['feature_cosine']
        rec = v.get('recall', {})
        lines.append(f"| {kind} | {cos['mean']:.5f} ({cos['p1']:.5f}) | "
                     f"{rec.get('fp32', {}).get('recall_at_1')} / "
                     f"{rec.get('int8', {}).get('recall_at_1')} "
                     f"({rec.get('drop_points')} pt) | {'yes' if v['passed'] else 'NO'} |")
    sel = report['selection']
    lines += ['', f"Selected for make demo: **{sel['selected']}** ({sel['reason']})."]
    with open(os.path.join(out, 'report.md'), 'w') as stream:
        stream.write('\n'.join(lines) + '\n')
    return '\n'.join(lines)


def parser():
    p = argparse.ArgumentParser(prog='python -m skyloc_training.pipeline',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', default=None,
                   help='output folder (default: .cache/models/<timestamp>)')
    p.add_argument('--world', default='procedural',
                   help="world to train and evaluate on: 'procedural' (make demo's), "
                        "'real_satellite' or a map YAML")
    p.add_argument('--arch', default='vit_small_patch14_dinov2', help='timm architecture')
    p.add_argument('--weights', default=None,
                   help='local DINOv2/DINOv3 weights (official or timm layout); default: '
                        'random init')
    p.add_argument('--pairs', type=int, default=480, help='drone views of the world')
    p.add_argument('--real-pairs', type=int, default=160,
                   help='drone views of ../shared/data/real_satellite (0: none)')
    p.add_argument('--img-size', type=int, default=112, help='model input px')
    p.add_argument('--steps', type=int, default=120, help='training steps')
    p.add_argument('--batch-size', type=int, default=16, help='pairs per step')
    p.add_argument('--lr', type=float, default=5e-4, help='peak learning rate')
    p.add_argument('--lora-rank', type=int, default=16, help='LoRA rank (alpha = 2 x rank)')
    p.add_argument('--layer', type=int, default=9, help='local_vlad: the layer to cut at')
    p.add_argument('--kinds', nargs='+', default=['global', 'local_vlad'],
                   choices=('global', 'local_vlad'), help='bundle kinds to export')
    p.add_argument('--vocab-tiles', type=int, default=300,
                   help='map crops the VLAD vocabulary is fitted on')
    p.add_argument('--queries', type=int, default=60,
                   help='rendered queries of the comparison and verification benchmarks')
    p.add_argument('--stride', type=float, default=50.0, help='benchmark tile stride, m')
    p.add_argument('--threads', type=int, default=2, help='CPU threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cache-root', default=None,
                   help='folder whose .cache/ holds the default bundle, the worlds and '
                        'models/selected.json (default: the workspace; tests use another)')
    p.add_argument('--depth', type=int, default=None,
                   help='transformer blocks (tests only; default: the architecture\'s)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from skyloc_training.export import setup_logging
    # root at WARNING: the train step's basicConfig is then a no-op, and the ONNX Runtime
    # quantizer's per-tensor INFO lines (logged through the root logger) stay quiet
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    setup_logging('model')
    root = workspace_root()
    cache_root = os.path.abspath(args.cache_root or root)
    started = time.strftime('%Y-%m-%d %H:%M:%S')
    out = os.path.abspath(args.out or os.path.join(
        cache_root, '.cache', 'models', time.strftime('%Y%m%d-%H%M%S')))
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, 'report.json')) and not os.path.isdir(
                os.path.join(out, 'pairs')):
            print(f'[model] error: {out} exists and is not a make model folder: refusing to '
                  f'overwrite it', file=sys.stderr)
            return 2
        shutil.rmtree(out)
    os.makedirs(out)
    t_all = time.monotonic()
    steps = Steps()
    try:
        import torch
        torch.set_num_threads(max(1, args.threads))
        world_yaml = steps.run('world', demo_world, root, args.world)
        from skyloc_sim.demo import prepare_bundle
        default = steps.run('default bundle', prepare_bundle, cache_root, world_yaml,
                            log=lambda m: log.info('%s', m))
        sources = steps.run('pairs', make_pairs, out, world_yaml, args.pairs, args.seed,
                            args.real_pairs, os.path.join(cache_root, '.cache', 'worlds'))
        train_dir = steps.run('train', run_training, out, sources, args)
        checkpoint = os.path.join(train_dir, 'best_overall.pt')
        if not os.path.isfile(checkpoint):
            checkpoint = os.path.join(train_dir, 'final.pt')
        bundles = steps.run('export', run_exports, out, checkpoint, world_yaml, args)
        verification = steps.run('verify', run_verify, bundles, world_yaml, args)
        comparison = steps.run('compare', compare, bundles, default, world_yaml, args)
        selection = select(comparison, verification, out, cache_root, world_yaml)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f'[model] error: {exc}', file=sys.stderr)
        return 1
    rows = read_metrics(train_dir)
    plotted = plot_training(rows, os.path.join(out, 'training.png'))
    losses = [r['loss'] for r in rows if r.get('kind') == 'step']
    report = {'started': started, 'out': out, 'world_yaml': world_yaml,
              'config': {k: v for k, v in vars(args).items()},
              'sources': sources, 'checkpoint': checkpoint,
              'loss_first_last': [losses[0], losses[-1]] if losses else None,
              'bundles': {k: {'int8': v[0], 'fp32': v[1]} for k, v in bundles.items()},
              'verification': verification, 'comparison': comparison,
              'selection': selection, 'times_s': steps.times,
              'total_s': round(time.monotonic() - t_all, 1),
              'plot': os.path.join(out, 'training.png') if plotted else None}
    table = write_report(out, report)
    print(table)
    print(f'[model] {out}: report.json, report.md' + (', training.png' if plotted else '')
          + f' ({report["total_s"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
