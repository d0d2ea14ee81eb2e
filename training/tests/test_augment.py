"""Source-specific crops (skyloc_training.augment): exact geometry, determinism, the input."""
import numpy as np
import pytest

from skyloc_training.augment import (CentreCrop, for_source, IMAGENET_MEAN, IMAGENET_STD,
                                     LowAltitudeSimulation, RandomCenterCropZoom, to_input)


def _coordinate_image(height, width):
    """R = column, G = row (mod 256): a crop tells where it came from."""
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    return np.dstack([cols % 256, rows % 256, np.zeros_like(cols)]).astype(np.uint8)


def test_low_altitude_crop_without_jitter_is_centred_at_its_scale():
    crop = LowAltitudeSimulation(crop_scale=(0.2, 0.2), jitter=0.0)
    assert crop.crop_box(100, 200, rng=0) == (80, 40, 40, 20)   # x0, y0, w, h
    image = _coordinate_image(100, 200)
    patch = crop.crop(image, rng=0)
    assert patch.shape == (20, 40, 3)
    assert patch[0, 0, 0] == 80 and patch[0, 0, 1] == 40 and patch[-1, -1, 0] == 119
    # called: resized back to the input size, still covering columns 80..119
    out = crop(image, rng=0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert abs(int(out[50, 0, 0]) - 80) <= 1 and abs(int(out[50, -1, 0]) - 119) <= 1

    rng = np.random.default_rng(3)
    free = LowAltitudeSimulation(jitter=0.0)
    for _ in range(300):
        x0, y0, w, h = free.crop_box(400, 600, rng)
        assert 0.15 * 600 - 0.5 <= w <= 0.30 * 600 + 0.5
        assert abs(h / 400 - w / 600) < 0.005          # one scale for both sides
        assert abs((x0 + w / 2) - 300) <= 0.5 and abs((y0 + h / 2) - 200) <= 0.5


def test_low_altitude_jitter_stays_within_ten_percent_and_is_used():
    crop = LowAltitudeSimulation()          # scale 0.15-0.30, jitter 0.10 of the side
    assert crop.scale == (0.15, 0.30) and crop.jitter == 0.10
    rng = np.random.default_rng(0)
    offsets, scales = [], []
    for _ in range(1000):
        x0, y0, w, h = crop.crop_box(500, 1000, rng)
        offsets.append(((x0 + w / 2 - 500) / 1000, (y0 + h / 2 - 250) / 500))
        scales.append(w / 1000)
        assert x0 >= 0 and y0 >= 0 and x0 + w <= 1000 and y0 + h <= 500
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 0.10 + 0.5 / 500
    assert np.abs(offsets).max(axis=0).min() > 0.09     # the whole range is used, both axes
    assert abs(offsets.mean()) < 0.01
    assert min(scales) >= 0.15 - 1e-3 and max(scales) <= 0.30 + 1e-3
    assert max(scales) - min(scales) > 0.13


def test_centre_zoom_and_determinism():
    zoom = RandomCenterCropZoom()
    assert zoom.scale == (0.8, 1.0) and zoom.jitter == 0.0
    rng = np.random.default_rng(5)
    for _ in range(200):
        x0, y0, w, h = zoom.crop_box(224, 224, rng)
        assert w == h and 0.8 * 224 - 0.5 <= w <= 224
        assert abs(x0 + w / 2 - 112) <= 0.5 and abs(y0 + h / 2 - 112) <= 0.5
    a = [LowAltitudeSimulation().crop_box(300, 300, np.random.default_rng(9)) for _ in range(2)]
    assert a[0] == a[1]
    draws = LowAltitudeSimulation()
    g = np.random.default_rng(9)
    assert draws.crop_box(300, 300, g) != draws.crop_box(300, 300, g)   # the stream moves on
    with pytest.raises(ValueError, match='crop scale'):
        CentreCrop((0.3, 0.2))
    with pytest.raises(ValueError, match='jitter'):
        LowAltitudeSimulation(jitter=0.6)
    with pytest.raises(ValueError, match='H x W x 3 uint8'):
        zoom(np.zeros((10, 10), np.uint8))


def test_for_source_picks_the_crop_and_normalises():
    assert isinstance(for_source('visloc', 32).crop, LowAltitudeSimulation)
    assert isinstance(for_source('VPAIR', 32).crop, LowAltitudeSimulation)
    for synthetic in ('gta', 'procedural', 'real_satellite', 'my_map'):
        assert isinstance(for_source(synthetic, 32).crop, RandomCenterCropZoom)
    assert for_source('visloc', 32, train=False).crop is None

    white = np.full((60, 80, 3), 255, np.uint8)
    x = for_source('vpair', 32, train=False)(white)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], (1.0 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-5)
    np.testing.assert_allclose(to_input(np.zeros((8, 8, 3), np.uint8), 8)[:, 3, 3],
                               -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-5)

    # the training crop of visloc sees only the middle of the image: a frame of 255 around
    # a 0 centre (the centre half) never reaches the output
    framed = np.full((200, 200, 3), 255, np.uint8)
    framed[50:150, 50:150] = 0
    t = for_source('visloc', 16, rng=1)
    for _ in range(20):
        out = t(framed)
        assert out.shape == (3, 16, 16)
        np.testing.assert_allclose(out[:, 8, 8], -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-5)
        assert out.max() < 0.0
    # the same per-call seed gives the same crop
    image = _coordinate_image(120, 160)
    np.testing.assert_array_equal(t(image, rng=7), t(image, rng=7))
    assert not np.array_equal(t(image, rng=7), t(image, rng=8))
