"""ViT backbone: truncation = forward hooks, ONNX = PyTorch, INT8 accuracy/size, weight loading.

Uses small random models of the real architectures (DINOv2 ViT-S/14 with 4 blocks at 98 px =
7 x 7 patches, DINOv3 ViT-S/16 with 2 blocks at 64 px); skipped where torch/timm/onnx are not
installed (the runtime venv).
"""

import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')
onnx = pytest.importorskip('onnx')

from skyloc_perception import vit_onnx  # noqa: E402
from skyloc_perception import vit_torch as vt  # noqa: E402
from skyloc_perception.vit_onnx import OnnxVitBackbone, preprocess  # noqa: E402

V2 = 'vit_small_patch14_dinov2'
V2_REG = 'vit_small_patch14_reg4_dinov2'
V3 = 'vit_small_patch16_dinov3'
SIZE = 98  # 7 x 7 patches of 14 px
D = 384


def _image(seed=0, shape=(120, 150, 3)):
    rng = np.random.default_rng(seed)
    low = rng.random((5, 5, 3)).astype(np.float32)
    import cv2
    img = cv2.resize(low, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC) * 200
    img += rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def model():
    return vt.build_vit(V2, img_size=SIZE, seed=0, depth=4)


@pytest.fixture(scope='module')
def exported(model, tmp_path_factory):
    d = tmp_path_factory.mktemp('onnx')
    trunc = vt.TruncatedVit(model, 3, 'value')
    fp32 = vt.export_onnx(trunc, str(d / 'vit_fp32.onnx'), SIZE)
    int8 = vt.quantize_int8(fp32, str(d / 'vit_int8.onnx'))
    return trunc, fp32, int8


def _hook_output(model, module, x):
    got = {}
    handle = module.register_forward_hook(lambda _m, _i, out: got.setdefault('out', out))
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        handle.remove()
    return got['out']


# ----------------------------------------------------------------------------- truncation

@pytest.mark.parametrize('arch,size,kw', [(V2, SIZE, {'depth': 4}), (V2_REG, SIZE, {'depth': 2}),
                                          (V3, 64, {'depth': 2})])
def test_truncated_vit_equals_forward_hooks(arch, size, kw):
    m = vt.build_vit(arch, img_size=size, seed=1, **kw)
    depth = len(m.blocks)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    for facet, i in (('query', 0), ('key', 1), ('value', 2)):
        for layer in (0, depth - 1):
            ref = _hook_output(m, m.blocks[layer].attn.qkv, x)[..., i * D:(i + 1) * D]
            with torch.no_grad():
                out = vt.TruncatedVit(m, layer, facet)(x)
            assert out.shape == ref.shape
            assert (out - ref).abs().max().item() < 1e-5, (facet, layer)
    for layer in (1, depth):
        ref = _hook_output(m, m.blocks[layer - 1], x)
        with torch.no_grad():
            out = vt.TruncatedVit(m, layer, 'token')(x)
        assert (out - ref).abs().max().item() < 1e-5, ('token', layer)
    t = vt.TruncatedVit(m, 0, 'value')
    assert t.num_prefix_tokens == (1 if arch == V2 else 5)
    assert t.dim == D and t.input_size == size


def test_truncated_vit_rejects_bad_layer_and_facet(model):
    with pytest.raises(ValueError, match='facet'):
        vt.TruncatedVit(model, 2, 'attn')
    with pytest.raises(ValueError, match='layer'):
        vt.TruncatedVit(model, 4, 'value')  # 4 blocks: q/k/v layers 0..3
    with pytest.raises(ValueError, match='layer'):
        vt.TruncatedVit(model, 0, 'token')  # token layers 1..4


# ----------------------------------------------------------------------------- preprocessing

def test_preprocess_shape_and_normalisation():
    mean = np.array([0.485, 0.456, 0.406]) * 255
    img = np.tile(np.round(mean).astype(np.uint8), (50, 70, 1))
    x = preprocess(img, SIZE)
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.abs(x).max() < 0.01
    with pytest.raises(ValueError):
        preprocess(img.astype(np.float32), SIZE)
    with pytest.raises(ValueError):
        preprocess(img[..., 0], SIZE)


