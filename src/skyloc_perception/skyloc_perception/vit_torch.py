"""DINOv2/DINOv3 ViT in PyTorch (timm): build, load weights, truncate, export, quantize.

Training/export side only: this module needs torch and timm (``pip install -r
requirements-training.txt``); the runtime (and the Pi) uses ``vit_onnx`` with the ONNX files
written here.

Pipeline (DESIGN.md, "Key techniques"):
    build_vit(arch, img_size, weights)      timm model, official or timm checkpoint, random init
    TruncatedVit(model, layer, facet)       patch embed -> blocks[:layer] -> facet, [1, T, D]
    export_onnx(truncated, path)            static-shape ONNX, output 'tokens', IR <= 12
    quantize_int8(fp32, int8)               dynamic INT8 of the MatMuls, per channel (default)
    quantize_static_qdq(fp32, int8, imgs)   static QDQ INT8, calibrated on images
    inject_outliers(model)                  emulate DINOv2's outlier channels on a random model
    smooth_quant(model, imgs)               FP32-exact rescaling that makes INT8 robust to them

Weights cannot be downloaded here; ``build_vit(weights=path)`` loads a local file:
    - DINOv2, official layout (facebookresearch/dinov2 hub ``dinov2_vits14_pretrain.pth`` etc.,
      also ``*_reg4_pretrain.pth``, SwiGLU giant, chunked blocks, ``backbone.``/``module.``
      prefixes and ``{'model'|'teacher'|'state_dict': ...}`` wrappers);
    - DINOv3, official layout (facebookresearch/dinov3 ``dinov3_vits16_pretrain_*.pth``);
    - the timm layout (``model.state_dict()`` of a timm model of the same architecture).
    ``.pth``/``.pt`` are read with ``torch.load(weights_only=True)``; ``.safetensors`` with the
    safetensors package if installed, else with the small reader here.
"""

import contextlib
import json
import logging
import math
import os
import re
import struct
import warnings

try:
    import timm
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as _exc:  # pragma: no cover - depends on the venv
    raise ImportError(
        'skyloc_perception.vit_torch needs torch and timm, which the runtime does not install; '
        'install the training extras: pip install -r requirements-training.txt') from _exc

import numpy as np

from .vit_onnx import l2_normalise_rows, preprocess

FACETS = ('query', 'key', 'value', 'token')
MAX_IR_VERSION = 12  # the newest IR onnxruntime 1.31.1 loads
_QKV_INDEX = {'query': 0, 'key': 1, 'value': 2}


# ----------------------------------------------------------------------------------- building

def _family(arch):
    if arch.endswith('_dinov2'):
        return 'dinov2'
    if '_dinov3' in arch:
        return 'dinov3'
    raise ValueError(f'unsupported architecture {arch!r}: expected a timm DINOv2 '
                     f"('vit_small_patch14_dinov2', ..._reg4_dinov2) or DINOv3 "
                     f"('vit_small_patch16_dinov3') model name")


