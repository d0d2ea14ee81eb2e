"""Phase 2 (skyloc_training.phase2): INT4 weight-only, mixed precision, distillation, report."""

import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')
onnx = pytest.importorskip('onnx')

from onnx import helper, numpy_helper, TensorProto  # noqa: E402
import onnxruntime as ort  # noqa: E402
from skyloc_perception import vit_torch as vt  # noqa: E402
from skyloc_perception.vit_onnx import OnnxVitBackbone  # noqa: E402
from test_vocab import tiny_map  # noqa: E402

from skyloc_training import export, phase2, verify  # noqa: E402

ARCH = 'vit_small_patch14_dinov2'
SIZE = 56
# student_int8 is quantize_int8_cpu of the student (3 s here): left to the CLI runs
VARIANTS = [v for v in phase2.VARIANTS if v != 'student_int8']


def _image(seed):
    return np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)


def _run(path, x):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=opts, providers=['CPUExecutionProvider'])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory):
    """FP32 ONNX of a 3-block model cut at layer 2 (value), LayerScale 0.5 (mixes tokens)."""
    d = tmp_path_factory.mktemp('phase2')
    model = vt.set_layerscale(vt.build_vit(ARCH, SIZE, seed=0, depth=3), 0.5)
    trunc = vt.TruncatedVit(model, 2, 'value')
    return d, vt.export_onnx(trunc, str(d / 'fp32.onnx'), SIZE)


def test_int4_weight_only_packs_4_bit_blocks(tmp_path):
    # one MatMul [1, 70] @ [70, 5]: K = 70 is not a multiple of the block (padded to 96)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((70, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node('MatMul', ['x', 'w'], ['y'], name='mm')], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 70])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(w, 'w')])
    src = str(tmp_path / 'mm.onnx')
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), src)
    info = phase2.quantize_int4_weight_only(src, str(tmp_path / 'mm4.onnx'), block_size=32)
    assert info == {'quantized': 1, 'kept': 0, 'block_size': 32}
    m = onnx.load(str(tmp_path / 'mm4.onnx'))
    node = m.graph.node[0]
    assert node.op_type == 'MatMulNBits' and node.domain == 'com.microsoft'
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert 'w' not in inits  # the FP32 weight is gone
    packed, scales = inits[node.input[1]], inits[node.input[2]].reshape(5, 3)
    assert packed.shape == (5, 3, 16) and packed.dtype == np.uint8
    # unpack: low nibble first, symmetric around 8 (codes -8..7 x scale, the block's largest
    # |w| at -8): weights round to the nearest step, those clipped at +7 within one step
    q = np.stack([packed & 15, packed >> 4], axis=-1).reshape(5, 3, 32).astype(np.float32)
    deq = ((q - 8.0) * scales[:, :, None]).reshape(5, 96)[:, :70].T
    step = np.repeat(np.abs(scales), 32, axis=1)[:, :70].T
    err = np.abs(deq - w)
    assert np.all(err <= step + 1e-6) and np.mean(err <= step / 2 + 1e-6) > 0.95
    assert np.abs(deq - w).max() > 0  # really quantized
    x = rng.standard_normal((1, 70)).astype(np.float32)
    # accuracy_level 4 (the default) lets ONNX Runtime quantize x to int8 as well: ~1% off
    y = _run(str(tmp_path / 'mm4.onnx'), x)
    assert np.abs(y - x @ deq).max() < 0.02 * np.abs(x @ deq).max()
    # accuracy_level 0: FP32 activations, exactly x @ dequantized W
    phase2.quantize_int4_weight_only(src, str(tmp_path / 'mm4f.onnx'), accuracy_level=0)
    y = _run(str(tmp_path / 'mm4f.onnx'), x)
    assert np.abs(y - x @ deq).max() < 1e-4 * np.abs(x @ deq).max()


def test_int4_and_mixed_precision_on_a_vit(tiny_onnx):
    d, fp32 = tiny_onnx
    int4 = str(d / 'int4.onnx')
    info = phase2.quantize_int4_weight_only(fp32, int4)
    ops = [n.op_type for n in onnx.load(int4).graph.node]
    # 2 blocks x (qkv, proj, fc1, fc2) + the facet projection; Q.K^T and A.V stay MatMul
    assert info['quantized'] == ops.count('MatMulNBits') == 9 and info['kept'] == 4
    mixed = str(d / 'mixed.onnx')
    minfo = phase2.quantize_mixed(fp32, mixed)
    assert minfo == {'int8_matmuls': 4, 'fp32_matmuls': 9}  # fc1, fc2 of 2 blocks
    g = onnx.load(mixed).graph
    int8_ops = ('MatMulInteger', 'DynamicQuantizeMatMul')
    int8_nodes = [n.name for n in g.node if n.op_type in int8_ops]
    assert len(int8_nodes) == 4 and all('/mlp/' in n for n in int8_nodes)
    assert all('/mlp/' not in n.name for n in g.node if n.op_type == 'MatMul')
    ref = OnnxVitBackbone(fp32, SIZE)
    crops = [_image(s) for s in range(3)]
    assert verify.crop_cosines(ref, OnnxVitBackbone(int4, SIZE), crops).mean() > 0.99
    assert verify.crop_cosines(ref, OnnxVitBackbone(mixed, SIZE), crops).mean() > 0.999


