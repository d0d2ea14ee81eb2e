"""Pinhole nadir camera rendering of a north-up orthophoto (flat ground, z = 0).

Frames (DESIGN.md): map is ENU; base_link x forward, y left, z up; yaw is REP 103 (0 = east,
counter-clockwise). The nadir camera is mounted with image up = base_link +x and image right =
base_link -y, looking along base_link -z. OpenCV pixel (col, row) has its centre at continuous
coordinates (col + 0.5, row + 0.5); the principal point is the image centre.
"""

from dataclasses import dataclass
import math

import numpy as np


def _cv2():
    """OpenCV, imported on first use: the camera geometry here is also what the embedder's
    query normalisation uses, and that must not pay OpenCV's ~16 MB of RSS."""
    import cv2
    return cv2


# Columns are the camera optical axes (x right, y down, z forward) expressed in base_link.
R_BASE_CAMERA = np.array([[0.0, -1.0, 0.0],
                          [-1.0, 0.0, 0.0],
                          [0.0, 0.0, -1.0]])


def rotation_base_to_map(yaw, roll=0.0, pitch=0.0):
    """R (3x3) taking base_link vectors to the map frame: Rz(yaw) Ry(pitch) Rx(roll)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


@dataclass
class PinholeCamera:
    """An ideal pinhole camera of ``width`` x ``height`` pixels and horizontal FOV."""

    width: int = 640
    height: int = 480
    hfov_deg: float = 90.0

    def __post_init__(self):
        if self.width < 8 or self.height < 8:
            raise ValueError(f'camera size {self.width}x{self.height} is too small')
        if not 1.0 <= self.hfov_deg <= 170.0:
            raise ValueError(f'camera_hfov_deg must be in [1, 170], got {self.hfov_deg}')

    @property
    def focal_px(self):
        """Focal length in pixels (square pixels)."""
        return 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def K(self):
        """3x3 intrinsic matrix in OpenCV pixel indices (centre of pixel 0 at 0)."""
        f = self.focal_px
        return np.array([[f, 0.0, self.width / 2.0 - 0.5],
                         [0.0, f, self.height / 2.0 - 0.5],
                         [0.0, 0.0, 1.0]])

    def ground_sampling_distance(self, altitude):
        """Metres on the ground per image pixel at the image centre, looking straight down."""
        return altitude / self.focal_px

    def rotation_camera_to_map(self, yaw, roll=0.0, pitch=0.0, gimbal=True):
        """R taking camera optical vectors to the map frame (gimbal: roll/pitch cancelled)."""
        if gimbal:
            roll = pitch = 0.0
        return rotation_base_to_map(yaw, roll, pitch) @ R_BASE_CAMERA

    def ground_to_image(self, x, y, z, yaw, roll=0.0, pitch=0.0, gimbal=True):
        """3x3 homography taking ground points (X, Y, 1) in the map frame to image pixels."""
        r_cm = self.rotation_camera_to_map(yaw, roll, pitch, gimbal).T
        t = -r_cm @ np.array([x, y, z], dtype=float)
        return self.K @ np.column_stack((r_cm[:, 0], r_cm[:, 1], t))

    def project(self, points_xy, x, y, z, yaw, roll=0.0, pitch=0.0, gimbal=True):
        """Ground points [N, 2] (map frame, metres) -> pixel positions [N, 2] (col, row)."""
        pts = np.asarray(points_xy, dtype=float).reshape(-1, 2)
        h = self.ground_to_image(x, y, z, yaw, roll, pitch, gimbal)
        hom = np.column_stack((pts, np.ones(len(pts)))) @ h.T
        return hom[:, :2] / hom[:, 2:3]

    def camera_info_dict(self):
        """K, P and size for sensor_msgs/CameraInfo (plumb_bob, no distortion)."""
        k = self.K
        p = np.hstack((k, np.zeros((3, 1))))
        return {'width': self.width, 'height': self.height, 'k': k.flatten().tolist(),
                'p': p.flatten().tolist(), 'd': [0.0] * 5,
                'r': np.eye(3).flatten().tolist()}


class OrthoRenderer:
    """Renders camera views of one orthophoto; keeps an image pyramid against aliasing."""

    def __init__(self, image, grid, levels=4):
        self.grid = grid
        self.pyramid = [np.ascontiguousarray(image)]
        for _ in range(levels - 1):
            if min(self.pyramid[-1].shape[:2]) < 64:
                break
            self.pyramid.append(_cv2().pyrDown(self.pyramid[-1]))

    def _map_to_world_index(self, level):
        """3x3 taking map-frame (x, y, 1) to OpenCV pixel indices of a pyramid level."""
        a = np.array(self.grid.map_to_pixel_matrix())
        s = 0.5 ** level
        # pyrDown keeps the even samples: level-L index j sits at level-0 index 2^L j, i.e.
        # at continuous u = 2^L j + 0.5, so j = (u - 0.5) / 2^L
        return np.array([[s, 0.0, -0.5 * s], [0.0, s, -0.5 * s], [0.0, 0.0, 1.0]]) @ a

    def render(self, camera, x, y, z, yaw, roll=0.0, pitch=0.0, gimbal=True,
               border_rgb=(90, 90, 90)):
        """The camera image (H x W x C, same dtype as the orthophoto) at this pose.

        x, y in metres in the map frame, z metres above ground (> 0), yaw/roll/pitch in rad.
        Ground outside the orthophoto is filled with ``border_rgb``.
        """
        if not z > 0.05:
            raise ValueError(f'camera altitude must be above ground, got {z}')
        g2i = camera.ground_to_image(x, y, z, yaw, roll, pitch, gimbal)
        i2g = np.linalg.inv(g2i)
        # ground metres per image pixel vs metres per world pixel -> pyramid level
        scale = camera.ground_sampling_distance(z) / self.grid.resolution
        level = int(np.clip(math.floor(math.log2(max(scale, 1.0))), 0, len(self.pyramid) - 1))
        image_to_world = self._map_to_world_index(level) @ i2g
        border = tuple(int(c) for c in border_rgb)
        cv2 = _cv2()
        return cv2.warpPerspective(
            self.pyramid[level], image_to_world, (camera.width, camera.height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
            borderValue=border)