def build_vit(arch='vit_small_patch14_dinov2', img_size=224, weights=None, seed=0,
              **model_kwargs):
    """Build a DINOv2/DINOv3 ViT with timm, randomly initialised or from a local checkpoint.

    Args:
        arch: timm model name. DINOv2: ``vit_{small,base,large,giant}_patch14_dinov2`` and the
            ``_reg4_`` variants. DINOv3: ``vit_small_patch16_dinov3`` and the others timm lists
            (timm 1.0.31 has them, in ``timm.models.eva``; an older timm without them raises
            RuntimeError).
        img_size: side of the square input, px; a multiple of the patch size (14 or 16). The
            positional embedding is built (or resampled from the checkpoint) for this grid.
        weights: None for a random init, or a local ``.pth``/``.pt``/``.safetensors`` file in
            the official DINOv2/DINOv3 layout or the timm layout (see ``load_weights``).
        seed: seed of the random init (deterministic: same seed, same weights; the global torch
            RNG state is restored afterwards).
        **model_kwargs: passed to ``timm.create_model`` (e.g. ``depth=4`` for small tests).

    Returns:
        The timm model (``VisionTransformer`` for DINOv2, ``Eva`` for DINOv3) in eval mode,
        float32, with ``num_classes=0`` and ``dynamic_img_size=False`` (static shapes).

    Raises:
        ValueError: unknown architecture, bad img_size, bad checkpoint (see ``load_weights``).
        RuntimeError: the installed timm lacks the architecture (e.g. DINOv3 before 1.0.20).
    """
    family = _family(arch)
    if arch not in timm.list_models(arch):
        if family == 'dinov3':
            raise RuntimeError(f'timm {timm.__version__} has no {arch!r}: DINOv3 models need '
                               f'timm >= 1.0.20 (requirements-training.txt pins 1.0.31)')
        raise ValueError(f'timm {timm.__version__} has no model {arch!r}; DINOv2 models: '
                         f"{timm.list_models('*dinov2*')}")
    img_size = int(img_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = timm.create_model(arch, pretrained=False, img_size=img_size, num_classes=0,
                                  dynamic_img_size=False, **model_kwargs)
    patch = model.patch_embed.patch_size[0]
    if img_size % patch:
        raise ValueError(f'img_size {img_size} is not a multiple of the patch size {patch} '
                         f'of {arch}')
    model.eval()
    if weights is not None:
        load_weights(model, weights)
    return model


def _is_eva(model):
    """True for timm's Eva (DINOv3: RoPE, gamma_1/gamma_2), False for VisionTransformer."""
    from timm.models.eva import Eva
    return isinstance(model, Eva)


# ---------------------------------------------------------------------------------- checkpoints

_ST_DTYPES = {'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16,
              'BF16': torch.bfloat16, 'I64': torch.int64, 'I32': torch.int32,
              'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool}


def read_safetensors(path):
    """Read a ``.safetensors`` file -> {name: CPU tensor} (safetensors package if present).

    The format: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
    data_offsets}} (and an optional ``__metadata__``), then the raw little-endian data.
    """
    try:
        from safetensors.torch import load_file
    except ImportError:
        load_file = None
    if load_file is not None:
        return load_file(path, device='cpu')
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError('file too short')
    (n,) = struct.unpack('<Q', data[:8])
    if n > len(data) - 8:
        raise ValueError('header length beyond the end of the file')
    header = json.loads(data[8:8 + n].decode('utf-8'))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        if info['dtype'] not in _ST_DTYPES:
            raise ValueError(f'unsupported safetensors dtype {info["dtype"]} for {name}')
        dtype = _ST_DTYPES[info['dtype']]
        start, end = info['data_offsets']
        buf = bytearray(data[base + start:base + end])
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info['shape'])
    return out


def save_safetensors(state_dict, path):
    """Write {name: tensor} as ``.safetensors`` (float32/16, bf16, ints; contiguous copies)."""
    names = {v: k for k, v in _ST_DTYPES.items()}
    header, blobs, offset = {}, [], 0
    for name, t in state_dict.items():
        t = t.detach().cpu().contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b''
        header[name] = {'dtype': names[t.dtype], 'shape': list(t.shape),
                        'data_offsets': [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(',', ':')).encode('utf-8')
    head += b' ' * (-len(head) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)


def read_checkpoint(path):
    """Load a local checkpoint file -> flat {key: tensor} (wrappers and prefixes removed).

    Unwraps ``{'model_ema'|'model'|'teacher'|'state_dict'|'module': {...}}`` and strips a
    ``module.`` / ``backbone.`` / ``teacher.backbone.`` prefix (official DINOv2 training
    checkpoints), keeping only the backbone's keys.

    Raises:
        ValueError: missing file, unreadable file, or no tensors in it; the message names it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f'weights file not found: {path}')
    try:
        if path.endswith('.safetensors'):
            sd = read_safetensors(path)
        else:
            sd = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise ValueError(f'cannot read weights file {path}: {type(exc).__name__}: {exc}') \
            from exc
    for key in ('model_ema', 'model', 'teacher', 'state_dict', 'module'):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f'weights file {path} holds a {type(sd).__name__}, not a state dict')
    for prefix in ('teacher.backbone.', 'module.', 'backbone.'):
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    if not sd:
        raise ValueError(f'weights file {path} holds no tensors')
    return sd


def dinov2_pos_interp(model):
    """(offset, antialias) of the official DINOv2 ``interpolate_pos_encoding`` for this model:
    (0.1, False) for the original hub models, (0.0, True) for the ``_reg`` ones."""
    return (0.0, True) if getattr(model, 'reg_token', None) is not None else (0.1, False)


def resample_pos_embed(pos_embed, new_grid, num_prefix_tokens, offset=0.1, antialias=False):
    """Resample a ViT absolute positional embedding to another square patch grid.

    Same computation as the official DINOv2 ``interpolate_pos_encoding`` (bicubic; with
    ``offset`` > 0 a ``scale_factor = (new + offset) / old``, else an explicit size), so a
    checkpoint trained at 518 px gives at 224 px exactly the features of the official model run
    on 224 px images.

    Args:
        pos_embed: [1, P + G*G, D] (P = num_prefix_tokens entries kept as they are).
        new_grid: int, the new grid side G' (patches).
        num_prefix_tokens: P, leading entries that are not on the grid (1 for the CLS position
            of the original DINOv2 layout, 0 for timm's no_embed_class models).

    Returns:
        [1, P + G'*G', D] float tensor of the input's dtype.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n, dim = grid.shape[1], grid.shape[2]
    old = math.isqrt(n)
    if old * old != n:
        raise ValueError(f'pos_embed has {n} grid entries, not a square grid')
    new = int(new_grid)
    if old == new:
        return pos_embed
    g = grid.float().reshape(1, old, old, dim).permute(0, 3, 1, 2)
    if offset:
        scale = float(new + offset) / old
        g = F.interpolate(g, scale_factor=(scale, scale), mode='bicubic', antialias=antialias)
    else:
        g = F.interpolate(g, size=(new, new), mode='bicubic', antialias=antialias)
    if tuple(g.shape[-2:]) != (new, new):
        raise ValueError(f'pos_embed resampling gave {tuple(g.shape[-2:])}, not {new}x{new}')
    g = g.permute(0, 2, 3, 1).reshape(1, new * new, dim).to(pos_embed.dtype)
    return torch.cat([prefix, g], dim=1)


def _mlp_keys(k):
    # official SwiGLU names -> timm (packed w12 for DINOv2 giant, w1/w2 for DINOv3 SwiGLU)
    k = k.replace('mlp.w12.', 'mlp.fc1.')
    k = k.replace('mlp.w1.', 'mlp.fc1_g.').replace('mlp.w2.', 'mlp.fc1_x.')
    return k.replace('mlp.w3.', 'mlp.fc2.')


def _from_dinov2(sd, model, path):
    """Official DINOv2 (or timm) layout -> timm VisionTransformer layout, model's grid."""
    out = {}
    sd = dict(sd)
    sd.pop('mask_token', None)  # pre-training only (iBOT masking)
    pos = sd.get('pos_embed')
    if 'register_tokens' in sd:
        # official reg models add pos_embed[:, 0] to CLS only; timm (no_embed_class) keeps
        # CLS/registers off the grid: fold the CLS position into the token
        if pos is None or 'cls_token' not in sd:
            raise ValueError(f'{path}: register_tokens without cls_token/pos_embed')
        out['reg_token'] = sd.pop('register_tokens')
        out['cls_token'] = sd.pop('cls_token') + pos[:, :1]
        sd['pos_embed'] = pos[:, 1:]
    for k, v in sd.items():
        m = re.match(r'^blocks\.\d+\.(\d+)\.(.*)$', k)  # chunked blocks (FSDP): global index
        if m:
            k = f'blocks.{m.group(1)}.{m.group(2)}'
        out[_mlp_keys(k)] = v
    pos = out.get('pos_embed')
    if pos is not None and model.pos_embed is not None:
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        n_grid = pos.shape[1] - prefix
        new = model.patch_embed.grid_size[0]
        if n_grid != new * new and pos.shape[2] == model.pos_embed.shape[2]:
            offset, antialias = dinov2_pos_interp(model)
            try:
                out['pos_embed'] = resample_pos_embed(pos, new, prefix, offset, antialias)
            except ValueError as exc:
                raise ValueError(f'{path}: {exc}') from exc
    return out


def _from_dinov3(sd, model, path):
    """Official DINOv3 (or timm) layout -> timm Eva layout."""
    out = {}
    for k, v in sd.items():
        if k == 'mask_token' or k.endswith('.bias_mask') or k.startswith('rope_embed.'):
            continue  # pre-training only / fixed buffers recomputed by timm
        if k.endswith('attn.qkv.bias'):
            mask = sd.get(k.replace('qkv.bias', 'qkv.bias_mask'))
            bias = v * mask if mask is not None else v
            q, kb, vb = bias.chunk(3, dim=-1)
            attn = model.get_submodule(k[:-len('.qkv.bias')])
            if getattr(attn, 'q_bias', None) is not None:
                out[k.replace('qkv.bias', 'q_bias')] = q
                out[k.replace('qkv.bias', 'v_bias')] = vb
                if kb.abs().max() > 0:
                    raise ValueError(f'{path}: {k} has a non-zero key bias (timm fixes it at 0)')
            elif bias.abs().max() > 0:
                raise ValueError(f'{path}: {k} is non-zero but {type(model).__name__} has no '
                                 f'qkv bias: use the *_dinov3_qkvb architecture')
            continue
        k = k.replace('.ls1.gamma', '.gamma_1').replace('.ls2.gamma', '.gamma_2')
        k = k.replace('storage_tokens', 'reg_token')
        out[_mlp_keys(k)] = v
    return out


def convert_state_dict(state_dict, model, path='<state dict>'):
    """Checkpoint in the official DINOv2/DINOv3 or timm layout -> timm layout for ``model``.

    DINOv2 remap (official -> timm): identical names (``blocks.N.attn.qkv.weight``,
    ``blocks.N.ls1.gamma``, ``patch_embed.proj.weight``, ``norm.weight`` ...) except:
    ``mask_token`` dropped; ``register_tokens`` -> ``reg_token`` with the CLS position folded
    into ``cls_token`` and dropped from ``pos_embed`` (timm's no_embed_class); SwiGLU
    ``mlp.w12``/``mlp.w3`` -> ``mlp.fc1``/``mlp.fc2``; chunked ``blocks.C.N.`` -> ``blocks.N.``;
    ``pos_embed`` resampled to the model's grid as the official model does at run time.
    DINOv3 remap: ``storage_tokens`` -> ``reg_token``, ``ls{1,2}.gamma`` -> ``gamma_{1,2}``,
    ``qkv.bias`` (masked) -> ``q_bias``/``v_bias`` (or checked zero), ``mask_token``,
    ``*.bias_mask`` and ``rope_embed.periods`` dropped.

    Returns:
        {key: tensor} with exactly the model's keys and shapes.

    Raises:
        ValueError: missing keys, unexpected keys or shape mismatches (listed, file named).
    """
    if _is_eva(model):
        sd = _from_dinov3(state_dict, model, path)
    else:
        sd = _from_dinov2(state_dict, model, path)
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    shapes = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(want[k].shape)}'
              for k in sorted(set(sd) & set(want)) if tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        def _few(items):
            return ', '.join(items[:8]) + (f' (+{len(items) - 8} more)' if len(items) > 8 else '')
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys: {_few(missing)}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys: {_few(unexpected)}')
        if shapes:
            parts.append(f'{len(shapes)} shape mismatches: {_few(shapes)}')
        raise ValueError(f'weights {path} do not fit {type(model).__name__} '
                         f'(embed_dim {model.embed_dim}, depth {len(model.blocks)}, '
                         f'patch {model.patch_embed.patch_size[0]}): ' + '; '.join(parts))
    return {k: v.to(want[k].dtype) for k, v in sd.items()}


def load_weights(model, weights):
    """Load a local checkpoint (path) or a state dict into ``model`` in place; returns it.

    See ``convert_state_dict`` for the layouts and ``read_checkpoint`` for the file formats.
    """
    if isinstance(weights, dict):
        sd, path = weights, '<state dict>'
    else:
        path = os.fspath(weights)
        sd = read_checkpoint(path)
    model.load_state_dict(convert_state_dict(sd, model, path), strict=True)
    return model.eval()


def to_official_layout(model, cls_pos=None):
    """Inverse remap: the model's weights in the official DINOv2/DINOv3 checkpoint layout.

    Used to test loading of official checkpoints (none can be downloaded here).

    Args:
        model: a timm DINOv2 (VisionTransformer) or DINOv3 (Eva) model.
        cls_pos: [1, 1, D] CLS position entry to put in front of ``pos_embed`` for register
            models (the official layout keeps one, timm folds it into ``cls_token``); zeros if
            None. Any value gives the same model.

    Returns:
        {key: tensor}, with ``mask_token`` (zeros) as in the official files.
    """
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dim = model.embed_dim
    out = {'mask_token': torch.zeros(1, dim)}
    if _is_eva(model):
        for k, v in sd.items():
            if k.endswith('attn.q_bias') or k.endswith('attn.v_bias'):
                continue
            k2 = k.replace('.gamma_1', '.ls1.gamma').replace('.gamma_2', '.ls2.gamma')
            k2 = k2.replace('reg_token', 'storage_tokens')
            k2 = k2.replace('mlp.fc1_g.', 'mlp.w1.').replace('mlp.fc1_x.', 'mlp.w2.')
            if k2.endswith('attn.qkv.weight'):
                base = k2[:-len('.weight')]
                attn = model.get_submodule(k[:-len('.qkv.weight')])
                zeros = torch.zeros(attn.qkv.out_features // 3)
                q = attn.q_bias.detach() if getattr(attn, 'q_bias', None) is not None else zeros
                vb = attn.v_bias.detach() if getattr(attn, 'v_bias', None) is not None else zeros
                out[base + '.bias'] = torch.cat([q, zeros, vb])
                out[base + '.bias_mask'] = torch.cat([torch.ones_like(q), zeros,
                                                      torch.ones_like(vb)])
            out[k2] = v
        out['rope_embed.periods'] = torch.ones(dim // model.blocks[0].attn.num_heads // 4)
        return out
    reg = 'reg_token' in sd
    for k, v in sd.items():
        if reg and k == 'reg_token':
            out['register_tokens'] = v
            continue
        if reg and k == 'pos_embed':
            p0 = torch.zeros(1, 1, dim) if cls_pos is None else cls_pos.reshape(1, 1, dim)
            out['pos_embed'] = torch.cat([p0, v], dim=1)
            continue
        if reg and k == 'cls_token':
            p0 = torch.zeros(1, 1, dim) if cls_pos is None else cls_pos.reshape(1, 1, dim)
            out['cls_token'] = v - p0
            continue
        if type(model.blocks[0].mlp).__name__ == 'SwiGLUPacked':
            k = k.replace('mlp.fc1.', 'mlp.w12.').replace('mlp.fc2.', 'mlp.w3.')
        out[k] = v
    return out


# ------------------------------------------------------------------------------- truncation

def _layer_scales(block):
    """(attn LayerScale, mlp LayerScale) gamma Parameters of a timm DINOv2/DINOv3 block."""
    if hasattr(block, 'ls1'):
        return getattr(block.ls1, 'gamma', None), getattr(block.ls2, 'gamma', None)
    return getattr(block, 'gamma_1', None), getattr(block, 'gamma_2', None)


def facet_linear(attn, facet):
    """nn.Linear(D, Dh) computing one facet of a timm attention module's qkv projection.

    Rows ``[i*Dh, (i+1)*Dh)`` of ``attn.qkv`` (i = 0, 1, 2 for query, key, value; timm's qkv
    output is laid out [3, heads, head_dim]), with the matching bias: ``qkv.bias`` (DINOv2),
    ``q_bias``/``k_bias``/``v_bias`` (DINOv3 ``_qkvb``), none (DINOv3 ViT-S). Weights are copies.
    """
    idx = _QKV_INDEX[facet]
    if getattr(attn, 'qkv', None) is not None:
        w = attn.qkv.weight
        dh = w.shape[0] // 3
        rows = slice(idx * dh, (idx + 1) * dh)
        weight = w[rows]
        if attn.qkv.bias is not None:
            bias = attn.qkv.bias[rows]
        elif getattr(attn, 'q_bias', None) is not None:
            bias = (attn.q_bias, attn.k_bias, attn.v_bias)[idx]
        else:
            bias = None
    else:
        lin = (attn.q_proj, attn.k_proj, attn.v_proj)[idx]
        weight, bias = lin.weight, lin.bias
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


class TruncatedVit(nn.Module):
    """A DINOv2/DINOv3 ViT cut at ``layer`` and ``facet``: [B, 3, S, S] -> [B, T, Dh] tokens.

    Computation, the same as timm's ``forward_features`` up to the cut (eval mode):
        x = patch_embed(image)                                   [B, N, D]
        x = cat(cls, registers, x) + pos_embed (timm ``_pos_embed``: no_embed_class models add
            pos_embed to the patches only; DINOv3 has no pos_embed but RoPE, precomputed for the
            fixed grid and passed to every block), then ``patch_drop``, ``norm_pre``
        x = blocks[0](x) ... blocks[layer-1](x)                  [B, T, D], T = P + N
    then, for
        facet 'token':              x, the output of block ``layer-1`` (= input of block
                                    ``layer``; layer in 1..depth, before the final norm);
        facet 'query'/'key'/'value': Linear_f(blocks[layer].norm1(x)), where Linear_f is that
                                    block's ``attn.qkv`` restricted to the facet's rows (a new
                                    nn.Linear D -> Dh, so the exported graph has only that
                                    MatMul); layer in 0..depth-1. This equals what a forward
                                    hook on ``blocks[layer].attn.qkv`` of the full model gives,
                                    sliced [..., i*Dh:(i+1)*Dh] (per head the heads' q/k/v are
                                    concatenated). For DINOv3, q and k are before RoPE.
    Note AnyLoc's 'token' facet at layer l (a hook on block l's output) is 'token' at l+1 here.

    The module shares the model's embedding and block modules (modify the model before
    truncating: the facet Linear is a copy). Attributes: ``layer``, ``facet``, ``dim`` (Dh),
    ``input_size`` (S, px), ``patch_size``, ``grid_size`` (S/p, S/p), ``num_prefix_tokens`` (P:
    1 CLS + registers), ``arch`` (timm name if known).
    """

    def __init__(self, model, layer, facet='value'):
        super().__init__()
        if facet not in FACETS:
            raise ValueError(f'facet must be one of {FACETS}, got {facet!r}')
        depth = len(model.blocks)
        layer = int(layer)
        lo, hi = (1, depth) if facet == 'token' else (0, depth - 1)
        if not lo <= layer <= hi:
            raise ValueError(f'layer {layer} out of range {lo}..{hi} for facet {facet!r} '
                             f'of a {depth}-block model')
        if getattr(model, 'dynamic_img_size', False):
            raise ValueError('TruncatedVit needs a model built with dynamic_img_size=False')
        self.eva = _is_eva(model)
        self.layer, self.facet = layer, facet
        self.arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
        self.patch_embed = model.patch_embed
        self.cls_token = model.cls_token
        self.reg_token = getattr(model, 'reg_token', None)
        self.pos_embed = model.pos_embed
        self.no_embed_class = bool(getattr(model, 'no_embed_class', False))
        self.pos_drop = model.pos_drop
        if self.eva:
            if model.patch_drop is not None:
                raise ValueError('TruncatedVit: patch dropout is not supported for Eva models')
            self.patch_drop = nn.Identity()
            rope = model.rope.get_embed() if model.rope is not None else None
            if rope is not None and getattr(model, 'rope_mixed', False):
                raise ValueError('TruncatedVit: mixed (per-depth) RoPE is not supported')
            self.register_buffer('rope', None if rope is None else rope.detach().clone(),
                                 persistent=False)
        else:
            self.patch_drop = model.patch_drop
            self.rope = None
        self.norm_pre = model.norm_pre
        self.blocks = nn.ModuleList(list(model.blocks[:layer]))
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.grid_size = tuple(int(g) for g in model.patch_embed.grid_size)
        self.input_size = int(model.patch_embed.img_size[0])
        if facet == 'token':
            self.norm1, self.proj = None, None
            self.dim = int(model.embed_dim)
        else:
            block = model.blocks[layer]
            attn = block.attn
            if facet in ('query', 'key'):
                for nm in ('q_norm', 'k_norm'):
                    if not isinstance(getattr(attn, nm, nn.Identity()), nn.Identity):
                        raise NotImplementedError(f'facet {facet!r} with attention {nm}')
            self.norm1 = block.norm1
            self.proj = facet_linear(attn, facet)
            self.dim = int(self.proj.out_features)
        self.eval()

    def _pos_embed(self, x):
        to_cat = []
        if self.cls_token is not None:
            to_cat.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            to_cat.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.no_embed_class:
            if self.pos_embed is not None:
                x = x + self.pos_embed
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
        else:
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
            if self.pos_embed is not None:
                x = x + self.pos_embed
        return self.pos_drop(x)

    def forward(self, x):
        """[B, 3, S, S] normalised image -> [B, T, Dh] tokens (CLS, registers, patches)."""
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        for blk in self.blocks:
            x = blk(x, rope=self.rope) if self.eva else blk(x)
        if self.facet == 'token':
            return x
        return self.proj(self.norm1(x))


class TorchVitBackbone:
    """Backbone interface in PyTorch (eval, no_grad, float32, CPU), for parity checks.

    Args:
        model_or_truncated: a ``TruncatedVit`` (or any module [1, 3, S, S] -> [1, T, D]), or a
            full timm model, whose ``forward_features`` (all tokens after the final norm) is used.
        input_size: S, px; default the module's ``input_size``.
        drop_tokens: leading non-patch tokens to drop; default the module's
            ``num_prefix_tokens`` (1 for DINOv2, 5 for DINOv3 / reg4).
        name: label; default ``'<arch>/L<layer>/<facet>'`` or ``'torch-vit'``.
    """

    def __init__(self, model_or_truncated, input_size=None, drop_tokens=None, name=None):
        self.module = model_or_truncated.eval().float()
        self.input_size = int(input_size or getattr(model_or_truncated, 'input_size', 0) or
                              model_or_truncated.patch_embed.img_size[0])
        if drop_tokens is None:
            drop_tokens = getattr(model_or_truncated, 'num_prefix_tokens', 1)
        self.drop_tokens = int(drop_tokens)
        self.dim = int(getattr(model_or_truncated, 'dim', 0) or model_or_truncated.embed_dim)
        if name is None:
            t = model_or_truncated
            name = (f'{t.arch or "vit"}/L{t.layer}/{t.facet}' if isinstance(t, TruncatedVit)
                    else 'torch-vit')
        self.name = name
        self._full = not isinstance(model_or_truncated, TruncatedVit) and \
            hasattr(model_or_truncated, 'forward_features')

    def tokens(self, rgb):
        """H x W x 3 uint8 RGB -> [T, D] float32 raw tokens."""
        x = torch.from_numpy(preprocess(rgb, self.input_size))
        with torch.no_grad():
            out = self.module.forward_features(x) if self._full else self.module(x)
        return out[0].float().numpy()

    def features(self, rgb):
        """H x W x 3 uint8 RGB -> [N, D] float32 per-patch features, rows L2-normalised."""
        return l2_normalise_rows(self.tokens(rgb)[self.drop_tokens:])


# ------------------------------------------------------------------------------------- export

def _finalise_onnx(src, dst):
    """Cap the IR version at MAX_IR_VERSION, check the model, move src -> dst atomically."""
    import onnx
    model = onnx.load(src)
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, src)
    os.replace(src, dst)


def check_onnx_loads(path, threads=1):
    """Load ``path`` in onnxruntime, run one zero image; returns (ir_version, output shape)."""
    import onnx
    import onnxruntime as ort
    ir = onnx.load(path, load_external_data=False).ir_version
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=opts, providers=['CPUExecutionProvider'])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    out = sess.run(None, {inp.name: np.zeros(shape, np.float32)})[0]
    return ir, tuple(out.shape)


def export_onnx(truncated, path, input_size=None, opset=17):
    """Export a TruncatedVit to ONNX with static shapes: input 'image' [1, 3, S, S] float32,
    output 'tokens' [1, T, Dh] float32.

    Uses the TorchScript-based exporter (``dynamo=False``: plain MatMul/Add graphs that ORT's
    quantizer handles), constant folding on; sets ``ir_version`` to at most 12 so that
    onnxruntime 1.31.1 loads it, checks it with ``onnx.checker`` and a round trip through
    onnxruntime. Writes atomically (``path + '.tmp'`` then rename).

    Returns:
        path.
    """
    path = os.fspath(path)
    size = int(input_size or truncated.input_size)
    if size != truncated.input_size:
        raise ValueError(f'input_size {size} differs from the model\'s {truncated.input_size} '
                         f'(build the model with img_size={size})')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    truncated.eval()
    dummy = torch.zeros(1, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(truncated, (dummy,), tmp, input_names=['image'],
                          output_names=['tokens'], opset_version=int(opset), dynamo=False,
                          do_constant_folding=True)
    _finalise_onnx(tmp, path)
    check_onnx_loads(path)
    return path


class _DropPreprocessHint(logging.Filter):
    def filter(self, record):
        return 'pre-processing before quantization' not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer():
    """Silence the quantizer's warnings and its root-logger hint to run quant_pre_process
    (measured on ViT-S/14: no speed or accuracy difference; ORT's load-time graph optimisations
    fuse the same LayerNorm/GELU/DynamicQuantizeMatMul patterns)."""
    root, filt = logging.getLogger(), _DropPreprocessHint()
    root.addFilter(filt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        root.removeFilter(filt)


def quantize_int8(fp32_path, int8_path, per_channel=True):
    """Dynamic INT8 quantization of the MatMul/Gemm weights (onnxruntime ``quantize_dynamic``).

    Weights signed int8 (QInt8), per output channel by default; activations are quantized at
    run time (uint8, per tensor, range from each input); only MatMuls with a constant weight
    (the Linear layers, not attention's Q.K^T / A.V). DESIGN.md: the fastest and most accurate
    variant measured for ViT-S/14 at 224 (~59 ms one thread, 20 MB).

    Returns:
        int8_path (IR version capped at 12, loads in onnxruntime 1.31.1).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    fp32_path, int8_path = os.fspath(fp32_path), os.fspath(int8_path)
    if not os.path.isfile(fp32_path):
        raise ValueError(f'ONNX model file not found: {fp32_path}')
    tmp = int8_path + '.tmp'
    with _quiet_quantizer():
        quantize_dynamic(fp32_path, tmp, op_types_to_quantize=['MatMul', 'Gemm'],
                         per_channel=bool(per_channel), weight_type=QuantType.QInt8,
                         extra_options={'MatMulConstBOnly': True})
    _finalise_onnx(tmp, int8_path)
    return int8_path


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over images: yields {input: [1, 3, S, S] float32}
    preprocessed exactly as at run time (``vit_onnx.preprocess``)."""

    def __init__(self, input_name, images, input_size):
        self.input_name, self.input_size = input_name, int(input_size)
        self._images = list(images)
        self._it = iter(self._images)

    def get_next(self):
        img = next(self._it, None)
        if img is None:
            return None
        return {self.input_name: preprocess(img, self.input_size)}

    def rewind(self):
        self._it = iter(self._images)


def quantize_static_qdq(fp32_path, int8_path, calibration_images, per_channel=True):
    """Static INT8 quantization in QDQ format, calibrated (MinMax) on ``calibration_images``.

    Args:
        calibration_images: iterable of H x W x 3 uint8 RGB images (crops like the queries);
            a few dozen are enough.

    Weights QInt8 per channel, activations QUInt8 per tensor with fixed ranges from the
    calibration set; only MatMul/Gemm with constant weights (as ``quantize_int8``).

    Returns:
        int8_path (IR version capped at 12).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    fp32_path, int8_path = os.fspath(fp32_path), os.fspath(int8_path)
    if not os.path.isfile(fp32_path):
        raise ValueError(f'ONNX model file not found: {fp32_path}')
    graph = onnx.load(fp32_path).graph
    inp = graph.input[0]
    size = inp.type.tensor_type.shape.dim[2].dim_value
    images = list(calibration_images)
    if not images:
        raise ValueError('quantize_static_qdq needs at least one calibration image')
    reader = ImageCalibrationReader(inp.name, images, size)
    tmp = int8_path + '.tmp'
    with _quiet_quantizer():
        quantize_static(fp32_path, tmp, reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=['MatMul', 'Gemm'], per_channel=bool(per_channel),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={'MatMulConstBOnly': True})
    _finalise_onnx(tmp, int8_path)
    return int8_path


# ----------------------------------------------------------------------------------- outliers

def set_layerscale(model, value):
    """Set every LayerScale gamma of the model to ``value`` (in place; returns the model).

    timm initialises them to 1e-5, which makes a random DINOv2 almost the identity after the
    patch embedding (the blocks add ~nothing to the residual stream); trained models have
    gammas of order 0.1-1, so a random model with ``value`` ~0.1-1 mixes tokens realistically.
    """
    with torch.no_grad():
        for blk in model.blocks:
            for g in _layer_scales(blk):
                if g is not None:
                    g.fill_(float(value))
    return model


def _norm_linear_pairs(model):
    """(LayerNorm, [Linear reading its output]) pairs of every block: norm1 -> attn.qkv,
    norm2 -> mlp.fc1 (or the SwiGLU fc1_g + fc1_x)."""
    pairs = []
    for blk in model.blocks:
        attn = blk.attn
        if getattr(attn, 'qkv', None) is not None:
            pairs.append((blk.norm1, [attn.qkv]))
        else:
            pairs.append((blk.norm1, [attn.q_proj, attn.k_proj, attn.v_proj]))
        mlp = blk.mlp
        if getattr(mlp, 'fc1', None) is not None:
            pairs.append((blk.norm2, [mlp.fc1]))
        else:
            pairs.append((blk.norm2, [mlp.fc1_g, mlp.fc1_x]))
    return [(n, lins) for n, lins in pairs
            if isinstance(n, nn.LayerNorm) and n.weight is not None and n.bias is not None]


def smooth_quant(model, calibration_images, alpha=0.5):
    """SmoothQuant (Xiao et al., 2023) for the LayerNorm -> Linear pairs (in place, FP32-exact).

    Outlier channels make the per-tensor INT8 range of a LayerNorm's output huge (see
    ``inject_outliers``). For each pair (norm1 -> attn.qkv, norm2 -> mlp.fc1) this divides the
    LayerNorm's weight and bias by s_c and multiplies the Linear's input column c by s_c, with
    s_c = max|X_c|^alpha / max|W_:,c|^(1 - alpha) (X: the LayerNorm output over the calibration
    images, clamped to [1e-2, 1e3]): the FP32 function is unchanged, the activation range moves
    partly into the (per-channel quantized) weights. Apply before ``TruncatedVit`` (its facet
    Linear copies the qkv weights).

    Args:
        calibration_images: iterable of H x W x 3 uint8 RGB images (a few dozen crops).
        alpha: migration strength in [0, 1]; 0.5 is the paper's default.

    Returns:
        dict: pairs smoothed, max and median scale.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    pairs = _norm_linear_pairs(model)
    size = model.patch_embed.img_size[0]
    amax = {}

    def hook(mod, _inp, out):
        cur = out.detach().abs().flatten(0, -2).amax(0)
        amax[mod] = torch.maximum(amax[mod], cur) if mod in amax else cur

    handles = [n.register_forward_hook(hook) for n, _ in pairs]
    count = 0
    try:
        with torch.no_grad():
            for img in calibration_images:
                model.forward_features(torch.from_numpy(preprocess(img, size)))
                count += 1
    finally:
        for h in handles:
            h.remove()
    if not count:
        raise ValueError('smooth_quant needs at least one calibration image')
    scales = []
    with torch.no_grad():
        for norm, lins in pairs:
            wmax = torch.cat([lin.weight for lin in lins]).abs().amax(0)
            s = (amax[norm].clamp(min=1e-5).pow(alpha) /
                 wmax.clamp(min=1e-5).pow(1.0 - alpha)).clamp(1e-2, 1e3)
            norm.weight.div_(s)
            norm.bias.div_(s)
            for lin in lins:
                lin.weight.mul_(s)
            scales.append(s)
    alls = torch.cat(scales)
    return {'pairs': len(pairs), 'alpha': float(alpha), 'images': count,
            'max_scale': round(float(alls.max()), 3),
            'median_scale': round(float(alls.median()), 3)}


def _block_output_rms(model, block, x):
    """Per-channel RMS over tokens of the residual stream after ``blocks[block]``: [D]."""
    got = {}
    handle = model.blocks[block].register_forward_hook(
        lambda _m, _i, out: got.setdefault('x', out.detach()))
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        handle.remove()
    return got['x'][0].pow(2).mean(0).sqrt()


def inject_outliers(model, channels=(37, 151, 298), ratio=100.0, block=1, layerscale=None,
                    seed=0):
    """Make a random DINOv2/DINOv3 have outlier channels in its residual stream (in place).

    Trained DINOv2 models have a few residual-stream channels with huge, nearly token-constant
    activations (~100x the others), which appear in an early block and persist through the
    residual connections. After each LayerNorm they still dominate the per-tensor range, which is
    what hurts per-tensor INT8 activation quantization of the next Linear (qkv, fc1). This
    emulates them: in ``blocks[block]`` the MLP's LayerScale gamma of each outlier channel is
    set to 1 and ``mlp.fc2``'s bias for that channel to +-``ratio`` x the median per-channel
    RMS of the other channels at that block's output (weights rows kept, so the channel still
    varies a little across tokens); later blocks carry it on. The median is measured on a
    random normal image (``seed``) with the model as it is after ``layerscale`` is applied.

    Args:
        channels: residual channel indices (< D) to turn into outliers.
        ratio: target |outlier| / median RMS of the other channels.
        block: index of the block whose MLP creates them.
        layerscale: if not None, first ``set_layerscale(model, layerscale)``.

    Returns:
        dict: channels, block, median_rms (of the other channels before injection), value (the
        bias set), measured_ratio (outlier RMS / median other RMS at the block output and at the
        last block's output).
    """
    dim = model.embed_dim
    channels = [int(c) for c in channels]
    if not channels or any(not 0 <= c < dim for c in channels):
        raise ValueError(f'channels must be in 0..{dim - 1}, got {channels}')
    if not 0 <= int(block) < len(model.blocks):
        raise ValueError(f'block {block} out of range for {len(model.blocks)} blocks')
    if layerscale is not None:
        set_layerscale(model, layerscale)
    size = model.patch_embed.img_size[0]
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn(1, 3, size, size, generator=g)
    others = torch.ones(dim, dtype=torch.bool)
    others[channels] = False
    median = float(_block_output_rms(model, block, x)[others].median())
    value = float(ratio) * median
    blk = model.blocks[block]
    gamma = _layer_scales(blk)[1]
    fc2 = blk.mlp.fc2
    with torch.no_grad():
        for i, c in enumerate(channels):
            sign = 1.0 if i % 2 == 0 else -1.0
            if gamma is not None:
                gamma[c] = 1.0
            fc2.bias[c] = sign * value
    rms_b = _block_output_rms(model, block, x)
    rms_l = _block_output_rms(model, len(model.blocks) - 1, x)
    return {'channels': channels, 'block': int(block), 'median_rms': round(median, 6),
            'value': round(value, 4),
            'measured_ratio': {
                'block_output': round(float(rms_b[channels].min() / rms_b[others].median()), 1),
                'last_block_output': round(float(rms_l[channels].min() /
                                                 rms_l[others].median()), 1)}}
