"""Static checks of the Webots deployment files, and the Webots driver's maths and glue.

No Webots here: the world file is parsed by a small VRML tokenizer/parser, the URDF as XML,
and the driver plugin (skyloc_sim.webots_driver.SkylocDriver) is flown against a rigid-body
model of the Mavic2Pro PROTO (its rotor positions and thrust constants) through stand-in
devices with the Webots Python API's method names, with real rclpy publishers/subscribers.
"""

import ast
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from skyloc_sim import webots_driver as wd
from skyloc_sim.graph import load_graph

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(PACKAGE))
WORLD = os.path.join(PACKAGE, 'worlds', 'skyloc.wbt')
URDF = os.path.join(PACKAGE, 'urdf', 'skyloc_drone.urdf')
LAUNCH = os.path.join(ROOT, 'launch', 'webots.launch.py')
CONFIG = os.path.join(ROOT, 'config', 'webots.yaml')

ROBOT_NAME = 'skyloc_drone'
# DESIGN.md's topic contract for what Webots publishes through webots_ros2's own plugins.
CONTRACT_TOPICS = {'camera': '/camera/image_raw', 'imu': '/imu/data', 'scan': '/scan'}
# Devices the Mavic2Pro PROTO (webots/projects/robots/dji/mavic/protos/Mavic2Pro.proto) has
# of its own, by name -> node type: the world file does not declare them.
MAVIC_BUILTIN_DEVICES = {
    'gps': 'GPS', 'gyro': 'Gyro', 'inertial unit': 'InertialUnit', 'compass': 'Compass',
    'front left propeller': 'RotationalMotor', 'front right propeller': 'RotationalMotor',
    'rear left propeller': 'RotationalMotor', 'rear right propeller': 'RotationalMotor',
    'camera yaw': 'RotationalMotor', 'camera pitch': 'RotationalMotor',
    'camera roll': 'RotationalMotor', 'front left led': 'LED', 'front right led': 'LED',
}
DEVICE_TYPES = {'Camera', 'Lidar', 'GPS', 'InertialUnit', 'Gyro', 'Accelerometer', 'Compass',
                'RangeFinder', 'DistanceSensor', 'Altimeter', 'RotationalMotor', 'LED'}


# --------------------------------------------------------------------------------------------
# A small VRML (Webots .wbt) parser
# --------------------------------------------------------------------------------------------

TOKEN = re.compile(r'''
    (?P<ws>\s+) | (?P<comment>\#[^\n]*) | (?P<string>"(?:[^"\\\n]|\\.)*") |
    (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_])) |
    (?P<ident>[A-Za-z_][A-Za-z0-9_]*) | (?P<punct>[{}\[\]])
''', re.VERBOSE)


class VrmlError(ValueError):
    """The world file is not valid VRML as Webots reads it."""


def tokenize(text):
    """[(kind, value, line)] of a .wbt text without whitespace and comments; raises VrmlError."""
    tokens, pos, line, depth = [], 0, 1, []
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match:
            raise VrmlError(f'line {line}: unexpected character {text[pos]!r}')
        kind, value = match.lastgroup, match.group()
        if kind == 'punct':
            if value in '{[':
                depth.append((value, line))
            else:
                if not depth:
                    raise VrmlError(f'line {line}: unmatched {value!r}')
                opened, where = depth.pop()
                if {'{': '}', '[': ']'}[opened] != value:
                    raise VrmlError(f'line {line}: {value!r} closes {opened!r} of line {where}')
        if kind == 'string':
            value = value[1:-1].replace('\\"', '"').replace('\\\\', '\\')
        if kind not in ('ws', 'comment'):
            tokens.append((kind, value, line))
        line += match.group().count('\n')
        pos = match.end()
    if depth:
        raise VrmlError(f'unclosed {depth[-1][0]!r} of line {depth[-1][1]}')
    return tokens


class VrmlNode:
    """A parsed node: its type, DEF name and fields (name -> value)."""

    def __init__(self, node_type, def_name=None):
        self.type = node_type
        self.def_name = def_name
        self.fields = {}

    def __repr__(self):
        return f'{self.type}({self.fields.get("name", "")!r})'


class VrmlParser:
    """Recursive descent over tokens: EXTERNPROTO lines, then nodes with fields."""

    def __init__(self, tokens):
        self.tokens, self.i = tokens, 0
        self.defs = {}

    def peek(self, offset=0):
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else (None, None, None)

    def take(self, kind=None, value=None):
        token = self.peek()
        if token[0] is None:
            raise VrmlError('unexpected end of file')
        if (kind and token[0] != kind) or (value and token[1] != value):
            raise VrmlError(f'line {token[2]}: expected {value or kind}, got {token[1]!r}')
        self.i += 1
        return token

    def world(self):
        protos, nodes = [], []
        while self.peek()[0] is not None:
            if self.peek()[1] == 'IMPORTABLE':
                self.take()
            if self.peek()[1] == 'EXTERNPROTO':
                self.take()
                protos.append(self.take('string')[1])
            else:
                nodes.append(self.node())
        return protos, nodes

    def node(self):
        def_name = None
        if self.peek()[1] == 'USE':
            self.take()
            name = self.take('ident')[1]
            if name not in self.defs:
                raise VrmlError(f'USE {name} before its DEF')
            return self.defs[name]
        if self.peek()[1] == 'DEF':
            self.take()
            def_name = self.take('ident')[1]
        node = VrmlNode(self.take('ident')[1], def_name)
        self.take('punct', '{')
        while self.peek()[1] != '}':
            field = self.take('ident')[1]
            if field in node.fields:
                raise VrmlError(f'{node.type}: field {field} given twice')
            node.fields[field] = self.value()
        self.take('punct', '}')
        if def_name:
            self.defs[def_name] = node
        return node

    def value(self):
        kind, value, line = self.peek()
        if value == '[':
            self.take()
            items = []
            while self.peek()[1] != ']':
                item = self.value()
                items.extend(item if isinstance(item, tuple) else [item])
            self.take()
            return items
        if kind == 'string':
            return self.take()[1]
        if kind == 'number':
            numbers = []
            while self.peek()[0] == 'number':
                numbers.append(float(self.take()[1]))
            return numbers[0] if len(numbers) == 1 else tuple(numbers)
        if value in ('TRUE', 'FALSE'):
            return self.take()[1] == 'TRUE'
        if value == 'NULL':
            self.take()
            return None
        if kind == 'ident':
            return self.node()
        raise VrmlError(f'line {line}: unexpected {value!r}')


