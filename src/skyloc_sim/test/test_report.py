"""Tests of the mission report (a hand-made bag with known answers) and the resource sampler."""

import json
import os
import re
import subprocess
import time
from types import SimpleNamespace

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid, Odometry, Path
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from std_msgs.msg import Float32, String

from skyloc_sim.geo import write_map_yaml
from skyloc_sim.resources import process_tree, read_memory, read_stat, ResourceSampler

T0 = 1000.0          # first stamp, s
DURATION = 60.0      # truth from T0 to T0 + 60 s at 10 Hz
OFFSET_M = 3.0       # the estimate is 3 m north of the truth while airborne
VAR_X, VAR_Y = 4.0, 5.0   # -> 2-sigma bound 2 * sqrt(9) = 6 m


def _stamp(msg, t):
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int(round((t - int(t)) * 1e9))
    msg.header.frame_id = 'map'
    return msg


def _truth_xy(rel):
    return 10.0 + 2.0 * rel, 20.0


def _odometry(t, x, y, z, var=None):
    msg = _stamp(Odometry(), t)
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = x, y, z
    msg.pose.pose.orientation.w = 1.0
    if var is not None:
        cov = [0.0] * 36
        cov[0], cov[7], cov[14] = var[0], var[1], 1.0
        msg.pose.covariance = cov
    return msg


def _grid(t, data, resolution=5.0, origin=(0.0, 0.0)):
    msg = _stamp(OccupancyGrid(), t)
    msg.info.resolution = resolution
    msg.info.height, msg.info.width = data.shape
    msg.info.origin.position.x, msg.info.origin.position.y = origin
    msg.info.origin.orientation.w = 1.0
    msg.data = data.astype(np.int8).reshape(-1).tolist()
    return msg


def _path(t, points):
    msg = _stamp(Path(), t)
    for x, y in points:
        pose = _stamp(PoseStamped(), t)
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        pose.pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg


def _diagnostics(t, state):
    msg = _stamp(DiagnosticArray(), t)
    msg.status = [
        DiagnosticStatus(name='localizer: pose', values=[KeyValue(key='state', value=state)]),
        # another node's status with a 'state' key: not the localizer's, ignored
        DiagnosticStatus(name='mission', values=[KeyValue(key='state', value='LOST')]),
    ]
    return msg


def _write_bag(bag_dir, messages):
    """messages: [(topic, type name, t, rclpy message)] -> a rosbag2 MCAP folder."""
    typestore = get_typestore(Stores.LATEST)
    with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msgtype, t, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[topic], int(round(t * 1e9)), serialize_message(msg))


def _truth_and_estimate():
    messages = []
    for k in range(int(DURATION * 10) + 1):   # truth, 10 Hz; on the ground for the first 1 s
        rel = k / 10.0
        x, y = _truth_xy(rel)
        z = 0.0 if rel < 1.0 else 50.0
        messages.append(('/sim/ground_truth', 'nav_msgs/msg/Odometry', T0 + rel,
                         _odometry(T0 + rel, x, y, z)))
    for k in range(int(DURATION * 5) + 1):    # estimate, 5 Hz
        rel = k / 5.0
        x, y = _truth_xy(rel)
        # 40 m off on the ground (must not count), 3 m north once airborne
        offset = 40.0 if rel < 1.0 else OFFSET_M
        messages.append(('/skyloc/odometry', 'nav_msgs/msg/Odometry', T0 + rel,
                         _odometry(T0 + rel, x, y + offset, 50.0, (VAR_X, VAR_Y))))
    return messages


