"""LoRA fine-tuning of GeoModel on drone -> satellite pairs (WeightedInfoNCE), with Recall@K.

    python -m skyloc_training.train --train-json train.json --test-json test.json --out runs/a \\
        [--arch vit_small_patch14_dinov2] [--weights dinov2_vits14_pretrain.pth] [--img-size 224]
        [--epochs 10] [--batch-size 32] [--lr 3e-4] [--max-steps N] [--eval-every N] ...

Several GPUs (or CPU processes, gloo): ``torchrun --nproc_per_node N -m skyloc_training.train
...``: DistributedDataParallel, a DistributedSampler per rank, the loss over each rank's own
batch; rank 0 alone evaluates, logs and writes checkpoints.

Writes to ``--out``:
    metrics.jsonl       one JSON object a line: {"kind": "step", step, epoch, loss, lr,
                        logit_scale, grad_norm, step_s}, {"kind": "eval", step, epoch,
                        results}, {"kind": "ddp_check", world_size, max_abs_diff}, ...
    best_overall.pt     checkpoint (``model.save_checkpoint``) of the best overall Recall@1
    best_<source>.pt    the same per dataset source (e.g. best_visloc.pt)
    final.pt            the last step's
TensorBoard (``--out/tb``) when the tensorboard package is installed; MLflow when mlflow is
installed (its tracking URI from MLFLOW_TRACKING_URI, else ``--out/mlruns``).
"""

import argparse
import contextlib
import json
import logging
import math
import os
import re
import sys
import time

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from . import augment, data
from .loss import WeightedInfoNCE
from .model import GeoModel, lora_summary, save_checkpoint, unwrap

LOG = logging.getLogger('skyloc_training.train')
KS = (1, 5, 10)


# ------------------------------------------------------------------------------------- data

