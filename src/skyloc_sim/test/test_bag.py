"""Tests of the bag recorder (a real publisher process over DDS) and of the track plot."""

import glob
import os
import select
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

PUBLISHER = r'''
import array, sys, time
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy, qos_profile_sensor_data
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image
from std_msgs.msg import String

rclpy.init()
node = rclpy.create_node('fake_sim')
odom_pub = node.create_publisher(Odometry, '/sim/ground_truth', 10)
image_pub = node.create_publisher(Image, '/camera/image_raw', qos_profile_sensor_data)
latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
mode_pub = node.create_publisher(String, '/skyloc/flight_mode', latched)
mode_pub.publish(String(data='survey'))

rgb = np.zeros((480, 640, 3), np.uint8)
rgb[:, :320] = (255, 0, 0)   # left half red, right half blue (RGB order)
rgb[:, 320:] = (0, 0, 255)
image = Image(height=480, width=640, encoding='rgb8', step=640 * 3)
image.header.frame_id = 'camera_link'
image.data = array.array('B', rgb.tobytes())
counter = [0]

def odom_tick():
    msg = Odometry()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = 'map'
    k = counter[0]
    counter[0] += 1
    msg.pose.pose.position.x = 0.5 * k
    msg.pose.pose.position.y = -0.25 * k
    msg.pose.pose.position.z = 100.0
    odom_pub.publish(msg)

def image_tick():
    image.header.stamp = node.get_clock().now().to_msg()
    image_pub.publish(image)

node.create_timer(0.05, odom_tick)
node.create_timer(0.2, image_tick)
print('ready', flush=True)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    rclpy.try_shutdown()
'''


def _ros_env(domain_id):
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['PYTHONUNBUFFERED'] = '1'
    return env