def walk(value):
    """Every node in a value (a node, a list of values, or a plain value), depth first."""
    if isinstance(value, VrmlNode):
        yield value
        for child in value.fields.values():
            yield from walk(child)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def axis_angle_matrix(rotation):
    """3x3 matrix of a VRML rotation (x, y, z, angle)."""
    x, y, z, angle = rotation
    axis = np.array([x, y, z], dtype=float)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


@pytest.fixture(scope='module')
def world_text():
    with open(WORLD) as stream:
        return stream.read()


@pytest.fixture(scope='module')
def world(world_text):
    protos, nodes = VrmlParser(tokenize(world_text)).world()
    return protos, nodes


@pytest.fixture(scope='module')
def drone(world):
    drones = [n for n in walk(world[1]) if n.type == 'Mavic2Pro']
    assert len(drones) == 1
    return drones[0]


@pytest.fixture(scope='module')
def devices(drone):
    """name -> node of every device the drone has: the world's plus the PROTO's own."""
    found = {}
    for node in walk(drone.fields.get('bodySlot', []) + drone.fields.get('cameraSlot', [])):
        if node.type in DEVICE_TYPES:
            name = node.fields.get('name')
            assert name, f'{node.type} in the drone has no explicit name'
            assert name not in found and name not in MAVIC_BUILTIN_DEVICES, \
                f'device name {name!r} is not unique in the robot'
            found[name] = node
    return found


def device_type(devices, name):
    if name in devices:
        return devices[name].type
    return MAVIC_BUILTIN_DEVICES.get(name)


# --------------------------------------------------------------------------------------------
# The world file
# --------------------------------------------------------------------------------------------

def test_tokenizer_rejects_unbalanced_and_mismatched_brackets():
    with pytest.raises(VrmlError, match='unclosed'):
        tokenize('Solid { children [ Shape { } ]')
    with pytest.raises(VrmlError, match='closes'):
        tokenize('Solid { children [ Shape { } } ]')
    with pytest.raises(VrmlError, match='unmatched'):
        tokenize('Solid { } }')
    with pytest.raises(VrmlError, match='unexpected character'):
        tokenize('Solid { name "a" ; }')
    assert [t[1] for t in tokenize('A { b "x # y" c 1.5e2 }  # z')] == \
        ['A', '{', 'b', 'x # y', 'c', '1.5e2', '}']


def test_world_header_and_world_info(world_text, world):
    assert world_text.splitlines()[0] == '#VRML_SIM R2025a utf8'
    infos = [n for n in world[1] if n.type == 'WorldInfo']
    assert len(infos) == 1
    info = infos[0].fields
    assert info['coordinateSystem'] == 'ENU'
    assert 4 <= info['basicTimeStep'] <= 16
    types = {n.type for n in world[1]}
    assert {'Viewpoint', 'TexturedBackground', 'TexturedBackgroundLight'} <= types


def test_world_declares_its_protos(world):
    protos, nodes = world
    assert any(p.endswith('/projects/robots/dji/mavic/protos/Mavic2Pro.proto')
               and '/R2025a/' in p for p in protos)
    declared = {os.path.basename(p)[:-len('.proto')] for p in protos}
    builtin = {'WorldInfo', 'Viewpoint', 'Solid', 'Shape', 'PBRAppearance', 'ImageTexture',
               'IndexedFaceSet', 'Coordinate', 'TextureCoordinate', 'Pose', 'Box', 'Cylinder',
               'Damping'} | DEVICE_TYPES
    for node in walk(nodes):
        assert node.type in declared | builtin, f'{node.type} has no EXTERNPROTO'


def test_drone_is_an_extern_mavic_named_for_the_launch_file(drone):
    assert drone.fields['controller'] == '<extern>'
    assert drone.fields['name'] == ROBOT_NAME
    x, y, z = drone.fields['translation']
    assert z > 0.0 and abs(x) < 600 and abs(y) < 600


def test_drone_devices_are_declared_by_name(devices):
    assert devices['camera'].type == 'Camera'
    assert devices['lidar'].type == 'Lidar'
    assert devices['imu inertial'].type == 'InertialUnit'
    assert devices['imu gyro'].type == 'Gyro'
    assert devices['imu accelerometer'].type == 'Accelerometer'
    # ground truth: the PROTO's own GPS, not a second device of the same name
    assert 'gps' not in devices and MAVIC_BUILTIN_DEVICES['gps'] == 'GPS'
    # the driver's devices are the PROTO's own
    for name in (wd.GPS_NAME, wd.INERTIAL_UNIT_NAME, wd.GYRO_NAME) + wd.MOTOR_NAMES \
            + wd.GIMBAL_MOTOR_NAMES:
        assert name in MAVIC_BUILTIN_DEVICES
    assert wd.CAMERA_NAME in devices


