"""GeoModel: frozen DINOv2/DINOv3 ViT + LoRA + MLP head -> L2-normalised global descriptor.

    image [B, 3, H, W] (normalised as ``skyloc_perception.normalize``/the augmentations do)
      -> timm ViT ``forward_features`` (frozen weights, trainable LoRA on qkv/proj/fc1/fc2)
      -> mean of the patch tokens [B, D] (after the final norm; CLS and registers excluded)
      -> MLP head D -> 2048 -> 256 (GELU between the linear layers)
      -> L2 normalisation -> [B, 256]

Pooling: the mean of the patch tokens is the default. It carries the image at any init: a
randomly initialised timm DINOv2/DINOv3 has LayerScale gammas of 1e-5, so its blocks are near
identities and its CLS token is the same vector for every image (cosine 0.9999999 between random
images, measured), which no head can learn from; it is also timm's own pooling for DINOv3 and
close to what the VLAD path aggregates. ``pool='cls'`` uses the CLS token, which DINOv2/DINOv3
train (DINO loss) as the image-level descriptor: the choice to try with pretrained weights.

A checkpoint holds only the trainable parameters (LoRA, head, logit scale) and the constructor
arguments; the frozen backbone comes back from ``config['weights']`` (or the same seeded random
init when there were none), see ``save_checkpoint`` / ``load_checkpoint``.
"""

import inspect
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from skyloc_perception.vit_torch import build_vit

from .lora import TARGETS, apply_lora, lora_layers

CHECKPOINT_FORMAT = 'skyloc_geomodel'
CHECKPOINT_VERSION = 1
POOLS = ('mean', 'cls')


class GeoModel(nn.Module):
    """Global place descriptor network (see the module docstring).

    Args:
        arch: timm model name (``vit_small_patch14_dinov2``, ``vit_small_patch16_dinov3``...).
        img_size: input side in px, a multiple of the patch size (14 or 16).
        weights: local backbone checkpoint (official DINOv2/DINOv3 or timm layout), or None for
            a random init from ``seed``.
        lora_rank, lora_alpha, lora_dropout: LoRA settings (see ``lora.LoRALinear``).
        head_dims: widths of the MLP head; the first must equal the backbone's embed_dim
            (384 for ViT-S), the last is the descriptor dimension.
        depth: number of transformer blocks (None: the architecture's own, 12 for ViT-S);
            small values only make tests fast (and do not fit pretrained weights).
        seed: seed of the random backbone init and of the LoRA/head init.
        pool: 'mean' (default: mean of the patch tokens) or 'cls' (the CLS token).
        lora_targets: LoRA targets (see ``lora.apply_lora``).

    ``forward(x)``: x [B, 3, img_size, img_size] float32 -> [B, head_dims[-1]], unit L2 norm.
    ``logit_scale``: learnable log of the InfoNCE inverse temperature, init log(1 / 0.07).
    """

    def __init__(self, arch='vit_small_patch14_dinov2', img_size=224, weights=None,
                 lora_rank=16, lora_alpha=32.0, lora_dropout=0.0, head_dims=(384, 2048, 256),
                 depth=None, seed=0, pool='mean', lora_targets=TARGETS):
        super().__init__()
        head_dims = [int(d) for d in head_dims]
        if len(head_dims) < 2:
            raise ValueError(f'head_dims needs at least an input and an output width, '
                             f'got {head_dims}')
        if pool not in POOLS:
            raise ValueError(f'pool must be one of {POOLS}, got {pool!r}')
        # absolute, so that load_checkpoint finds it from any working directory
        weights = os.path.abspath(os.fspath(weights)) if weights is not None else None
        self.config = {
            'arch': str(arch), 'img_size': int(img_size), 'weights': weights,
            'lora_rank': int(lora_rank), 'lora_alpha': float(lora_alpha),
            'lora_dropout': float(lora_dropout), 'head_dims': head_dims,
            'depth': None if depth is None else int(depth), 'seed': int(seed), 'pool': pool,
            'lora_targets': [str(t) for t in lora_targets],
        }
        kwargs = {} if depth is None else {'depth': int(depth)}
        self.backbone = build_vit(arch, img_size, weights=weights, seed=seed, **kwargs)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        embed_dim = self.backbone.embed_dim
        if head_dims[0] != embed_dim:
            raise ValueError(f'head_dims[0] = {head_dims[0]} but {arch} has embed_dim '
                             f'{embed_dim}: use head_dims=({embed_dim}, ..., out)')
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + 1)
            self.num_lora_layers = apply_lora(self.backbone, lora_rank, lora_alpha,
                                              lora_dropout, tuple(lora_targets))
            layers = []
            for i, (d_in, d_out) in enumerate(zip(head_dims[:-1], head_dims[1:])):
                if i:
                    layers.append(nn.GELU())
                layers.append(nn.Linear(d_in, d_out))
            self.head = nn.Sequential(*layers)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))
        self.out_dim = head_dims[-1]

    @property
    def img_size(self):
        return self.config['img_size']

    def set_grad_checkpointing(self, enable=True):
        """Recompute the blocks' activations in the backward pass (less memory, ~30% slower)."""
        self.backbone.set_grad_checkpointing(enable)

    def pooled(self, x):
        """Backbone feature before the head: [B, 3, H, W] -> [B, embed_dim]."""
        tokens = self.backbone.forward_features(x)
        if self.config['pool'] == 'cls':
            return tokens[:, 0]
        return tokens[:, self.backbone.num_prefix_tokens:].mean(dim=1)

    def forward(self, x):
        return F.normalize(self.head(self.pooled(x)), dim=-1)

    def trainable_names(self):
        """Names of the parameters a checkpoint stores: LoRA A/B, head, logit_scale."""
        return [n for n, _ in self.named_parameters()
                if n == 'logit_scale' or n.startswith('head.')
                or n.endswith('.lora_A') or n.endswith('.lora_B')]

    def trainable_parameters(self):
        """[(name, parameter)] that the optimiser updates (see ``trainable_names``)."""
        names = set(self.trainable_names())
        return [(n, p) for n, p in self.named_parameters() if n in names]

    def trainable_state_dict(self):
        """{name: detached CPU tensor} of the trainable parameters."""
        params = dict(self.named_parameters())
        return {n: params[n].detach().cpu().clone() for n in self.trainable_names()}

    def count_parameters(self):
        """(trainable, frozen) parameter counts."""
        names = set(self.trainable_names())
        trainable = sum(p.numel() for n, p in self.named_parameters() if n in names)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total - trainable


