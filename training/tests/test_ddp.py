"""DistributedDataParallel on CPU: torchrun, 2 processes, gloo, a few steps."""
import json
import os
import subprocess
import sys

from test_train import SIZE, write_tiny_pairs

from skyloc_training.model import load_checkpoint


def test_torchrun_two_cpu_processes(tmp_path):
    train_json, test_json = write_tiny_pairs(str(tmp_path / 'data'))
    out = tmp_path / 'run'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
           '2', '-m', 'skyloc_training.train', '--train-json', train_json,
           '--test-json', test_json, '--out', str(out), '--img-size', str(SIZE),
           '--depth', '1', '--batch-size', '2', '--lora-rank', '2', '--max-steps', '3',
           '--warmup-steps', '1', '--threads', '1', '--no-progress', '--device', 'cpu']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # both ranks ended
    lines = [json.loads(line) for line in open(out / 'metrics.jsonl')]
    steps = [r for r in lines if r['kind'] == 'step']
    # rank 0 alone logs: one line per step, not two
    assert [r['step'] for r in steps] == [1, 2, 3]
    check = [r for r in lines if r['kind'] == 'ddp_check']
    assert len(check) == 1 and check[0]['world_size'] == 2
    assert check[0]['max_abs_diff'] == 0.0  # gradients were averaged: ranks stay identical
    assert sorted(p for p in os.listdir(out) if p.endswith('.pt')) == \
        ['best_overall.pt', 'best_synth_a.pt', 'best_synth_b.pt', 'final.pt']
    model = load_checkpoint(out / 'final.pt')
    assert model.checkpoint_extra['step'] == 3
    assert model.config['depth'] == 1
    assert 'Queries: 8' in proc.stdout