def test_camera_is_nadir_640x480_90deg_with_image_up_forward(drone, devices):
    camera = devices['camera']
    assert camera in drone.fields['cameraSlot']
    assert camera.fields['width'] == 640 and camera.fields['height'] == 480
    assert camera.fields['fieldOfView'] == pytest.approx(math.pi / 2, abs=1e-3)
    rotation = axis_angle_matrix(camera.fields.get('rotation', (0, 0, 1, 0)))
    # Webots cameras look along their +x, with image up = +z and image right = -y
    np.testing.assert_allclose(rotation @ [1, 0, 0], [0, 0, -1], atol=1e-6)   # down
    np.testing.assert_allclose(rotation @ [0, 0, 1], [1, 0, 0], atol=1e-6)    # up = forward
    np.testing.assert_allclose(rotation @ [0, -1, 0], [0, -1, 0], atol=1e-6)  # right = -y


def test_lidar_is_one_360_beam_layer_to_100m_counter_clockwise(devices):
    lidar = devices['lidar'].fields
    assert lidar['horizontalResolution'] == 360
    assert lidar['numberOfLayers'] == 1
    assert lidar['maxRange'] == 100
    assert lidar['fieldOfView'] == pytest.approx(2 * math.pi, abs=1e-3)
    assert lidar.get('type', 'fixed') == 'fixed'
    rotation = axis_angle_matrix(lidar['rotation'])
    # upside down: its left-to-right (clockwise) ranges run counter-clockwise in base_link
    np.testing.assert_allclose(rotation @ [0, 0, 1], [0, 0, -1], atol=1e-6)
    np.testing.assert_allclose(rotation @ [1, 0, 0], [1, 0, 0], atol=1e-6)
    assert lidar['translation'][2] > 0.05  # above the rotors


def test_ground_is_the_1200m_orthophoto_north_up(world):
    grounds = [n for n in walk(world[1]) if n.type == 'Solid' and n.fields.get('name') == 'ground']
    assert len(grounds) == 1
    ground = grounds[0]
    textures = [n for n in walk(ground) if n.type == 'ImageTexture']
    assert [t.fields['url'] for t in textures] == [['textures/orthophoto.png']]
    faces = [n for n in walk(ground) if n.type == 'IndexedFaceSet']
    assert len(faces) == 1
    points = np.array(faces[0].fields['coord'].fields['point']).reshape(-1, 3)
    uv = np.array(faces[0].fields['texCoord'].fields['point']).reshape(-1, 2)
    index = [int(i) for i in faces[0].fields['coordIndex'] if i >= 0]
    uv_index = [int(i) for i in faces[0].fields['texCoordIndex'] if i >= 0]
    corners = points[index]
    assert corners[:, 0].min() == -600 and corners[:, 0].max() == 600
    assert corners[:, 1].min() == -600 and corners[:, 1].max() == 600
    assert np.all(corners[:, 2] == 0)
    # texture u grows east, v grows north: (0, 0) south-west, (1, 1) north-east
    for corner, tex in zip(corners, uv[uv_index]):
        np.testing.assert_allclose(tex, [(corner[0] + 600) / 1200, (corner[1] + 600) / 1200])
    # counter-clockwise seen from above: the face's front is up
    a, b, c = corners[:3]
    assert np.cross(b - a, c - b)[2] > 0
    assert ground.fields['boundingObject'] is not None


def test_tall_obstacles_have_bounding_objects(world):
    masts = [n for n in world[1] if n.type == 'Solid' and n.fields.get('name') != 'ground']
    assert len(masts) >= 3
    names = [m.fields['name'] for m in masts]
    assert len(set(names)) == len(names)
    for mast in masts:
        bounding = mast.fields['boundingObject']
        assert bounding.type in ('Cylinder', 'Box')
        height = bounding.fields['height'] if bounding.type == 'Cylinder' \
            else bounding.fields['size'][2]
        assert height > 100.0  # above the flight altitude, where the LIDAR scans
        assert mast.fields['translation'][2] == pytest.approx(height / 2)  # standing on z = 0
        assert max(abs(mast.fields['translation'][0]), abs(mast.fields['translation'][1])) < 600


# --------------------------------------------------------------------------------------------
# The URDF
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def urdf():
    return ET.parse(URDF).getroot()


def test_urdf_devices_exist_in_the_world_with_their_types(urdf, devices):
    assert urdf.tag == 'robot' and urdf.get('name') == ROBOT_NAME
    webots = urdf.find('webots')
    assert webots is not None
    references = {}
    for device in webots.findall('device'):
        name = device.get('reference')
        assert device_type(devices, name) == device.get('type'), name
        references[name] = device
    assert {'camera', 'lidar', 'gps'} <= set(references)
    assert references['gps'].findtext('ros/enabled') == 'false'  # ground truth stays private


def test_urdf_topics_are_the_contract(urdf):
    webots = urdf.find('webots')
    topics = {d.get('reference'): d.findtext('ros/topicName') for d in webots.findall('device')
              if d.findtext('ros/topicName')}
    assert topics == {'camera': CONTRACT_TOPICS['camera'], 'lidar': CONTRACT_TOPICS['scan']}
    frames = {d.get('reference'): d.findtext('ros/frameName') for d in webots.findall('device')
              if d.findtext('ros/frameName')}
    assert frames == {'camera': wd.CAMERA_FRAME, 'lidar': wd.BASE_FRAME}
    imu = [p for p in webots.findall('plugin') if p.get('type') == 'webots_ros2_driver::Ros2IMU']
    assert len(imu) == 1
    assert imu[0].findtext('topicName') == CONTRACT_TOPICS['imu']
    assert imu[0].findtext('frameName') == 'base_link'


