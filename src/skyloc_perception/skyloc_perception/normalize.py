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

import numpy as np
# the camera mounting and attitude conventions are the simulator's (skyloc_sim.camera imports
# OpenCV only when it renders, so the embedder does not load it)
from skyloc_sim.camera import R_BASE_CAMERA, rotation_base_to_map  # noqa: F401


def band_for_altitude(bands, altitude_m):
    """Index of the altitude band (dicts with alt_min, alt_max, as in a database's db.json)
    that contains ``altitude_m``; outside all bands the nearest one (in log altitude)."""
    best, best_d = 0, math.inf
    for i, band in enumerate(bands):
        lo, hi = float(band['alt_min']), float(band['alt_max'])
        if lo <= altitude_m <= hi:
            return i
        d = min(abs(math.log(altitude_m / lo)), abs(math.log(altitude_m / hi)))
        if d < best_d:
            best, best_d = i, d
    return best


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


# ----------------------------------------------------------------------------- resampling
# numpy only (no OpenCV: cv2 is ~16 MB of RSS in the embedder process, which has no other use
# for it with a ViT bundle). Same operations as cv2.pyrDown, cv2.GaussianBlur (BORDER_REFLECT)
# and cv2.warpPerspective (INTER_LINEAR, WARP_INVERSE_MAP, BORDER_CONSTANT 0, sample positions
# quantised to 1/32 px as OpenCV does), within +-1 (pyrDown: identical; test_normalize checks
# all three against OpenCV). Filters run over bands of rows so that the float32 temporaries
# stay small (a VGA frame in float32 is 3.7 MB per copy).

_PYR_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0
_BAND_ROWS = 32


