"""Replay: a flight recorded from the simulator is played back through the pipeline
(`skyloc run replay --bag DIR`): the player decodes the JPEG camera, the embedder and the
localizer work on the replayed sensors and /clock, and the run gets its bag and report."""

import json
import os
import subprocess
import sys

import yaml

from skyloc_sim import demo
from skyloc_sim.graph import workspace_root
from skyloc_sim.track_plot import bag_topics

ROOT = workspace_root(os.path.dirname(os.path.abspath(__file__)))
DOMAIN = 196 + os.getpid() % 3


def _counts(bag):
    with open(os.path.join(bag, 'metadata.yaml')) as stream:
        meta = yaml.safe_load(stream)['rosbag2_bagfile_information']
    return {t['topic_metadata']['name']: t['message_count']
            for t in meta['topics_with_message_count']}


def test_replay_of_a_recorded_flight(tmp_path):
    params = demo._sim_params(ROOT)
    world = demo.prepare_world(ROOT, 'procedural', params)
    bundle = demo.prepare_bundle(ROOT, world)
    database = demo.prepare_database(ROOT, world, bundle)
    # a flight to record: the simulator and the open-loop lawnmower pilot only
    graph = tmp_path / 'flight.yaml'
    graph.write_text(yaml.safe_dump({
        'graph': 'flight', 'description': 'sim + demo_pilot (a flight to record)',
        'arguments': {'params_file': {'default': 'config/sim.yaml', 'description': 'p'},
                      'use_sim_time': {'default': 'true', 'description': 't'},
                      'world': {'default': world, 'description': 'w'},
                      'rate': {'default': '3.0', 'description': 'r'}},
        'nodes': [{'package': 'skyloc_sim', 'executable': 'sim', 'name': 'sim',
                   'arg_parameters': ['world', 'rate'], 'parameters': {'use_sim_time': False}},
                  {'package': 'skyloc_sim', 'executable': 'demo_pilot',
                   'name': 'demo_pilot',      # no localizer to wait for: off at once
                   'parameters': {'wait_for': '', 'climb_rate': 4.0}}]}))
    flight = tmp_path / 'flight'
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    rec = subprocess.run([sys.executable, '-m', 'skyloc_sim.runner', 'run', str(graph),
                          '--root', ROOT, '--domain-id', str(DOMAIN), '--sim-duration', '60',
                          '--record', str(flight / 'bag'), '--log-dir', str(flight / 'logs')],
                         env=env, capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, rec.stdout[-3000:]
    recorded = _counts(str(flight / 'bag'))
    assert recorded.get('/camera/image_raw/compressed', 0) >= 20, recorded
    # the replay, into its own run folder
    out = tmp_path / 'replay'
    rep = subprocess.run([sys.executable, '-m', 'skyloc_sim.runner', 'run', 'replay',
                          '--root', ROOT, '--domain-id', str(DOMAIN + 3),
                          '--bag', str(flight / 'bag'), '--record', str(out / 'bag'),
                          '--log-dir', str(out / 'logs'), 'rate:=2.0',
                          f'bundle:={bundle}', f'database:={database}'],
                         env=env, capture_output=True, text=True, timeout=300)
    text = rep.stdout + rep.stderr
    assert rep.returncode == 0, text[-3000:]
    assert '/replay/progress reached 100' in text, text[-3000:]
    replayed = _counts(str(out / 'bag'))
    # the embedder saw decoded frames (it queries only once airborne high enough) and the
    # localizer fused the replayed IMU and barometer on the bag's clock
    assert replayed.get('/skyloc/descriptor', 0) >= 3, replayed
    assert replayed.get('/skyloc/pose', 0) >= 100, replayed
    assert '/sim/ground_truth' in bag_topics(str(out / 'bag'))
    report = json.loads((out / 'report.json').read_text())
    assert (out / 'report.html').is_file()
    assert report['map_yaml'] == world
    with open(out / 'run.json') as stream:
        assert json.load(stream)['replayed_bag'] == str(flight / 'bag')