def test_urdf_imu_plugin_names_the_world_imu_devices(urdf, devices):
    imu = [p for p in urdf.find('webots').findall('plugin')
           if p.get('type') == 'webots_ros2_driver::Ros2IMU'][0]
    expected = {'inertialUnitName': 'InertialUnit', 'gyroName': 'Gyro',
                'accelerometerName': 'Accelerometer'}
    for tag, node_type in expected.items():
        name = imu.findtext(tag)
        assert name in devices and devices[name].type == node_type, tag
        # not the PROTO's own, which the flight controller reads
        assert name not in (wd.INERTIAL_UNIT_NAME, wd.GYRO_NAME)


def test_urdf_python_plugin_resolves_to_the_driver_class(urdf):
    types = [p.get('type') for p in urdf.find('webots').findall('plugin')]
    python_plugins = [t for t in types if '::' not in t]
    assert python_plugins == ['skyloc_sim.webots_driver.SkylocDriver']
    module_name, _, class_name = python_plugins[0].rpartition('.')
    module = __import__(module_name, fromlist=[class_name])
    cls = getattr(module, class_name)
    plugin = cls()  # webots_ros2 instantiates it with no arguments
    assert callable(plugin.init) and callable(plugin.step)
    # webots_ros2 calls init(webots_node, properties) and step()
    assert cls.init.__code__.co_argcount == 3
    assert cls.init.__code__.co_varnames[:3] == ('self', 'webots_node', 'properties')
    assert cls.step.__code__.co_argcount == 1


def test_driver_topics_are_the_contract():
    assert wd.BARO_TOPIC == '/baro'
    assert wd.BATTERY_TOPIC == '/battery'
    assert wd.GROUND_TRUTH_TOPIC == '/sim/ground_truth'
    assert wd.CMD_VEL_TOPIC == '/cmd_vel'
    assert wd.CAMERA_INFO_TOPIC == '/camera/camera_info'
    assert wd.NODE_NAME == 'skyloc_webots_driver'
    assert (wd.MAP_FRAME, wd.BASE_FRAME) == ('map', 'base_link')