def _reflect101(idx, n):
    """OpenCV BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba) indices into 0..n-1."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * n - 2
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _reflect(idx, n):
    """OpenCV BORDER_REFLECT (fedcba|abcdefgh|hgfedcb) indices into 0..n-1."""
    idx = idx % (2 * n)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)


def _gaussian_kernel(ksize, sigma):
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0, float32."""
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0
    k = np.exp(-x * x / (2.0 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def _correlate(x, kernel, axis, border, step, n_out):
    """float32 correlation of ``x`` with an odd ``kernel`` along ``axis`` (0 or 1), keeping
    output samples 0, step, 2 step, ... (n_out of them); ``border`` None: ``x`` already holds
    the kernel's reach on both sides."""
    r = len(kernel) // 2
    if border is None:
        padded = x
    else:
        idx = border(np.arange(-r, (n_out - 1) * step + r + 1), x.shape[axis])
        padded = np.take(x, idx, axis=axis)
    span = (n_out - 1) * step + 1
    out = None
    for k, w in enumerate(kernel):
        part = padded[k:k + span:step] if axis == 0 else padded[:, k:k + span:step]
        out = part * np.float32(w) if out is None else out + part * np.float32(w)
    return out


def _separable(src, ky, kx, border, step=1):
    """uint8 ``src`` filtered by ky (rows) then kx (columns), decimated by ``step``."""
    h, w = src.shape[:2]
    h_out, w_out = (h + step - 1) // step, (w + step - 1) // step
    out = np.empty((h_out, w_out) + src.shape[2:], np.uint8)
    ry = len(ky) // 2
    for o0 in range(0, h_out, _BAND_ROWS):
        o1 = min(h_out, o0 + _BAND_ROWS)
        rows = border(np.arange(o0 * step - ry, (o1 - 1) * step + ry + 1), h)
        band = src[rows].astype(np.float32)
        band = _correlate(band, ky, 0, None, step, o1 - o0)
        band = _correlate(band, kx, 1, border, step, w_out)
        np.floor(band + 0.5, out=band)
        out[o0:o1] = np.clip(band, 0, 255)
    return out


def _pyr_down(src):
    """cv2.pyrDown: 5-tap [1 4 6 4 1] / 16 Gaussian, BORDER_REFLECT_101, every other sample."""
    return _separable(src, _PYR_KERNEL, _PYR_KERNEL, _reflect101, 2)


def _gaussian_blur(src, ksize, sigma_x, sigma_y):
    """cv2.GaussianBlur(src, ksize, sigma_x, sigma_y, borderType=BORDER_REFLECT)."""
    return _separable(src, _gaussian_kernel(ksize[1], sigma_y),
                      _gaussian_kernel(ksize[0], sigma_x), _reflect)


def _warp(src, m_dst_to_src, out_px, valid=False):
    """cv2.warpPerspective(src, m, (out_px, out_px), INTER_LINEAR | WARP_INVERSE_MAP,
    BORDER_CONSTANT 0); with ``valid`` also the uint8 mask 255 x (share of the bilinear
    weight that fell inside ``src``), what warping an all-255 alpha channel gives."""
    h, w = src.shape[:2]
    flat = src.reshape(h * w, -1)
    out = np.empty((out_px, out_px, flat.shape[1]), np.uint8)
    mask = np.empty((out_px, out_px), np.uint8) if valid else None
    cols = np.arange(out_px, dtype=np.float64)
    big = float(1 << 26)
    for o0 in range(0, out_px, _BAND_ROWS):
        rows = np.arange(o0, min(out_px, o0 + _BAND_ROWS), dtype=np.float64)[:, None]
        z = m_dst_to_src[2, 0] * cols + m_dst_to_src[2, 1] * rows + m_dst_to_src[2, 2]
        with np.errstate(divide='ignore'):
            z = np.where(z != 0.0, 1.0 / z, 0.0)
        pos = []
        for i in (0, 1):
            v = (m_dst_to_src[i, 0] * cols + m_dst_to_src[i, 1] * rows + m_dst_to_src[i, 2]) * z
            pos.append(np.rint(np.clip(v, -big, big) * 32.0).astype(np.int64))
        x0, y0 = pos[0] >> 5, pos[1] >> 5
        fx = (pos[0] & 31).astype(np.float32) / 32.0
        fy = (pos[1] & 31).astype(np.float32) / 32.0
        acc = np.zeros(x0.shape + (flat.shape[1],), np.float32)
        inside = np.zeros(x0.shape, np.float32) if valid else None
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            yy = y0 + dy
            for dx, wx in ((0, 1.0 - fx), (1, fx)):
                xx = x0 + dx
                ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
                weight = wy * wx * ok
                acc += flat[np.where(ok, yy * w + xx, 0)] * weight[..., None]
                if valid:
                    inside += weight
        rows_out = slice(o0, o0 + len(rows))
        out[rows_out] = np.clip(np.floor(acc + 0.5), 0, 255)
        if valid:
            mask[rows_out] = np.clip(np.floor(inside * 255.0 + 0.5), 0, 255)
    return out, mask


def _source_window(m_dst_to_src, out_px, shape, margin, align):
    """(r0, r1, c0, c1): the source rows/columns the warp of an out_px square can read, plus
    ``margin``, clipped to the image, r0/c0 multiples of ``align``; None if unbounded."""
    edge = np.array([[-1.0, -1.0, 1.0], [out_px, -1.0, 1.0], [-1.0, out_px, 1.0],
                     [out_px, out_px, 1.0]]) @ m_dst_to_src.T
    if np.any(edge[:, 2] <= 0.0):  # the depth is affine: positive at the corners = inside
        return None
    xs, ys = edge[:, 0] / edge[:, 2], edge[:, 1] / edge[:, 2]
    if not np.all(np.isfinite(xs)) or not np.all(np.isfinite(ys)):
        return None
    h, w = shape[:2]
    r0 = max(0, int(math.floor(ys.min())) - margin) // align * align
    c0 = max(0, int(math.floor(xs.min())) - margin) // align * align
    r1 = min(h, int(math.ceil(ys.max())) + margin + 1)
    c1 = min(w, int(math.ceil(xs.max())) + margin + 1)
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else (0, 0, 0, 0)


def _resample(src, m_dst_to_src, out_px, scale_x, scale_y, valid=False):
    """warpPerspective of ``src`` to out_px x out_px, low-passed first against aliasing;
    returns (image, valid mask or None).

    ``scale_x/y``: source pixels per output pixel along the source axes.  Bilinear sampling
    of a source finer than the output aliases (crop rows, roofs -> moire), so the source is
    halved with a pyrDown (5-tap Gaussian, sigma 1) while it is >= 2x finer, and the
    remaining factor r in (1, 2) is covered by a Gaussian of sigma 0.6 sqrt(r^2 - 1) source
    px: no blur at r = 1, pyrDown's sigma ~1 at r = 2, and a 1-px checkerboard at r = 1.5
    comes out flat within +-5 (a smaller sigma, sampled on 3-5 taps, barely damps it).
    Only the window of the source that the output can read is filtered (plus the filters'
    reach, aligned to the pyramid), which gives the same pixels as filtering it all.
    """
    levels = 0
    sx, sy = scale_x, scale_y
    while min(sx, sy) >= 2.0 and (min(src.shape[:2]) >> levels) >= 2:
        levels, sx, sy = levels + 1, sx / 2.0, sy / 2.0
    sigmas = [0.6 * math.sqrt(r * r - 1.0) if r > _AA_THRESHOLD else 0.0 for r in (sx, sy)]
    ksize = tuple(2 * int(math.ceil(3.0 * sg)) + 1 for sg in sigmas)
    margin = (max(ksize) // 2 + 4) * (1 << levels) + 2
    window = _source_window(m_dst_to_src, out_px, src.shape, margin, 1 << levels)
    if window is not None and window[0] >= window[1]:  # no source pixel in reach
        empty = np.zeros((out_px, out_px) + src.shape[2:], np.uint8)
        return empty, (np.zeros((out_px, out_px), np.uint8) if valid else None)
    if window is not None and min(window[1] - window[0], window[3] - window[2]) >= 2 << levels:
        r0, r1, c0, c1 = window
        src = src[r0:r1, c0:c1]
        m_dst_to_src = np.array([[1.0, 0.0, -c0], [0.0, 1.0, -r0], [0.0, 0.0, 1.0]]) \
            @ m_dst_to_src
    for _ in range(levels):
        if min(src.shape[:2]) < 2:
            break
        src = _pyr_down(src)
        # pyrDown keeps the even samples: level-1 index = level-0 index / 2
        m_dst_to_src = np.diag([0.5, 0.5, 1.0]) @ m_dst_to_src
    if max(sigmas) > 0.0:
        src = _gaussian_blur(src, ksize, max(sigmas[0], 1e-3), max(sigmas[1], 1e-3))
    return _warp(np.ascontiguousarray(src), m_dst_to_src, out_px, valid)


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
    crop, alpha = _resample(rgb, crop_to_image, out_px, scale * aspect, scale / aspect,
                            valid=True)

    # ground behind the camera (strong tilt, large footprint) would be mirrored into the image
    # by the projective division: blank it.  Depth is affine in crop pixels.
    corners = np.array([[0, 0, 1], [out_px - 1, 0, 1], [0, out_px - 1, 1],
                        [out_px - 1, out_px - 1, 1]], dtype=float)
    if np.any((corners @ crop_to_image.T)[:, 2] <= 1e-6 * altitude_m):
        cols, rows = np.meshgrid(np.arange(out_px), np.arange(out_px))
        depth = crop_to_image[2, 0] * cols + crop_to_image[2, 1] * rows + crop_to_image[2, 2]
        behind = depth <= 1e-6 * altitude_m
        crop[behind] = 0
        alpha[behind] = 0

    valid_fraction = float(alpha.mean(dtype=np.float64) / 255.0)
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
    tile, alpha = _resample(roi, m, out_px, sx, sy, valid=return_valid)
    if not return_valid:
        return tile
    return tile, float(alpha.mean(dtype=np.float64) / 255.0)
