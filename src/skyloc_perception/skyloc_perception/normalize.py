"""Query normalisation: a nadir camera image -> a north-up crop at map scale (exact geometry).

The database tiles are north-up squares of ``footprint_m`` metres resampled to ``out_px``
pixels; retrieval only works if the query is the same, so the camera image is warped, with
the full pinhole geometry (flat ground), to the same footprint square centred on the nadir
point (the ground point straight below the camera).

Frames and conventions (DESIGN.md, identical to ``skyloc_sim.camera``, which this module must
not import: the Pi runs perception without the simulator):

* ``map`` is ENU; yaw is REP 103 (0 = east, counter-clockwise), roll/pitch are the
  ``Rz(yaw) Ry(pitch) Rx(roll)`` angles of base_link (x forward, y left, z up);
* the camera looks along base_link -z with image up = base_link +x and image right =
  base_link -y (so with yaw 0 image up is east);
* camera intrinsics and every pixel position in this module use the OpenCV *pixel-index*
  convention: the centre of pixel (col, row) is at (col, row); the crop's nadir point is at
  ((out_px - 1) / 2, (out_px - 1) / 2);
* crops are north-up: crop up = north (+y of map), crop right = east (+x of map).
"""

from dataclasses import dataclass
import math

import cv2
import numpy as np

# One definition of the camera mounting (R_BASE_CAMERA: image right = base_link -y, image
# down = base_link -x, optical axis = base_link -z) and of the attitude, shared with the
# simulator that renders the images (DESIGN.md conventions).
from skyloc_sim.camera import R_BASE_CAMERA, rotation_base_to_map  # noqa: F401 (API)

# below this many source pixels per output pixel plain bilinear sampling does not alias
_AA_THRESHOLD = 1.01


