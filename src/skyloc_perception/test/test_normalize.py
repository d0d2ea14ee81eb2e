"""Query normalisation against the simulator's renderer (skyloc_perception.normalize).

Camera images are rendered by ``skyloc_sim.camera.OrthoRenderer`` from a synthetic
orthophoto with bright dots at known map positions, so the geometry of every crop is known.
"""

import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from skyloc_perception import normalize as N
from skyloc_perception.normalize import (CameraIntrinsics, crop_pixel_of_ground,
                                         ground_of_crop_pixel, ground_sampling_distance,
                                         map_tile, normalize_query)
from skyloc_sim.camera import OrthoRenderer, PinholeCamera
from skyloc_sim.geo import MapGrid

RES = 0.5                   # orthophoto m/px
SIZE = 800                  # orthophoto px (400 m)
VEHICLE = (10.0, -5.0)      # map-frame x, y of the camera in every test
FOOTPRINT, OUT = 100.0, 200  # 0.5 m per crop pixel
DOT_SIGMA_M = 1.0


def _dot_positions():
    """Map-frame (x, y) of the dots: a 20 m lattice around the vehicle, slightly irregular."""
    pts = []
    for i in range(-3, 4):
        for j in range(-3, 4):
            pts.append((VEHICLE[0] + 20.0 * i + 0.37 * j, VEHICLE[1] + 20.0 * j - 0.23 * i))
    return np.array(pts)


@pytest.fixture(scope='module')
def world():
    """(orthophoto, grid, dot positions): smooth random texture <= 160, dots peaking at 255."""
    rng = np.random.default_rng(7)
    tex = cv2.GaussianBlur(rng.random((SIZE, SIZE)).astype(np.float32), (0, 0), 2.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    img = np.dstack([tex * 140 + 20, (1 - tex) * 120 + 20, tex * 60 + 40])
    grid = MapGrid(SIZE, SIZE, RES, -200.0, -200.0)
    dots = _dot_positions()
    vv, uu = np.mgrid[0:SIZE, 0:SIZE] + 0.5     # continuous pixel centres
    for x, y in dots:
        u, v = grid.map_to_pixel(x, y)
        g = np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * (DOT_SIGMA_M / RES) ** 2))
        img = img * (1 - g[..., None]) + 255.0 * g[..., None]
    return np.clip(np.round(img), 0, 255).astype(np.uint8), grid, dots


@pytest.fixture(scope='module')
def camera():
    return PinholeCamera(640, 480, 90.0)


@pytest.fixture(scope='module')
def renderer(world):
    return OrthoRenderer(world[0], world[1])


def _render(renderer, camera, z, yaw_deg, roll_deg=0.0, pitch_deg=0.0, gimbal=True):
    return renderer.render(camera, VEHICLE[0], VEHICLE[1], z, math.radians(yaw_deg),
                           math.radians(roll_deg), math.radians(pitch_deg), gimbal)


