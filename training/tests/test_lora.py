"""LoRA (init identity, merge parity, targets on DINOv2/DINOv3) and GeoModel checkpoints."""
import pytest
import torch
import torch.nn as nn
from timm.models.eva import Eva

from skyloc_perception.vit_torch import build_vit
from skyloc_training.lora import LoRALinear, apply_lora, lora_layers, merge_lora
from skyloc_training.model import GeoModel, load_checkpoint, save_checkpoint

ARCHS = [('vit_small_patch14_dinov2', 28), ('vit_small_patch16_dinov3', 32),
         ('vit_small_patch16_dinov3_qkvb', 32)]


def _unit_layer_scale(vit):
    """A random timm ViT has LayerScale 1e-5 (blocks ~ identity): make the blocks count."""
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if name.endswith(('ls1.gamma', 'ls2.gamma', 'gamma_1', 'gamma_2')):
                p.fill_(1.0)


def _randomise_lora(model, seed=1, std=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * std)


def test_lora_linear_init_is_identity_and_update_is_low_rank():
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    x = torch.randn(5, 12)
    want = base(x).detach()
    layer = LoRALinear(base, rank=3, alpha=6.0)
    assert torch.equal(layer(x), want)
    assert layer.scaling == 2.0
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert layer.lora_A.abs().sum() > 0 and layer.lora_B.abs().sum() == 0
    with torch.no_grad():
        layer.lora_B.normal_()
    delta = layer(x) - want
    assert delta.abs().max() > 1e-3
    assert torch.allclose(delta, 2.0 * x @ layer.lora_A.T @ layer.lora_B.T, atol=1e-5)
    assert torch.linalg.matrix_rank(layer.delta_weight()).item() == 3
    # the effective weight property is what F.linear callers see
    assert torch.allclose(nn.functional.linear(x, layer.weight, layer.bias), layer(x), atol=1e-5)
    merged = layer.merged()
    assert type(merged) is nn.Linear
    assert torch.allclose(merged(x), layer(x), atol=1e-5)


@pytest.mark.parametrize('arch,size', ARCHS)
def test_apply_lora_init_unchanged_and_merge_reproduces(arch, size):
    plain = build_vit(arch, size, depth=2, seed=3)
    _unit_layer_scale(plain)
    vit = build_vit(arch, size, depth=2, seed=3)
    _unit_layer_scale(vit)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = plain.forward_features(x)
        assert apply_lora(vit, rank=4, alpha=8.0) == 2 * 4
        assert torch.allclose(vit.forward_features(x), want, atol=1e-6)
        _randomise_lora(vit)
        adapted = vit.forward_features(x)
        assert (adapted - want).abs().max() > 1e-2  # the adapters do change the output
        assert merge_lora(vit) == 8
        merged = vit.forward_features(x)
    assert torch.allclose(merged, adapted, atol=1e-5)
    assert not lora_layers(vit)
    # export sees a plain timm model: same keys and shapes, only nn.Linear
    assert {k: v.shape for k, v in vit.state_dict().items()} == \
        {k: v.shape for k, v in plain.state_dict().items()}
    assert type(vit.blocks[0].attn.qkv) is nn.Linear
    assert not getattr(vit.blocks[0].attn, 'qkv_bias_separate', False)


def test_qkvb_adapter_gets_gradients():
    # DINOv3 *_qkvb: EvaAttention adds q/v biases to qkv; the adapter must still be in the path
    vit = build_vit('vit_small_patch16_dinov3_qkvb', 32, depth=1)
    _unit_layer_scale(vit)
    apply_lora(vit, rank=2, alpha=2.0, targets=('qkv',))
    _randomise_lora(vit)
    vit.forward_features(torch.randn(2, 3, 32, 32)).square().sum().backward()
    qkv = vit.blocks[0].attn.qkv
    assert qkv.lora_A.grad is not None and qkv.lora_A.grad.abs().sum() > 0
    assert qkv.base.weight.grad is None


def test_eva_separate_qkv_and_swiglu_targets():
    vit = Eva(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=0,
              qkv_fused=False, swiglu_mlp=True, scale_mlp=True, mlp_ratio=2.0)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = vit.forward_features(x)
    # per block: q_proj, k_proj, v_proj + proj + fc1_g, fc1_x + fc2
    assert apply_lora(vit, rank=2) == 2 * 7
    names = [n for n, _ in lora_layers(vit)]
    assert 'blocks.0.attn.k_proj' in names and 'blocks.1.mlp.fc1_x' in names
    with torch.no_grad():
        assert torch.allclose(vit.forward_features(x), want, atol=1e-6)
        _randomise_lora(vit, std=0.5)
        adapted = vit.forward_features(x)
        assert (adapted - want).abs().max() > 1e-3
        merge_lora(vit)
        # float32: the merged weights sum in another order; outputs reach ~200 here, so an
        # element near 0 carries rounding of that size (2e-4 measured on an AVX-512 CPU)
        scale = float(adapted.abs().max())
        assert torch.allclose(vit.forward_features(x), adapted, rtol=1e-5, atol=1e-5 * scale)


