"""A few training steps on tiny pair data: loss goes down, checkpoints, metrics, Recall@K."""
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch

from skyloc_training import augment
from skyloc_training.data import load_pairs
from skyloc_training.loss import WeightedInfoNCE
from skyloc_training.model import GeoModel, load_checkpoint
from skyloc_training.train import (PairDataset, build_parser, evaluate, format_results,
                                   lr_factor, main, read_rgb, recall_at_k, train)

SIZE = 28  # px, 2 x 2 patches of 14


def write_tiny_pairs(root, places=8, sources=('synth_a', 'synth_b'), seed=0):
    """``places`` tiles of blocky random texture and a noisy, shifted drone view of each;
    writes root/train.json and root/test.json (Game4Loc field names). Returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, 'drone'), exist_ok=True)
    os.makedirs(os.path.join(root, 'sat'), exist_ok=True)
    records = []
    for i in range(places):
        blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        tile = cv2.resize(blocks, (48, 48), interpolation=cv2.INTER_NEAREST)
        shift = rng.integers(-3, 4, 2)
        drone = np.roll(tile, tuple(shift), axis=(0, 1)).astype(np.int16)
        drone = np.clip(drone + rng.integers(-20, 21, drone.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(root, 'sat', f't{i}.png'), tile)
        cv2.imwrite(os.path.join(root, 'drone', f'd{i}.png'), drone)
        records.append({
            'drone_img_dir': 'drone', 'drone_img_name': f'd{i}.png',
            'drone_loc_x_y': [100.0 * i, 0.0], 'sate_img_dir': 'sat',
            'pair_pos_sate_img_list': [f't{i}.png'],
            'pair_pos_sate_weight_list': [0.6 + 0.04 * i],
            'pair_pos_sate_loc_x_y_list': [[100.0 * i, 0.0]],
            'dataset_source': sources[i % len(sources)]})
    paths = []
    for name in ('train', 'test'):
        path = os.path.join(root, f'{name}.json')
        with open(path, 'w') as f:
            json.dump(records, f)
        paths.append(path)
    return paths


def train_args(train_json, test_json, out, *extra):
    return build_parser().parse_args(
        ['--train-json', train_json, '--test-json', test_json, '--out', str(out),
         '--img-size', str(SIZE), '--depth', '2', '--batch-size', '8', '--lr', '3e-4',
         '--warmup-steps', '1', '--lora-rank', '4', '--no-progress', '--seed', '1', *extra])


def batch_loss(model, records):
    """WeightedInfoNCE of all the records as one batch (no augmentation), model in eval mode."""
    tf = augment.for_source('x', SIZE, train=False)
    drone = torch.stack([torch.from_numpy(tf(read_rgb(r['drone_img']))) for r in records])
    tile = torch.stack([torch.from_numpy(tf(read_rgb(r['positives'][0][0])))
                        for r in records])
    weights = torch.tensor([r['positives'][0][1] for r in records])
    model.eval()
    with torch.no_grad():
        return WeightedInfoNCE()(model(drone), model(tile), model.logit_scale, weights).item()


def test_lr_schedule():
    assert lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(20, 4, 20) == pytest.approx(0.0)


def test_recall_at_k():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    g = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], np.float32)
    # query 1's positive (gallery 0) ranks last; query 2 has two positives, the best is 2nd
    hits, ranks = recall_at_k(q, g, [[0], [0], [0, 1]], ks=(1, 2))
    assert ranks.tolist() == [1.0, 3.0, 2.0]
    assert hits.tolist() == [[True, True], [False, False], [False, True]]


def test_dataset_items_and_same_place_mask(tmp_path):
    train_json, _ = write_tiny_pairs(str(tmp_path), places=4)
    records = load_pairs(train_json).records
    records.append(dict(records[0], duplicate_id=1))  # a multiplier's copy of pair 0
    ds = PairDataset(records, SIZE, train=True, seed=3)
    item = ds[1]
    assert item['drone'].shape == (3, SIZE, SIZE) and item['drone'].dtype == torch.float32
    assert item['weight'].item() == pytest.approx(0.64)
    again = ds[1]
    assert torch.equal(item['drone'], again['drone'])  # same (seed, epoch, index) -> same crop
    ds.set_epoch(1)
    assert not torch.equal(item['drone'], ds[1]['drone'])
    mask = ds.same_place([0, 1, 4], [ds[0]['tile_id'], ds[1]['tile_id'], ds[4]['tile_id']])
    assert mask.tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def test_training_lowers_loss_writes_checkpoints_and_reloads(tmp_path, capsys):
    train_json, test_json = write_tiny_pairs(str(tmp_path / 'data'))
    out = tmp_path / 'run'
    args = train_args(train_json, test_json, out, '--max-steps', '6', '--eval-every', '3')
    summary = train(args)
    assert summary['steps'] == 6
    names = sorted(os.listdir(out))
    assert {'best_overall.pt', 'best_synth_a.pt', 'best_synth_b.pt', 'final.pt',
            'metrics.jsonl'} <= set(names)
    lines = [json.loads(line) for line in open(out / 'metrics.jsonl')]
    steps = [r for r in lines if r['kind'] == 'step']
    evals = [r for r in lines if r['kind'] == 'eval']
    assert [r['step'] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r['step'] for r in evals] == [3, 6]
    assert all(math.isfinite(r['loss']) and r['grad_norm'] >= 0 for r in steps)
    assert steps[0]['lr'] == pytest.approx(3e-4) and steps[-1]['lr'] == pytest.approx(0.0)
    assert max(r['loss'] for r in steps[-2:]) < steps[0]['loss']
    final = evals[-1]['results']
    assert final['overall']['queries'] == 8 and final['synth_a']['queries'] == 4
    assert 0.0 <= final['overall']['R@1'] <= final['overall']['R@5'] <= 1.0
    printed = capsys.readouterr().out
    assert '[OVERALL] Queries: 8, R@1: ' in printed and '[SYNTH_B] Queries: 4' in printed

    records = load_pairs(train_json).records
    loaded = load_checkpoint(out / 'final.pt')
    assert loaded.checkpoint_extra['step'] == 6
    initial = GeoModel(**loaded.config)  # what training started from (seeded init)
    before, after = batch_loss(initial, records), batch_loss(loaded, records)
    assert after < before - 0.03, (before, after)
    # the checkpoint gives the trained model's embeddings
    x = torch.randn(2, 3, SIZE, SIZE)
    trained = summary['model'].eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), trained(x), atol=1e-6)
    # evaluate() on the reloaded model reproduces the final evaluation
    again = evaluate(loaded, load_pairs(test_json).records, progress=False)
    assert again == final
    assert format_results(again).splitlines()[0].startswith('[OVERALL] Queries: 8, R@1: ')


def test_cli_help_and_bad_input(tmp_path, capsys, caplog):
    with pytest.raises(SystemExit) as exc:
        main(['--help'])
    assert exc.value.code == 0
    assert '--grad-checkpointing' in capsys.readouterr().out
    train_json, test_json = write_tiny_pairs(str(tmp_path), places=2)
    rc = main(['--train-json', train_json, '--test-json', test_json, '--out',
               str(tmp_path / 'run'), '--img-size', str(SIZE), '--depth', '1',
               '--batch-size', '4', '--max-steps', '1', '--no-progress'])
    assert rc == 1  # 2 records < one batch of 4: an error line, no traceback
    assert '2 training records, fewer than one batch of 4' in caplog.text
    assert not os.path.exists(tmp_path / 'run' / 'final.pt')