# ----------------------------------------------------------------------------- ONNX export

def test_onnx_fp32_matches_torch(exported):
    trunc, fp32, _ = exported
    ob = OnnxVitBackbone(fp32, SIZE, name='v2/L3/value')
    tb = vt.TorchVitBackbone(trunc, SIZE, 1)
    assert ob.dim == tb.dim == D and ob.num_patches == 49 and ob.name == 'v2/L3/value'
    for seed in range(2):
        img = _image(seed)
        a, b = ob.features(img), tb.features(img)
        assert a.shape == (49, D) and a.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert np.sum(a * b, axis=1).min() > 0.99999
        assert np.abs(a - b).max() < 1e-4


def test_onnx_ir_version_and_onnxruntime_load(exported):
    _, fp32, int8 = exported
    for path in (fp32, int8):
        m = onnx.load(path)
        assert m.ir_version <= 12
        assert [o.name for o in m.graph.output] == ['tokens']
        ir, shape = vt.check_onnx_loads(path)
        assert ir <= 12 and shape == (1, 50, D)


def test_dinov3_onnx_matches_torch(tmp_path):
    m = vt.build_vit(V3, img_size=64, seed=2, depth=2)
    trunc = vt.TruncatedVit(m, 1, 'value')
    path = vt.export_onnx(trunc, str(tmp_path / 'v3.onnx'))
    ob = OnnxVitBackbone(path, 64, drop_tokens=5)
    tb = vt.TorchVitBackbone(trunc)
    img = _image(3)
    a, b = ob.features(img), tb.features(img)
    assert a.shape == (16, D)
    assert np.sum(a * b, axis=1).min() > 0.99999 and np.abs(a - b).max() < 1e-4


# ----------------------------------------------------------------------------- INT8

def test_int8_dynamic_accuracy_and_size(exported):
    _, fp32, int8 = exported
    ops = {n.op_type for n in onnx.load(int8).graph.node}
    assert 'MatMulInteger' in ops or 'DynamicQuantizeMatMul' in ops
    ref, q = OnnxVitBackbone(fp32, SIZE), OnnxVitBackbone(int8, SIZE)
    cos = np.concatenate([np.sum(ref.features(_image(s)) * q.features(_image(s)), axis=1)
                          for s in range(3)])
    assert cos.mean() >= 0.999
    assert os.path.getsize(fp32) >= 3 * os.path.getsize(int8)


def test_int8_static_qdq(exported, tmp_path):
    _, fp32, _ = exported
    path = vt.quantize_static_qdq(fp32, str(tmp_path / 'qdq.onnx'),
                                  [_image(s) for s in range(4)])
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert 'QuantizeLinear' in ops and 'DequantizeLinear' in ops
    assert onnx.load(path).ir_version <= 12
    ref, q = OnnxVitBackbone(fp32, SIZE), OnnxVitBackbone(path, SIZE)
    img = _image(9)
    assert np.sum(ref.features(img) * q.features(img), axis=1).mean() >= 0.99


def test_outliers_and_smooth_quant():
    m = vt.build_vit(V2, img_size=SIZE, seed=3, depth=3)
    info = vt.inject_outliers(m, channels=(5, 50), ratio=100.0, block=0, layerscale=0.1)
    assert 50 <= info['measured_ratio']['block_output'] <= 200
    assert info['measured_ratio']['last_block_output'] >= 30
    x = torch.from_numpy(preprocess(_image(4), SIZE))
    with torch.no_grad():
        before = vt.TruncatedVit(m, 2, 'value')(x)
    vt.smooth_quant(m, [_image(s) for s in range(3)], alpha=0.5)
    with torch.no_grad():
        after = vt.TruncatedVit(m, 2, 'value')(x)
    assert ((after - before).abs().max() / before.abs().max()).item() < 1e-4


def _op_counts(path):
    from collections import Counter
    return Counter(n.op_type for n in onnx.load(path).graph.node)