def test_driver_module_imports_without_webots_or_rclpy():
    code = ('import sys; import skyloc_sim.webots_driver; '
            'bad = [m for m in ("controller", "rclpy", "webots_ros2_driver") if m in sys.modules];'
            'sys.exit(str(bad) if bad else 0)')
    result = subprocess.run([sys.executable, '-c', code], cwd=PACKAGE, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr or result.stdout


# --------------------------------------------------------------------------------------------
# Graph, parameters and launch file
# --------------------------------------------------------------------------------------------

def test_webots_graph_loads_without_the_builtin_simulator():
    graph = load_graph('webots', ROOT)
    assert graph.name == 'webots'
    defaults = graph.defaults()
    assert defaults['params_file'] == 'config/webots.yaml'
    assert os.path.isfile(graph.resolve(defaults['params_file']))
    assert defaults['use_sim_time'] == 'true' and defaults['rviz'] == 'false'
    assert os.path.isfile(os.path.join(PACKAGE, 'worlds', defaults['world']))
    assert not any(n.package == 'skyloc_sim' and n.executable == 'sim' for n in graph.nodes)
    rviz = [n for n in graph.nodes if n.name == 'rviz2']
    assert len(rviz) == 1 and rviz[0].condition == 'rviz' and rviz[0].external
    assert [n.name for n in graph.active_nodes({'rviz': 'false'})] == [
        'embedder', 'localizer', 'map_handler', 'coverage', 'follower', 'mission']
    sim_rviz = [n for n in load_graph('sim', ROOT).nodes if n.name == 'rviz2'][0]
    assert rviz[0] == sim_rviz


def test_config_sets_exactly_the_driver_parameters_with_their_types():
    with open(CONFIG) as stream:
        params = yaml.safe_load(stream)[wd.NODE_NAME]['ros__parameters']
    defaults = {f.name: f.default for f in wd.fields(wd.DriverConfig)}
    assert set(params) == set(defaults)
    for name, value in params.items():
        assert type(value) is type(defaults[name]), name  # ROS keeps the default's type
    config = wd.DriverConfig(**params)
    wd.validate_config(config)
    assert set(wd.PARAMETER_DESCRIPTIONS) == set(defaults)
    with pytest.raises(ValueError, match='max_speed'):
        wd.validate_config(wd.DriverConfig(max_speed=-1.0))
    with pytest.raises(ValueError, match='baro_rate'):
        wd.validate_config(wd.DriverConfig(baro_rate=-1.0))


def test_driver_ros_args_from_the_launch_environment(tmp_path):
    params = tmp_path / 'config' / 'webots.yaml'
    params.parent.mkdir()
    params.write_text('{}\n')
    env = {wd.ROOT_ENV: str(tmp_path), wd.PARAMS_ENV: 'config/webots.yaml',
           wd.USE_SIM_TIME_ENV: 'true'}
    assert wd.driver_ros_args(env) == ['--ros-args', '--params-file', str(params),
                                       '-p', 'use_sim_time:=true']
    assert wd.driver_ros_args({}) == []
    with pytest.raises(FileNotFoundError, match='missing.yaml'):
        wd.driver_ros_args({wd.PARAMS_ENV: str(tmp_path / 'missing.yaml')})


def test_launch_file_names_the_world_robot_and_urdf():
    with open(LAUNCH) as stream:
        source = stream.read()
    tree = ast.parse(source)
    assert ast.get_docstring(tree) and 'ros2 launch launch/webots.launch.py' in source
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(n.value, ast.Constant)}
    assert constants['ROBOT_NAME'] == ROBOT_NAME
    calls = {n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {'WebotsLauncher', 'WebotsController', 'OnProcessExit', 'Shutdown',
            'graph_actions'} <= calls
    assert "graph_actions('webots', __file__)" in source
    assert os.path.isfile(os.path.join(PACKAGE, 'urdf', ROBOT_NAME + '.urdf'))


# --------------------------------------------------------------------------------------------
# Controller maths
# --------------------------------------------------------------------------------------------

def hover_state(**kwargs):
    values = dict(z=100.0, yaw=0.3)
    values.update(kwargs)
    return wd.VehicleState(**values)


def speeds(motors):
    return dict(zip(('fl', 'fr', 'rl', 'rr'), motors.as_tuple()))


def test_zero_command_at_hover_gives_four_equal_speeds_with_alternating_signs():
    controller = wd.MulticopterController()
    motors = controller.update((0.0, 0.0, 0.0, 0.0), hover_state(), 0.008)
    values = motors.as_tuple()
    assert [abs(v) for v in values] == pytest.approx([controller.gains.hover_velocity] * 4)
    assert [math.copysign(1.0, v) for v in values] == list(wd.MOTOR_SIGNS)
    assert wd.MOTOR_SIGNS == (1.0, -1.0, -1.0, 1.0)  # FL, RR counter-clockwise; FR, RL not


def test_forward_command_pitches_nose_down():
    s = speeds(wd.MulticopterController().update((5.0, 0.0, 0.0, 0.0), hover_state(), 0.008))
    front = abs(s['fl']) + abs(s['fr'])
    rear = abs(s['rl']) + abs(s['rr'])
    assert front < rear - 1.0
    assert abs(s['fl']) == pytest.approx(abs(s['fr']))  # no roll, no yaw


def test_leftward_command_rolls_left_and_yaw_command_speeds_the_clockwise_pair():
    s = speeds(wd.MulticopterController().update((0.0, 3.0, 0.0, 0.0), hover_state(), 0.008))
    assert abs(s['fr']) + abs(s['rr']) > abs(s['fl']) + abs(s['rl']) + 1.0  # right side up
    s = speeds(wd.MulticopterController().update((0.0, 0.0, 0.0, 0.5), hover_state(), 0.008))
    assert abs(s['fr']) == pytest.approx(abs(s['rl']))
    assert abs(s['fr']) > abs(s['fl']) + 0.5  # clockwise props faster: body turns left


def test_climb_command_speeds_up_all_four_equally():
    controller = wd.MulticopterController()
    s = controller.update((0.0, 0.0, 2.0, 0.0), hover_state(), 0.008).as_tuple()
    assert all(abs(v) > controller.gains.hover_velocity + 1.0 for v in s)
    assert len({round(abs(v), 9) for v in s}) == 1


def test_attitude_error_is_corrected():
    # nose down (positive pitch, REP 103) with no command: the front motors speed up
    s = speeds(wd.MulticopterController().update((0.0, 0.0, 0.0, 0.0),
                                                 hover_state(pitch=0.1), 0.008))
    assert abs(s['fl']) > abs(s['rl'])
    # right side down (positive roll): the right motors speed up
    s = speeds(wd.MulticopterController().update((0.0, 0.0, 0.0, 0.0),
                                                 hover_state(roll=0.1), 0.008))
    assert abs(s['fr']) > abs(s['fl'])


def test_landed_drone_keeps_its_motors_off_until_asked_to_climb():
    controller = wd.MulticopterController()
    on_ground = wd.VehicleState(z=0.07)
    assert controller.update((0.0, 0.0, 0.0, 0.0), on_ground, 0.008).as_tuple() == \
        (0.0, 0.0, 0.0, 0.0)
    controller.set_altitude_target(10.0)
    for _ in range(50):
        motors = controller.update((0.0, 0.0, 0.0, 0.0), on_ground, 0.008)
    assert all(abs(v) > controller.gains.hover_velocity for v in motors.as_tuple())


def test_mix_clamps_to_the_motor_range():
    motors = wd.mix(1000.0, 0.0, 0.0, 0.0).as_tuple()
    assert [abs(v) for v in motors] == [wd.MOTOR_MAX_VELOCITY] * 4
    motors = wd.mix(10.0, 50.0, 0.0, 0.0)
    assert motors.front_left == 0.0 and motors.rear_left == 0.0  # never reversed


def test_non_finite_commands_are_ignored():
    limits = wd.CommandLimits()
    for bad in ((math.nan, 0, 0, 0), (0, math.inf, 0, 0), (0, 0, -math.inf, 0),
                (0, 0, 0, math.nan)):
        command, problem = wd.sanitize_command(*bad, limits)
        assert command is None and 'non-finite' in problem


def test_commands_are_clamped_to_the_limits():
    limits = wd.CommandLimits(max_speed=12.0, max_vertical_speed=4.0, max_yaw_rate=1.0)
    command, problem = wd.sanitize_command(20.0, 20.0, -10.0, 5.0, limits)
    vx, vy, vz, yaw_rate = command
    assert math.hypot(vx, vy) == pytest.approx(12.0) and vx == pytest.approx(vy)
    assert (vz, yaw_rate) == (-4.0, 1.0)
    assert 'max_speed' in problem and 'max_vertical_speed' in problem
    assert wd.sanitize_command(3.0, -4.0, 1.0, -0.5, limits) == ((3.0, -4.0, 1.0, -0.5), None)


def test_isa_pressure():
    assert wd.isa_pressure(0.0) == pytest.approx(101325.0)
    assert wd.isa_pressure(100.0) == pytest.approx(100129.0, abs=5.0)
    assert wd.isa_pressure(1000.0) == pytest.approx(89875.0, abs=10.0)


def test_gimbal_angles_level_the_camera_slot():
    def rz(a):
        return axis_angle_matrix((0, 0, 1, a))

    def ry(a):
        return axis_angle_matrix((0, 1, 0, a))

    def rx(a):
        return axis_angle_matrix((1, 0, 0, a))

    for roll, pitch, yaw in ((0.0, 0.0, 0.0), (0.2, 0.0, 1.0), (0.0, -0.3, -2.0),
                             (0.25, 0.3, 0.5), (-0.4, -0.2, 3.0)):
        body = rz(yaw) @ ry(pitch) @ rx(roll)
        a, b, c = wd.gimbal_angles(roll, pitch)
        slot = body @ rz(a) @ ry(b) @ rx(c)
        np.testing.assert_allclose(slot, rz(yaw), atol=1e-9)
    # beyond the joint limits the angles are clamped
    assert wd.gimbal_angles(1.0, 0.0)[2] == -0.5


def test_rate_gate_battery_stamps_and_frames():
    gate = wd.RateGate(20.0)
    count = sum(gate.due(k * 0.008) for k in range(int(10.0 / 0.008)))
    assert count in (200, 201)
    assert not any(wd.RateGate(0.0).due(k * 0.1) for k in range(10))
    battery = wd.BatteryModel(59.3, cells=4, idle_power_w=5.0, hover_power_w=100.0)
    assert battery.voltage == pytest.approx(16.8)
    for _ in range(3600):
        battery.update((68.5, -68.5, -68.5, 68.5), 0.1)
    assert battery.energy_wh == pytest.approx(59.3 - 10.5)
    assert battery.fraction == pytest.approx(48.8 / 59.3)
    assert 14.0 < battery.voltage < 16.8
    assert battery.current == pytest.approx(105.0 / battery.voltage)
    assert wd.stamp_from_seconds(1.5) == (1, 500000000)
    assert wd.stamp_from_seconds(2.9999999999) == (3, 0)
    yaw90 = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))
    np.testing.assert_allclose(wd.world_to_body(yaw90, (0.0, 1.0, 0.0)), (1.0, 0.0, 0.0),
                               atol=1e-12)