def _valid_mask(intr, z, yaw_deg, roll_deg=0.0, pitch_deg=0.0, gimbal=True):
    """Crop pixels fully inside the camera image (a white image normalised the same way)."""
    white = np.full((intr.height, intr.width, 3), 255, np.uint8)
    crop, _ = normalize_query(white, intr, z, math.radians(yaw_deg), FOOTPRINT, OUT,
                              math.radians(roll_deg), math.radians(pitch_deg), gimbal)
    return cv2.erode((crop[:, :, 0] == 255).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def _ncc(a, b, mask):
    a = a.astype(float).mean(axis=2)[mask]
    b = b.astype(float).mean(axis=2)[mask]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _dot_errors(crop, mask, dots):
    """Distances (crop px) between the predicted and the measured position of each dot."""
    grey = crop.astype(float).mean(axis=2)
    errors = []
    for x, y in dots:
        col, row = crop_pixel_of_ground(x - VEHICLE[0], y - VEHICLE[1], FOOTPRINT, OUT)
        c, r = int(round(float(col))), int(round(float(row)))
        if not (5 <= c < OUT - 5 and 5 <= r < OUT - 5) or not mask[r - 5:r + 6, c - 5:c + 6].all():
            continue
        win = np.clip(grey[r - 5:r + 6, c - 5:c + 6] - 170.0, 0.0, None)   # texture <= 160
        assert win.sum() > 0, f'dot at map ({x:.1f}, {y:.1f}) not found near ({c}, {r})'
        rr, cc = np.mgrid[r - 5:r + 6, c - 5:c + 6]
        errors.append(math.hypot((win * cc).sum() / win.sum() - col,
                                 (win * rr).sum() / win.sum() - row))
    return np.array(errors)


def test_intrinsics_match_the_simulator(camera):
    intr = CameraIntrinsics.from_hfov(640, 480, 90.0)
    np.testing.assert_allclose(intr.K, camera.K)
    info = camera.camera_info_dict()
    same = CameraIntrinsics.from_camera_info(info['k'], info['width'], info['height'])
    assert same == intr
    assert ground_sampling_distance(intr, 120.0) == pytest.approx(
        camera.ground_sampling_distance(120.0))
    assert ground_sampling_distance(intr, 70.0) == pytest.approx(70.0 / 320.0)
    half = intr.scaled(320, 240)
    assert (half.fx, half.cx, half.cy) == pytest.approx((160.0, 159.5, 119.5))


def test_crop_pixel_of_ground_layout():
    c = (OUT - 1) / 2.0
    assert crop_pixel_of_ground(0.0, 0.0, FOOTPRINT, OUT) == pytest.approx((c, c))
    # east -> right, north -> up, footprint / out_px metres per pixel
    assert crop_pixel_of_ground(5.0, 0.0, FOOTPRINT, OUT) == pytest.approx((c + 10.0, c))
    assert crop_pixel_of_ground(0.0, 5.0, FOOTPRINT, OUT) == pytest.approx((c, c - 10.0))
    # the footprint's outer edges are the crop's outer pixel edges
    assert crop_pixel_of_ground(-50.0, 50.0, FOOTPRINT, OUT) == pytest.approx((-0.5, -0.5))
    dx, dy = ground_of_crop_pixel(*crop_pixel_of_ground(12.5, -7.25, FOOTPRINT, OUT),
                                  FOOTPRINT, OUT)
    assert (dx, dy) == pytest.approx((12.5, -7.25))


def test_map_tile_at_native_resolution_is_an_exact_cut(world):
    ortho, grid, _ = world
    tile, valid = map_tile(ortho, grid, VEHICLE[0], VEHICLE[1], FOOTPRINT, OUT,
                           return_valid=True)
    # tile pixel (0, 0) is 49.75 m west and north of (10, -5): orthophoto pixel (320, 310)
    np.testing.assert_array_equal(tile, ortho[310:510, 320:520])
    assert valid == 1.0
    corner, valid = map_tile(ortho, grid, -200.0, -200.0, FOOTPRINT, OUT, return_valid=True)
    assert valid == pytest.approx(0.25, abs=0.01)
    assert corner[:, :95].max() == 0 and corner[105:].max() == 0   # west and south are black
    outside = map_tile(ortho, grid, 1000.0, 0.0, FOOTPRINT, OUT)
    assert outside.shape == (OUT, OUT, 3) and outside.max() == 0


def _checkerboard(h, w):
    """1-px checkerboard, 0/255: any sampling coarser than 1 px without a low-pass aliases."""
    rr, cc = np.mgrid[0:h, 0:w]
    return np.repeat((((rr + cc) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_map_tile_downsampled_is_antialiased(world):
    ortho, grid, dots = world
    tile = map_tile(ortho, grid, VEHICLE[0], VEHICLE[1], 200.0, 100)   # 2 m/px, 4x coarser
    # the same picture as a box-filtered (INTER_AREA) cut of the footprint, a bit softer,
    # and not shifted: the dots are where they belong at 2 m/px
    area = cv2.resize(ortho[210:610, 220:620], (100, 100), interpolation=cv2.INTER_AREA)
    assert _ncc(tile, area, np.ones((100, 100), bool)) > 0.9
    grey = tile.astype(float).mean(axis=2)
    for x, y in dots:
        col, row = crop_pixel_of_ground(x - VEHICLE[0], y - VEHICLE[1], 200.0, 100)
        c, r = int(round(float(col))), int(round(float(row)))
        win = grey[r - 2:r + 3, c - 2:c + 3]
        win = np.clip(win - np.median(grey[r - 4:r + 5, c - 4:c + 5]), 0.0, None)
        rr, cc = np.mgrid[r - 2:r + 3, c - 2:c + 3]
        assert math.hypot((win * cc).sum() / win.sum() - col,
                          (win * rr).sum() / win.sum() - row) < 0.35
    fine = _checkerboard(SIZE, SIZE)
    for footprint, out in ((200.0, 100), (100.0, 130), (150.0, 97)):   # 4x, 1.5x, 3.1x
        tile = map_tile(fine, grid, 3.3, -7.1, footprint, out)
        assert np.abs(tile[1:-1, 1:-1].astype(float) - 127.5).max() < 12.0, footprint
    # 1-px stripes (crop rows at the map's resolution) at 1.5x: a plain bilinear resampling
    # turns them into a beat of +-127; the low-pass leaves a ripple
    stripes = np.ascontiguousarray(np.transpose(fine[:1].repeat(SIZE, axis=0), (1, 0, 2)))
    tile = map_tile(stripes, grid, 3.3, -7.1, 100.0, 130)[1:-1, 1:-1].astype(float)
    assert np.abs(tile - tile.mean()).max() < 30.0


def test_query_downsampled_is_antialiased():
    intr = CameraIntrinsics.from_hfov(640, 480, 90.0)
    fine = _checkerboard(480, 640)
    for z, yaw in ((100.0, 0.0), (150.0, 0.6), (120.0, 2.0)):   # 0.31-0.47 m/px -> 1 m/px
        crop, valid = normalize_query(fine, intr, z, yaw, 100.0, 100)
        assert valid == 1.0
        assert np.abs(crop[1:-1, 1:-1].astype(float) - 127.5).max() < 12.0, (z, yaw)


@pytest.mark.parametrize('z', [70.0, 120.0])
@pytest.mark.parametrize('yaw_deg', [0.0, 37.0, 90.0, 200.0])
def test_gimbal_crop_geometry(world, renderer, camera, z, yaw_deg):
    ortho, grid, dots = world
    intr = CameraIntrinsics.from_hfov(camera.width, camera.height, camera.hfov_deg)
    image = _render(renderer, camera, z, yaw_deg)
    crop, valid = normalize_query(image, intr, z, math.radians(yaw_deg), FOOTPRINT, OUT)
    assert crop.shape == (OUT, OUT, 3) and crop.dtype == np.uint8
    mask = _valid_mask(intr, z, yaw_deg)
    errors = _dot_errors(crop, mask, dots)
    assert len(errors) >= 20
    assert errors.max() < 0.3, errors
    tile = map_tile(ortho, grid, VEHICLE[0], VEHICLE[1], FOOTPRINT, OUT)
    assert _ncc(crop, tile, mask) > 0.95
    assert not crop[~mask].any() or valid < 1.0


def _footprint_fraction_seen(z, yaw_deg):
    """Share of the footprint square inside the ground rectangle seen by the 640x480/90 deg
    camera (half sizes z and 0.75 z, long side across the heading), by polygon clipping."""
    yaw = math.radians(yaw_deg)
    fwd, left = np.array([math.cos(yaw), math.sin(yaw)]), np.array([-math.sin(yaw), math.cos(yaw)])
    seen = np.array([s * 0.75 * z * fwd + t * z * left
                     for s, t in ((1, 1), (1, -1), (-1, -1), (-1, 1))], np.float32)
    h = FOOTPRINT / 2
    square = np.array([[-h, -h], [h, -h], [h, h], [-h, h]], np.float32)
    area, _ = cv2.intersectConvexConvex(seen, square)
    return area / FOOTPRINT ** 2


@pytest.mark.parametrize('z, yaw_deg', [(70.0, 0.0), (70.0, 37.0), (70.0, 45.0), (120.0, 37.0),
                                        (50.0, 10.0)])
def test_valid_fraction(renderer, camera, z, yaw_deg):
    intr = CameraIntrinsics.from_hfov(camera.width, camera.height, camera.hfov_deg)
    _, valid = normalize_query(_render(renderer, camera, z, yaw_deg), intr, z,
                               math.radians(yaw_deg), FOOTPRINT, OUT)
    assert valid == pytest.approx(_footprint_fraction_seen(z, yaw_deg), abs=0.01)


@pytest.mark.parametrize('z, yaw_deg, roll_deg, pitch_deg', [
    (120.0, 37.0, 8.0, -6.0), (70.0, 200.0, -5.0, 10.0), (120.0, 90.0, 0.0, 9.0)])
def test_fixed_mount_tilt_is_compensated(world, renderer, camera, z, yaw_deg, roll_deg,
                                         pitch_deg):
    ortho, grid, dots = world
    intr = CameraIntrinsics.from_hfov(camera.width, camera.height, camera.hfov_deg)
    tilted = _render(renderer, camera, z, yaw_deg, roll_deg, pitch_deg, gimbal=False)
    args = (intr, z, math.radians(yaw_deg), FOOTPRINT, OUT, math.radians(roll_deg),
            math.radians(pitch_deg))
    crop, _ = normalize_query(tilted, *args, gimbal=False)
    mask = _valid_mask(intr, z, yaw_deg, roll_deg, pitch_deg, gimbal=False)
    errors = _dot_errors(crop, mask, dots)
    assert len(errors) >= 15 and errors.max() < 0.3, errors
    tile = map_tile(ortho, grid, VEHICLE[0], VEHICLE[1], FOOTPRINT, OUT)
    assert _ncc(crop, tile, mask) > 0.95
    # the same crop as a level camera's, wherever both see the ground
    level, _ = normalize_query(_render(renderer, camera, z, yaw_deg), *args[:5])
    both = mask & _valid_mask(intr, z, yaw_deg)
    assert both.mean() > 0.5
    assert _ncc(crop, level, both) > 0.95
    assert np.abs(crop[both].astype(int) - level[both].astype(int)).mean() < 4.0
    # ignoring the tilt puts the dots elsewhere: the test can see a missing compensation
    wrong, _ = normalize_query(tilted, *args[:5])
    assert _ncc(wrong, tile, mask & (wrong.sum(axis=2) > 0)) < 0.9


def test_gimbal_ignores_roll_and_pitch(renderer, camera):
    intr = CameraIntrinsics.from_hfov(camera.width, camera.height, camera.hfov_deg)
    image = _render(renderer, camera, 100.0, 37.0)
    a, _ = normalize_query(image, intr, 100.0, math.radians(37.0), FOOTPRINT, OUT)
    b, _ = normalize_query(image, intr, 100.0, math.radians(37.0), FOOTPRINT, OUT, 0.2, -0.1,
                           gimbal=True)
    np.testing.assert_array_equal(a, b)


def test_principal_point_off_centre(world, renderer, camera):
    """A cut-out of the image has a shifted principal point; the crop must not move."""
    intr = CameraIntrinsics.from_hfov(camera.width, camera.height, camera.hfov_deg)
    image = _render(renderer, camera, 120.0, 37.0)
    full, _ = normalize_query(image, intr, 120.0, math.radians(37.0), FOOTPRINT, OUT)
    k = camera.K.copy()
    k[0, 2] -= 40.0     # columns 40.. kept
    k[1, 2] -= 10.0     # rows 10.. kept
    cut = np.ascontiguousarray(image[10:470, 40:])
    intr_cut = CameraIntrinsics.from_camera_info(k.flatten(), cut.shape[1], cut.shape[0])
    part, _ = normalize_query(cut, intr_cut, 120.0, math.radians(37.0), FOOTPRINT, OUT)
    mask = cv2.erode((part.sum(axis=2) > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert mask.mean() > 0.8
    # the anti-aliasing box filter has another phase in the cut-out: tiny differences
    assert np.abs(part[mask].astype(int) - full[mask].astype(int)).mean() < 1.0
    assert _ncc(part, full, mask) > 0.99
    errors = _dot_errors(part, mask, world[2])
    assert len(errors) >= 15 and errors.max() < 0.3


def test_declination_rotates_the_crop(renderer, camera):
    intr = CameraIntrinsics.from_hfov(camera.width, camera.height, camera.hfov_deg)
    image = _render(renderer, camera, 120.0, 30.0)
    yaw, decl = math.radians(30.0), math.radians(12.0)
    with_decl, _ = normalize_query(image, intr, 120.0, yaw - decl, FOOTPRINT, OUT,
                                   declination_rad=decl)
    true_yaw, _ = normalize_query(image, intr, 120.0, yaw, FOOTPRINT, OUT)
    np.testing.assert_array_equal(with_decl, true_yaw)
    # forgetting the declination (heading taken 12 deg too far clockwise) rotates the crop
    # 12 deg clockwise about the nadir pixel; rotating it 12 deg counter-clockwise (positive
    # angle in OpenCV, as on the screen and in ENU: the crop is north-up) undoes it
    magnetic, _ = normalize_query(image, intr, 120.0, yaw - decl, FOOTPRINT, OUT)
    c = (OUT - 1) / 2.0
    rot = cv2.getRotationMatrix2D((c, c), 12.0, 1.0)
    rotated_back = cv2.warpAffine(magnetic, rot, (OUT, OUT), flags=cv2.INTER_LINEAR)
    rr, cc = np.mgrid[0:OUT, 0:OUT]
    disc = (rr - c) ** 2 + (cc - c) ** 2 < (0.45 * OUT) ** 2
    assert _ncc(rotated_back, true_yaw, disc) > 0.9
    assert _ncc(magnetic, true_yaw, disc) < 0.6


@pytest.mark.parametrize('kwargs, message', [
    (dict(altitude_m=0.0), 'altitude_m must be positive'),
    (dict(altitude_m=-5.0), 'altitude_m must be positive'),
    (dict(altitude_m=float('nan')), 'altitude_m must be finite'),
    (dict(altitude_m=float('inf')), 'altitude_m must be finite'),
    (dict(yaw_rad=float('nan')), 'yaw_rad must be finite'),
    (dict(roll_rad=float('inf')), 'roll_rad must be finite'),
    (dict(pitch_rad=float('nan')), 'pitch_rad must be finite'),
    (dict(declination_rad=float('nan')), 'declination_rad must be finite'),
    (dict(footprint_m=0.0), 'footprint_m must be positive'),
    (dict(footprint_m=-1.0), 'footprint_m must be positive'),
    (dict(out_px=0), 'out_px must be a positive integer'),
    (dict(out_px=12.5), 'out_px must be a positive integer'),
    (dict(rgb=np.zeros((480, 640), np.uint8)), 'H x W x 3 uint8 RGB'),
    (dict(rgb=np.zeros((480, 640, 3), np.float32)), 'H x W x 3 uint8 RGB'),
    (dict(rgb=np.zeros((240, 320, 3), np.uint8)), 'image is 320x240 but the intrinsics are '
                                                  'for 640x480'),
    (dict(roll_rad=2.0, gimbal=False), 'nadir point is behind the camera'),
])
def test_bad_inputs_raise(kwargs, message):
    args = dict(rgb=np.zeros((480, 640, 3), np.uint8),
                intrinsics=CameraIntrinsics.from_hfov(640, 480, 90.0), altitude_m=100.0,
                yaw_rad=0.0, footprint_m=FOOTPRINT, out_px=OUT)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        normalize_query(**args)


def test_bad_intrinsics_raise():
    with pytest.raises(ValueError, match='9 elements'):
        CameraIntrinsics.from_camera_info([1.0] * 4, 640, 480)
    with pytest.raises(ValueError, match='fx must be positive'):
        CameraIntrinsics.from_camera_info([0.0] * 9, 640, 480)
    with pytest.raises(ValueError, match='hfov_deg'):
        CameraIntrinsics.from_hfov(640, 480, 190.0)


# ----------------------------------------------------------------------------- resampling

def _opencv_resample(src, m, out_px, scale_x, scale_y):
    """The OpenCV pipeline normalize._resample reimplements in numpy (its former body)."""
    while min(scale_x, scale_y) >= 2.0 and min(src.shape[:2]) >= 2:
        src = cv2.pyrDown(src)
        m = np.diag([0.5, 0.5, 1.0]) @ m
        scale_x, scale_y = scale_x / 2.0, scale_y / 2.0
    sigmas = [0.6 * math.sqrt(r * r - 1.0) if r > 1.01 else 0.0 for r in (scale_x, scale_y)]
    if max(sigmas) > 0.0:
        ksize = tuple(2 * int(math.ceil(3.0 * sg)) + 1 for sg in sigmas)
        src = cv2.GaussianBlur(src, ksize, sigmaX=max(sigmas[0], 1e-3),
                               sigmaY=max(sigmas[1], 1e-3), borderType=cv2.BORDER_REFLECT)
    return cv2.warpPerspective(src, m, (out_px, out_px),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def test_numpy_filters_match_opencv():
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur((rng.random((97, 131, 3)) * 255).astype(np.uint8), (0, 0), 1.0)
    for shape in ((97, 131), (96, 130), (5, 7), (2, 3), (1, 4)):
        src = np.ascontiguousarray(img[:shape[0], :shape[1]])
        np.testing.assert_array_equal(N._pyr_down(src), cv2.pyrDown(src))
    for sigmas in ((0.61, 0.61), (0.9, 0.3), (1e-3, 0.7), (1.4, 1e-3)):
        ksize = tuple(2 * int(math.ceil(3.0 * s)) + 1 for s in sigmas)
        ref = cv2.GaussianBlur(img, ksize, sigmaX=sigmas[0], sigmaY=sigmas[1],
                               borderType=cv2.BORDER_REFLECT)
        got = N._gaussian_blur(img, ksize, sigmas[0], sigmas[1])
        assert np.abs(got.astype(int) - ref).max() <= 1, sigmas


def test_numpy_resample_matches_opencv():
    """Random similarity and perspective maps, every pyramid level: within +-2 grey levels
    where the output is inside the source (+-4 on its border), mean < 0.5; the valid mask is
    what warping an all-255 alpha channel gives."""
    rng = np.random.default_rng(4)
    img = cv2.GaussianBlur((rng.random((240, 320, 3)) * 255).astype(np.uint8), (0, 0), 1.2)
    rgba = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
    for trial in range(24):
        s, a = rng.uniform(0.5, 5.0), rng.uniform(0.0, 2.0 * math.pi)
        out = int(rng.integers(40, 120))
        p = rng.uniform(-3e-4, 3e-4, 2) if trial % 2 else (0.0, 0.0)
        m = np.array([[s * math.cos(a), -s * math.sin(a), rng.uniform(-100, 350)],
                      [s * math.sin(a), s * math.cos(a), rng.uniform(-100, 270)],
                      [p[0], p[1], 1.0]])
        scale = N._jacobian_scale(m, (out - 1) / 2.0, (out - 1) / 2.0)
        ref = _opencv_resample(rgba, m, out, scale, scale)
        got, valid = N._resample(img, m, out, scale, scale, valid=True)
        diff = np.abs(got.astype(int) - ref[:, :, :3]).max(axis=2)
        inside = ref[:, :, 3] == 255
        assert diff[inside].max(initial=0) <= 2 and diff.max() <= 4, trial
        assert diff.mean() < 0.5, trial
        assert np.abs(valid.astype(int) - ref[:, :, 3]).max() <= 6, trial


def test_camera_conventions_are_the_simulators():
    from skyloc_sim import camera as sim
    np.testing.assert_array_equal(N.R_BASE_CAMERA, sim.R_BASE_CAMERA)
    for angles in ((0.3, -0.2, 0.1), (2.5, 0.05, -0.4), (0.0, 0.0, 0.0)):
        np.testing.assert_allclose(N.rotation_base_to_map(*angles),
                                   sim.rotation_base_to_map(*angles), atol=1e-15)


def test_perception_imports_no_opencv():
    """The embedder's path (normalisation, ViT backbone, bundle) loads no OpenCV (~16 MB)."""
    code = ('import sys\n'
            'import skyloc_perception.normalize, skyloc_perception.vit_onnx\n'
            'import skyloc_perception.bundle, skyloc_perception.image\n'
            'assert "cv2" not in sys.modules, "cv2 imported"\n')
    subprocess.run([sys.executable, '-c', code], check=True)
