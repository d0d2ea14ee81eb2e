"""Node `player`: plays a recorded rosbag2 folder (MCAP or sqlite3) in place of the simulator.

The sensor topics of the bag (`topics`) are published with their recorded timing (scaled by
`rate`), and /clock follows the bag's time, so the pipeline runs on it exactly as in flight
(`use_sim_time: true`). A camera recorded as sensor_msgs/CompressedImage (make demo records
JPEG at 1 Hz on /camera/image_raw/compressed) is decoded to rgb8 on /camera/image_raw.
/sim/ground_truth is passed on when the bag has it (a real flight has none: the report then
says so). /replay/progress (std_msgs/Float32, %) ends at 100 when the bag is done: the
runner's `--stop-when /replay/progress>=100` stops the run there.

    skyloc run replay --bag runs/<timestamp>/bag     (runner + report, see runner.py)
"""

import math
import os
from pathlib import Path
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.clock import Clock as RosClock, ClockType
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, QoSProfile, qos_profile_sensor_data,
                       ReliabilityPolicy)
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from skyloc_sim.bag import import_msg_class
from skyloc_sim.node_main import declare_parameters, run_node, workspace_path

PARAMETERS = [
    ('bag', '', 'rosbag2 folder to play (metadata.yaml + .mcap/.db3); relative paths from the '
     'workspace root'),
    ('rate', 1.0, 'Bag seconds per wall second'),
    ('start_delay_s', 3.0, 'Wall seconds to wait before playing (subscribers connect)'),
    ('topics', ['/imu/data', '/baro', '/scan', '/battery', '/camera/image_raw',
                '/camera/image_raw/compressed', '/camera/camera_info', '/odom',
                '/sim/ground_truth'],
     'Topics played (the sensors and ground truth; never the pipeline outputs, which the '
     'replayed pipeline makes again)'),
]
SENSOR_TOPICS = {'/imu/data', '/baro', '/scan', '/battery', '/camera/image_raw',
                 '/camera/camera_info', '/odom'}
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def decode_compressed(msg):
    """sensor_msgs/CompressedImage (JPEG/PNG) -> sensor_msgs/Image rgb8 with its header, or
    None when it does not decode."""
    data = np.frombuffer(bytes(msg.data), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    out = Image()
    out.header = msg.header
    out.height, out.width = rgb.shape[:2]
    out.encoding, out.step = 'rgb8', rgb.shape[1] * 3
    out.data = rgb.tobytes()
    return out


class PlayerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('player', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        if float(p['rate']) <= 0:
            raise ValueError(f"rate must be positive, got {p['rate']}")
        path = workspace_path(p['bag']) if p['bag'] else ''
        if not path or not os.path.isfile(os.path.join(path, 'metadata.yaml')):
            raise ValueError(f"bag: '{p['bag']}' is not a rosbag2 folder (no metadata.yaml)")
        self.path = path
        self.clock_pub = self.create_publisher(Clock, '/clock', 10)
        self.progress_pub = self.create_publisher(Float32, '/replay/progress', 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.pubs = {}
        self.stats = {'messages': 0, 'undecodable': 0, 'bag_time_s': 0.0, 'progress': 0.0,
                      'late_s_max': 0.0}
        self.problem = ''
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._play, daemon=True)
        self.thread.start()
        self.create_timer(1.0, self._diagnostics,
                          clock=RosClock(clock_type=ClockType.STEADY_TIME))

    def _publisher(self, topic, msgtype):
        out_topic, cls = topic, import_msg_class(msgtype)
        if topic.endswith('/compressed') and msgtype == 'sensor_msgs/msg/CompressedImage':
            out_topic, cls = topic[:-len('/compressed')], Image
        if out_topic not in self.pubs:
            qos = qos_profile_sensor_data if out_topic in SENSOR_TOPICS else RELIABLE
            self.pubs[out_topic] = self.create_publisher(cls, out_topic, qos)
        return out_topic

    def _play(self):
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import get_typestore, Stores
        try:
            time.sleep(float(self.cfg['start_delay_s']))
            wanted = set(self.cfg['topics'])
            rate = float(self.cfg['rate'])
            with AnyReader([Path(self.path)],
                           default_typestore=get_typestore(Stores.LATEST)) as reader:
                conns = [c for c in reader.connections if c.topic in wanted]
                if not conns:
                    raise ValueError(f'{self.path}: none of {sorted(wanted)} in the bag')
                classes = {c.id: import_msg_class(c.msgtype) for c in conns}
                outs = {c.id: self._publisher(c.topic, c.msgtype) for c in conns}
                t0, t_end = reader.start_time, reader.end_time
                span = max(1, t_end - t0)
                self.get_logger().info(
                    f'playing {self.path}: {(t_end - t0) * 1e-9:.0f} s at {rate:g}x, topics '
                    f"{', '.join(sorted({c.topic for c in conns}))}")
                wall0 = time.monotonic()
                last_clock = None
                for conn, log_ns, raw in reader.messages(connections=conns):
                    due = wall0 + (log_ns - t0) * 1e-9 / rate
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    else:
                        self.stats['late_s_max'] = max(self.stats['late_s_max'], -wait)
                    if last_clock is None or log_ns - last_clock >= 5_000_000:  # 200 Hz
                        clock = Clock()
                        clock.clock.sec, clock.clock.nanosec = divmod(int(log_ns), 10 ** 9)
                        self.clock_pub.publish(clock)
                        last_clock = log_ns
                    msg = deserialize_message(bytes(raw), classes[conn.id])
                    if outs[conn.id] != conn.topic:       # compressed -> raw image
                        msg = decode_compressed(msg)
                        if msg is None:
                            self.stats['undecodable'] += 1
                            self.problem = f'{conn.topic}: an image did not decode'
                            continue
                    self.pubs[outs[conn.id]].publish(msg)
                    self.stats['messages'] += 1
                    self.stats['bag_time_s'] = (log_ns - t0) * 1e-9
                    self.stats['progress'] = 100.0 * (log_ns - t0) / span
                    if self.stats['messages'] % 200 == 0:
                        self.progress_pub.publish(Float32(data=float(self.stats['progress'])))
            self.stats['progress'] = 100.0
            self.get_logger().info(f"bag done: {self.stats['messages']} messages played")
        except Exception as exc:  # noqa: BLE001 (reported; the node stays up for diagnostics)
            self.problem = f'playback stopped: {type(exc).__name__}: {exc}'
            self.get_logger().error(self.problem)
        finally:   # played or failed, the bag is over: 100 (a failure is on /diagnostics)
            self.done.set()
            for _ in range(5):     # several times: the runner must not miss it
                self.progress_pub.publish(Float32(data=100.0))
                time.sleep(0.2)

    def _diagnostics(self):
        level = DiagnosticStatus.ERROR if self.problem.startswith('playback stopped') else \
            DiagnosticStatus.WARN if self.problem else DiagnosticStatus.OK
        status = DiagnosticStatus(name='player: bag', hardware_id=self.path, level=level)
        status.message = self.problem or (f"{self.stats['progress']:.0f}% of the bag"
                                          + (' (done)' if self.done.is_set() else ''))
        status.values = [KeyValue(key=k, value=f'{v:.2f}' if isinstance(v, float) and
                                  math.isfinite(v) else str(v))
                         for k, v in self.stats.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        if self.done.is_set():
            self.progress_pub.publish(Float32(data=100.0))


NODE_CLASS = PlayerNode


def main(args=None):
    run_node(PlayerNode, args)


if __name__ == '__main__':
    main()