def read_rgb(path):
    """Image file -> HxWx3 uint8 RGB. ValueError naming the file if it cannot be decoded."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read image {path} (missing or not an image)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class PairDataset(Dataset):
    """Training pairs: (augmented drone image, one of its positive tiles, the tile's IoU).

    Item ``i`` -> {'drone': [3, S, S] float32, 'tile': [3, S, S] float32, 'weight': IoU float,
    'index': i, 'tile_id': int}. With ``train`` the positive is drawn at random (uniformly) and
    the drone image goes through its source's augmentation (``augment.for_source``); the
    random draws come from ``np.random.default_rng((seed, epoch, i))``, so they are the same
    in any worker and differ between epochs (call ``set_epoch``). Tiles are only resized
    and normalised. ``same_place(indices, tile_ids)`` gives the [B, B] mask of pairs of a batch
    that are not negatives of each other.
    """

    def __init__(self, records, img_size, train=True, seed=0):
        if not records:
            raise ValueError('no training records')
        self.records = list(records)
        self.img_size = int(img_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0
        tiles = sorted({t[0] for r in self.records for t in r['positives']})
        self.tile_index = {p: i for i, p in enumerate(tiles)}
        drones = {}
        self.drone_ids = [drones.setdefault(r['drone_img'], len(drones)) for r in self.records]
        self.positive_ids = [frozenset(self.tile_index[t[0]] for t in r['positives'])
                             for r in self.records]
        self._drone_tf = {}
        self._tile_tf = augment.for_source('tile', self.img_size, train=False)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.records)

    def _drone_transform(self, source):
        if source not in self._drone_tf:
            self._drone_tf[source] = augment.for_source(source, self.img_size, train=self.train)
        return self._drone_tf[source]

    def __getitem__(self, i):
        record = self.records[i]
        rng = np.random.default_rng((self.seed, self.epoch, int(i)))
        positives = record['positives']
        pick = int(rng.integers(len(positives))) if self.train else 0
        tile_path, weight, _ = positives[pick]
        drone = self._drone_transform(record['dataset_source'])(read_rgb(record['drone_img']),
                                                                rng=rng)
        tile = self._tile_tf(read_rgb(tile_path))
        return {'drone': torch.from_numpy(drone), 'tile': torch.from_numpy(tile),
                'weight': torch.tensor(float(weight), dtype=torch.float32),
                'index': torch.tensor(int(i)), 'tile_id': torch.tensor(self.tile_index[tile_path])}

    def same_place(self, indices, tile_ids):
        """[B, B] bool: True where pair j's tile is a positive of drone i (or the reverse), or
        both pairs have the same drone image (duplicates); the diagonal is True."""
        idx = [int(i) for i in indices]
        tiles = [int(t) for t in tile_ids]
        n = len(idx)
        mask = torch.zeros(n, n, dtype=torch.bool)
        for a in range(n):
            for b in range(n):
                mask[a, b] = (a == b or tiles[b] in self.positive_ids[idx[a]]
                              or tiles[a] in self.positive_ids[idx[b]]
                              or self.drone_ids[idx[a]] == self.drone_ids[idx[b]])
        return mask


class _ImageList(Dataset):
    """Images for embedding: path -> [3, S, S] float32 through one transform per item."""

    def __init__(self, paths, transforms):
        self.paths = list(paths)
        self.transforms = list(transforms)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(self.transforms[i](read_rgb(self.paths[i])))


def load_records(paths):
    """Concatenated records of several pair JSON files (``data.load_pairs``), with a log line
    per file (records, skipped, sources)."""
    records = []
    for path in paths:
        pairs = data.load_pairs(path)
        LOG.info('%s: %d records (%d skipped), sources %s', path, len(pairs.records),
                 pairs.skipped, pairs.sources())
        records.extend(pairs.records)
    return records


# ------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def embed_images(model, paths, transforms, batch_size=32, device='cpu', num_workers=0,
                 desc='embed', progress=True):
    """Descriptors of images: -> float32 numpy [N, D] (L2-normalised rows)."""
    model = unwrap(model)
    loader = DataLoader(_ImageList(paths, transforms), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    out = []
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
            out.append(model(batch.to(device)).float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.out_dim), np.float32)
    return torch.cat(out).numpy()


def recall_at_k(query_desc, gallery_desc, positives, ks=KS):
    """Recall@K of retrieval by cosine (dot product of unit rows).

    Args:
        query_desc: [Q, D]; gallery_desc: [M, D]; positives: Q lists of gallery indices.
    Returns:
        (hits [Q, len(ks)] bool: query q is correct at K, i.e. one of its positives is among
        the K most similar gallery entries; ranks [Q] the 1-based rank of the best positive).
    """
    sims = np.asarray(query_desc, np.float32) @ np.asarray(gallery_desc, np.float32).T
    order = np.argsort(-sims, axis=1, kind='stable')
    ranks = np.full(len(positives), np.inf)
    for q, pos in enumerate(positives):
        if pos:
            where = np.isin(order[q], pos)
            ranks[q] = float(np.argmax(where)) + 1.0
    hits = ranks[:, None] <= np.asarray(ks, float)[None, :]
    return hits, ranks


def evaluate(model, records, img_size=None, batch_size=32, device='cpu', num_workers=0,
             ks=KS, progress=True):
    """Per-source and overall Recall@K of drone queries against the tiles of ``records``.

    The gallery is every tile (positive and semi-positive) of the records
    (``data.gallery``); a query (one per distinct drone image) is correct at K when one of
    its positive tiles is in the top K by cosine.

    Returns:
        {'overall': {'queries': Q, 'R@1': fraction in [0, 1], 'R@5': ..., 'R@10': ...},
         '<source>': {...}, ...}.
    """
    model = unwrap(model)
    size = int(img_size or model.img_size)
    seen, queries = set(), []
    for record in records:
        if record['drone_img'] not in seen:
            seen.add(record['drone_img'])
            queries.append(record)
    if not queries:
        raise ValueError('no evaluation records')
    gallery_paths, _ = data.gallery(queries)
    positives = data.positive_indices(queries, gallery_paths)
    tile_tf = augment.for_source('tile', size, train=False)
    drone_tf = {s: augment.for_source(s, size, train=False)
                for s in {r['dataset_source'] for r in queries}}
    g = embed_images(model, gallery_paths, [tile_tf] * len(gallery_paths), batch_size, device,
                     num_workers, 'gallery', progress)
    q = embed_images(model, [r['drone_img'] for r in queries],
                     [drone_tf[r['dataset_source']] for r in queries], batch_size, device,
                     num_workers, 'queries', progress)
    hits, _ = recall_at_k(q, g, positives, ks)
    names = [str(r['dataset_source']) for r in queries]
    sources = np.array(names)
    results = {}
    for name, mask in [('overall', np.ones(len(queries), bool))] + \
            [(s, sources == s) for s in sorted(set(names))]:
        row = {'queries': int(mask.sum())}
        for j, k in enumerate(ks):
            row[f'R@{k}'] = float(hits[mask, j].mean())
        results[name] = row
    return results


def format_results(results):
    """The evaluation table, one line per row: ``[OVERALL] Queries: N, R@1: x%, ...``."""
    lines = []
    for name, row in results.items():
        recalls = ', '.join(f'{k}: {100 * v:.2f}%' for k, v in row.items() if k != 'queries')
        lines.append(f'[{name.upper()}] Queries: {row["queries"]}, {recalls}')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------- logging

class MetricsLog:
    """metrics.jsonl (always), TensorBoard and MLflow (when importable). Rank 0 only."""

    def __init__(self, out_dir, enabled=True, run_args=None):
        self.enabled = enabled
        self.file = self.tb = self.mlflow = None
        if not enabled:
            return
        self.file = open(os.path.join(out_dir, 'metrics.jsonl'), 'a', encoding='utf-8')
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(out_dir, 'tb'))
        except ImportError:
            pass
        try:
            import mlflow
            if not os.environ.get('MLFLOW_TRACKING_URI'):
                mlflow.set_tracking_uri('file:' + os.path.abspath(os.path.join(out_dir,
                                                                               'mlruns')))
            mlflow.start_run()
            if run_args:
                mlflow.log_params({k: str(v)[:250] for k, v in run_args.items()})
            self.mlflow = mlflow
        except ImportError:
            pass

    def write(self, record):
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + '\n')
        self.file.flush()
        step = record.get('step', 0)
        scalars = {}
        if record.get('kind') == 'step':
            scalars = {f'train/{k}': v for k, v in record.items()
                       if k in ('loss', 'lr', 'logit_scale', 'grad_norm', 'step_s')}
        elif record.get('kind') == 'eval':
            scalars = {f'eval/{src}/{k}': v for src, row in record['results'].items()
                       for k, v in row.items() if k.startswith('R@')}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.mlflow is not None and scalars:
            self.mlflow.log_metrics({re.sub(r'[^\w/.\- ]', '_', k): v
                                     for k, v in scalars.items()}, step=step)

    def close(self):
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


# --------------------------------------------------------------------------------- training

class PairForward(nn.Module):
    """Drone and tile images through one shared GeoModel (one batch of 2B): what DDP wraps.

    forward(drone [B, 3, S, S], tile [B, 3, S, S]) -> (drone desc [B, D], tile desc [B, D],
    logit_scale): the logit scale is returned so that DDP sees it used and syncs its gradient.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, drone, tile):
        desc = self.model(torch.cat([drone, tile]))
        return desc[:drone.shape[0]], desc[drone.shape[0]:], self.model.logit_scale