def test_fused_graph_is_the_same_function(exported, tmp_path):
    trunc, fp32, _ = exported
    fused = str(tmp_path / 'fused.onnx')
    info = vit_onnx.fuse_vit_graph(fp32, fused)
    # layer 3, value facet: blocks 0-2 whole (attention + 2 LayerScales each)
    assert info['attention'] == 3 and info['layerscale'] == 6
    ops = _op_counts(fused)
    assert ops['Attention'] == 3 and 'Softmax' not in ops and 'Split' not in ops
    ref, got = OnnxVitBackbone(fp32, SIZE), OnnxVitBackbone(fused, SIZE)
    for seed in range(2):
        a, b = ref.tokens(_image(seed)), got.tokens(_image(seed))
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_quantize_int8_cpu(exported, tmp_path):
    trunc, fp32, int8 = exported
    path = str(tmp_path / 'int8_cpu.onnx')
    info = vit_onnx.quantize_int8_cpu(fp32, path)
    assert info['path'] == path and info['attention'] == 3
    ops = _op_counts(path)
    assert ops['QAttention'] == 3 and 'Softmax' not in ops
    assert 'MatMulInteger' in ops or 'DynamicQuantizeMatMul' in ops
    assert onnx.load(path).ir_version <= 12
    assert os.path.getsize(fp32) >= 3 * os.path.getsize(path)
    ref, q, old = (OnnxVitBackbone(p, SIZE) for p in (fp32, path, int8))
    for s in range(3):
        f = ref.features(_image(s))
        assert np.sum(f * q.features(_image(s)), axis=1).mean() >= 0.999
        # as accurate as the unfused INT8 model
        np.testing.assert_allclose(np.sum(f * q.features(_image(s)), axis=1).mean(),
                                   np.sum(f * old.features(_image(s)), axis=1).mean(),
                                   atol=5e-4)
    plain = str(tmp_path / 'int8_plain.onnx')
    assert vit_onnx.quantize_int8_cpu(fp32, plain, fuse=False)['attention'] == 0
    assert 'QAttention' not in _op_counts(plain)


def test_dinov3_rope_attention_is_left_unfused(tmp_path):
    m = vt.build_vit(V3, img_size=64, seed=2, depth=2)
    trunc = vt.TruncatedVit(m, 1, 'value')
    fp32 = vt.export_onnx(trunc, str(tmp_path / 'v3.onnx'))
    info = vit_onnx.fuse_vit_graph(fp32, str(tmp_path / 'v3_fused.onnx'))
    assert info['attention'] == 0   # RoPE inside: not the plain attention pattern
    a = OnnxVitBackbone(fp32, 64, drop_tokens=5).features(_image(3))
    b = OnnxVitBackbone(str(tmp_path / 'v3_fused.onnx'), 64, drop_tokens=5).features(_image(3))
    assert np.sum(a * b, axis=1).min() > 0.99999


def test_low_memory_option(exported):
    _, fp32, _ = exported
    a = OnnxVitBackbone(fp32, SIZE, low_memory=True).features(_image(1))
    b = OnnxVitBackbone(fp32, SIZE, low_memory=False).features(_image(1))
    np.testing.assert_allclose(a, b, atol=1e-6)


# ----------------------------------------------------------------------------- weights

def _tokens(m, layer=3, facet='value', size=SIZE):
    x = torch.from_numpy(preprocess(_image(5), size))
    with torch.no_grad():
        return vt.TruncatedVit(m, min(layer, len(m.blocks) - 1), facet)(x)


def test_build_vit_deterministic(model):
    again = vt.build_vit(V2, img_size=SIZE, seed=0, depth=4)
    other = vt.build_vit(V2, img_size=SIZE, seed=1, depth=4)
    assert torch.equal(_tokens(model), _tokens(again))
    assert not torch.equal(_tokens(model), _tokens(other))