def _finite(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{name} must be a number, got {value!r}') from exc
    if not math.isfinite(value):
        raise ValueError(f'{name} must be finite, got {value}')
    return value


def _positive(name, value):
    value = _finite(name, value)
    if value <= 0.0:
        raise ValueError(f'{name} must be positive, got {value}')
    return value


def _positive_int(name, value):
    try:
        ivalue = int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{name} must be a positive integer, got {value!r}') from exc
    if ivalue != value or ivalue <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return ivalue


@dataclass
class CameraIntrinsics:
    """Pinhole intrinsics in pixels, OpenCV pixel-index convention (centre of pixel 0 is 0).

    ``fx, fy``: focal lengths (px); ``cx, cy``: principal point (px); ``width, height``: the
    image size (px) these intrinsics belong to.  No distortion (rectified images).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        self.fx = _positive('fx', self.fx)
        self.fy = _positive('fy', self.fy)
        self.cx = _finite('cx', self.cx)
        self.cy = _finite('cy', self.cy)
        self.width = _positive_int('width', self.width)
        self.height = _positive_int('height', self.height)

    @classmethod
    def from_camera_info(cls, k, width, height):
        """From sensor_msgs/CameraInfo ``k`` (3x3 row-major, 9 floats) and its width/height."""
        k = np.asarray(k, dtype=float).reshape(-1)
        if k.size != 9:
            raise ValueError(f'camera matrix K must have 9 elements, got {k.size}')
        return cls(k[0], k[4], k[2], k[5], width, height)

    @classmethod
    def from_hfov(cls, width, height, hfov_deg):
        """Square pixels, principal point at the image centre, horizontal field of view (deg).

        Identical to ``skyloc_sim.camera.PinholeCamera(width, height, hfov_deg).K``.
        """
        hfov = _positive('hfov_deg', hfov_deg)
        if hfov >= 180.0:
            raise ValueError(f'hfov_deg must be below 180, got {hfov}')
        f = 0.5 * width / math.tan(math.radians(hfov) / 2.0)
        return cls(f, f, width / 2.0 - 0.5, height / 2.0 - 0.5, width, height)

    @property
    def K(self):
        """3x3 intrinsic matrix (pixel-index convention)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def focal_px(self):
        """Geometric-mean focal length (px); the focal length for square pixels."""
        return math.sqrt(self.fx * self.fy)

    def scaled(self, width, height):
        """The intrinsics of the same camera with its image resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        # pixel-index convention: continuous u = index + 0.5 scales, the index does not
        return CameraIntrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                                (self.cy + 0.5) * sy - 0.5, width, height)


def ground_to_image(intrinsics, altitude_m, yaw_rad, roll_rad=0.0, pitch_rad=0.0, gimbal=True):
    """3x3 homography: ground offsets (dx east, dy north, 1) in metres from the nadir point
    -> image pixel indices (col, row, 1), camera ``altitude_m`` above flat ground.

    With ``gimbal`` the camera stays nadir and roll/pitch are ignored.  The third homogeneous
    coordinate of the result is the depth of the ground point in front of the camera (m).
    """
    if gimbal:
        roll_rad = pitch_rad = 0.0
    r_map_cam = (rotation_base_to_map(yaw_rad, roll_rad, pitch_rad) @ R_BASE_CAMERA).T
    t = -r_map_cam @ np.array([0.0, 0.0, altitude_m])
    return intrinsics.K @ np.column_stack((r_map_cam[:, 0], r_map_cam[:, 1], t))


def ground_sampling_distance(intrinsics, altitude_m):
    """Metres of ground per image pixel at the image centre of a nadir camera (m/px)."""
    return _positive('altitude_m', altitude_m) / intrinsics.focal_px


def _crop_to_ground(footprint_m, out_px):
    """3x3 affine: crop pixel index (col, row, 1) -> ground offset (dx east, dy north, 1), m."""
    s = footprint_m / out_px
    c = (out_px - 1) / 2.0
    return np.array([[s, 0.0, -s * c], [0.0, -s, s * c], [0.0, 0.0, 1.0]])


def crop_pixel_of_ground(dx_east_m, dy_north_m, footprint_m, out_px):
    """(col, row) pixel index (continuous) in a north-up crop where a ground point lands.

    The point is ``dx_east_m`` east and ``dy_north_m`` north of the crop centre (the nadir
    point of a query, the tile centre of a map tile).  Scalars or arrays.
    """
    s = footprint_m / out_px
    c = (out_px - 1) / 2.0
    return (c + np.asarray(dx_east_m, dtype=float) / s,
            c - np.asarray(dy_north_m, dtype=float) / s)


def ground_of_crop_pixel(col, row, footprint_m, out_px):
    """Inverse of :func:`crop_pixel_of_ground`: (dx east, dy north) in metres of a crop pixel."""
    s = footprint_m / out_px
    c = (out_px - 1) / 2.0
    return ((np.asarray(col, dtype=float) - c) * s, (c - np.asarray(row, dtype=float)) * s)


def _jacobian_scale(m, u, v):
    """sqrt|det J| of the projective map ``m`` at (u, v): source px per destination px."""
    h = m @ np.array([u, v, 1.0])
    jac = (m[:2, :2] - np.outer(h[:2] / h[2], m[2, :2])) / h[2]
    return math.sqrt(abs(np.linalg.det(jac)))


def _resample(src, m_dst_to_src, out_px, scale_x, scale_y):
    """warpPerspective of ``src`` to out_px x out_px, low-passed first against aliasing.

    ``scale_x/y``: source pixels per output pixel along the source axes.  Bilinear sampling
    of a source finer than the output aliases (crop rows, roofs -> moire), so the source is
    halved with ``cv2.pyrDown`` (5-tap Gaussian, sigma 1) while it is >= 2x finer, and the
    remaining factor r in (1, 2) is covered by a Gaussian of sigma 0.6 sqrt(r^2 - 1) source
    px: no blur at r = 1, pyrDown's sigma ~1 at r = 2, and a 1-px checkerboard at r = 1.5
    comes out flat within +-5 (a smaller sigma, sampled on 3-5 taps, barely damps it).
    ~1-2 ms for a VGA frame on one core, where a non-integer INTER_AREA resize alone takes
    ~4 ms.
    """
    while min(scale_x, scale_y) >= 2.0 and min(src.shape[:2]) >= 2:
        src = cv2.pyrDown(src)
        # pyrDown keeps the even samples: level-1 index = level-0 index / 2
        m_dst_to_src = np.diag([0.5, 0.5, 1.0]) @ m_dst_to_src
        scale_x, scale_y = scale_x / 2.0, scale_y / 2.0
    sigmas = [0.6 * math.sqrt(r * r - 1.0) if r > _AA_THRESHOLD else 0.0
              for r in (scale_x, scale_y)]
    if max(sigmas) > 0.0:
        ksize = tuple(2 * int(math.ceil(3.0 * sg)) + 1 for sg in sigmas)
        src = cv2.GaussianBlur(src, ksize, sigmaX=max(sigmas[0], 1e-3),
                               sigmaY=max(sigmas[1], 1e-3), borderType=cv2.BORDER_REFLECT)
    return cv2.warpPerspective(src, m_dst_to_src, (out_px, out_px),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _with_alpha(rgb):
    """RGBA copy with alpha 255: warped in the same call, alpha is the validity mask."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)


def _check_rgb(name, img):
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 \
            or img.dtype != np.uint8:
        desc = (f'{img.dtype} array of shape {img.shape}' if isinstance(img, np.ndarray)
                else type(img).__name__)
        raise ValueError(f'{name} must be an H x W x 3 uint8 RGB array, got {desc}')
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f'{name} is empty: {img.shape}')
    return np.ascontiguousarray(img)