# --------------------------------------------------------------------------------------------
# Closed loop: the controller flying a rigid-body model of the Mavic2Pro PROTO
# --------------------------------------------------------------------------------------------

# Mavic2Pro.proto: each propeller's centre of thrust (body frame) and thrust constant; the
# thrust is constant * w * |w| along body +z and the reaction torque -5.2e-6 * w * |w|.
PROTO_ROTORS = {
    'front left propeller': ((0.0548537, 0.151294, -0.00280468), 0.00026),
    'front right propeller': ((0.0548537, -0.151294, -0.00280468), -0.00026),
    'rear left propeller': ((-0.177179, 0.127453, -0.0320282), -0.00026),
    'rear right propeller': ((-0.177179, -0.127453, -0.0320282), 0.00026),
}
TORQUE_CONSTANT = 5.2e-6


class RigidDrone:
    """A 0.507 kg rigid body with the PROTO's rotors, the world's damping, a flat ground."""

    def __init__(self, yaw=0.0, mass=0.507, com=(-0.088, 0.0, -0.04),
                 inertia=(0.001, 0.0025, 0.003)):
        self.mass, self.com, self.inertia = mass, np.array(com), np.array(inertia)
        self.p = np.array([0.0, 0.0, 0.065])
        self.v = np.zeros(3)
        self.R = axis_angle_matrix((0, 0, 1, yaw))
        self.w = np.zeros(3)

    def step(self, motor_velocities, dt):
        force, torque = np.zeros(3), np.zeros(3)
        for name, (position, constant) in PROTO_ROTORS.items():
            w = motor_velocities.get(name, 0.0)
            thrust = np.array([0.0, 0.0, constant * w * abs(w)])
            force += thrust
            torque += np.cross(np.array(position) - self.com, thrust)
            torque[2] -= TORQUE_CONSTANT * w * abs(w)
        acceleration = self.R @ force / self.mass - np.array([0.0, 0.0, 9.81])
        self.v = (self.v + acceleration * dt) * (1 - 0.1) ** dt
        self.p = self.p + self.v * dt
        if self.p[2] < 0.065:
            self.p[2], self.v = 0.065, np.zeros(3)
        w_dot = (torque - np.cross(self.w, self.inertia * self.w)) / self.inertia
        self.w = (self.w + w_dot * dt) * (1 - 0.5) ** dt
        x, y, z = self.w * dt
        u, _, vt = np.linalg.svd(self.R @ (np.eye(3) + np.array([[0, -z, y], [z, 0, -x],
                                                                 [-y, x, 0]])))
        self.R = u @ vt

    def roll_pitch_yaw(self):
        R = self.R
        return (math.atan2(R[2, 1], R[2, 2]), -math.asin(max(-1.0, min(1.0, R[2, 0]))),
                math.atan2(R[1, 0], R[0, 0]))

    def quaternion(self):
        R = self.R
        w = math.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
        x = math.copysign(math.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2,
                          R[2, 1] - R[1, 2])
        y = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2,
                          R[0, 2] - R[2, 0])
        z = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2,
                          R[1, 0] - R[0, 1])
        return (x, y, z, w)

    def state(self):
        roll, pitch, yaw = self.roll_pitch_yaw()
        return wd.VehicleState(roll=roll, pitch=pitch, yaw=yaw, roll_rate=self.w[0],
                               pitch_rate=self.w[1], yaw_rate=self.w[2], x=self.p[0],
                               y=self.p[1], z=self.p[2], vx=self.v[0], vy=self.v[1],
                               vz=self.v[2])