@pytest.fixture
def publisher_process():
    """Start the fake simulator in its own process on domain 41; yield the domain id."""
    domain_id = 41
    proc = subprocess.Popen([sys.executable, '-c', PUBLISHER], env=_ros_env(domain_id),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        line = proc.stdout.readline() if ready else '(no output in 30 s)'
        assert line.strip() == 'ready', f'publisher did not start: {line}{proc.stdout.read()}'
        yield domain_id
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _record(out_dir, domain_id, seconds, monkeypatch, **kwargs):
    """Run a BagRecorder in this process (own Context) for ``seconds`` after it subscribed."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor

    from skyloc_sim.bag import BagRecorder

    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    try:
        recorder = BagRecorder(out_dir, context=context, **kwargs)
        executor = MultiThreadedExecutor(num_threads=4, context=context)
        executor.add_node(recorder)
        wanted = {'/sim/ground_truth', '/camera/image_raw', '/skyloc/flight_mode'}
        deadline = time.monotonic() + 10.0
        while not wanted <= set(recorder.subscribed_topics) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert wanted <= set(recorder.subscribed_topics), recorder.subscribed_topics
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        # Executor.shutdown() does not wait for callbacks already handed to the thread pool
        # (rclpy 9.1): let them finish before it destroys its guard condition.
        time.sleep(0.3)
        counts = dict(recorder.counts)
        executor.shutdown()
        recorder.destroy_node()
        recorder.close()  # second close is a no-op
    finally:
        rclpy.try_shutdown(context=context)
    return counts


def test_recorder_writes_rosbag2_mcap(publisher_process, tmp_path, monkeypatch):
    from mcap_ros2.reader import read_ros2_messages
    from rosbags.highlevel import AnyReader

    from skyloc_sim.track_plot import read_track

    bag_dir = tmp_path / 'bag'
    counts = _record(str(bag_dir), publisher_process, 3.0, monkeypatch, camera_rate=1.0,
                     exclude=['/rosout', '/parameter_events'])

    # rosbag2 folder: metadata.yaml + one .mcap
    metadata = yaml.safe_load((bag_dir / 'metadata.yaml').read_text())
    info = metadata['rosbag2_bagfile_information']
    assert info['storage_identifier'] == 'mcap'
    assert info['version'] == 9
    mcaps = glob.glob(str(bag_dir / '*.mcap'))
    assert len(mcaps) == 1
    assert [os.path.basename(mcaps[0])] == info['relative_file_paths']
    topics_meta = {t['topic_metadata']['name']: t for t in info['topics_with_message_count']}
    assert set(topics_meta) == {'/sim/ground_truth', '/camera/image_raw/compressed',
                                '/skyloc/flight_mode'}
    assert topics_meta['/skyloc/flight_mode']['topic_metadata']['offered_qos_profiles'][0][
        'durability'] == 'transient_local'
    assert topics_meta['/camera/image_raw/compressed']['topic_metadata'][
        'offered_qos_profiles'][0]['reliability'] == 'best_effort'

    # rosbags reads it back
    odom_x, images, strings = [], [], []
    with AnyReader([bag_dir]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types['/sim/ground_truth'] == 'nav_msgs/msg/Odometry'
        assert types['/camera/image_raw/compressed'] == 'sensor_msgs/msg/CompressedImage'
        assert '/camera/image_raw' not in types
        for connection, _t, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == '/sim/ground_truth':
                odom_x.append(msg.pose.pose.position.x)
            elif connection.topic == '/camera/image_raw/compressed':
                images.append(msg)
            elif connection.topic == '/skyloc/flight_mode':
                strings.append(msg.data)

    assert 42 <= len(odom_x) <= 78, len(odom_x)
    assert counts['/sim/ground_truth'] == len(odom_x)
    steps = np.diff(odom_x)
    assert np.allclose(steps, 0.5), steps  # reliable: consecutive ramp values, in order
    assert strings == ['survey']

    assert 2 <= len(images) <= 4, len(images)
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in images]
    assert np.all(np.diff(stamps) >= 0.999), stamps  # at most camera_rate = 1 Hz
    for msg in images:
        assert msg.format == 'jpeg'
        assert msg.header.frame_id == 'camera_link'
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        assert bgr.shape == (480, 640, 3)
        # rgb8 red left half -> BGR (0, 0, 255); blue right half -> BGR (255, 0, 0)
        assert np.allclose(bgr[240, 100], (0, 0, 255), atol=30), bgr[240, 100]
        assert np.allclose(bgr[240, 540], (255, 0, 0), atol=30), bgr[240, 540]

    # mcap_ros2 (Foxglove's decoder family) reads the same file
    seen = {}
    with open(mcaps[0], 'rb') as stream:
        for item in read_ros2_messages(stream):
            seen.setdefault(item.channel.topic, []).append(item.ros_msg)
    assert len(seen['/sim/ground_truth']) == len(odom_x)
    assert [m.pose.pose.position.x for m in seen['/sim/ground_truth']] == odom_x
    assert len(seen['/camera/image_raw/compressed']) == len(images)
    assert seen['/skyloc/flight_mode'][0].data == 'survey'

    # read_track: (t, x, y, z) matching the ramp x = 0.5 k, y = -0.25 k at 20 Hz (10 m/s)
    track = read_track(str(bag_dir))
    assert track.shape == (len(odom_x), 4)
    assert np.allclose(track[:, 1], odom_x)
    assert np.allclose(track[:, 2], -0.5 * track[:, 1])
    assert np.allclose(track[:, 3], 100.0)
    speed = np.polyfit(track[:, 0], track[:, 1], 1)[0]
    assert 8.0 < speed < 12.0, speed
    with pytest.raises(ValueError, match='not in the bag'):
        read_track(str(bag_dir), '/nothing')


def _image_msg(pixels, encoding, pad=0):
    from sensor_msgs.msg import Image
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    step = row.shape[1] + pad
    buf = np.zeros((h, step), np.uint8)
    buf[:, :row.shape[1]] = row
    msg = Image(height=h, width=w, encoding=encoding, step=step)
    msg.data = buf.tobytes()
    return msg


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_image_encodings(encoding):
    from skyloc_sim.bag import compress_image, image_to_array

    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[:, :, 0], bgr[:, :, 1], bgr[:, :, 2] = 10, 120, 240  # B, G, R
    if encoding == 'rgb8':
        pixels, expected = bgr[:, :, ::-1], bgr
    elif encoding == 'bgr8':
        pixels, expected = bgr, bgr
    elif encoding == 'rgba8':
        pixels = np.dstack([bgr[:, :, ::-1], np.full((6, 8), 7, np.uint8)])
        expected = bgr
    elif encoding == 'bgra8':
        pixels, expected = np.dstack([bgr, np.full((6, 8), 7, np.uint8)]), bgr
    else:
        pixels = np.arange(48, dtype=np.uint8).reshape(6, 8)
        expected = pixels
    msg = _image_msg(np.ascontiguousarray(pixels), encoding, pad=5)
    assert np.array_equal(image_to_array(msg), expected)
    out = compress_image(msg, quality=95)
    assert out.format == 'jpeg'
    decoded = cv2.imdecode(np.frombuffer(bytes(out.data), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 12


def test_unsupported_encoding_is_refused():
    from skyloc_sim.bag import image_to_array

    msg = _image_msg(np.zeros((2, 2, 2), np.uint8), '16UC1')
    with pytest.raises(ValueError, match='unsupported image encoding'):
        image_to_array(msg)


def test_load_msg_types_resolves_dependencies(tmp_path, monkeypatch):
    """Types missing from the typestore come from <share>/msg/*.msg, dependencies included."""
    from rosbags.typesys import get_typestore, Stores

    from skyloc_sim.bag import load_msg_types

    prefix = tmp_path / 'prefix'
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True)
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'fake_msgs').touch()
    msg_dir = prefix / 'share' / 'fake_msgs' / 'msg'
    msg_dir.mkdir(parents=True)
    (msg_dir / 'Outer.msg').write_text('std_msgs/Header header\nInner[] inners\nInner one\n')
    (msg_dir / 'Inner.msg').write_text('float64 value\nstring name\n')
    monkeypatch.setenv('AMENT_PREFIX_PATH',
                       f'{prefix}{os.pathsep}{os.environ.get("AMENT_PREFIX_PATH", "")}')

    store = get_typestore(Stores.LATEST)
    added = load_msg_types(store, 'fake_msgs/msg/Outer')
    assert added == ['fake_msgs/msg/Inner', 'fake_msgs/msg/Outer']
    assert load_msg_types(store, 'fake_msgs/msg/Outer') == []
    Outer = store.types['fake_msgs/msg/Outer']
    Inner = store.types['fake_msgs/msg/Inner']
    Header = store.types['std_msgs/msg/Header']
    Time = store.types['builtin_interfaces/msg/Time']
    msg = Outer(header=Header(stamp=Time(sec=3, nanosec=4), frame_id='map'),
                inners=[Inner(value=1.5, name='a')], one=Inner(value=-2.0, name='b'))
    back = store.deserialize_cdr(store.serialize_cdr(msg, 'fake_msgs/msg/Outer'),
                                 'fake_msgs/msg/Outer')
    assert back.inners[0].value == 1.5 and back.one.name == 'b'
    assert 'MSG: fake_msgs/Inner\n' in store.generate_msgdef('fake_msgs/msg/Outer')[0]
    with pytest.raises(TypeError):
        load_msg_types(store, 'fake_msgs/msg/Missing')

    # the project's own interface package, when it is built and sourced
    try:
        load_msg_types(store, 'skyloc_interfaces/msg/Descriptor')
    except TypeError:
        pytest.skip('skyloc_interfaces is not in the ament index')
    names = [f[0] for f in store.fielddefs['skyloc_interfaces/msg/Descriptor'][1]]
    assert names[:3] == ['header', 'model_id', 'data']


# --------------------------------------------------------------------------------------------
# track plot
# --------------------------------------------------------------------------------------------

RED, GREEN = (255, 0, 0), (0, 255, 0)
A, B = (10.0, 30.0), (60.0, 5.0)  # map-frame points of the red and green squares


def _world(tmp_path, scale=1):
    """200x100 grey world (x scale) at 0.5/scale m/px, origin (-10, -5): x -10..90, y -5..45.

    A red square is centred on map point A, a green one on B (5 m wide each).
    """
    from skyloc_sim.geo import MapGrid, write_map_yaml

    res = 0.5 / scale
    w, h = 200 * scale, 100 * scale
    grid = MapGrid(w, h, res, -10.0, -5.0)
    rgb = np.full((h, w, 3), 128, np.uint8)
    for (x, y), colour in ((A, RED), (B, GREEN)):
        u, v = grid.map_to_pixel(x, y)
        half = 5 * scale
        rgb[int(v) - half:int(v) + half, int(u) - half:int(u) + half] = colour
    cv2.imwrite(str(tmp_path / f'world{scale}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return write_map_yaml(str(tmp_path / f'world{scale}.yaml'), f'world{scale}.png', res,
                          origin=(-10.0, -5.0, 0.0), datum=(47.0, 8.0))


def _centroid(rgb, colour, tol=40):
    mask = np.all(np.abs(rgb[:, :, :3].astype(int) - colour) <= tol, axis=2)
    assert mask.sum() > 20, f'colour {colour} not found'
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def _read_png(path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _track():
    t = np.linspace(0.0, 10.0, 51)
    x = A[0] + (B[0] - A[0]) * t / 10.0
    y = A[1] + (B[1] - A[1]) * t / 10.0 + 5.0 * np.sin(np.pi * t / 10.0)  # bent, ends A -> B
    return np.column_stack([t, x, y, np.full_like(t, 80.0)])


@pytest.mark.parametrize('scale', [1, 12])  # 12: a 2400x1200 image, downsampled for drawing
def test_plot_track_puts_track_on_the_map(tmp_path, scale):
    from skyloc_sim.track_plot import plot_track, TRACK_COLOURS

    map_yaml = _world(tmp_path, scale)
    magenta = tuple(int(TRACK_COLOURS[0][i:i + 2], 16) for i in (1, 3, 5))

    # Where do the map features land in the PNG? (no track drawn over them)
    far = np.array([[0.0, 80.0, 40.0, 0.0], [1.0, 85.0, 40.0, 0.0]])
    bare = plot_track(map_yaml, {'far': far}, str(tmp_path / 'bare.png'), title='world')
    rgb = _read_png(bare)
    assert 1000 <= rgb.shape[1] <= 1400 and 450 <= rgb.shape[0] <= 900, rgb.shape
    red_rc, green_rc = _centroid(rgb, RED), _centroid(rgb, GREEN)
    # north-up: A (y = 30) is above B (y = 5); east to the right: A (x = 10) left of B
    assert red_rc[0] < green_rc[0] - 100 and red_rc[1] < green_rc[1] - 200
    # scale: 50 m of x between A and B spans the expected pixels (axes ~1050 px for 100 m)
    assert 450 < green_rc[1] - red_rc[1] < 560

    # The same view with the track A -> B: start marker on red, end marker on green.
    out = plot_track(map_yaml, {'far': far, 'truth': _track()}, str(tmp_path / 'track.png'),
                     title='world')
    rgb2 = _read_png(out)
    assert rgb2.shape == rgb.shape
    second = tuple(int(TRACK_COLOURS[1][i:i + 2], 16) for i in (1, 3, 5))
    for rc in (red_rc, green_rc):
        pixel = rgb2[int(round(rc[0])), int(round(rc[1]))]
        assert np.abs(pixel.astype(int) - second).max() <= 30, (rc, pixel)
    # the first track ('far') is drawn in the first colour, elsewhere
    assert np.abs(_centroid(rgb2, magenta)[0] - _centroid(rgb, magenta)[0]) < 3


def test_plot_track_crop(tmp_path):
    from skyloc_sim.track_plot import plot_track, TRACK_COLOURS

    map_yaml = _world(tmp_path)
    colour = tuple(int(TRACK_COLOURS[0][i:i + 2], 16) for i in (1, 3, 5))
    out = plot_track(map_yaml, {'truth': _track()}, str(tmp_path / 'crop.png'), crop=True,
                     margin_m=8.0)
    rgb = _read_png(out)
    # the red square (5 m) is larger when zoomed; the start marker sits on its centre
    red_rc = _centroid(rgb, RED)
    pixel = rgb[int(round(red_rc[0])), int(round(red_rc[1]))]
    assert np.abs(pixel.astype(int) - colour).max() <= 30, pixel
    green_rc = _centroid(rgb, GREEN)
    pixel = rgb[int(round(green_rc[0])), int(round(green_rc[1]))]
    assert np.abs(pixel.astype(int) - colour).max() <= 30, pixel
    # cropped to x 2..68 (66 m) instead of 100 m: A and B are further apart in pixels
    assert green_rc[1] - red_rc[1] > 650
