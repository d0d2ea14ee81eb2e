"""Low-rank adapters (LoRA) for the linear layers of a timm DINOv2/DINOv3 ViT (no peft).

A wrapped layer computes ``y = W x + b + (alpha / rank) * B (A dropout(x))`` with the base ``W, b``
frozen, ``A`` [rank, in] random (Kaiming uniform) and ``B`` [out, rank] zero, so that a freshly
wrapped model gives exactly the outputs of the original one. ``merge_lora`` folds
``(alpha / rank) * B @ A`` into ``W`` and puts plain ``nn.Linear`` layers back, so that export
sees an ordinary timm model.

Targets, per transformer block (``model.blocks[i]``):
    'qkv'   attn.qkv (DINOv2 ``Attention``, DINOv3 ``EvaAttention`` fused), or attn.q_proj,
            attn.k_proj, attn.v_proj (``EvaAttention`` with separate projections)
    'proj'  attn.proj
    'fc1'   mlp.fc1 (``Mlp``, DINOv2 giant's packed SwiGLU), or mlp.fc1_g, mlp.fc1_x (``SwiGLU``)
    'fc2'   mlp.fc2
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TARGETS = ('qkv', 'proj', 'fc1', 'fc2')
_TARGET_PATHS = {
    'qkv': (('attn.qkv',), ('attn.q_proj', 'attn.k_proj', 'attn.v_proj')),
    'proj': (('attn.proj',),),
    'fc1': (('mlp.fc1',), ('mlp.fc1_g', 'mlp.fc1_x')),
    'fc2': (('mlp.fc2',),),
}


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Args:
        base: the layer to adapt, [out, in] weight; its parameters are frozen here.
        rank: r >= 1, inner dimension of the update.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout probability on the input of the low-rank branch (training only).

    Input [..., in] -> output [..., out], same dtype as the base layer.
    """

    def __init__(self, base, rank=16, alpha=32.0, dropout=0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f'LoRALinear wraps nn.Linear, got {type(base).__name__}')
        rank = int(rank)
        if rank < 1:
            raise ValueError(f'LoRA rank must be >= 1, got {rank}')
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f'LoRA dropout must be in [0, 1), got {dropout}')
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype,
                                               device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype,
                                               device=w.device))
        # same init as nn.Linear's weight: random A, zero B -> the update starts at exactly 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(float(dropout)) if dropout > 0 else nn.Identity()

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    @property
    def weight(self):
        """Effective weight ``W + scaling * B @ A`` [out, in] (differentiable in A and B).

        Code that calls ``F.linear(x, layer.weight, ...)`` instead of ``layer(x)`` (timm's
        ``EvaAttention`` with q/v biases does) thereby still sees the adapted layer.
        """
        return self.base.weight + self.delta_weight()

    @property
    def bias(self):
        return self.base.bias

    def delta_weight(self):
        """The low-rank update ``scaling * B @ A``, [out, in]."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x):
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + update * self.scaling

    def merged(self):
        """A plain ``nn.Linear`` with the update folded into its weight (same requires_grad)."""
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                out.bias.copy_(base.bias)
        out.weight.requires_grad_(base.weight.requires_grad)
        if out.bias is not None:
            out.bias.requires_grad_(base.bias.requires_grad)
        return out

    def extra_repr(self):
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'rank={self.rank}, alpha={self.alpha:g}')


def _set_submodule(root, path, module):
    parent_path, _, name = path.rpartition('.')
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def _resolve(block, target, block_name):
    """Dotted paths (inside ``block``) of the nn.Linear layers a target names."""
    for paths in _TARGET_PATHS[target]:
        found = []
        for path in paths:
            try:
                found.append(block.get_submodule(path))
            except AttributeError:
                break
        if len(found) == len(paths) and all(m is not None for m in found):
            for path, m in zip(paths, found):
                if isinstance(m, LoRALinear):
                    raise ValueError(f'{block_name}.{path} already has LoRA')
                if not isinstance(m, nn.Linear):
                    raise ValueError(f'{block_name}.{path} is a {type(m).__name__}, '
                                     f'not nn.Linear')
            return list(paths)
    options = ' or '.join('+'.join(p) for p in _TARGET_PATHS[target])
    raise ValueError(f'LoRA target {target!r}: {block_name} ({type(block).__name__}) has no '
                     f'{options}')


def apply_lora(model, rank=16, alpha=32.0, dropout=0.0, targets=TARGETS):
    """Wrap the target linear layers of every block of ``model.blocks`` in ``LoRALinear``.

    Args:
        model: a timm ``VisionTransformer`` (DINOv2) or ``Eva`` (DINOv3); changed in place.
        rank, alpha, dropout: see ``LoRALinear``.
        targets: names among 'qkv', 'proj', 'fc1', 'fc2' (see the module docstring).

    Returns:
        The number of wrapped ``nn.Linear`` layers (e.g. 12 blocks x 4 targets = 48 for ViT-S).

    Raises:
        ValueError: unknown target, a block without it, or a layer that already has LoRA.
    """
    targets = tuple(targets)
    unknown = [t for t in targets if t not in _TARGET_PATHS]
    if unknown or not targets:
        raise ValueError(f'unknown LoRA targets {unknown or targets}; known: {TARGETS}')
    blocks = getattr(model, 'blocks', None)
    if blocks is None or len(blocks) == 0:
        raise ValueError(f'{type(model).__name__} has no transformer blocks (model.blocks)')
    count = 0
    for i, block in enumerate(blocks):
        name = f'blocks.{i}'
        plan = [p for t in targets for p in _resolve(block, t, name)]  # check all, then change
        for path in plan:
            layer = LoRALinear(block.get_submodule(path), rank, alpha, dropout)
            _set_submodule(block, path, layer)
            count += 1
        attn = getattr(block, 'attn', None)
        if isinstance(getattr(attn, 'qkv', None), LoRALinear) and \
                getattr(attn, 'q_bias', None) is not None and \
                not getattr(attn, 'qkv_bias_separate', True):
            # EvaAttention with q/v biases calls F.linear(x, qkv.weight, bias): route it through
            # qkv(x) + bias instead, so that the LoRA dropout applies as well
            attn.qkv_bias_separate = True
            attn._lora_restore_bias_separate = True
    return count


def lora_layers(model):
    """[(name, LoRALinear)] of ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    """Fold every ``LoRALinear`` of ``model`` into a plain ``nn.Linear``, in place.

    Returns:
        The number of merged layers. The model's outputs are unchanged (up to float rounding,
        ~1e-6 relative) and it holds no LoRA module afterwards.
    """
    layers = lora_layers(model)
    for name, layer in layers:
        _set_submodule(model, name, layer.merged())
    for m in model.modules():
        if getattr(m, '_lora_restore_bias_separate', False):
            m.qkv_bias_separate = False
            del m._lora_restore_bias_separate
    return len(layers)
