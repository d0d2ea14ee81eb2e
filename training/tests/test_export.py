"""Bundle export (skyloc_training.export) and the INT8 verification (skyloc_training.verify).

Tiny models: a 2-block DINOv2 ViT-S at 56 px (4 x 4 patches), a GeoModel of it with LoRA whose
B matrices are random (so merging matters) and a 384 -> 64 -> 32 head; a 240 m textured map.
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')
onnx = pytest.importorskip('onnx')

from skyloc_perception.bundle import DescriptorPipeline, file_sha256, load_bundle  # noqa: E402
from skyloc_perception.vit_onnx import preprocess  # noqa: E402
from skyloc_perception.vit_torch import build_vit, TorchVitBackbone, TruncatedVit  # noqa: E402
from test_vocab import tiny_map  # noqa: E402

from skyloc_training import export, verify  # noqa: E402

ARCH = 'vit_small_patch14_dinov2'
SIZE = 56
SMALL = ['--depth', '2', '--img-size', str(SIZE), '--tiles', '12', '--k', '4', '--pca-dim', '8',
         '--footprints', '50', '--calib', '4', '--threads', '1', '--quiet']


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    return tmp_path_factory.mktemp('export')


@pytest.fixture(scope='module')
def map_yaml(work):
    return tiny_map(work)


@pytest.fixture(scope='module')
def local_bundles(work, map_yaml):
    out, fp32 = str(work / 'local_int8'), str(work / 'local_fp32')
    rc = export.main(['--out', out, '--fp32-out', fp32, '--kind', 'local_vlad', '--arch', ARCH,
                      '--layer', '1', '--facet', 'value', '--map', map_yaml] + SMALL)
    assert rc == 0
    return load_bundle(fp32), load_bundle(out)


@pytest.fixture(scope='module')
def checkpoint(work):
    from skyloc_training.model import GeoModel, save_checkpoint
    model = GeoModel(ARCH, img_size=SIZE, depth=2, lora_rank=4, head_dims=(384, 64, 32), seed=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('lora_B'):
                p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    return save_checkpoint(model, str(work / 'geo.pt'))


def _image(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)


def _ops(path):
    return {n.op_type for n in onnx.load(path).graph.node}


def test_local_vlad_export_parity_and_bundle(local_bundles):
    fp32, int8 = local_bundles
    trunc = TruncatedVit(build_vit(ARCH, SIZE, seed=0, depth=2), 1, 'value')
    ref = TorchVitBackbone(trunc)
    pipe32, pipe8 = DescriptorPipeline(fp32), DescriptorPipeline(int8)
    for seed in range(2):
        img = _image(seed)
        a, b = pipe32.backbone.features(img), ref.features(img)
        assert a.shape == (16, 384)
        assert np.abs(a - b).max() < 1e-4  # ONNX FP32 vs PyTorch
    for b, quant in ((fp32, 'none'), (int8, 'dynamic')):
        m = b.meta
        assert (b.kind, m['arch'], m['layer'], m['facet'], m['quantization']) == \
            ('local_vlad', ARCH, 1, 'value', quant)
        assert m['drop_tokens'] == 1 and m['source_sha256'] is None and m['seed'] == 0
        assert m['onnx_torch_max_abs_diff'] < 1e-4
        assert b.vocabulary.shape == (4, 384) and b.pca.dim == 8
    assert np.array_equal(fp32.vocabulary, int8.vocabulary)  # one vocabulary for both
    assert 'MatMulInteger' in _ops(int8.onnx_path) or 'DynamicQuantizeMatMul' in \
        _ops(int8.onnx_path) or 'QAttention' in _ops(int8.onnx_path)
    assert os.path.getsize(int8.onnx_path) * 2 < os.path.getsize(fp32.onnx_path)
    vec = pipe8.describe(_image(3))
    assert vec.shape == (8,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    # the INT8 check: per-patch feature cosine of dynamic INT8 vs FP32
    cos = verify.crop_cosines(pipe32.backbone, pipe8.backbone, [_image(s) for s in range(4)])
    assert cos.mean() >= 0.999 and cos.min() > 0.995


def test_global_export_from_checkpoint_and_database(work, checkpoint, map_yaml):
    from skyloc_localization.database import build_database
    from skyloc_training.model import load_checkpoint
    out, fp32 = str(work / 'global_int8'), str(work / 'global_fp32')
    assert export.main(['--out', out, '--fp32-out', fp32, '--kind', 'global', '--checkpoint',
                        checkpoint, '--threads', '1', '--quiet']) == 0
    b32, b8 = load_bundle(fp32), load_bundle(out)
    assert b32.kind == 'global' and b32.vocabulary is None and b32.descriptor_dim == 32
    m = b8.meta
    assert m['source_sha256'] == file_sha256(checkpoint) and m['lora_merged'] == 8
    assert (m['output_dim'], m['drop_tokens'], m['layer'], m['quantization']) == \
        (32, 0, None, 'dynamic')
    graph = onnx.load(b32.onnx_path).graph
    assert [o.name for o in graph.output] == ['descriptor']
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, 32]
    model = load_checkpoint(checkpoint)  # LoRA not merged: the export must equal it
    pipe32, pipe8 = DescriptorPipeline(b32), DescriptorPipeline(b8)
    img = _image(5)
    with torch.no_grad():
        ref = model(torch.from_numpy(preprocess(img, SIZE)))[0].numpy()
    vec = pipe32.describe(img)
    assert vec.shape == (32,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    assert np.abs(vec - ref).max() < 1e-5
    assert float(pipe8.describe(img) @ vec) > 0.98
    # the localization database builder takes the global bundle as it is
    db = build_database(map_yaml, b8, str(work / 'db'), footprint_m=100.0, stride_m=50.0,
                        bands=((90.0, 110.0),), progress=False)
    assert len(db) == 9 and db.dim == 32 and db.model_id == b8.model_id
    np.testing.assert_allclose(np.linalg.norm(np.asarray(db.descriptors, np.float32), axis=1),
                               1.0, atol=2e-3)


def test_global_export_of_a_bare_backbone_is_mean_pooled(work):
    src = export.load_source(arch=ARCH, img_size=SIZE, depth=2, seed=0)
    path, net, drop = export.export_fp32(src, 'global', str(work / 'bare.onnx'))
    assert drop == 0
    img = _image(7)
    x = torch.from_numpy(preprocess(img, SIZE))
    with torch.no_grad():
        tokens = build_vit(ARCH, SIZE, seed=0, depth=2).forward_features(x)
        ref = torch.nn.functional.normalize(tokens[:, 1:].mean(1), dim=-1)[0].numpy()
    assert export.onnx_torch_max_diff(net, path, [img], SIZE) < 1e-5
    with torch.no_grad():
        assert np.abs(net(x)[0].numpy() - ref).max() < 1e-6


def test_static_quantization_calibrated_on_map_crops(work, map_yaml):
    out = str(work / 'static')
    assert export.main(['--out', out, '--kind', 'local_vlad', '--arch', ARCH, '--layer', '1',
                        '--map', map_yaml, '--quantize', 'static'] + SMALL) == 0
    b = load_bundle(out)
    assert b.meta['quantization'] == 'static'
    assert b.meta['quantization_info'] == {'calibration_images': 4}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= _ops(b.onnx_path)
    ref = TorchVitBackbone(TruncatedVit(build_vit(ARCH, SIZE, seed=0, depth=2), 1, 'value'))
    cos = verify.crop_cosines(ref, DescriptorPipeline(b).backbone, [_image(s) for s in range(3)])
    assert cos.mean() > 0.99


def test_empty_calibration_set_is_refused_before_any_work(work, map_yaml, capsys):
    out = work / 'never'
    # the weights file does not exist: the calibration error comes first, nothing is loaded
    argv = ['--out', str(out), '--arch', ARCH, '--weights', str(work / 'absent.pth'),
            '--layer', '1', '--map', map_yaml, '--quantize', 'static']
    assert export.main(argv + ['--calib', '0']) == 2
    assert 'calibration set is empty: --calib 0' in capsys.readouterr().err
    empty = work / 'empty_calibration'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no images here')
    assert export.main(argv + ['--calibration', str(empty)]) == 2
    err = capsys.readouterr().err
    assert 'calibration set is empty' in err and 'empty_calibration holds no image' in err
    assert not out.exists()
    with pytest.raises(ValueError, match='non-empty calibration set'):
        export.quantize('unused.onnx', str(work / 'x.onnx'), 'static', [])


def test_weights_of_another_architecture_name_the_keys(work, map_yaml, capsys):
    other = build_vit(ARCH, SIZE, seed=0, depth=1)  # one block where the CLI builds two
    path = str(work / 'one_block.pth')
    torch.save(other.state_dict(), path)
    rc = export.main(['--out', str(work / 'wrong'), '--arch', ARCH, '--weights', path,
                      '--layer', '1', '--map', map_yaml, '--quantize', 'none'] + SMALL)
    err = capsys.readouterr().err
    assert rc == 2 and 'one_block.pth' in err
    assert 'missing keys' in err and 'blocks.1.' in err
    assert not (work / 'wrong').exists()
    rc = export.main(['--out', str(work / 'wrong'), '--kind', 'local_vlad', '--arch', ARCH,
                      '--quantize', 'none'] + SMALL)
    assert rc == 2 and 'needs --map' in capsys.readouterr().err


def test_row_cosines_and_stats_by_hand():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [4.0, 3.0]])
    np.testing.assert_allclose(verify.row_cosines(a, b), [0.0, 1.0, 0.0, 24.0 / 25.0])
    s = verify.stats(np.linspace(0.9, 1.0, 101))
    assert s == {'mean': 0.95, 'p1': 0.901, 'min': 0.9}
    with pytest.raises(ValueError, match='one shape'):
        verify.row_cosines(a, b[:2])


def test_verify_report(local_bundles, map_yaml, work, capsys):
    fp32, int8 = local_bundles
    out = work / 'report.json'
    assert verify.main(['--fp32', fp32.path, '--int8', int8.path, '--map', map_yaml,
                        '--queries', '6', '--crops', '4', '--stride', '50', '--latency-runs',
                        '2', '--threads', '1', '--out', str(out), '--quiet']) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert 'feature cosine' in printed and 'Recall@1' in printed
    f = report['feature_cosine']
    assert f['passed'] is True and 0.999 <= f['mean'] <= 1.0 and f['min'] <= f['p1'] <= f['mean']
    r = report['recall']
    assert r['benchmark']['queries'] == 6 and r['benchmark']['tiles'] == 9
    assert r['drop_points'] == pytest.approx(100 * (r['fp32']['recall_at_1'] -
                                                    r['int8']['recall_at_1']), abs=0.01)
    assert r['passed'] == (r['drop_points'] <= 1.0)
    assert report['passed'] == (f['passed'] and r['passed'])
    assert report['int8']['model_id'] == int8.model_id
    assert set(report['latency_ms_1_thread']) == {'fp32', 'int8'}
    # bundles of different kinds are not compared
    assert verify.main(['--fp32', fp32.path, '--int8', str(work / 'global_int8'), '--map',
                        map_yaml, '--out', str(work / 'bad.json')]) == 2
    assert 'not the same model' in capsys.readouterr().err
