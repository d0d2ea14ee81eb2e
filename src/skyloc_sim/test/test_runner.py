"""`skyloc run` (graph runner) and `skyloc check-launch`, as real processes."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from skyloc_sim.graph import GraphError, load_graph
from skyloc_sim.launch_check import check_launch_file
from skyloc_sim.world import save_world

WORKSPACE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))


def make_root(tmp_path, world, sim_params=None, extra_nodes=()):
    """A workspace-like folder with config/graphs/t.yaml and config/t.yaml."""
    (tmp_path / 'config' / 'graphs').mkdir(parents=True)
    graph = {
        'graph': 't', 'description': 'test graph',
        'arguments': {
            'params_file': {'default': 'config/t.yaml', 'description': 'params'},
            'world': {'default': world, 'description': 'world'},
            'use_sim_time': {'default': 'true', 'description': 'sim time'},
            'rviz': {'default': 'false', 'description': 'rviz'}},
        'nodes': [{'package': 'skyloc_sim', 'executable': 'sim', 'name': 'sim',
                   'arg_parameters': ['world']},
                  {'package': 'skyloc_sim', 'executable': 'demo_pilot', 'name': 'pilot'}]
        + list(extra_nodes)}
    (tmp_path / 'config' / 'graphs' / 't.yaml').write_text(yaml.safe_dump(graph))
    params = {'sim': {'ros__parameters': dict({'rate': 2.0, 'start': [0.0, 0.0, 0.0, 0.0]},
                                              **(sim_params or {}))},
              'pilot': {'ros__parameters': {'altitude': 20.0, 'climb_rate': 4.0}}}
    (tmp_path / 'config' / 't.yaml').write_text(yaml.safe_dump(params))
    return str(tmp_path)


@pytest.fixture(scope='module')
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp('rw')
    rng = np.random.default_rng(1)
    image = np.repeat(np.repeat(rng.integers(0, 255, (50, 50, 3), np.uint8), 8, 0), 8, 1)
    return save_world(str(out), image, np.zeros((400, 400), np.float32), 0.5,
                      (-100.0, -100.0, 0.0), (47.0, 8.0))


def skyloc(args, root, domain, timeout=90):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.run([sys.executable, '-m', 'skyloc_sim.runner', 'run', 't', '--root',
                           root, '--domain-id', str(domain)] + args, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_runner_starts_graph_prefixes_output_records_and_stops(tmp_path, small_world):
    root = make_root(tmp_path / 'ws', small_world)
    bag = str(tmp_path / 'bag')
    code, out = skyloc(['--duration', '6', '--record', bag], root, 71)
    assert code == 0, out
    assert '[sim' in out and '[pilot' in out               # per-node prefixes
    assert 'takeoff at' in out                            # the pilot ran on sim time
    assert "summary: graph 't' ran" in out and '0 died -> ok' in out
    from skyloc_sim.track_plot import bag_topics, read_track
    topics = bag_topics(bag)
    assert '/camera/image_raw/compressed' in topics and '/camera/image_raw' not in topics
    track = read_track(bag)
    assert len(track) > 100 and track[-1, 3] > 5.0        # it climbed (rate 2x, 4 m/s)


def test_runner_exits_nonzero_when_a_node_dies(tmp_path, small_world):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('image: nothing.png\nresolution: 0.5\n')
    root = make_root(tmp_path / 'ws', str(bad))
    code, out = skyloc(['--duration', '20'], root, 72)
    assert code == 1, out
    assert "node 'sim' died (exit code 1)" in out
    assert "field 'image' names a file that does not exist" in out
    assert '1 died: sim -> FAILED' in out


def test_single_process_runs_all_nodes_in_one_process(tmp_path, small_world):
    root = make_root(tmp_path / 'ws', small_world)
    code, out = skyloc(['--duration', '5', '--single-process'], root, 73)
    assert code == 0, out
    assert '2 nodes in one process: sim, pilot' in out
    assert 'takeoff at' in out
    bad = tmp_path / 'bad.yaml'
    bad.write_text('image: nothing.png\nresolution: 0.5\n')
    root = make_root(tmp_path / 'ws2', str(bad))
    code, out = skyloc(['--duration', '5', '--single-process'], root, 74)
    assert code == 1 and 'FAILED' in out, out


def test_runner_rejects_unknown_arguments(tmp_path, small_world):
    root = make_root(tmp_path / 'ws', small_world)
    code, out = skyloc(['colour:=blue'], root, 75)
    assert code == 2 and "unknown argument 'colour'" in out


def test_graph_loader_validates(tmp_path):
    path = tmp_path / 'config' / 'graphs'
    path.mkdir(parents=True)
    (path / 'g.yaml').write_text(yaml.safe_dump({
        'graph': 'g', 'arguments': {'params_file': {'default': 'x', 'description': 'd'}},
        'nodes': []}))
    with pytest.raises(GraphError, match="argument 'use_sim_time' must be declared"):
        load_graph('g', str(tmp_path))
    with pytest.raises(GraphError, match='graph file not found'):
        load_graph('nope', str(tmp_path))


def test_repository_launch_files_pass_the_static_check():
    for name in ('sim', 'pi', 'webots'):
        path = os.path.join(WORKSPACE, 'launch', f'{name}.launch.py')
        assert os.path.isfile(path), path
        assert check_launch_file(path, WORKSPACE) == [], name


def test_static_check_catches_drift(tmp_path):
    root = tmp_path / 'ws'
    shutil.copytree(os.path.join(WORKSPACE, 'config'), root / 'config')
    shutil.copytree(os.path.join(WORKSPACE, 'launch'), root / 'launch')
    (root / 'src').symlink_to(os.path.join(WORKSPACE, 'src'))
    launch = root / 'launch' / 'sim.launch.py'
    assert check_launch_file(str(launch), str(root)) == []
    # a node in the graph whose executable does not exist
    graph = yaml.safe_load((root / 'config' / 'graphs' / 'sim.yaml').read_text())
    graph['nodes'].append({'package': 'skyloc_sim', 'executable': 'nonexistent', 'name': 'x'})
    (root / 'config' / 'graphs' / 'sim.yaml').write_text(yaml.safe_dump(graph))
    problems = check_launch_file(str(launch), str(root))
    assert any("has no executable 'nonexistent'" in p for p in problems), problems
    # a launch file that forgets the graph and declares nothing
    launch.write_text('from launch import LaunchDescription\n\n\n'
                      'def generate_launch_description():\n'
                      '    return LaunchDescription([])\n')
    problems = check_launch_file(str(launch), str(root))
    assert any("does not declare argument 'world'" in p for p in problems), problems
    assert any('nodes differ' in p for p in problems), problems
    # a params file that does not exist
    os.remove(root / 'config' / 'sim.yaml')
    problems = check_launch_file(str(launch), str(root))
    assert any('params file' in p and 'does not exist' in p for p in problems), problems