def lr_factor(step, warmup_steps, total_steps):
    """Linear warmup from 1/warmup to 1 over ``warmup_steps``, then cosine decay to 0 at
    ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _dist_env():
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    return int(os.environ.get('RANK', '0')), world, int(os.environ.get('LOCAL_RANK', '0'))


def _device(name, local_rank):
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError('--device cuda but CUDA is not available')
        torch.cuda.set_device(local_rank)
        return torch.device('cuda', local_rank)
    return torch.device('cpu')


def _safe_name(source):
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(source)) or 'unnamed'


def _ddp_param_diff(model, device):
    """Largest absolute difference of the trainable parameters between ranks (0 = in sync)."""
    flat = torch.cat([p.detach().float().reshape(-1)
                      for _, p in unwrap(model).trainable_parameters()]).to(device)
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


def train(args):
    """Run a training as the CLI does (``args``: the parsed namespace). Returns a summary dict:
    {'steps', 'first_loss', 'last_loss', 'best': {source: R@1}, 'final_results', 'out',
    'model': the trained GeoModel}."""
    rank, world, local_rank = _dist_env()
    distributed = world > 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device, local_rank)
    if distributed:
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    is_main = rank == 0
    try:
        return _train(args, rank, world, device, distributed, is_main)
    finally:
        if distributed:
            dist.destroy_process_group()


def _train(args, rank, world, device, distributed, is_main):
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    train_records = load_records(args.train_json)
    test_records = load_records(args.test_json) if is_main else []
    need = args.batch_size * world
    if len(train_records) < need:
        raise ValueError(f'{len(train_records)} training records, fewer than one batch of '
                         f'{args.batch_size} x {world} process(es)')

    model = GeoModel(arch=args.arch, img_size=args.img_size, weights=args.weights,
                     lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                     lora_dropout=args.lora_dropout, depth=args.depth, seed=args.seed,
                     pool=args.pool)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)
    if is_main:
        LOG.info('%s', lora_summary(model))
    net = PairForward(model)
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == 'cuda' else None)

    dataset = PairDataset(train_records, args.img_size, train=True, seed=args.seed)
    sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                  seed=args.seed, drop_last=True) if distributed else None)
    gen = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None,
                        sampler=sampler, drop_last=True, num_workers=args.num_workers,
                        generator=gen, pin_memory=device.type == 'cuda',
                        persistent_workers=args.num_workers > 0)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps) if args.epochs else args.max_steps
    epochs = math.ceil(total_steps / steps_per_epoch)

    decay, no_decay = [], []
    for name, p in model.trainable_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    optimizer = torch.optim.AdamW([{'params': decay, 'weight_decay': args.weight_decay},
                                   {'params': no_decay, 'weight_decay': 0.0}], lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, args.warmup_steps, total_steps))
    use_amp = device.type == 'cuda'
    scaler = torch.amp.GradScaler('cuda', enabled=use_amp)
    loss_fn = WeightedInfoNCE(k=args.k, label_smoothing=args.label_smoothing)
    log = MetricsLog(args.out, enabled=is_main, run_args=vars(args))
    if is_main:
        LOG.info('%d training pairs, %d per step x %d process(es), %d steps (%d epoch(s) of '
                 '%d), device %s', len(dataset), args.batch_size, world, total_steps, epochs,
                 steps_per_epoch, device)

    best = {}
    summary = {'steps': 0, 'first_loss': None, 'last_loss': None, 'best': best,
               'final_results': None, 'out': args.out, 'model': model}

    def run_eval(step, epoch, final=False):
        """Rank 0 evaluates and writes checkpoints; the others wait at the barrier."""
        if is_main:
            results = evaluate(model, test_records, args.img_size, args.eval_batch_size,
                               device, args.num_workers, progress=not args.no_progress)
            print(f'step {step} (epoch {epoch}):\n' + format_results(results), flush=True)
            log.write({'kind': 'eval', 'step': step, 'epoch': epoch, 'results': results})
            extra = {'step': step, 'epoch': epoch, 'results': results,
                     'args': {k: v for k, v in vars(args).items()}}
            for source, row in results.items():
                if row['queries'] and row['R@1'] > best.get(source, -1.0):
                    best[source] = row['R@1']
                    save_checkpoint(model, os.path.join(args.out,
                                                        f'best_{_safe_name(source)}.pt'), extra)
            if final:
                save_checkpoint(model, os.path.join(args.out, 'final.pt'), extra)
                summary['final_results'] = results
        if distributed:
            dist.barrier()

    step = 0
    bar = tqdm(total=total_steps, desc='train', disable=not is_main or args.no_progress)
    net.train()
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for batch in loader:
            if step >= total_steps:
                break
            t0 = time.perf_counter()
            drone = batch['drone'].to(device, non_blocking=True)
            tile = batch['tile'].to(device, non_blocking=True)
            weights = batch['weight'].to(device) if args.with_weight else None
            same = dataset.same_place(batch['index'], batch['tile_id']).to(device)
            autocast = (torch.autocast('cuda', dtype=torch.float16) if use_amp
                        else contextlib.nullcontext())
            with autocast:
                d, t, scale = net(drone, tile)
            loss = loss_fn(d.float(), t.float(), scale.float(), weights, same)
            if not torch.isfinite(loss):
                raise FloatingPointError(f'loss is {loss.item()} at step {step}: lower --lr '
                                         f'or check the data')
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            params = [p for _, p in model.trainable_parameters()]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            if distributed:  # the mean over ranks, for the log
                lt = torch.tensor([loss_value], device=device)
                dist.all_reduce(lt)
                loss_value = float(lt) / world
            summary['first_loss'] = (summary['first_loss'] if summary['first_loss'] is not None
                                     else loss_value)
            summary['last_loss'] = loss_value
            record = {'kind': 'step', 'step': step, 'epoch': epoch, 'loss': loss_value,
                      'lr': scheduler.get_last_lr()[0],
                      'logit_scale': float(unwrap(model).logit_scale.detach().exp()),
                      'grad_norm': float(grad_norm), 'step_s': time.perf_counter() - t0}
            log.write(record)
            bar.update(1)
            bar.set_postfix(loss=f'{loss_value:.4f}', lr=f'{record["lr"]:.2e}')
            if args.eval_every and step % args.eval_every == 0 and step < total_steps:
                run_eval(step, epoch)
        else:
            if not args.eval_every and step < total_steps:
                run_eval(step, epoch)  # end of an epoch that is not the last
            continue
        break
    bar.close()
    summary['steps'] = step
    if distributed:
        diff = _ddp_param_diff(model, device)
        if is_main:
            LOG.info('DDP: trainable parameters of %d ranks differ by at most %.3g', world, diff)
            log.write({'kind': 'ddp_check', 'step': step, 'world_size': world,
                       'max_abs_diff': diff})
        summary['ddp_max_abs_diff'] = diff
    run_eval(step, epochs - 1, final=True)
    log.close()
    return summary


def build_parser():
    p = argparse.ArgumentParser(
        prog='python -m skyloc_training.train',
        description='LoRA fine-tuning of a DINOv2/DINOv3 ViT-S global descriptor on drone -> '
                    'satellite pairs (WeightedInfoNCE); Recall@K per dataset source. '
                    'Under torchrun: DistributedDataParallel.')
    p.add_argument('--train-json', nargs='+', required=True, metavar='JSON',
                   help='pair JSON file(s) to train on (skyloc_training.data formats)')
    p.add_argument('--test-json', nargs='+', required=True, metavar='JSON',
                   help='pair JSON file(s) to evaluate Recall@1/5/10 on')
    p.add_argument('--out', required=True, metavar='DIR',
                   help='output folder: metrics.jsonl, best_overall.pt, best_<source>.pt, '
                        'final.pt')
    p.add_argument('--arch', default='vit_small_patch14_dinov2',
                   help='timm architecture (vit_small_patch14_dinov2, vit_small_patch16_dinov3, '
                        '...); default %(default)s')
    p.add_argument('--weights', default=None, metavar='PATH',
                   help='local backbone checkpoint (official DINOv2/DINOv3 or timm layout); '
                        'default: random init (no downloads)')
    p.add_argument('--img-size', type=int, default=224,
                   help='input side in px, a multiple of the patch size (default %(default)s)')
    p.add_argument('--depth', type=int, default=None,
                   help='number of transformer blocks (tests only; default: the arch\'s own)')
    p.add_argument('--pool', default='mean', choices=('mean', 'cls'),
                   help='descriptor pooling: mean of the patch tokens or the CLS token '
                        '(default %(default)s; CLS needs pretrained weights)')
    p.add_argument('--epochs', type=int, default=10, help='epochs (default %(default)s)')
    p.add_argument('--batch-size', type=int, default=32,
                   help='pairs per step and process (default %(default)s)')
    p.add_argument('--eval-batch-size', type=int, default=64,
                   help='images per batch in evaluation (default %(default)s)')
    p.add_argument('--lr', type=float, default=3e-4, help='peak learning rate (default '
                   '%(default)s)')
    p.add_argument('--weight-decay', type=float, default=0.01,
                   help='AdamW weight decay of matrices (default %(default)s)')
    p.add_argument('--warmup-steps', type=int, default=100,
                   help='linear warmup steps before the cosine decay (default %(default)s)')
    p.add_argument('--grad-clip', type=float, default=1.0,
                   help='max gradient norm (default %(default)s)')
    p.add_argument('--lora-rank', type=int, default=16, help='LoRA rank (default %(default)s)')
    p.add_argument('--lora-alpha', type=float, default=32.0,
                   help='LoRA alpha; scaling alpha/rank (default %(default)s)')
    p.add_argument('--lora-dropout', type=float, default=0.0,
                   help='dropout on the LoRA branch input (default %(default)s)')
    p.add_argument('--k', type=float, default=5.0,
                   help='WeightedInfoNCE steepness of IoU -> smoothing (default %(default)s)')
    p.add_argument('--label-smoothing', type=float, default=0.0,
                   help='WeightedInfoNCE smoothing floor (default %(default)s)')
    p.add_argument('--no-weight', dest='with_weight', action='store_false',
                   help='plain InfoNCE: ignore the IoU weights')
    p.add_argument('--grad-checkpointing', action='store_true',
                   help='recompute block activations in backward (less memory, slower)')
    p.add_argument('--max-steps', type=int, default=0,
                   help='stop after this many steps (0: the epochs decide)')
    p.add_argument('--eval-every', type=int, default=0,
                   help='evaluate every N steps (0: at the end of every epoch); always at '
                        'the end')
    p.add_argument('--num-workers', type=int, default=0,
                   help='data loader worker processes (default %(default)s)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default %(default)s)')
    p.add_argument('--threads', type=int, default=0,
                   help='torch CPU threads per process (0: torch\'s default)')
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'),
                   help='auto: CUDA when available (default)')
    p.add_argument('--no-progress', action='store_true', help='no tqdm progress bars')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    rank = _dist_env()[0]
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    if args.max_steps < 0 or args.epochs < 0 or (not args.epochs and not args.max_steps):
        build_parser().error('give --epochs >= 1 or --max-steps >= 1')
    try:
        summary = train(args)
    except (ValueError, FloatingPointError) as exc:
        LOG.error('%s', exc)
        return 1
    if rank == 0:
        LOG.info('done: %d steps, loss %.4f -> %.4f, best R@1 %s, checkpoints in %s',
                 summary['steps'], summary['first_loss'], summary['last_loss'],
                 {k: round(v, 4) for k, v in summary['best'].items()}, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