def normalize_query(rgb, intrinsics, altitude_m, yaw_rad, footprint_m, out_px, roll_rad=0.0,
                    pitch_rad=0.0, gimbal=True, declination_rad=0.0):
    """The north-up ``out_px`` x ``out_px`` crop of a nadir camera image and its valid share.

    ``rgb``: H x W x 3 uint8 camera image matching ``intrinsics`` (W x H).  ``altitude_m``:
    height of the camera above flat ground (m).  ``yaw_rad``: vehicle yaw, REP 103 (ENU, 0 =
    east, CCW); ``declination_rad`` is added to it (an IMU whose yaw is magnetic).
    ``roll_rad/pitch_rad`` (rad) tilt the camera when ``gimbal`` is False (fixed mount); with a
    gimbal they are ignored.  The crop covers a ``footprint_m`` x ``footprint_m`` ground square
    centred on the nadir point (crop pixel ((out_px - 1) / 2, ...)), up = north, right = east,
    at ``footprint_m / out_px`` m/px; see :func:`crop_pixel_of_ground`.

    Returns ``(crop, valid_fraction)``: crop H x W x 3 uint8 (black where the camera did not
    see the footprint) and the share (0..1) of crop pixels that came from inside the image.
    """
    rgb = _check_rgb('rgb', rgb)
    altitude_m = _positive('altitude_m', altitude_m)
    yaw = _finite('yaw_rad', yaw_rad) + _finite('declination_rad', declination_rad)
    roll_rad = _finite('roll_rad', roll_rad)
    pitch_rad = _finite('pitch_rad', pitch_rad)
    footprint_m = _positive('footprint_m', footprint_m)
    out_px = _positive_int('out_px', out_px)
    if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
        raise ValueError(f'image is {rgb.shape[1]}x{rgb.shape[0]} but the intrinsics are for '
                         f'{intrinsics.width}x{intrinsics.height} (use '
                         'CameraIntrinsics.scaled for a resized image)')

    crop_to_image = ground_to_image(intrinsics, altitude_m, yaw, roll_rad, pitch_rad, gimbal) \
        @ _crop_to_ground(footprint_m, out_px)
    centre = (out_px - 1) / 2.0
    # the nadir point is always in front of the camera unless it is tilted past the horizon
    if (crop_to_image @ np.array([centre, centre, 1.0]))[2] <= 0.0:
        raise ValueError('the nadir point is behind the camera: roll/pitch '
                         f'({roll_rad:.3f}, {pitch_rad:.3f} rad) tilt it past the horizon')
    scale = _jacobian_scale(crop_to_image, centre, centre)
    aspect = math.sqrt(intrinsics.fx / intrinsics.fy)
    warped = _resample(_with_alpha(rgb), crop_to_image, out_px, scale * aspect, scale / aspect)

    # ground behind the camera (strong tilt, large footprint) would be mirrored into the image
    # by the projective division: blank it.  Depth is affine in crop pixels.
    corners = np.array([[0, 0, 1], [out_px - 1, 0, 1], [0, out_px - 1, 1],
                        [out_px - 1, out_px - 1, 1]], dtype=float)
    if np.any((corners @ crop_to_image.T)[:, 2] <= 1e-6 * altitude_m):
        cols, rows = np.meshgrid(np.arange(out_px), np.arange(out_px))
        depth = crop_to_image[2, 0] * cols + crop_to_image[2, 1] * rows + crop_to_image[2, 2]
        warped[depth <= 1e-6 * altitude_m] = 0

    crop = np.ascontiguousarray(warped[:, :, :3])
    valid_fraction = float(warped[:, :, 3].mean(dtype=np.float64) / 255.0)
    return crop, valid_fraction