def heading_velocity(drone):
    yaw = drone.roll_pitch_yaw()[2]
    return (math.cos(yaw) * drone.v[0] + math.sin(yaw) * drone.v[1],
            -math.sin(yaw) * drone.v[0] + math.cos(yaw) * drone.v[1])


def test_controller_flies_the_proto_model():
    dt = 0.008
    drone, controller = RigidDrone(yaw=1.0), wd.MulticopterController()
    controller.set_altitude_target(20.0)

    def fly(command, seconds):
        for _ in range(int(round(seconds / dt))):
            motors = controller.update(command, drone.state(), dt)
            drone.step(dict(zip(wd.MOTOR_NAMES, motors.as_tuple())), dt)

    fly((0.0, 0.0, 0.0, 0.0), 12.0)  # take off
    assert drone.p[2] == pytest.approx(20.0, abs=0.5)
    assert np.linalg.norm(drone.v) < 0.5  # the centre of mass offset is being trimmed
    assert max(abs(a) for a in drone.roll_pitch_yaw()[:2]) < 0.05
    fly((10.0, 0.0, 0.0, 0.0), 15.0)  # forward
    forward, left = heading_velocity(drone)
    assert forward == pytest.approx(10.0, abs=0.5) and abs(left) < 0.5
    assert drone.roll_pitch_yaw()[2] == pytest.approx(1.0, abs=0.05)  # heading held
    assert drone.p[2] == pytest.approx(20.0, abs=0.5)
    fly((0.0, -4.0, 1.0, 0.0), 10.0)  # to the right while climbing
    forward, left = heading_velocity(drone)
    assert left == pytest.approx(-4.0, abs=0.5) and abs(forward) < 0.5
    assert drone.v[2] == pytest.approx(1.0, abs=0.2)
    yaw_before = drone.roll_pitch_yaw()[2]
    fly((0.0, 0.0, 0.0, 0.5), 2.0)  # turn left
    assert wd.wrap_angle(drone.roll_pitch_yaw()[2] - yaw_before) == pytest.approx(1.0, abs=0.2)
    fly((0.0, 0.0, -3.0, 0.0), 20.0)  # land
    assert drone.p[2] == pytest.approx(0.065, abs=0.01)
    assert controller.landed(drone.state())


# --------------------------------------------------------------------------------------------
# The plugin itself: stand-in Webots devices around the model, real rclpy
# --------------------------------------------------------------------------------------------

class FakeDevice:
    """The Webots Python API methods the driver calls, reading a RigidDrone."""

    def __init__(self, robot, name):
        self.robot, self.name = robot, name
        self.sampling_period = 0
        self.velocity = self.position = None

    def enable(self, period):
        self.sampling_period = period

    # GPS / Gyro
    def getValues(self):
        drone = self.robot.drone
        return list(drone.w) if self.name == 'gyro' else list(drone.p)

    def getSpeedVector(self):
        return list(self.robot.drone.v)

    # InertialUnit
    def getRollPitchYaw(self):
        return list(self.robot.drone.roll_pitch_yaw())

    def getQuaternion(self):
        return list(self.robot.drone.quaternion())

    # Motor
    def setPosition(self, position):
        self.position = position

    def setVelocity(self, velocity):
        self.velocity = velocity

    # Camera
    def getWidth(self):
        return 640

    def getHeight(self):
        return 480

    def getFov(self):
        return math.pi / 2


class FakeRobot:
    """The robot of webots_node.robot: devices by name, time, basic time step."""

    def __init__(self, drone):
        self.drone, self.time = drone, 0.0
        names = list(MAVIC_BUILTIN_DEVICES) + ['camera']
        self.devices = {name: FakeDevice(self, name) for name in names}

    def getBasicTimeStep(self):
        return 8.0

    def getTime(self):
        return self.time

    def getName(self):
        return ROBOT_NAME

    def getDevice(self, name):
        return self.devices.get(name)

    def physics_step(self):
        velocities = {n: self.devices[n].velocity or 0.0 for n in wd.MOTOR_NAMES}
        self.drone.step(velocities, 0.008)
        self.time += 0.008


class FakeWebotsNode:
    def __init__(self, robot):
        self.robot = robot


