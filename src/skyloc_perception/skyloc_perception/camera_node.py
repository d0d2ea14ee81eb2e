"""Node `camera`: a V4L2 / OpenCV camera on /camera/image_raw and /camera/camera_info.

For the Raspberry Pi graph where no standard camera driver runs (with one, such as
camera_ros or v4l2_camera, remap its topics to /camera/image_raw and /camera/camera_info and
leave this node out). `device` is a V4L2 device (/dev/video0), its index (0), or a video file
(played at `rate_hz`, looped: for bench runs and tests). Frames are published as rgb8 with
sensor-data QoS, stamped with the capture time; camera_info is a pinhole model from
`hfov_deg` (no distortion) unless `camera_info_file` (a camera_calibration YAML) is given.

A device that cannot be opened, or stops delivering frames, is an ERROR on /diagnostics and
is reopened every `reopen_s`; the node keeps running.
"""

import math
import os
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from skyloc_sim.node_main import declare_parameters, run_node, workspace_path
import yaml

PARAMETERS = [
    ('device', '/dev/video0', 'V4L2 device path, its index (e.g. 0) or a video file'),
    ('width', 1280, 'Requested frame width, px (the device may choose another)'),
    ('height', 960, 'Requested frame height, px'),
    ('rate_hz', 2.0, 'Frames published per second (the localizer needs <= 1-2 Hz)'),
    ('hfov_deg', 90.0, 'Horizontal field of view for the pinhole camera_info, degrees'),
    ('camera_info_file', '', 'camera_calibration YAML (camera_matrix, distortion_coefficients'
     '); empty: pinhole from hfov_deg'),
    ('frame_id', 'camera_link', 'Frame of the images (looking down, see the URDF)'),
    ('reopen_s', 2.0, 'Seconds between attempts to (re)open a device that failed'),
    ('loop', True, 'A video file starts again at its end'),
]