def test_weights_timm_official_and_safetensors_layouts(model, tmp_path):
    ref = _tokens(model)
    torch.save(model.state_dict(), tmp_path / 'timm.pth')
    official = vt.to_official_layout(model)
    assert 'mask_token' in official and official['blocks.0.ls1.gamma'].shape == (D,)
    torch.save(official, tmp_path / 'dinov2_vits14_pretrain.pth')
    torch.save({'teacher': {'backbone.' + k: v for k, v in official.items()}},
               tmp_path / 'teacher_checkpoint.pth')
    vt.save_safetensors(model.state_dict(), str(tmp_path / 'model.safetensors'))
    for name in ('timm.pth', 'dinov2_vits14_pretrain.pth', 'teacher_checkpoint.pth',
                 'model.safetensors'):
        fresh = vt.build_vit(V2, img_size=SIZE, seed=7, depth=4, weights=tmp_path / name)
        assert torch.equal(_tokens(fresh), ref), name


def test_weights_official_registers_layout(tmp_path):
    m = vt.build_vit(V2_REG, img_size=SIZE, seed=4, depth=2)
    cls_pos = torch.randn(1, 1, D)
    official = vt.to_official_layout(m, cls_pos=cls_pos)
    assert official['pos_embed'].shape == (1, 50, D) and 'register_tokens' in official
    torch.save(official, tmp_path / 'reg.pth')
    fresh = vt.build_vit(V2_REG, img_size=SIZE, seed=9, depth=2, weights=tmp_path / 'reg.pth')
    a, b = _tokens(fresh, 1), _tokens(m, 1)
    # cls - p + p rounds in float32; the (near-zero) CLS token is what attention sees of it
    assert (a - b).abs().max().item() < 1e-4
    assert (a[:, 5:] - b[:, 5:]).abs().max().item() < 1e-5


def test_weights_official_dinov3_layout(tmp_path):
    m = vt.build_vit(V3, img_size=64, seed=5, depth=2)
    official = vt.to_official_layout(m)
    assert 'storage_tokens' in official and 'blocks.1.ls2.gamma' in official
    torch.save(official, tmp_path / 'dinov3.pth')
    fresh = vt.build_vit(V3, img_size=64, seed=8, depth=2, weights=tmp_path / 'dinov3.pth')
    assert torch.equal(_tokens(fresh, 1, size=64), _tokens(m, 1, size=64))


def test_weights_errors(model, tmp_path):
    sd = vt.to_official_layout(model)
    bad = dict(sd)
    bad['blocks.1.mlp.fc1.weight'] = torch.zeros(10, D)
    torch.save(bad, tmp_path / 'shape.pth')
    with pytest.raises(ValueError, match=r'shape\.pth.*shape mismatch.*blocks\.1\.mlp\.fc1'):
        vt.build_vit(V2, img_size=SIZE, depth=4, weights=tmp_path / 'shape.pth')
    missing = {k: v for k, v in sd.items() if k != 'norm.weight'}
    torch.save(missing, tmp_path / 'missing.pth')
    with pytest.raises(ValueError, match=r'missing\.pth.*missing keys: norm\.weight'):
        vt.build_vit(V2, img_size=SIZE, depth=4, weights=tmp_path / 'missing.pth')
    with pytest.raises(ValueError, match='unexpected keys.*blocks.3'):
        vt.build_vit(V2, img_size=SIZE, depth=3, weights=tmp_path / 'missing.pth')
    with pytest.raises(ValueError, match='not found.*nope.pth'):
        vt.build_vit(V2, img_size=SIZE, depth=4, weights=tmp_path / 'nope.pth')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth'):
        vt.build_vit(V2, img_size=SIZE, depth=4, weights=tmp_path / 'junk.pth')


def test_pos_embed_interpolation_from_518(tmp_path):
    big = vt.build_vit(V2, img_size=518, seed=6, depth=1)
    assert big.pos_embed.shape == (1, 1 + 37 * 37, D)
    torch.save(vt.to_official_layout(big), tmp_path / 'v2_518.pth')
    m = vt.build_vit(V2, img_size=224, depth=1, weights=tmp_path / 'v2_518.pth')
    assert m.pos_embed.shape == (1, 1 + 16 * 16, D)
    assert torch.equal(m.pos_embed[:, 0], big.pos_embed[:, 0])  # CLS position untouched
    grid = m.pos_embed[0, 1:].reshape(16, 16, D)
    src = big.pos_embed[0, 1:].reshape(37, 37, D)
    assert grid.std() > 0.5 * src.std()  # a resampled field, not zeros
    assert _tokens(m, 0, size=224).shape == (1, 257, D)
    reg = vt.build_vit(V2_REG, img_size=518, seed=6, depth=1)
    torch.save(vt.to_official_layout(reg), tmp_path / 'reg_518.pth')
    m = vt.build_vit(V2_REG, img_size=224, depth=1, weights=tmp_path / 'reg_518.pth')
    assert m.pos_embed.shape == (1, 16 * 16, D)


