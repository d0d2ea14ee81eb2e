"""Record ROS 2 topics into a rosbag2 folder (metadata.yaml + one MCAP file).

The folder opens with ``ros2 bag info/play`` and Foxglove. Every message is stored as the CDR
bytes it arrived as, with the receive time of the node clock (the simulation clock under
``use_sim_time``, else the wall clock) as log time, except ``sensor_msgs/Image``: raw frames are
too big for a bag (640x480 rgb8 at 5 Hz is 4.6 MB/s), so each image topic ``T`` is stored as
``sensor_msgs/CompressedImage`` (format ``jpeg``, same header) on ``T/compressed``, at most
``camera_rate`` frames a second by header stamp.

Standalone::

    python -m skyloc_sim.bag OUT_DIR [--topics /a /b] [--exclude REGEX ...] [--duration S]
"""

import argparse
import array
import functools
import glob
import importlib
import os
import re
import struct
import sys
import threading

import cv2
import numpy as np
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.task import Future
from rosbags.interfaces import (
    Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg, get_typestore, Stores

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
DISCOVERY_PERIOD_S = 0.5
SUBSCRIPTION_DEPTH = 100

_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '8UC1': 1, '8UC3': 3}


# --------------------------------------------------------------------------------------------
# Message definitions
# --------------------------------------------------------------------------------------------

def _split_type(msgtype):
    parts = msgtype.split('/')
    if len(parts) != 3 or not all(parts):
        raise TypeError(f"message type '{msgtype}' is not of the form 'pkg/msg/Name'")
    return parts


def _find_msg_file(msgtype):
    """Path of the .msg file defining ``msgtype`` in its package's share directory."""
    from ament_index_python.packages import (
        get_package_share_directory, PackageNotFoundError)
    pkg, sub, name = _split_type(msgtype)
    try:
        share = get_package_share_directory(pkg)
    except (PackageNotFoundError, LookupError, ValueError) as exc:
        raise TypeError(f"no definition for '{msgtype}': package '{pkg}' is not in the "
                        'ament index (is its install/ sourced?)') from exc
    direct = os.path.join(share, sub, name + '.msg')
    if os.path.isfile(direct):
        return direct
    found = sorted(glob.glob(os.path.join(share, '**', name + '.msg'), recursive=True))
    if not found:
        raise TypeError(f"no definition for '{msgtype}': {name}.msg not found under {share}")
    return found[0]


def _referenced(desc):
    """Type names a rosbags field description refers to (through arrays and sequences)."""
    kind, detail = desc
    kind = getattr(kind, 'name', kind)
    if kind == 'NAME':
        return [detail]
    if kind in ('ARRAY', 'SEQUENCE'):
        return _referenced(detail[0])
    return []


def load_msg_types(typestore, msgtype):
    """Register ``msgtype`` and the types it depends on that ``typestore`` lacks.

    Definitions are read from ``<share of pkg>/msg/<Name>.msg`` through the ament index, the
    dependencies recursively. Returns the names that were added (empty when all were known).
    Raises TypeError when a definition cannot be found.
    """
    pending = [msgtype]
    collected = {}
    while pending:
        name = pending.pop()
        if name in typestore.fielddefs or name in collected:
            continue
        path = _find_msg_file(name)
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
        types = get_types_from_msg(text, name)
        collected.update(types)
        for _consts, fields in types.values():
            for _field, desc in fields:
                pending.extend(_referenced(desc))
    if collected:
        typestore.register(collected)
    return sorted(collected)


def import_msg_class(msgtype):
    """The rclpy message class of 'pkg/msg/Name' (TypeError if it cannot be imported)."""
    pkg, sub, name = _split_type(msgtype)
    try:
        return getattr(importlib.import_module(f'{pkg}.{sub}'), name)
    except (ImportError, AttributeError) as exc:
        raise TypeError(f"cannot import the Python class of '{msgtype}': {exc}") from exc


# --------------------------------------------------------------------------------------------
# QoS
# --------------------------------------------------------------------------------------------

def _enum_by_name(target, value, default):
    name = getattr(value, 'name', str(value)).upper()
    return target.__members__.get(name, default)