@pytest.fixture
def full_run(tmp_path):
    """A run folder with every topic of the report, a 200 m map and a resources.json."""
    run = tmp_path / 'run'
    (run / 'logs').mkdir(parents=True)
    messages = _truth_and_estimate()
    plan = [(20.0, 20.0), (180.0, 20.0), (180.0, 60.0), (20.0, 60.0)]
    messages += [('/coverage/path', 'nav_msgs/msg/Path', T0 + 10.0, _path(T0 + 10.0, plan)),
                 ('/coverage/path', 'nav_msgs/msg/Path', T0 + 30.0,
                  _path(T0 + 30.0, plan[:2] + [(150.0, 40.0)]))]
    messages += [('/coverage/progress', 'std_msgs/msg/Float32', T0 + rel, Float32(data=value))
                 for rel, value in ((20.0, 42.5), (50.0, 97.25))]
    coverage = np.zeros((20, 40), np.int8)
    coverage[:, :20] = 100
    coverage[:2, :] = -1
    messages.append(('/coverage/grid', 'nav_msgs/msg/OccupancyGrid', T0 + 55.0,
                     _grid(T0 + 55.0, coverage)))
    for i in range(5):
        belief = np.zeros((40, 40), np.int8)
        belief[5 + 5 * i, 5:10] = 100
        messages.append(('/skyloc/probability_map', 'nav_msgs/msg/OccupancyGrid',
                         T0 + 5.0 + 12.0 * i, _grid(T0 + 5.0 + 12.0 * i, belief)))
    for rel in range(0, 60, 2):
        state = 'LOST' if 20 <= rel < 30 else 'OK'
        messages.append(('/diagnostics', 'diagnostic_msgs/msg/DiagnosticArray', T0 + rel,
                         _diagnostics(T0 + rel, state)))
    for rel, text in ((0.5, 'TAKEOFF: climbing'), (4.0, 'SURVEY: plan ready'),
                      (52.0, 'LAND: back home'), (55.0, 'DONE: landed 0.4 m from home')):
        messages.append(('/mission/state', 'std_msgs/msg/String', T0 + rel, String(data=text)))
    _write_bag(run / 'bag', messages)

    image = np.full((200, 200, 3), 90, np.uint8)
    image[80:120, 80:120] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / 'ortho.png'), image)
    map_yaml = write_map_yaml(str(tmp_path / 'world.yaml'), 'ortho.png', 1.0)
    with open(run / 'run.json', 'w') as stream:
        json.dump({'world': map_yaml}, stream)
    resources = {'sim': {'cpu_s': 12.5, 'cpu_percent_mean': 41.0, 'peak_rss_mb': 123.4,
                         'rss_first_mb': 80.0, 'rss_last_mb': 120.0, 'samples': 30},
                 'localizer': {'cpu_s': 30.0, 'cpu_percent_mean': 99.0, 'peak_rss_mb': 456.7,
                               'rss_first_mb': 300.0, 'rss_last_mb': 450.0, 'samples': 30}}
    with open(run / 'logs' / 'resources.json', 'w') as stream:
        json.dump(resources, stream)
    return run


def _assert_offline(page):
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert '<script' not in page.lower() and '@import' not in page and '<link' not in page


def test_report_figures_and_html(full_run):
    from skyloc_sim.report import summary_lines, write_report

    figures = write_report(str(full_run))   # map from run.json, default out
    err = figures['error']
    # airborne only: the 40 m ground offset (first second) is left out; exactly 3 m remains
    assert err['rmse_m'] == pytest.approx(OFFSET_M, abs=1e-6)
    assert err['median_m'] == pytest.approx(OFFSET_M, abs=1e-6)
    assert err['p95_m'] == pytest.approx(OFFSET_M, abs=1e-6)
    assert err['max_m'] == pytest.approx(OFFSET_M, abs=1e-6)
    assert err['samples'] == int(DURATION * 10) + 1 - 10   # truth samples from 1.0 s to 60 s
    assert err['within_2sigma_percent'] == pytest.approx(100.0)   # 3 m < 6 m
    assert figures['estimate_topic'] == '/skyloc/odometry'
    assert figures['coverage_percent'] == pytest.approx(97.25)
    assert figures['coverage_source'] == '/coverage/progress'
    assert figures['replans'] == 1 and figures['plans_published'] == 2
    replan = figures['replan_events'][0]
    assert replan['t'] == pytest.approx(30.0)
    assert (replan['x'], replan['y']) == pytest.approx(_truth_xy(30.0))
    assert figures['path_length_m'] == pytest.approx(2.0 * DURATION)
    assert figures['mission_time_s'] == pytest.approx(54.5)   # TAKEOFF at 0.5 s, DONE at 55 s
    assert [s['state'] for s in figures['localizer_states']] == ['OK', 'LOST', 'OK']
    assert [s['t'] for s in figures['localizer_states']] == pytest.approx([0.0, 20.0, 30.0])
    assert figures['localizer_state_seconds']['LOST'] == pytest.approx(10.0)
    assert [s['state'] for s in figures['mission_states']] == \
        ['TAKEOFF', 'SURVEY', 'LAND', 'DONE']
    assert figures['resources']['localizer']['peak_rss_mb'] == pytest.approx(456.7)
    assert figures['map_yaml'].endswith('world.yaml')
    assert not figures['notes'], figures['notes']

    html_path = full_run / 'report.html'
    assert figures['report'] == str(html_path)
    page = html_path.read_text()
    for text in ('3.00 m', '97.25 %', '120 m', '54.5 s', '456.7', '123.4', 'localizer',
                 'LOST at 20 s'):
        assert text in page, text
    assert re.search(r'<td>replans</td><td class="num">1</td>', page)
    _assert_offline(page)
    # map, error plot, 4 probability snapshots, coverage grid
    assert page.count('src="data:image/png;base64,') == 7
    saved = json.loads((full_run / 'report.json').read_text())
    assert saved['error']['rmse_m'] == pytest.approx(OFFSET_M, abs=1e-6)
    lines = summary_lines(figures)
    assert any('RMSE' in line and '3.00 m' in line for line in lines)
    assert any(line.strip().startswith('localizer') and '457 MB' in line for line in lines)