@pytest.mark.parametrize('width', [None, 64])
def test_distillation_lowers_the_loss_and_exports(tiny_onnx, width):
    d, _ = tiny_onnx
    torch.manual_seed(0)
    src = export.load_source(arch=ARCH, img_size=SIZE, depth=3, seed=0)
    vt.set_layerscale(src.backbone, 0.5)
    _, teacher, _ = export.export_fp32(src, 'local_vlad', str(d / f't{width}.onnx'), 2, 'value')
    student, info = phase2.make_student(src, 'local_vlad', 2, 'value', depth=5, width=width)
    assert info['depth'] == 1  # capped below the teacher's 2 blocks
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert student(x).shape == teacher(x).shape == (2, 17, 384)
    result = phase2.distill(student, teacher, [_image(s) for s in range(8)], SIZE, steps=6,
                            batch=4, lr=1e-3, progress=False)
    assert result['loss_last'] < result['loss_first']
    path = phase2.export_student(student, 'local_vlad', str(d / f's{width}.onnx'), SIZE)
    with torch.no_grad():
        ref = student(x[:1]).numpy()
    assert np.abs(_run(path, x[:1].numpy()) - ref).max() < 1e-4
    # the teacher is untouched by the student's training (its blocks were copied)
    assert all(not p.requires_grad or p.grad is None for p in src.backbone.parameters())


def test_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert float(phase2.distillation_loss(a, b)) == pytest.approx(0.5)  # (1 - 0 + 1 - 1) / 2


def test_phase2_cli_report(tmp_path, capsys):
    map_yaml = tiny_map(tmp_path)
    out = tmp_path / 'p2'
    rc = phase2.main(['--arch', ARCH, '--depth', '3', '--img-size', str(SIZE), '--layer', '2',
                      '--map', map_yaml, '--out', str(out), '--tiles', '10', '--k', '4',
                      '--pca-dim', '8', '--footprints', '50', '--queries', '4', '--crops', '3',
                      '--student-depth', '1', '--distill-steps', '2', '--distill-crops', '4',
                      '--batch', '2', '--latency-runs', '1', '--threads', '1', '--quiet',
                      '--variants', ','.join(VARIANTS)])
    assert rc == 0
    report = json.loads((out / 'phase2.json').read_text())
    assert list(report['variants']) == list(VARIANTS)
    for name, row in report['variants'].items():
        assert row['size_mb'] > 0 and row['latency_ms_1_thread'] > 0
        assert 0.9 < row['cosine_vs_fp32']['mean'] <= 1.0 + 1e-6
        assert 0.0 <= row['recall_at_1'] <= 1.0
        assert (out / name / 'bundle.json').is_file()
    v = report['variants']
    assert v['fp32']['cosine_vs_fp32']['mean'] == pytest.approx(1.0, abs=1e-6)
    assert v['int4_weight_only']['size_mb'] < v['int8_dynamic']['size_mb'] < v['fp32']['size_mb']
    assert v['student_fp32']['size_mb'] < v['fp32']['size_mb']
    assert report['distillation']['depth'] == 1 and report['distillation']['steps'] == 2
    assert 'int4_weight_only' in capsys.readouterr().out
    assert phase2.main(['--arch', ARCH, '--map', str(tmp_path / 'absent.yaml'), '--out',
                        str(out)]) == 2
    assert 'absent.yaml' in capsys.readouterr().err
    assert phase2.main(['--arch', ARCH, '--map', map_yaml, '--out', str(out), '--variants',
                        'fp32,int3']) == 2
    assert "unknown variants ['int3']" in capsys.readouterr().err


def test_global_student_of_a_checkpoint(tmp_path):
    from skyloc_training.model import GeoModel, save_checkpoint
    torch.manual_seed(0)
    model = GeoModel(ARCH, img_size=SIZE, depth=2, lora_rank=4, head_dims=(384, 64, 32), seed=1)
    vt.set_layerscale(model.backbone, 0.5)  # the checkpoint rebuilds it: set on the source
    ckpt = save_checkpoint(model, str(tmp_path / 'geo.pt'))
    src = export.load_source(checkpoint=ckpt)
    vt.set_layerscale(src.backbone, 0.5)
    teacher = export.global_network(src)
    student, info = phase2.make_student(src, 'global', depth=1)
    assert info == {'student': 'teacher blocks', 'teacher_blocks': [1], 'depth': 1}
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        out = student(x)
        assert out.shape == teacher(x).shape == (3, 32)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)
    result = phase2.distill(student, teacher, [_image(s) for s in range(6)], SIZE, steps=5,
                            batch=3, lr=1e-3, progress=False)
    assert result['loss_last'] < result['loss_first']
    path = phase2.export_student(student, 'global', str(tmp_path / 'student.onnx'), SIZE)
    with torch.no_grad():
        ref = student(x[:1]).numpy()
    assert np.abs(_run(path, x[:1].numpy()) - ref).max() < 1e-5
