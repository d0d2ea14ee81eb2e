"""The camera node as a real process over DDS: frames from a video file through OpenCV (the
same VideoCapture path as a V4L2 device) as rgb8 with a pinhole camera_info; a device that
does not exist is an ERROR on /diagnostics and the node keeps running."""

import os

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from skyloc_sim.dds import configure_dds
from skyloc_sim.testing import start_node, stop_process, TestNode

from skyloc_perception.camera_node import calibration_info, pinhole_info

configure_dds(start=__file__)
DOMAIN = 85 + os.getpid() % 5


def _video(path, frames=12, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, :size[0] // 2] = (0, 0, 255)     # BGR red on the left half
        frame[:, size[0] // 2:] = (255, 0, 0)     # BGR blue on the right half
        cv2.putText(frame, str(i), (5, 60), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(frame)
    writer.release()
    return path


def test_pinhole_and_calibration_info(tmp_path):
    info = pinhole_info(640, 480, 90.0, 'camera_link')
    assert info.k[0] == pytest.approx(320.0) and info.k[2] == 320.0 and info.k[5] == 240.0
    with pytest.raises(ValueError):
        pinhole_info(640, 480, 180.0, 'camera_link')
    cal = tmp_path / 'cam.yaml'
    cal.write_text('image_width: 640\nimage_height: 480\ncamera_name: nadir\n'
                   'camera_matrix: {rows: 3, cols: 3, data: [500, 0, 320, 0, 500, 240, 0, 0, 1]}\n'
                   'distortion_model: plumb_bob\n'
                   'distortion_coefficients: {rows: 1, cols: 5, data: [-0.1, 0.01, 0, 0, 0]}\n')
    info = calibration_info(str(cal), 'camera_link')
    assert info.k[0] == 500.0 and info.d[0] == -0.1 and info.p[0] == 500.0
    (tmp_path / 'bad.yaml').write_text('image_width: 640\n')
    with pytest.raises(ValueError, match='not a camera_calibration YAML'):
        calibration_info(str(tmp_path / 'bad.yaml'), 'camera_link')


def test_camera_node_publishes_a_video_and_survives_a_missing_device(tmp_path):
    video = _video(tmp_path / 'flight.avi')
    good = start_node('skyloc_perception', 'camera', 'camera',
                      {'device': str(video), 'rate_hz': 5.0, 'hfov_deg': 90.0}, DOMAIN,
                      tmp_path)
    bad = start_node('skyloc_perception', 'camera', 'camera_missing',
                     {'device': '/dev/video_skyloc_test_none', 'reopen_s': 0.5}, DOMAIN,
                     tmp_path)
    t = TestNode('camera_test', DOMAIN)
    images, infos, diags = [], [], []
    try:
        t.node.create_subscription(Image, '/camera/image_raw', images.append,
                                   qos_profile_sensor_data)
        t.node.create_subscription(CameraInfo, '/camera/camera_info', infos.append,
                                   qos_profile_sensor_data)
        t.node.create_subscription(DiagnosticArray, '/diagnostics',
                                   lambda m: diags.extend(m.status), 10)
        # 12 frames at 5 Hz: 20 images means the file looped
        assert t.wait_until(lambda: len(images) >= 20 and infos, 40.0), len(images)
        img = images[-1]
        assert (img.width, img.height, img.encoding, img.step) == (160, 120, 'rgb8', 480)
        rgb = np.frombuffer(bytes(img.data), np.uint8).reshape(120, 160, 3)
        assert rgb[100, 20, 0] > 200 and rgb[100, 20, 2] < 60      # red stays red (RGB)
        assert rgb[100, 140, 2] > 200 and rgb[100, 140, 0] < 60
        assert infos[-1].k[0] == pytest.approx(80.0) and infos[-1].width == 160
        assert infos[-1].header.stamp == images[-1].header.stamp or len(infos) > 1
        assert t.wait_until(lambda: any(
            s.hardware_id == '/dev/video_skyloc_test_none' and s.level == DiagnosticStatus.ERROR
            and 'cannot be opened' in s.message for s in diags), 10.0)
        assert any(s.hardware_id == str(video) and s.level == DiagnosticStatus.OK
                   and '160x120' in s.message for s in diags)
        assert good.poll() is None and bad.poll() is None
    finally:
        t.close()
        code_good, out_good = stop_process(good)
        code_bad, out_bad = stop_process(bad)
    assert code_good == 0, out_good
    assert code_bad == 0, out_bad