def _grid_affine(grid, x, y):
    """3x3 affine: map-frame (x, y, 1) -> orthophoto pixel index (col, row, 1), from the
    grid's ``map_to_pixel`` (continuous coordinates, pixel centre at +0.5)."""
    u0, v0 = grid.map_to_pixel(x, y)
    u1, v1 = grid.map_to_pixel(x + 1.0, y)
    u2, v2 = grid.map_to_pixel(x, y + 1.0)
    a = np.array([[u1 - u0, u2 - u0, 0.0], [v1 - v0, v2 - v0, 0.0], [0.0, 0.0, 1.0]])
    a[0, 2] = u0 - a[0, 0] * x - a[0, 1] * y - 0.5
    a[1, 2] = v0 - a[1, 0] * x - a[1, 1] * y - 0.5
    return a


def map_tile(orthophoto_rgb, grid, x, y, footprint_m, out_px, return_valid=False):
    """The database-side crop: the north-up ``footprint_m`` square centred at map (x, y).

    ``orthophoto_rgb``: H x W x 3 uint8, north-up; ``grid``: its pixel <-> map conversion (an
    object with ``resolution``, ``origin_x``, ``origin_y``, ``width``, ``height`` and
    ``map_to_pixel(x, y)`` -> continuous (u right, v down), e.g. ``skyloc_sim.geo.MapGrid``).
    ``x, y`` in metres in the map frame.  The tile has the layout of :func:`normalize_query`'s
    crop (centre pixel ((out_px - 1) / 2, ...), ``footprint_m / out_px`` m/px), is
    anti-aliased the same way and is black outside the orthophoto.  Returns the tile, or
    ``(tile, valid_fraction)`` with ``return_valid``.
    """
    orthophoto_rgb = _check_rgb('orthophoto_rgb', orthophoto_rgb)
    x, y = _finite('x', x), _finite('y', y)
    footprint_m = _positive('footprint_m', footprint_m)
    out_px = _positive_int('out_px', out_px)
    if orthophoto_rgb.shape[:2] != (grid.height, grid.width):
        raise ValueError(f'orthophoto is {orthophoto_rgb.shape[1]}x{orthophoto_rgb.shape[0]} '
                         f'but the grid is {grid.width}x{grid.height}')
    to_ground = _crop_to_ground(footprint_m, out_px)
    to_ground[:2, 2] += (x, y)
    m = _grid_affine(grid, x, y) @ to_ground
    scale = math.sqrt(abs(np.linalg.det(m[:2, :2])))

    # cut only the tile's neighbourhood: the orthophoto can be tens of megapixels
    edge = np.array([[-0.5, -0.5, 1], [out_px - 0.5, -0.5, 1], [-0.5, out_px - 0.5, 1],
                     [out_px - 0.5, out_px - 0.5, 1]]) @ m.T
    pad = 2 * math.ceil(scale) + 2
    h, w = orthophoto_rgb.shape[:2]
    c0 = max(0, int(math.floor(edge[:, 0].min())) - pad)
    c1 = min(w, int(math.ceil(edge[:, 0].max())) + pad + 1)
    r0 = max(0, int(math.floor(edge[:, 1].min())) - pad)
    r1 = min(h, int(math.ceil(edge[:, 1].max())) + pad + 1)
    if c0 >= c1 or r0 >= r1:
        tile = np.zeros((out_px, out_px, 3), np.uint8)
        return (tile, 0.0) if return_valid else tile
    roi = orthophoto_rgb[r0:r1, c0:c1]
    m = np.array([[1.0, 0.0, -c0], [0.0, 1.0, -r0], [0.0, 0.0, 1.0]]) @ m
    sx = math.hypot(m[0, 0], m[0, 1])
    sy = math.hypot(m[1, 0], m[1, 1])
    if not return_valid:
        return _resample(roi, m, out_px, sx, sy)
    warped = _resample(_with_alpha(roi), m, out_px, sx, sy)
    valid = float(warped[:, :, 3].mean(dtype=np.float64) / 255.0)
    return np.ascontiguousarray(warped[:, :, :3]), valid