def pinhole_info(width, height, hfov_deg, frame_id):
    """CameraInfo of an ideal pinhole camera with the given horizontal field of view."""
    if not (0.0 < hfov_deg < 180.0):
        raise ValueError(f'hfov_deg must be in (0, 180), got {hfov_deg}')
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = int(width), int(height)
    info.distortion_model = 'plumb_bob'
    info.d = [0.0] * 5
    info.k = [f, 0.0, width / 2.0, 0.0, f, height / 2.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, width / 2.0, 0.0, 0.0, f, height / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def calibration_info(path, frame_id):
    """CameraInfo from a camera_calibration YAML (ROS camera_info_manager format)."""
    with open(path) as stream:
        data = yaml.safe_load(stream) or {}
    try:
        info = CameraInfo()
        info.header.frame_id = frame_id
        info.width, info.height = int(data['image_width']), int(data['image_height'])
        info.distortion_model = str(data.get('distortion_model', 'plumb_bob'))
        info.k = [float(v) for v in data['camera_matrix']['data']]
        info.d = [float(v) for v in data.get('distortion_coefficients', {}).get('data', [])]
        info.r = [float(v) for v in data.get('rectification_matrix', {}).get(
            'data', [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])]
        k = info.k
        info.p = [float(v) for v in data.get('projection_matrix', {}).get(
            'data', [k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f'{path}: not a camera_calibration YAML ({exc})') from exc
    if len(info.k) != 9:
        raise ValueError(f'{path}: camera_matrix needs 9 values, has {len(info.k)}')
    return info


def open_capture(device):
    """cv2.VideoCapture of a device path, an index or a file (no shell is involved)."""
    text = str(device).strip()
    source = int(text) if text.isdigit() else text
    cap = cv2.VideoCapture(source)
    return cap if cap.isOpened() else None


class CameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__('camera', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        if float(p['rate_hz']) <= 0:
            raise ValueError(f"rate_hz must be positive, got {p['rate_hz']}")
        if p['camera_info_file']:
            self.info = calibration_info(workspace_path(p['camera_info_file']), p['frame_id'])
        else:
            self.info = None   # made from the first frame's size
            pinhole_info(int(p['width']), int(p['height']), float(p['hfov_deg']),
                         p['frame_id'])   # checks hfov_deg at start-up
        self.image_pub = self.create_publisher(Image, '/camera/image_raw',
                                               qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, '/camera/camera_info',
                                              qos_profile_sensor_data)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.cap = None
        self.next_open = 0.0
        self.is_file = os.path.isfile(str(p['device']))
        self.stats = {'frames': 0, 'failures': 0, 'opens': 0, 'problem': '',
                      'level': DiagnosticStatus.OK, 'size': ''}
        self.window = []
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0 / float(p['rate_hz']), self._grab, clock=steady)
        self.create_timer(1.0, self._diagnostics, clock=steady)
        self._open()

    def _problem(self, text, level=DiagnosticStatus.ERROR):
        self.stats['problem'], self.stats['level'] = text, max(level, self.stats['level'])
        self.get_logger().error(text, throttle_duration_sec=10.0)

    def _open(self):
        p = self.cfg
        self.next_open = time.monotonic() + float(p['reopen_s'])
        self.cap = open_capture(p['device'])
        if self.cap is None:
            self._problem(f"camera {p['device']} cannot be opened: retrying every "
                          f"{p['reopen_s']:g} s")
            return
        if not self.is_file:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(p['width']))
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(p['height']))
        self.stats['opens'] += 1
        self.get_logger().info(f"camera {p['device']} opened")

    def _grab(self):
        if self.cap is None:
            if time.monotonic() >= self.next_open:
                self._open()
            return
        ok, frame = self.cap.read()
        if not ok and self.is_file and self.cfg['loop']:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok or frame is None:
            self.stats['failures'] += 1
            self._problem(f"camera {self.cfg['device']} delivered no frame: reopening")
            self.cap.release()
            self.cap = None
            return
        stamp = self.get_clock().now().to_msg()
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else \
            cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        msg = Image()
        msg.header.stamp, msg.header.frame_id = stamp, self.cfg['frame_id']
        msg.height, msg.width, msg.encoding, msg.step = h, w, 'rgb8', w * 3
        msg.data = rgb.tobytes()
        self.image_pub.publish(msg)
        if self.info is None or (self.info.width, self.info.height) != (w, h) and \
                not self.cfg['camera_info_file']:
            self.info = pinhole_info(w, h, float(self.cfg['hfov_deg']), self.cfg['frame_id'])
        self.info.header.stamp = stamp
        self.info_pub.publish(self.info)
        self.stats['frames'] += 1
        self.stats['size'] = f'{w}x{h}'
        self.window = (self.window + [time.monotonic()])[-20:]

    def _diagnostics(self):
        st = self.stats
        rate = (len(self.window) - 1) / (self.window[-1] - self.window[0]) \
            if len(self.window) > 1 and self.window[-1] > self.window[0] else 0.0
        status = DiagnosticStatus(name='camera: image', hardware_id=str(self.cfg['device']),
                                  level=st['level'])
        status.message = st['problem'] or f"{st['size']} at {rate:.1f} Hz"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ('device', self.cfg['device']), ('frames', st['frames']),
            ('failures', st['failures']), ('opens', st['opens']), ('size', st['size']),
            ('rate_hz', f'{rate:.2f}'))]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        st['problem'], st['level'] = '', DiagnosticStatus.OK
        if self.cap is None:   # still down: stays an error until a frame comes
            st['problem'] = f"camera {self.cfg['device']} not open"
            st['level'] = DiagnosticStatus.ERROR

    def destroy_node(self):
        if self.cap is not None:
            self.cap.release()
        super().destroy_node()


NODE_CLASS = CameraNode


def main(args=None):
    run_node(CameraNode, args, startup_errors=(ValueError, OSError))


if __name__ == '__main__':
    main()