def test_apply_lora_errors():
    vit = build_vit('vit_small_patch14_dinov2', 28, depth=1)
    with pytest.raises(ValueError, match='unknown LoRA targets'):
        apply_lora(vit, targets=('qkv', 'mlp'))
    apply_lora(vit, rank=2)
    with pytest.raises(ValueError, match='already has LoRA'):
        apply_lora(vit, rank=2)
    with pytest.raises(ValueError, match='rank must be >= 1'):
        LoRALinear(nn.Linear(3, 3), rank=0)


def test_geomodel_forward_trainable_and_grad_checkpointing():
    model = GeoModel(img_size=28, depth=2, lora_rank=4, lora_alpha=8.0)
    x = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (3, 256)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(2.6593, abs=1e-4)  # log(1 / 0.07)
    names = model.trainable_names()
    assert len([n for n in names if n.endswith('lora_A')]) == 8
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(names)
    trainable, frozen = model.count_parameters()
    assert trainable == sum(p.numel() for _, p in model.trainable_parameters())
    assert frozen == sum(p.numel() for p in build_vit('vit_small_patch14_dinov2', 28,
                                                      depth=2).parameters())
    _unit_layer_scale(model.backbone)
    _randomise_lora(model)

    def grads(checkpointing):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        model(x).sum().backward()
        return {n: p.grad.clone() for n, p in model.trainable_parameters()
                if n != 'logit_scale'}  # the loss uses it, forward does not
    plain, ckpt = grads(False), grads(True)
    a = 'backbone.blocks.0.attn.qkv.lora_A'
    assert plain[a].abs().sum() > 0
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6), name
    with pytest.raises(ValueError, match='embed_dim 384'):
        GeoModel(img_size=28, depth=1, head_dims=(256, 128))


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = GeoModel(img_size=28, depth=2, lora_rank=4, seed=5, head_dims=(384, 64, 32))
    _randomise_lora(model)
    with torch.no_grad():
        model.head[0].weight.mul_(1.5)
        model.logit_scale.fill_(3.0)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        want = model.eval()(x)
    path = save_checkpoint(model, tmp_path / 'c.pt', {'step': 7, 'metrics': {'R@1': 0.5}})
    raw = torch.load(path, weights_only=True)
    assert set(raw['state']) == set(model.trainable_names())
    assert raw['config']['head_dims'] == [384, 64, 32] and raw['config']['seed'] == 5
    loaded = load_checkpoint(path)
    assert loaded.checkpoint_extra == {'step': 7, 'metrics': {'R@1': 0.5}}
    assert loaded.logit_scale.item() == 3.0
    with torch.no_grad():
        assert torch.allclose(loaded(x), want, atol=1e-6)
    # a state of another model: missing and unexpected keys are named
    raw['state']['head.9.weight'] = torch.zeros(1)
    del raw['state']['backbone.blocks.1.mlp.fc2.lora_B']
    torch.save(raw, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match=r'missing keys: backbone\.blocks\.1\.mlp\.fc2\.lora_B.*'
                                         r'unexpected keys: head\.9\.weight'):
        load_checkpoint(tmp_path / 'bad.pt')
    torch.save({'blocks.0.attn.qkv.weight': torch.zeros(3)}, tmp_path / 'backbone.pt')
    with pytest.raises(ValueError, match='not a GeoModel checkpoint'):
        load_checkpoint(tmp_path / 'backbone.pt')
    with pytest.raises(ValueError, match='checkpoint not found'):
        load_checkpoint(tmp_path / 'none.pt')
    raw = torch.load(path, weights_only=True)
    raw['config']['colour'] = 'red'
    torch.save(raw, tmp_path / 'cfg.pt')
    with pytest.raises(ValueError, match=r"unknown config keys \['colour'\]"):
        load_checkpoint(tmp_path / 'cfg.pt')


def test_checkpoint_with_backbone_weights_file(tmp_path):
    vit = build_vit('vit_small_patch14_dinov2', 28, depth=2, seed=11)
    torch.save(vit.state_dict(), tmp_path / 'vit.pth')
    model = GeoModel(img_size=28, depth=2, weights=tmp_path / 'vit.pth', seed=0)
    assert torch.equal(model.backbone.patch_embed.proj.weight, vit.patch_embed.proj.weight)
    path = save_checkpoint(model, tmp_path / 'c.pt')
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.backbone.patch_embed.proj.weight, vit.patch_embed.proj.weight)
    (tmp_path / 'vit.pth').rename(tmp_path / 'moved.pth')
    with pytest.raises(ValueError, match='weights file not found.*pass weights='):
        load_checkpoint(path)
    loaded = load_checkpoint(path, weights=tmp_path / 'moved.pth')
    assert torch.equal(loaded.backbone.patch_embed.proj.weight, vit.patch_embed.proj.weight)