def unwrap(model):
    """The GeoModel inside a DistributedDataParallel / DataParallel wrapper (or itself)."""
    return getattr(model, 'module', model)


def _plain(value, where):
    """``value`` with numpy scalars/arrays made Python numbers/tensors, so that
    ``torch.load(weights_only=True)`` reads it; TypeError naming the entry otherwise."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    raise TypeError(f'checkpoint {where} is a {type(value).__name__}: only numbers, strings, '
                    f'lists, dicts and tensors can be stored')


def save_checkpoint(model, path, extra=None):
    """Write ``{'format', 'format_version', 'config', 'state', **extra}`` to ``path`` (atomic).

    ``state`` holds only the trainable parameters (LoRA, head, logit_scale); ``extra`` must be
    plain data (numbers, strings, lists, dicts, tensors) so that ``torch.load(weights_only=True)``
    reads the file. Returns the path.
    """
    model = unwrap(model)
    extra = dict(extra or {})
    clash = sorted({'format', 'format_version', 'config', 'state'} & set(extra))
    if clash:
        raise ValueError(f'extra checkpoint keys {clash} are reserved')
    payload = {'format': CHECKPOINT_FORMAT, 'format_version': CHECKPOINT_VERSION,
               'config': dict(model.config), 'state': model.trainable_state_dict(),
               **_plain(extra, 'extra')}
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint_file(path):
    """Read and check a GeoModel checkpoint -> its dict (tensors on CPU).

    Raises:
        ValueError: missing/unreadable file, not a GeoModel checkpoint, newer format version.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise ValueError(f'cannot read checkpoint {path}: {type(exc).__name__}: {exc}') from exc
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path} is not a GeoModel checkpoint (no format '
                         f'{CHECKPOINT_FORMAT!r}; a backbone weights file goes to --weights)')
    if ckpt.get('format_version') != CHECKPOINT_VERSION:
        raise ValueError(f'{path}: checkpoint format_version {ckpt.get("format_version")}, '
                         f'this code reads {CHECKPOINT_VERSION}')
    for key in ('config', 'state'):
        if not isinstance(ckpt.get(key), dict):
            raise ValueError(f'{path}: checkpoint has no {key!r} dict')
    return ckpt


def load_checkpoint(path, weights=..., map_location='cpu'):
    """Rebuild a GeoModel from a checkpoint of ``save_checkpoint``.

    Args:
        path: the checkpoint file.
        weights: backbone weights file to use instead of ``config['weights']`` (e.g. the file
            moved); leave out to use the recorded one (None there means the seeded random init).
        map_location: device of the returned model.

    Returns:
        The GeoModel in eval mode, with the checkpoint's config in ``model.config`` and the
        checkpoint's other entries (metrics, step...) in ``model.checkpoint_extra``.

    Raises:
        ValueError: bad file, unknown config keys, missing or unexpected state keys, shape
            mismatches (all named), or a backbone weights file that cannot be read.
    """
    ckpt = read_checkpoint_file(path)
    config = dict(ckpt['config'])
    known = set(inspect.signature(GeoModel.__init__).parameters) - {'self'}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f'{path}: unknown config keys {unknown} (known: {sorted(known)})')
    if weights is not ...:
        config['weights'] = None if weights is None else os.fspath(weights)
    try:
        model = GeoModel(**config)
    except ValueError as exc:
        raise ValueError(f'{path}: cannot rebuild the model from its config {config}: {exc}'
                         + (' (pass weights=... to load_checkpoint if the backbone file moved)'
                            if config.get('weights') else '')) from exc
    state = ckpt['state']
    want = dict(model.trainable_parameters())
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(want[k].shape)}'
              for k in sorted(set(state) & set(want))
              if tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        def _few(items):
            return ', '.join(items[:6]) + (f' (+{len(items) - 6} more)' if len(items) > 6 else '')
        parts = [f'{len(v)} {what}: {_few(v)}' for what, v in
                 (('missing keys', missing), ('unexpected keys', unexpected),
                  ('shape mismatches', shapes)) if v]
        raise ValueError(f'{path}: trainable state does not fit the model: ' + '; '.join(parts))
    with torch.no_grad():
        for name, param in want.items():
            param.copy_(state[name].to(param.dtype))
    model.checkpoint_extra = {k: v for k, v in ckpt.items()
                              if k not in ('format', 'format_version', 'config', 'state')}
    return model.to(map_location).eval()


def lora_summary(model):
    """One line: LoRA layer count, rank, trainable/frozen parameter counts."""
    model = unwrap(model)
    trainable, frozen = model.count_parameters()
    layers = lora_layers(model)
    rank = layers[0][1].rank if layers else 0
    return (f'{model.config["arch"]} @ {model.config["img_size"]} px: {len(layers)} LoRA layers '
            f'(rank {rank}), trainable {trainable / 1e6:.2f} M, frozen {frozen / 1e6:.2f} M')
