"""Dense RootSIFT backbone (skyloc_perception.rootsift) and a retrieval sanity check."""

import math

import cv2
import numpy as np
import pytest

from skyloc_perception.normalize import CameraIntrinsics, map_tile, normalize_query
from skyloc_perception.rootsift import RootSiftBackbone
from skyloc_perception.vlad import fit_vocabulary, Vlad
from skyloc_sim.camera import OrthoRenderer, PinholeCamera
from skyloc_sim.geo import MapGrid
from skyloc_sim.procedural import generate_layout, render_orthophoto

FOOTPRINT, OUT = 100.0, 224


@pytest.fixture(scope='module')
def world():
    """A 400 m procedural world at 0.5 m/px, its grid (origin at the south-west corner)."""
    ortho = render_orthophoto(generate_layout(3, 400.0, 0.5), 'map')
    return ortho, MapGrid(ortho.shape[1], ortho.shape[0], 0.5, 0.0, 0.0)


@pytest.fixture(scope='module')
def textured():
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur((rng.random((224, 224, 3)) * 255).astype(np.uint8), (0, 0), 1.5)


def test_shape_norms_and_determinism(textured):
    fine = dict(step_px=8, patch_px=16)   # the default grid (16, 80) is tested below
    bb = RootSiftBackbone(**fine)
    assert (bb.name, bb.dim, bb.input_size) == ('rootsift', 128, 224)
    f = bb.features(textured)
    assert f.dtype == np.float32 and f.shape == (27 * 27, 128)   # step 8, all 16-px patches in
    assert f.min() >= 0.0
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(f, bb.features(textured))
    np.testing.assert_array_equal(f, RootSiftBackbone(**fine).features(textured.copy()))
    pts = bb.grid_points()
    assert pts.shape == (len(f), 2) and bb.grid_shape == (27, 27)
    assert (pts.min(), pts.max()) == (8.0, 216.0)   # centred: 8 px margin on both sides
    default = RootSiftBackbone()
    assert default.grid_shape == (10, 10) and default.config == {'step_px': 16,
                                                                 'patch_px': 80.0}
    assert default.grid_points().min() == 40.0   # a 40 px margin: every 80-px patch inside


def test_is_root_of_l1_normalised_sift(textured):
    bb = RootSiftBackbone(step_px=16, patch_px=32)
    grey = cv2.cvtColor(textured, cv2.COLOR_RGB2GRAY)
    kps = [cv2.KeyPoint(float(c), float(r), 32 / 6.0, 0.0) for c, r in bb.grid_points()]
    _, sift = cv2.SIFT_create().compute(grey, kps)
    expected = np.sqrt(sift / sift.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(bb.features(textured), expected, atol=1e-6)


def test_resizes_to_input_size_and_is_upright(textured):
    bb = RootSiftBackbone(step_px=8, patch_px=16)
    big = cv2.resize(textured, (448, 448), interpolation=cv2.INTER_CUBIC)
    back = cv2.resize(big, (224, 224), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(bb.features(big), bb.features(back))
    # upright descriptors: a rotated image gives other descriptors (no orientation
    # normalisation, the crops are north-up)
    f = bb.features(textured)
    rotated = bb.features(np.ascontiguousarray(np.rot90(textured)))
    assert np.mean(np.sum(f * rotated, axis=1)) < 0.8


def test_flat_image_gives_zero_rows():
    f = RootSiftBackbone(step_px=8, patch_px=16).features(np.full((224, 224, 3), 90, np.uint8))
    assert f.shape == (729, 128) and not f.any()
    assert RootSiftBackbone().features(np.full((224, 224, 3), 90, np.uint8)).shape == (100, 128)


def test_bad_input():
    with pytest.raises(ValueError, match='H x W x 3 uint8'):
        RootSiftBackbone().features(np.zeros((224, 224), np.uint8))
    with pytest.raises(ValueError, match='patch_px'):
        RootSiftBackbone(patch_px=300)


def test_retrieval_sanity(world):
    """VLAD of a north-up query crop is nearest to its own tile among tiles 150 m away."""
    ortho, grid = world
    bb = RootSiftBackbone()
    centres = [(x, y) for x in range(50, 351, 50) for y in range(50, 351, 50)]
    vocab = fit_vocabulary(np.concatenate(
        [bb.features(map_tile(ortho, grid, x, y, FOOTPRINT, OUT)) for x, y in centres]), k=32)
    vlad = Vlad(vocab)

    def tile_vlad(x, y):
        return vlad.encode(bb.features(map_tile(ortho, grid, x, y, FOOTPRINT, OUT)))

    cam = PinholeCamera(640, 480, 90.0)
    intr = CameraIntrinsics.from_hfov(640, 480, 90.0)
    renderer = OrthoRenderer(ortho, grid)
    margins = []
    # (x, y, yaw deg, altitude m, yaw error deg, altitude error factor): the last two feed the
    # normaliser noisy attitude/altitude, as a real IMU and barometer would
    cases = [(200, 200, 0, 100, 0, 1.0), (150, 250, 37, 100, 0, 1.0),
             (250, 150, 200, 120, 0, 1.0), (200, 150, 90, 80, 0, 1.0),
             (200, 200, 37, 100, 4, 1.06), (150, 250, 200, 120, -4, 0.95)]
    for x, y, yaw, z, yaw_err, z_factor in cases:
        image = renderer.render(cam, x, y, z, math.radians(yaw))
        crop, valid = normalize_query(image, intr, z * z_factor, math.radians(yaw + yaw_err),
                                      FOOTPRINT, OUT)
        assert valid > 0.85
        q = vlad.encode(bb.features(crop))
        own = float(q @ tile_vlad(x, y))
        others = [float(q @ tile_vlad(x + dx, y + dy))
                  for dx, dy in ((150, 0), (-150, 0), (0, 150), (0, -150))]
        assert own > max(others), (x, y, yaw, own, others)
        margins.append(own - max(others))
    assert np.mean(margins) > 0.1
