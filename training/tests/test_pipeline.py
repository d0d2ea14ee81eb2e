"""`make model` end to end on a tiny configuration, and make demo's choice of its bundle."""
import json
import os

import pytest

pytest.importorskip('torch')
pytest.importorskip('timm')


def _tiny_world(tmp_path):
    from skyloc_sim.world import procedural_world
    return procedural_world(str(tmp_path / 'worlds'), seed=3, size_m=300.0, resolution=1.0,
                            conditions=('summer',), log=lambda m: None)


def test_pipeline_tiny_run_writes_bundles_report_and_selection(tmp_path):
    from skyloc_perception.bundle import DescriptorPipeline, load_bundle
    from skyloc_sim.demo import trained_bundle
    from skyloc_training import pipeline
    import numpy as np
    world = _tiny_world(tmp_path)
    out = tmp_path / 'model'
    code = pipeline.main(['--out', str(out), '--world', world, '--cache-root', str(tmp_path),
                          '--depth', '2', '--img-size', '42', '--pairs', '24',
                          '--real-pairs', '0', '--steps', '2', '--batch-size', '4',
                          '--queries', '4', '--vocab-tiles', '8', '--stride', '100',
                          '--layer', '1', '--threads', '1', '--quiet'])
    assert code == 0
    report = json.loads((out / 'report.json').read_text())
    assert set(report['bundles']) == {'global', 'local_vlad'}
    for kind, paths in report['bundles'].items():
        int8, fp32 = load_bundle(paths['int8']), load_bundle(paths['fp32'])
        assert int8.kind == kind and int8.backend == 'onnx' and int8.input_size == 42
        assert int8.meta['quantization'] == 'dynamic' and fp32.meta['quantization'] == 'none'
        vector = DescriptorPipeline(int8).describe(np.full((42, 42, 3), 90, np.uint8))
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
        check = report['verification'][kind]
        assert 0.9 < check['feature_cosine']['mean'] <= 1.0 + 1e-6
        assert 'drop_points' in check['recall']
    results = report['comparison']['results']
    assert set(results) == {'default', 'global_int8', 'local_vlad_int8'}
    assert results['default']['backend'] == 'rootsift'
    assert all(0.0 <= r['recall_at_1'] <= 1.0 for r in results.values())
    assert report['loss_first_last'] is not None
    table = (out / 'report.md').read_text()
    assert '| global_int8 |' in table and '| local_vlad |' in table and 'Selected' in table
    # the selection is written beside the run and where make demo looks for it
    selected = json.loads((out / 'selected.json').read_text())
    pointer = json.loads((tmp_path / '.cache' / 'models' / 'selected.json').read_text())
    assert pointer['run'] == str(out) and pointer['selected'] == selected['selected']
    best = max(r['recall_at_1'] for n, r in results.items() if n != 'default')
    if selected['bundle'] is None:
        assert best <= results['default']['recall_at_1'] or 'verification' in \
            selected['reason']
        assert trained_bundle(str(tmp_path), world, log=lambda m: None) is None
    else:
        assert selected['recall_at_1'] > results['default']['recall_at_1']
        assert trained_bundle(str(tmp_path), world, log=lambda m: None) == selected['bundle']


def test_demo_uses_a_selected_bundle_only_for_its_world(tmp_path):
    """make demo takes make model's bundle when the selection names one for this world."""
    from skyloc_perception.bundle import write_bundle
    from skyloc_sim.demo import trained_bundle
    import numpy as np
    bundle = str(tmp_path / 'b')
    write_bundle(bundle, 'rootsift', 64, vocabulary=np.eye(4, 128, dtype=np.float32))
    pointer = tmp_path / '.cache' / 'models' / 'selected.json'
    pointer.parent.mkdir(parents=True)
    world = str(tmp_path / 'world.yaml')
    lines = []
    assert trained_bundle(str(tmp_path), world, log=lines.append) is None   # no make model
    pointer.write_text(json.dumps({'selected': 'global_int8', 'bundle': bundle,
                                   'map_yaml': world, 'reason': 'test'}))
    assert trained_bundle(str(tmp_path), world, log=lines.append) == bundle
    assert trained_bundle(str(tmp_path), str(tmp_path / 'other.yaml'), log=lines.append) \
        is None
    assert 'another world' in lines[-1]
    pointer.write_text(json.dumps({'selected': 'default', 'bundle': None, 'map_yaml': world,
                                   'reason': 'best trained Recall@1 0.1 <= default 0.5'}))
    assert trained_bundle(str(tmp_path), world, log=lines.append) is None
    assert 'kept the default' in lines[-1]
    os.remove(os.path.join(bundle, 'vocabulary.npy'))        # a broken bundle: default
    pointer.write_text(json.dumps({'selected': 'x', 'bundle': bundle, 'map_yaml': world}))
    assert trained_bundle(str(tmp_path), world, log=lines.append) is None
    assert 'cannot be used' in lines[-1]