def _qos_time(duration):
    ns = int(duration.nanoseconds)
    return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)


def qos_to_rosbags(profile):
    """An rclpy QoSProfile (as reported for a publisher) -> rosbags ``Qos`` for metadata.yaml."""
    return Qos(
        history=_enum_by_name(QosHistory, profile.history, QosHistory.UNKNOWN),
        depth=int(profile.depth),
        reliability=_enum_by_name(QosReliability, profile.reliability, QosReliability.UNKNOWN),
        durability=_enum_by_name(QosDurability, profile.durability, QosDurability.UNKNOWN),
        deadline=_qos_time(profile.deadline),
        lifespan=_qos_time(profile.lifespan),
        liveliness=_enum_by_name(QosLiveliness, profile.liveliness, QosLiveliness.UNKNOWN),
        liveliness_lease_duration=_qos_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def subscription_qos(publisher_infos, depth=SUBSCRIPTION_DEPTH):
    """A subscription QoS compatible with every publisher of a topic (as rosbag2 chooses it).

    Reliable only if all publishers are reliable (else best effort, which matches both);
    transient local only if all publishers are transient local (so latched messages arrive,
    while a volatile publisher would not match a transient-local reader).
    """
    profiles = [info.qos_profile for info in publisher_infos]
    reliable = bool(profiles) and all(
        p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    latched = bool(profiles) and all(
        p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                    else DurabilityPolicy.VOLATILE))


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def cdr_stamp_ns(data):
    """header.stamp in ns of a CDR-serialised message whose first field is a std_msgs/Header.

    Returns 0 when the buffer is too short or the stamp is unset.
    """
    if len(data) < 12:
        return 0
    endian = '<' if data[1] & 1 else '>'
    sec, nanosec = struct.unpack_from(endian + 'iI', data, 4)
    return sec * 1_000_000_000 + nanosec


def image_to_array(msg):
    """sensor_msgs/Image -> numpy array for OpenCV: HxWx3 BGR, or HxW for mono8.

    Handles encodings rgb8, bgr8, rgba8, bgra8 and mono8 (alpha is dropped) and row padding
    (``step``). Raises ValueError for other encodings or an inconsistent buffer.
    """
    encoding = msg.encoding.strip()
    channels = _CHANNELS.get(encoding)
    if channels is None:
        raise ValueError(f"unsupported image encoding '{msg.encoding}' "
                         f'(supported: {", ".join(sorted(_CHANNELS))})')
    height, width = int(msg.height), int(msg.width)
    row = width * channels
    step = int(msg.step) or row
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if height == 0 or width == 0 or step < row or buf.size < step * (height - 1) + row:
        raise ValueError(f'image buffer of {buf.size} bytes does not hold {width}x{height} '
                         f'{encoding} with step {step}')
    if buf.size < step * height:
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    pixels = buf[:step * height].reshape(height, step)[:, :row]
    if channels == 1:
        return np.ascontiguousarray(pixels)
    pixels = pixels.reshape(height, width, channels)
    if encoding == 'rgb8':
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if encoding == 'rgba8':
        return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGR)
    if encoding == 'bgra8':
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(pixels)