def test_driver_plugin_flies_and_publishes(tmp_path, monkeypatch):
    rclpy = pytest.importorskip('rclpy')
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import BatteryState, CameraInfo, FluidPressure

    with open(CONFIG) as stream:
        params = yaml.safe_load(stream)
    params[wd.NODE_NAME]['ros__parameters'].update(takeoff_altitude=10.0, cmd_timeout=1.0)
    params_file = tmp_path / 'webots.yaml'
    params_file.write_text(yaml.safe_dump(params))
    monkeypatch.setenv(wd.PARAMS_ENV, str(params_file))
    monkeypatch.setenv(wd.USE_SIM_TIME_ENV, 'false')
    monkeypatch.setenv('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))

    robot = FakeRobot(RigidDrone(yaw=math.pi / 2))
    driver = wd.SkylocDriver()
    driver.init(FakeWebotsNode(robot), {})
    node = rclpy.create_node('webots_driver_test')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    received = {'baro': [], 'battery': [], 'truth': [], 'info': []}
    node.create_subscription(FluidPressure, wd.BARO_TOPIC,
                             lambda m: received['baro'].append((robot.drone.p[2], m)),
                             qos_profile_sensor_data)
    node.create_subscription(BatteryState, wd.BATTERY_TOPIC, received['battery'].append,
                             qos_profile_sensor_data)
    node.create_subscription(Odometry, wd.GROUND_TRUTH_TOPIC, received['truth'].append, 10)
    node.create_subscription(CameraInfo, wd.CAMERA_INFO_TOPIC, received['info'].append,
                             qos_profile_sensor_data)
    cmd_vel = node.create_publisher(Twist, wd.CMD_VEL_TOPIC, 10)

    def twist(vx=0.0, vy=0.0, vz=0.0, wz=0.0):
        msg = Twist()
        msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.z = vx, vy, vz, wz
        return msg

    def run(seconds, command=None):
        for k in range(int(round(seconds / 0.008))):
            if command is not None and k % 25 == 0:
                cmd_vel.publish(command)
            driver.step()
            robot.physics_step()
            for _ in range(3):
                executor.spin_once(timeout_sec=0)

    try:
        assert robot.devices['gps'].sampling_period == 8
        assert robot.devices['inertial unit'].sampling_period == 8
        run(10.0)  # takeoff to 10 m (parameter file)
        assert robot.drone.p[2] == pytest.approx(10.0, abs=0.5)
        run(2.0, twist(vx=math.nan))
        assert driver.command == (0.0, 0.0, 0.0, 0.0)  # NaN ignored
        assert np.linalg.norm(robot.drone.v) < 0.5
        run(10.0, twist(vx=5.0))
        assert driver.command == (5.0, 0.0, 0.0, 0.0)
        # heading north (yaw pi/2): forward is +y in the map frame
        assert robot.drone.v[1] == pytest.approx(5.0, abs=0.5) and abs(robot.drone.v[0]) < 0.5
        truth = received['truth'][-1]
        assert (truth.header.frame_id, truth.child_frame_id) == ('map', 'base_link')
        assert truth.twist.twist.linear.x == pytest.approx(5.0, abs=0.5)  # body frame
        assert truth.pose.pose.position.y == pytest.approx(robot.drone.p[1], abs=1.0)
        run(4.0)  # no command for longer than cmd_timeout: hover
        assert np.linalg.norm(robot.drone.v[:2]) < 1.0
        run(0.5, twist(vx=100.0, wz=-9.0))
        assert driver.command == pytest.approx((12.0, 0.0, 0.0, -1.0))  # clamped
        # gimbal levelled
        assert robot.devices['camera pitch'].position is not None
    finally:
        driver.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    baro = received['baro']
    assert len(baro) > 20 * 20  # ~20 Hz over 26.5 s, less discovery
    errors = [m.fluid_pressure - wd.isa_pressure(z) for z, m in baro[-200:]]
    assert abs(np.mean(errors)) < 2.0 and 0.5 < np.std(errors) < 5.0  # 2 Pa noise
    assert baro[-1][1].header.frame_id == 'base_link'
    battery = received['battery'][-1]
    assert 0.9 < battery.percentage < 1.0 and 14.0 < battery.voltage <= 16.8
    assert battery.current < 0.0  # discharging
    info = received['info'][-1]
    assert (info.width, info.height) == (640, 480)
    assert info.k[0] == pytest.approx(320.0) and info.k[2] == pytest.approx(320.0)
    assert info.header.frame_id == 'camera_link'
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in received['truth']]
    assert stamps == sorted(stamps) and stamps[-1] == pytest.approx(26.5, abs=0.1)


# --------------------------------------------------------------------------------------------
# The URDF's kinematic tree (robot_state_publisher)
# --------------------------------------------------------------------------------------------

def _rpy_matrix(rpy):
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = (np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def test_urdf_is_one_tree_rooted_at_base_link_with_the_sensor_frames(urdf):
    links = {link.get('name') for link in urdf.findall('link')}
    assert {'base_link', 'imu_link', 'camera_link', 'camera_optical_link', 'laser'} <= links
    joints = urdf.findall('joint')
    children = [j.find('child').get('link') for j in joints]
    parents = {j.find('child').get('link'): j.find('parent').get('link') for j in joints}
    assert len(children) == len(set(children))                     # each link one parent
    assert set(children) | {'base_link'} == links                  # one root: base_link
    for link in links - {'base_link'}:
        seen, at = set(), link
        while at != 'base_link':
            assert at not in seen and at in parents, link          # no loop, reaches the root
            seen.add(at)
            at = parents[at]
    for j in joints:
        assert j.get('type') == 'fixed'
        origin = j.find('origin')
        values = [float(v) for v in origin.get('xyz').split() + origin.get('rpy').split()]
        assert len(values) == 6 and all(np.isfinite(values))


def test_urdf_camera_looks_down_with_image_up_forward(urdf):
    joints = {j.get('name'): j for j in urdf.findall('joint')}

    def rot(name):
        return _rpy_matrix([float(v) for v in joints[name].find('origin').get('rpy').split()])

    cam = rot('camera_joint')
    assert np.allclose(cam @ [1, 0, 0], [0, 0, -1], atol=1e-9)      # camera x: down
    optical = cam @ rot('camera_optical_joint')
    assert np.allclose(optical @ [0, 0, 1], [0, 0, -1], atol=1e-9)  # optical z: the view
    assert np.allclose(optical @ [0, -1, 0], [1, 0, 0], atol=1e-9)  # image up: forward
    laser = rot('laser_joint')
    assert np.allclose(laser @ [0, 0, 1], [0, 0, -1], atol=1e-9)    # upside down
