"""Message conversions and small helpers shared by the coverage nodes (the only ROS code)."""

import array
import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import OccupancyGrid
import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from skyloc_coverage.grid import GridMap

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# pose streams (50-100 Hz, faster than real time in simulation): best effort like sensor data,
# but a deep queue, so a node busy for a few hundred ms (a replan, a scan) loses no pose
POSE_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)


def grid_from_msg(msg):
    """nav_msgs/OccupancyGrid -> GridMap (raises ValueError on an inconsistent message)."""
    info = msg.info
    w, h = int(info.width), int(info.height)
    if len(msg.data) != w * h:
        raise ValueError(f'OccupancyGrid data has {len(msg.data)} cells, info says {w}x{h}')
    q = info.origin.orientation
    if abs(q.z) > 1e-6 or abs(q.x) > 1e-6 or abs(q.y) > 1e-6:
        raise ValueError('OccupancyGrid with a rotated origin is not supported')
    data = np.asarray(msg.data, np.int8).reshape(h, w)
    return GridMap(data, float(info.resolution),
                   (info.origin.position.x, info.origin.position.y))


def grid_to_msg(data, resolution, origin, stamp, frame_id='map'):
    """int8 H x W array (row 0 = bottom) -> nav_msgs/OccupancyGrid."""
    msg = OccupancyGrid()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.info.map_load_time = stamp
    msg.info.resolution = float(resolution)
    msg.info.width = int(data.shape[1])
    msg.info.height = int(data.shape[0])
    msg.info.origin.position.x = float(origin[0])
    msg.info.origin.position.y = float(origin[1])
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array('b', np.ascontiguousarray(data, np.int8).tobytes())
    return msg


def pose_from_odometry(msg):
    """(x, y, z, yaw) of a nav_msgs/Odometry; None if any value is not finite."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
    values = (p.x, p.y, p.z, yaw)
    return values if all(math.isfinite(v) for v in values) else None


def checked_pose(node, diag, msg):
    """pose_from_odometry, or None after a throttled warning and a /diagnostics WARN."""
    pose = pose_from_odometry(msg)
    if pose is None:
        diag.problem_seen('pose with NaN/inf ignored')
        node.get_logger().warning('pose with NaN/inf ignored', throttle_duration_sec=5.0)
    return pose


def stamp_seconds(stamp):
    return stamp.sec + stamp.nanosec * 1e-9


class Diagnostics:
    """One DiagnosticStatus per node: the worst problem since the last report, and values."""

    def __init__(self, node, name, hardware_id='skyloc_coverage'):
        self.node = node
        self.name = name
        self.hardware_id = hardware_id
        self.pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.level = DiagnosticStatus.OK
        self.problem = ''

    def problem_seen(self, text, level=DiagnosticStatus.WARN):
        if level >= self.level:
            self.level, self.problem = level, text

    def publish(self, message, values):
        status = DiagnosticStatus(name=self.name, hardware_id=self.hardware_id)
        status.level = self.level
        status.message = self.problem or message
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.status = [status]
        self.pub.publish(msg)
        self.level, self.problem = DiagnosticStatus.OK, ''