def test_dinov3_missing_from_timm_is_clear(monkeypatch):
    monkeypatch.setattr(vt.timm, 'list_models', lambda *a, **k: [])
    with pytest.raises(RuntimeError, match='DINOv3.*timm'):
        vt.build_vit(V3, img_size=64)
    with pytest.raises(ValueError, match='unsupported'):
        vt.build_vit('resnet50')


# ----------------------------------------------------------------------------- runtime errors

def test_onnx_backbone_missing_or_corrupt_file(tmp_path, exported):
    missing = tmp_path / 'absent.onnx'
    with pytest.raises(ValueError, match='absent.onnx'):
        OnnxVitBackbone(str(missing), SIZE)
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'\x08\x07garbage' * 100)
    with pytest.raises(RuntimeError, match='corrupt.onnx'):
        OnnxVitBackbone(str(corrupt), SIZE)
    with pytest.raises(ValueError, match='input_size'):
        OnnxVitBackbone(exported[1], 224)


# ----------------------------------------------------------------------------- global bundle

class _GlobalNet(torch.nn.Module):
    """Full ViT -> CLS token -> Linear 384 -> 256 -> L2 norm: a [1, 256] global descriptor."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit
        self.head = torch.nn.Linear(D, 256)
        torch.nn.init.normal_(self.head.weight, std=0.05, generator=torch.Generator()
                              .manual_seed(0))

    def forward(self, x):
        cls = self.vit.forward_features(x)[:, 0]
        return torch.nn.functional.normalize(self.head(cls), dim=-1)


def test_global_bundle_through_descriptor_pipeline(tmp_path):
    from skyloc_perception.bundle import BundleError, DescriptorPipeline, load_bundle, \
        write_bundle
    # LayerScale 0.5 (timm's 1e-5 makes a random model's CLS almost image-independent)
    net = _GlobalNet(vt.set_layerscale(vt.build_vit(V2, img_size=SIZE, seed=5, depth=2),
                                       0.5)).eval()
    path = str(tmp_path / 'global.onnx')
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), path, input_names=['image'],
                          output_names=['descriptor'], opset_version=17, dynamo=False)
    out = tmp_path / 'bundle'
    write_bundle(str(out), 'onnx', SIZE, onnx_file=path, kind='global', drop_tokens=0,
                 extra={'output_dim': 256})
    bundle = load_bundle(str(out))
    assert bundle.kind == 'global' and bundle.vocabulary is None and bundle.descriptor_dim == 256
    pipe = DescriptorPipeline(bundle)
    assert pipe.dim == 256 and pipe.backbone.num_patches == 1
    img = _image(4, shape=(SIZE, SIZE, 3))
    vec = pipe.describe(img)
    with torch.no_grad():
        ref = net(torch.from_numpy(preprocess(img, SIZE)))[0].numpy()
    assert vec.shape == (256,) and vec.dtype == np.float32
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    assert float(vec @ ref) > 0.99999
    # two images give two different descriptors (not a constant output)
    assert float(vec @ pipe.describe(_image(5, shape=(SIZE, SIZE, 3)))) < 0.9999
    # a bundle.json whose output_dim does not match the model is refused, naming both
    write_bundle(str(out), 'onnx', SIZE, onnx_file=path, kind='global', drop_tokens=0,
                 extra={'output_dim': 128})
    with pytest.raises(BundleError, match='output_dim 128 does not match'):
        DescriptorPipeline(load_bundle(str(out)))
