"""The Raspberry Pi deployment files, statically: every parameter in config/pi.yaml (and
config/sim.yaml) is one its node declares, every node of the Pi graph has its section, the
graph's sensor-topic arguments remap both consumers, and the systemd unit runs the graph."""

import configparser
import importlib
import os

import pytest
import yaml

from skyloc_sim.graph import load_graph, workspace_root

ROOT = workspace_root(os.path.dirname(os.path.abspath(__file__)))
MODULES = {'camera': 'skyloc_perception.camera_node',
           'embedder': 'skyloc_perception.embedder_node',
           'localizer': 'skyloc_localization.localizer_node',
           'health': 'skyloc_localization.health_node',
           'mavros_bridge': 'skyloc_localization.mavros_bridge_node',
           'map_handler': 'skyloc_coverage.map_handler_node',
           'coverage': 'skyloc_coverage.coverage_node',
           'follower': 'skyloc_coverage.follower_node',
           'mission': 'skyloc_coverage.mission_node', 'sim': 'skyloc_sim.sim_node',
           'demo_pilot': 'skyloc_sim.demo_pilot'}


def _declared(node):
    module = importlib.import_module(MODULES[node])
    return {name for name, *_ in module.PARAMETERS} | {'use_sim_time'}


@pytest.mark.parametrize('params_file', ['config/pi.yaml', 'config/sim.yaml'])
def test_every_parameter_is_declared_by_its_node(params_file):
    with open(os.path.join(ROOT, params_file)) as stream:
        params = yaml.safe_load(stream)
    for node, section in params.items():
        if node == '/**':
            continue
        assert node in MODULES, f'{params_file}: section {node} is no skyloc node'
        unknown = set(section['ros__parameters']) - _declared(node)
        assert not unknown, f'{params_file}: {node} does not declare {sorted(unknown)}'


def test_pi_graph_nodes_have_sections_and_sensor_arguments():
    graph = load_graph('pi', ROOT)
    with open(os.path.join(ROOT, 'config', 'pi.yaml')) as stream:
        params = yaml.safe_load(stream)
    ours = [n for n in graph.nodes if not n.external]
    assert {n.name for n in ours} == {'camera', 'embedder', 'localizer', 'map_handler',
                                      'coverage', 'follower', 'mission', 'health',
                                      'mavros_bridge'}
    for node in ours:
        assert node.name in params, node.name
    values = {name: spec['default'] for name, spec in graph.arguments.items()}
    values.update(imu_topic='/mavros/imu/data', baro_topic='/mavros/imu/static_pressure',
                  battery_topic='/mavros/battery')
    remaps = {n.name: dict(n.remap_pairs(values)) for n in ours}
    for consumer in ('embedder', 'localizer'):
        assert remaps[consumer]['/imu/data'] == '/mavros/imu/data'
        assert remaps[consumer]['/baro'] == '/mavros/imu/static_pressure'
    assert remaps['localizer']['/battery'] == '/mavros/battery'
    assert remaps['mission']['/battery'] == '/mavros/battery'
    active = {n.name for n in graph.active_nodes(values)}
    assert 'mavros_bridge' not in active and 'camera' in active     # defaults
    values.update(mavros='true', camera='false')
    active = {n.name for n in graph.active_nodes(values)}
    assert 'mavros_bridge' in active and 'camera' not in active
    assert params['mission']['ros__parameters']['scenario_mast_percent'] == 0.0


def test_systemd_unit_runs_the_pi_graph_in_one_process():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(ROOT, 'config', 'systemd', 'skyloc.service'))
    assert set(unit.sections()) == {'Unit', 'Service', 'Install'}
    service = unit['Service']
    assert 'skyloc_sim.runner run pi --single-process' in service['ExecStart']
    assert service['Restart'] == 'on-failure'
    with open(os.path.join(ROOT, 'config', 'systemd', 'skyloc.service')) as stream:
        text = stream.read()   # (configparser keeps only the last Environment= line)
    assert 'Environment=FASTDDS_DEFAULT_PROFILES_FILE=' in text and 'config/fastdds.xml' in text
    assert unit['Install']['WantedBy'] == 'multi-user.target'
    from skyloc_sim import runner   # the module the unit runs, with its single-process mode
    assert callable(runner.run_single_process)


def test_fastdds_profile_is_well_formed_with_a_large_segment():
    import xml.etree.ElementTree as ET
    ns = {'d': 'http://www.eprosima.com'}
    root = ET.parse(os.path.join(ROOT, 'config', 'fastdds.xml')).getroot()
    shm = [t for t in root.iterfind('.//d:transport_descriptor', ns)
           if t.findtext('d:type', namespaces=ns) == 'SHM']
    assert len(shm) == 1
    assert int(shm[0].findtext('d:segment_size', namespaces=ns)) >= 4 * 1024 * 1024
    participant = root.find('.//d:participant', ns)
    assert participant.get('is_default_profile') == 'true'
    assert participant.findtext('.//d:useBuiltinTransports', namespaces=ns) == 'false'
