"""Every workspace package's manifest and install layout are what colcon, ros2 run and
launch expect; the pinned requirements keep torch out of the runtime."""

import configparser
import os
import xml.etree.ElementTree as ET

import pytest

WORKSPACE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
PYTHON_PACKAGES = ['skyloc_perception', 'skyloc_localization', 'skyloc_coverage', 'skyloc_sim']


@pytest.mark.parametrize('package', PYTHON_PACKAGES)
def test_ament_python_package_layout(package):
    here = os.path.join(WORKSPACE, 'src', package)
    root = ET.parse(os.path.join(here, 'package.xml')).getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == package
    assert root.find('export/build_type').text == 'ament_python'
    assert 'rclpy' in [e.text for e in root.findall('exec_depend')]
    assert 'python3-pytest' in [e.text for e in root.findall('test_depend')]
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(here, 'setup.cfg'))
    assert cfg['develop']['script_dir'] == '$base/lib/' + package
    assert cfg['install']['install_scripts'] == '$base/lib/' + package
    assert os.path.isfile(os.path.join(here, 'resource', package))
    assert os.path.isdir(os.path.join(here, 'test'))


def test_interfaces_package_declares_descriptor_fields():
    here = os.path.join(WORKSPACE, 'src', 'skyloc_interfaces')
    fields = [line.split('#')[0].split() for line in
              open(os.path.join(here, 'msg', 'Descriptor.msg')) if line.split('#')[0].strip()]
    assert fields == [['std_msgs/Header', 'header'], ['string', 'model_id'],
                      ['float32[]', 'data'], ['float32', 'altitude_m'], ['float32', 'yaw_rad'],
                      ['float32', 'footprint_m']]
    from skyloc_interfaces.msg import Descriptor
    assert Descriptor(footprint_m=200.0).footprint_m == 200.0


def test_requirements_are_pinned_and_runtime_has_no_torch():
    runtime = [line.strip() for line in open(os.path.join(WORKSPACE, 'requirements.txt'))
               if line.strip() and not line.startswith('#')]
    assert all('==' in line for line in runtime), runtime
    names = {line.split('==')[0].lower() for line in runtime}
    assert not names & {'torch', 'torchvision', 'timm', 'onnx'}
    assert {'ros-rclpy', 'ros-diagnostic-msgs', 'onnxruntime', 'filterpy'} <= names
    training = open(os.path.join(WORKSPACE, 'requirements-training.txt')).read()
    assert 'torch==2.14.1' in training and 'torchvision==0.29.1' in training


def _published_topics():
    """Topic names of every create_publisher(..., '/topic', ...) in the packages' sources."""
    import re
    topics = set()
    for package in PYTHON_PACKAGES:
        folder = os.path.join(WORKSPACE, 'src', package, package)
        for name in os.listdir(folder):
            if name.endswith('.py'):
                with open(os.path.join(folder, name)) as stream:
                    topics |= set(re.findall(r"create_publisher\(\s*\w+,\s*'(/[\w/]+)'",
                                             stream.read()))
    return topics


def test_rviz_config_parses_and_shows_only_published_topics():
    import yaml
    with open(os.path.join(WORKSPACE, 'config', 'skyloc.rviz')) as stream:
        rviz = yaml.safe_load(stream)
    displays = rviz['Visualization Manager']['Displays']
    topics = {d['Topic']['Value']: d['Class'] for d in displays if 'Topic' in d}
    published = _published_topics()
    assert {'/skyloc/pose', '/skyloc/probability_map', '/map', '/coverage/path'} <= published
    missing = sorted(t for t in topics if t not in published)
    assert not missing, f'rviz displays of topics no node publishes: {missing}'
    for topic in ('/skyloc/probability_map', '/skyloc/pose', '/skyloc/odometry',
                  '/coverage/grid', '/coverage/path', '/map', '/camera/image_raw'):
        assert topic in topics, f'config/skyloc.rviz has no display of {topic}'
    assert topics['/skyloc/pose'] == 'rviz_default_plugins/PoseWithCovariance'
    assert rviz['Visualization Manager']['Global Options']['Fixed Frame'] == 'map'