def test_report_without_optional_topics(tmp_path):
    """Ground truth only, no map, no resources: every section says what is missing."""
    from skyloc_sim.report import main, summary_lines, write_report

    run = tmp_path / 'bare'
    run.mkdir()
    messages = [m for m in _truth_and_estimate() if m[0] == '/sim/ground_truth']
    _write_bag(run / 'bag', messages)
    out = tmp_path / 'elsewhere.html'
    figures = write_report(str(run), out=str(out))
    assert figures['error'] is None and figures['coverage_percent'] is None
    assert figures['replans'] == 0 and figures['resources'] is None
    assert figures['mission_time_s'] == pytest.approx(DURATION)   # truth span
    assert figures['path_length_m'] == pytest.approx(2.0 * DURATION)
    for key in ('estimate', 'coverage', 'path', 'grid', 'probability', 'localizer', 'mission',
                'map'):
        assert key in figures['notes'], key
    page = out.read_text()
    _assert_offline(page)
    assert 'no /coverage/grid in the bag' in page and 'no resources.json' in page
    assert page.count('src="data:image/png;base64,') == 1   # the tracks, without a map
    assert any('n/a' in line for line in summary_lines(figures))
    assert main([str(run)]) == 0 and (run / 'report.html').is_file()
    assert main([str(tmp_path / 'nothing')]) == 2


def test_horizontal_error_interpolates_without_extrapolating():
    from skyloc_sim.report import error_stats, horizontal_error

    truth = np.array([[t, t, 0.0, 10.0] for t in np.arange(0.0, 10.5, 0.5)])
    truth[0, 3] = 0.0   # start on the ground
    estimate = np.array([[2.0, 2.0, 1.0, 0.0], [4.0, 4.0, 3.0, 0.0]])  # error 1 -> 3 m
    cov = np.array([[2.0, 1.0, 3.0], [4.0, 1.0, 3.0]])
    t, error, bound, airborne = horizontal_error(truth, estimate, cov)
    assert t.tolist() == [2.0, 2.5, 3.0, 3.5, 4.0]
    assert error == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert bound == pytest.approx([4.0] * 5) and airborne.all()
    stats = error_stats(error, bound)
    assert stats['rmse_m'] == pytest.approx(np.sqrt(np.mean(np.square(error))))
    assert stats['p95_m'] == pytest.approx(2.9) and stats['max_m'] == 3.0
    assert stats['within_2sigma_percent'] == 100.0


def test_resource_sampler_follows_processes_and_children(tmp_path):
    sleeper = subprocess.Popen(['sleep', '30'])
    try:
        sampler = ResourceSampler(period_s=0.05)
        sampler.add('self', os.getpid())
        sampler.add('sleeper', sleeper.pid)
        assert sleeper.pid in process_tree([os.getpid()])[os.getpid()]
        assert read_stat(sleeper.pid)[0] == os.getpid()
        sampler.start()
        t_end = time.process_time() + 0.3
        while time.process_time() < t_end:   # burn 0.3 s of CPU in this process
            sum(i * i for i in range(1000))
        time.sleep(0.2)
        summary = sampler.stop()
        me, sleep = summary['self'], summary['sleeper']
        assert me['cpu_s'] >= 0.3 and me['samples'] >= 3 and sleep['samples'] >= 3
        assert 0 < me['cpu_percent_mean']
        own_rss = read_memory(os.getpid())[0] / 2 ** 20
        # this process's tree holds the sleeper: its RSS is in this process's samples
        assert me['rss_last_mb'] >= sleep['rss_last_mb'] > 0
        assert me['peak_rss_mb'] >= own_rss * 0.9 > sleep['peak_rss_mb']
        assert sleep['cpu_s'] < 0.1

        # an exited process (zombie, then reaped) adds no samples and breaks nothing
        sleeper.kill()
        time.sleep(0.1)
        sampler.sample()
        sleeper.wait()
        sampler.sample()
        after = sampler.write(str(tmp_path / 'resources.json'))
        assert after['sleeper']['samples'] == sleep['samples']
        assert after['self']['samples'] == me['samples'] + 2
        saved = json.loads((tmp_path / 'resources.json').read_text())
        assert set(saved['self']) == {'pid', 'cpu_s', 'cpu_percent_mean', 'peak_rss_mb',
                                      'rss_first_mb', 'rss_last_mb', 'rss_quarter_mb',
                                      'samples'}
        assert saved['self']['rss_first_mb'] <= saved['self']['rss_quarter_mb'] * 10
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_runner_writes_resources_json(tmp_path):
    from skyloc_sim import runner

    procs = [subprocess.Popen(['sleep', '30']), subprocess.Popen(['true'])]  # one exits at once
    try:
        children = [SimpleNamespace(name=name, proc=proc) for name, proc in zip('ab', procs)]
        sampler = runner._start_sampler(children)
        procs[1].wait()
        runner._write_resources(sampler, str(tmp_path))   # stops it: one last sample
        saved = json.loads((tmp_path / 'resources.json').read_text())
        assert set(saved) == {'a', 'b'}
        assert saved['a']['samples'] >= 1 and saved['a']['peak_rss_mb'] > 0
        assert saved['b']['samples'] == 0 and saved['b']['rss_last_mb'] is None
        runner._write_resources(None, str(tmp_path))   # sampling off: nothing to do
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