def compress_image(msg, quality=80):
    """sensor_msgs/Image -> sensor_msgs/CompressedImage (JPEG, format 'jpeg', same header)."""
    from sensor_msgs.msg import CompressedImage
    pixels = image_to_array(msg)
    ok, jpeg = cv2.imencode('.jpg', pixels, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError('OpenCV could not JPEG-encode the image')
    out = CompressedImage()
    out.header = msg.header
    out.format = 'jpeg'
    out.data = array.array('B', jpeg.tobytes())
    return out


# --------------------------------------------------------------------------------------------
# Recorder node
# --------------------------------------------------------------------------------------------

def _hidden(topic):
    return any(part.startswith('_') for part in topic.split('/') if part)


def _normalise(topic):
    return topic if topic.startswith('/') else '/' + topic


class BagRecorder(Node):
    """Subscribe to topics as they appear and write them into a rosbag2 (MCAP) folder.

    ``topics``: names to record (default: every visible topic that has a publisher);
    ``exclude``: names or regular expressions (full match) to leave out; ``camera_rate``: the
    most JPEG frames a second kept per image topic (<= 0: all); ``jpeg_quality``: 0-100.
    Further keyword arguments go to ``rclpy.node.Node`` (``context``, ``parameter_overrides``,
    ..., and ``node_name`` to rename it). ``counts`` maps each recorded topic to the number of
    messages written so far. Call ``close()`` (or ``destroy_node()``) to finalise the bag.
    """

    def __init__(self, out_dir, topics=None, exclude=(), camera_rate=1.0, jpeg_quality=80,
                 **node_kwargs):
        super().__init__(node_kwargs.pop('node_name', 'recorder'), **node_kwargs)
        self.out_dir = os.path.abspath(str(out_dir))
        self.topics = None if topics is None else {_normalise(t) for t in topics}
        self.exclude = [re.compile(p) for p in exclude]
        self._exclude_names = {_normalise(p) for p in exclude}
        self.camera_rate = float(camera_rate)
        self.jpeg_quality = int(jpeg_quality)
        self.counts = {}
        self.typestore = get_typestore(Stores.LATEST)
        self._lock = threading.Lock()
        self._closed = False
        self._connections = {}
        self._subscriptions_by_topic = {}
        self._skipped = set()
        self._warned = set()
        self._last_frame_ns = {}
        self._group = ReentrantCallbackGroup()

        if os.path.isdir(self.out_dir) and not os.listdir(self.out_dir):
            os.rmdir(self.out_dir)  # an empty folder made for us: rosbags wants to create it
        parent = os.path.dirname(self.out_dir)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._writer = Writer(self.out_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()

        self._discover()
        self._timer = self.create_timer(DISCOVERY_PERIOD_S, self._discover)
        self.get_logger().info(f'recording to {self.out_dir}')

    # -- discovery ---------------------------------------------------------------------------

    @property
    def subscribed_topics(self):
        """Names of the topics subscribed so far (the input names, before image renaming)."""
        return sorted(self._subscriptions_by_topic)

    def _wanted(self, topic):
        if topic in self._exclude_names or any(p.fullmatch(topic) for p in self.exclude):
            return False
        if self.topics is not None:
            return topic in self.topics
        return not _hidden(topic)

    def _warn_once(self, key, text):
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    def _discover(self):
        if self._closed:
            return
        for topic, _types in self.get_topic_names_and_types():
            if (topic in self._subscriptions_by_topic or topic in self._skipped
                    or not self._wanted(topic)):
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue  # only subscribers so far: wait for a publisher to know the QoS
            msgtypes = sorted({info.topic_type for info in infos})
            if len(msgtypes) > 1:
                self._warn_once(topic, f'{topic}: publishers disagree on the type '
                                       f'({", ".join(msgtypes)}): not recorded')
                self._skipped.add(topic)
                continue
            try:
                self._subscribe(topic, msgtypes[0], infos)
            except (TypeError, ValueError) as exc:
                self._warn_once(topic, f'{topic}: not recorded: {exc}')
                self._skipped.add(topic)

    def _subscribe(self, topic, msgtype, infos):
        msg_class = import_msg_class(msgtype)
        offered = [qos_to_rosbags(info.qos_profile) for info in infos]
        if msgtype == IMAGE_TYPE:
            out_topic, out_type = topic + '/compressed', COMPRESSED_TYPE
        else:
            out_topic, out_type = topic, msgtype
        with self._lock:
            if self._closed:
                return
            if out_topic in self._connections:
                # e.g. a real T/compressed publisher beside the conversion of image topic T
                raise ValueError(f'{out_topic} is already recorded (from '
                                 f'{self._connections[out_topic][1]})')
            load_msg_types(self.typestore, out_type)
            connection = self._writer.add_connection(
                out_topic, out_type, typestore=self.typestore, offered_qos_profiles=offered)
            self._connections[out_topic] = (connection, topic)
            self.counts.setdefault(out_topic, 0)
        if msgtype == IMAGE_TYPE:
            callback = functools.partial(self._on_image, topic, out_topic, connection)
        else:
            callback = functools.partial(self._on_raw, out_topic, connection)
        qos = subscription_qos(infos)
        self._subscriptions_by_topic[topic] = self.create_subscription(
            msg_class, topic, callback, qos, raw=True, callback_group=self._group)
        self.get_logger().info(
            f'recording {topic} ({msgtype}, {qos.reliability.name.lower()}, '
            f'{qos.durability.name.lower()})' + (f' as {out_topic}' if out_topic != topic else ''))

    # -- callbacks ---------------------------------------------------------------------------

    def _now_ns(self):
        return self.get_clock().now().nanoseconds

    def _on_raw(self, out_topic, connection, data):
        stamp = self._now_ns()
        with self._lock:
            if self._closed:
                return
            self._writer.write(connection, stamp, data)
            self.counts[out_topic] += 1

    def _take_frame(self, topic, stamp_ns):
        """Rate limit by header stamp; call with the lock held."""
        if self.camera_rate <= 0.0:
            return True
        period = int(round(1e9 / self.camera_rate))
        last = self._last_frame_ns.get(topic)
        if last is None or stamp_ns < last or stamp_ns - last >= period:
            self._last_frame_ns[topic] = stamp_ns
            return True
        return False

    def _on_image(self, topic, out_topic, connection, data):
        from sensor_msgs.msg import Image
        receive_ns = self._now_ns()
        stamp_ns = cdr_stamp_ns(data) or receive_ns
        with self._lock:
            if self._closed or not self._take_frame(topic, stamp_ns):
                return
        try:
            compressed = compress_image(deserialize_message(data, Image), self.jpeg_quality)
        except ValueError as exc:
            self._warn_once(topic + ' encoding', f'{topic}: frame not recorded: {exc}')
            return
        payload = serialize_message(compressed)
        with self._lock:
            if self._closed:
                return
            self._writer.write(connection, receive_ns, payload)
            self.counts[out_topic] += 1

    # -- end ---------------------------------------------------------------------------------

    def close(self):
        """Finalise the bag (MCAP summary and metadata.yaml). Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()

    def destroy_node(self):
        """Close the bag, then destroy the node."""
        self.close()
        return super().destroy_node()


def main(args=None):
    """``python -m skyloc_sim.bag OUT_DIR [--topics ...] [--exclude ...] [--duration S]``."""
    argv = list(sys.argv if args is None else args)
    parser = argparse.ArgumentParser(
        prog='python -m skyloc_sim.bag',
        description='Record ROS 2 topics into a rosbag2 folder (MCAP); images as JPEG.')
    parser.add_argument('out_dir', help='bag folder to create (must not exist or be empty)')
    parser.add_argument('--topics', nargs='+', default=None,
                        help='topics to record (default: all with a publisher)')
    parser.add_argument('--exclude', nargs='+', default=[],
                        help='topic names or regular expressions to leave out')
    parser.add_argument('--duration', type=float, default=None,
                        help='stop after this many seconds (default: until Ctrl-C)')
    parser.add_argument('--camera-rate', type=float, default=1.0,
                        help='JPEG frames per second kept per image topic (<= 0: all)')
    parser.add_argument('--jpeg-quality', type=int, default=80)
    options = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])

    rclpy.init(args=argv)
    recorder = None
    try:
        recorder = BagRecorder(options.out_dir, topics=options.topics, exclude=options.exclude,
                               camera_rate=options.camera_rate,
                               jpeg_quality=options.jpeg_quality)
        # One thread is plenty (JPEG at camera_rate, raw writes otherwise); the lock keeps the
        # node safe in a MultiThreadedExecutor too (e.g. composed with other nodes).
        executor = SingleThreadedExecutor()
        executor.add_node(recorder)
        if options.duration is None:
            executor.spin()
        else:
            executor.spin_until_future_complete(Future(), timeout_sec=options.duration)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if recorder is not None:
            recorder.close()
            counts = ', '.join(f'{k}: {v}' for k, v in sorted(recorder.counts.items()))
            print(f'{recorder.out_dir}: {counts or "no messages"}', flush=True)
            recorder.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
