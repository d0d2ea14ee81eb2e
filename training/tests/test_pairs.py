"""Pair generator (skyloc_training.pairs): IoU geometry, views vs tiles, files on a tiny map."""
import json
import math
import os

import cv2
import numpy as np
import pytest

from skyloc_training import pairs as pairs_mod
from skyloc_training.data import gallery, load_pairs
from skyloc_training.pairs import (clip_to_rect, cut_tile, iou_with_squares, PairConfig,
                                   polygon_area, ViewMaker)


def _square(cx, cy, side, angle=0.0):
    c, s = math.cos(angle), math.sin(angle)
    half = side / 2.0
    return np.array([[cx + c * dx - s * dy, cy + s * dx + c * dy]
                     for dx, dy in ((-half, -half), (half, -half), (half, half),
                                    (-half, half))])


def test_polygon_iou_exact_cases():
    assert polygon_area(_square(3, 4, 10)) == pytest.approx(100.0)
    assert polygon_area(_square(3, 4, 10)[::-1]) == pytest.approx(100.0)   # orientation
    centres = np.array([[0, 0], [5, 0], [5, 5], [20, 0], [10, 0]])
    iou = iou_with_squares(_square(0, 0, 10), centres, 10.0)
    # identical; half overlap 50/150; quarter 25/175; disjoint; touching along an edge
    np.testing.assert_allclose(iou, [1.0, 1 / 3, 1 / 7, 0.0, 0.0], atol=1e-12)
    # equal squares, one turned by 45 deg about the same centre: a regular octagon
    octagon = 100.0 * (2.0 * math.sqrt(2.0) - 2.0)
    assert iou_with_squares(_square(0, 0, 10, math.pi / 4), [[0, 0]], 10.0)[0] == \
        pytest.approx(octagon / (200.0 - octagon), abs=1e-12)
    # a small square inside a big one: area ratio
    assert iou_with_squares(_square(1, 1, 4), [[0, 0]], 10.0)[0] == pytest.approx(0.16)
    assert len(clip_to_rect(_square(0, 0, 10), 20, 20, 30, 30)) == 0


def test_polygon_iou_matches_rasterised_overlap():
    rng = np.random.default_rng(0)
    step = 0.05
    xs = np.arange(-15, 15, step) + step / 2
    gx, gy = np.meshgrid(xs, xs)
    for _ in range(5):
        angle, side = rng.uniform(0, math.pi), rng.uniform(6, 14)
        cx, cy = rng.uniform(-3, 3, 2)
        poly = _square(cx, cy, side, angle)
        # inside the rotated square: |projections on its axes| <= half side
        u = (gx - cx) * math.cos(angle) + (gy - cy) * math.sin(angle)
        v = -(gx - cx) * math.sin(angle) + (gy - cy) * math.cos(angle)
        a = (np.abs(u) <= side / 2) & (np.abs(v) <= side / 2)
        b = (np.abs(gx - 1.0) <= 5.0) & (np.abs(gy + 2.0) <= 5.0)
        raster = (a & b).sum() / (a | b).sum()
        assert iou_with_squares(poly, [[1.0, -2.0]], 10.0)[0] == pytest.approx(raster,
                                                                               abs=0.01)


@pytest.fixture(scope='module')
def tiny_map(tmp_path_factory):
    """A 360 m x 300 m textured orthophoto at 0.5 m/px with its map YAML."""
    from skyloc_sim.geo import write_map_yaml
    folder = tmp_path_factory.mktemp('tiny_map')
    rng = np.random.default_rng(4)
    noise = rng.normal(0.0, 1.0, (600, 720, 3)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 6.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255.0
    assert cv2.imwrite(str(folder / 'ortho.png'), texture.astype(np.uint8))
    return write_map_yaml(str(folder / 'tiny.yaml'), 'ortho.png', 0.5, (-100.0, 50.0, 0.0),
                          (47.0, 8.0))


def test_north_up_view_equals_its_tile(tiny_map):
    from skyloc_sim.world import load_world
    world = load_world(tiny_map)
    maker = ViewMaker(world, PairConfig(image_size=64, noise_std=0.0))
    side = maker.footprint_per_altitude() * 60.0
    assert maker.footprint_per_altitude() == pytest.approx(1.5)   # 640x480 90 deg: square 1.5
    # yaw pi/2: image up = north, so the drone view is the tile at the same centre
    view = maker.render(70.0, 200.0, 60.0, math.pi / 2, 'map', 0)
    tile = cut_tile(world.map_image, world.grid, 70.0, 200.0, side, 64)
    assert np.abs(view.astype(float) - tile.astype(float)).mean() < 2.0
    np.testing.assert_allclose(maker.pose_footprint(70.0, 200.0, 60.0, math.pi / 2),
                               _square(70.0, 200.0, side)[[3, 2, 1, 0]], atol=1e-6)
    # yaw 0: image up = east, i.e. the tile turned a quarter counter-clockwise
    view = maker.render(70.0, 200.0, 60.0, 0.0, 'map', 0)
    turned = cv2.rotate(tile, cv2.ROTATE_90_COUNTERCLOCKWISE)
    assert np.abs(view.astype(float) - turned.astype(float)).mean() < 2.0
    assert np.abs(view.astype(float) - tile.astype(float)).mean() > 10.0


def _generate(tiny_map, out, **kw):
    cfg = PairConfig(**dict(dict(count=16, test_fraction=0.25, altitude_min=40.0,
                                 altitude_max=80.0, image_size=48, conditions=('map', 'haze'),
                                 seed=3), **kw))
    return pairs_mod.generate(tiny_map, str(out), cfg, name='tiny', progress=False,
                              log=lambda m: None)


def test_generated_pairs_are_consistent(tiny_map, tmp_path):
    summary = _generate(tiny_map, tmp_path / 'p')
    assert summary['train'] == 12 and summary['test'] == 4
    train = load_pairs(str(tmp_path / 'p' / 'pairs_train.json'))
    test = load_pairs(str(tmp_path / 'p' / 'pairs_test.json'))
    assert train.skipped == 0 and test.skipped == 0
    assert len(train) == 12 and len(test) == 4
    raw = {r['drone_img_name']: r
           for r in json.loads((tmp_path / 'p' / 'pairs_train.json').read_text())}
    for record in train.records:
        assert record['dataset_source'] == 'tiny' and record['duplicate_id'] == 0
        assert 40.0 <= record['altitude_meters'] <= 80.0
        image = cv2.imread(record['drone_img'])
        assert image.shape == (48, 48, 3)
        x, y = record['drone_loc']
        best_path, best_iou, (tx, ty) = record['positives'][0]
        assert best_iou > 0.39
        assert [p[1] for p in record['positives']] == sorted(
            (p[1] for p in record['positives']), reverse=True)
        assert all(0.14 < s[1] <= 0.39 for s in record['semi_positives'])
        r = raw[os.path.basename(record['drone_img'])]
        side = r['tile_footprint_m']
        # the drone is over its best tile
        assert abs(x - tx) <= side / 2 and abs(y - ty) <= side / 2
        # the stored IoU is the overlap of the stored footprint with the tile square
        poly = np.array(r['drone_footprint_x_y'])
        assert polygon_area(poly) == pytest.approx((1.5 * record['altitude_meters']) ** 2,
                                                   rel=1e-3)
        assert iou_with_squares(poly, [[tx, ty]], side)[0] == pytest.approx(best_iou, abs=1e-3)
        assert np.allclose(poly.mean(axis=0), (x, y), atol=0.01)
        tile = cv2.imread(best_path)
        assert tile.shape == (48, 48, 3)
        assert r['condition'] in ('map', 'haze')
    paths, locs = gallery(train.records + test.records)
    assert len(paths) == summary['tiles_written']
    assert sorted(os.listdir(tmp_path / 'p' / 'satellite')) == sorted(
        os.path.basename(p) for p in paths)
    assert len(os.listdir(tmp_path / 'p' / 'drone')) == 16
    generation = json.loads((tmp_path / 'p' / 'generation.json').read_text())
    assert generation['config']['count'] == 16 and len(generation['tiles']) == len(paths)
    assert {t['name']: (t['x'], t['y']) for t in generation['tiles']} == {
        os.path.basename(p): tuple(loc) for p, loc in zip(paths, locs.tolist())}

    # the same seed gives the same pairs; another seed other poses
    _generate(tiny_map, tmp_path / 'q')
    assert (tmp_path / 'p' / 'pairs_train.json').read_text() == \
        (tmp_path / 'q' / 'pairs_train.json').read_text()
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'p' / 'drone' / '000003.jpg')),
                                  cv2.imread(str(tmp_path / 'q' / 'drone' / '000003.jpg')))


def test_normalized_view_and_east_split(tiny_map, tmp_path):
    _generate(tiny_map, tmp_path / 'n', drone_view='normalized', split='east',
              test_fraction=0.5, count=8, yaw_noise_deg=0.0, altitude_noise=0.0)
    records = json.loads((tmp_path / 'n' / 'pairs_train.json').read_text()) + \
        json.loads((tmp_path / 'n' / 'pairs_test.json').read_text())
    x_split = -100.0 + 360.0 * 0.5
    for r in records:
        poly = np.array(r['drone_footprint_x_y'])
        # without heading/altitude error the stored crop is the north-up band footprint
        side = r['tile_footprint_m']
        np.testing.assert_allclose(np.sort(poly[:, 0]), np.repeat(
            [r['drone_loc_x_y'][0] - side / 2, r['drone_loc_x_y'][0] + side / 2], 2), atol=0.01)
        assert r['pair_pos_sate_weight_list'][0] > 0.39
    train_x = [r['drone_loc_x_y'][0] for r in records[:4]]
    test_x = [r['drone_loc_x_y'][0] for r in records[4:]]
    assert max(train_x) < x_split <= min(test_x)


def test_bad_settings_and_small_map(tiny_map, tmp_path, capsys):
    with pytest.raises(ValueError, match='too small'):
        _generate(tiny_map, tmp_path / 'x', altitude_min=300.0, altitude_max=300.0)
    with pytest.raises(ValueError, match='--test-fraction'):
        _generate(tiny_map, tmp_path / 'x', test_fraction=1.0)
    assert pairs_mod.main(['--map', str(tmp_path / 'absent.yaml'), '--out',
                           str(tmp_path / 'x')]) == 2
    assert 'absent.yaml' in capsys.readouterr().err
    assert pairs_mod.main(['--map', tiny_map, '--out', str(tmp_path / 'cli'), '--count', '4',
                           '--altitude-min', '40', '--altitude-max', '60', '--image-size',
                           '32', '--quiet']) == 0
    assert len(load_pairs(str(tmp_path / 'cli' / 'pairs_train.json'))) == 3
    # a second run replaces its own output (no stale files), a foreign folder is refused
    assert pairs_mod.main(['--map', tiny_map, '--out', str(tmp_path / 'cli'), '--count', '2',
                           '--altitude-min', '40', '--altitude-max', '60', '--image-size',
                           '32', '--quiet']) == 0
    assert sorted(os.listdir(tmp_path / 'cli' / 'drone')) == ['000000.jpg', '000001.jpg']
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'notes.txt').write_text('mine')
    assert pairs_mod.main(['--map', tiny_map, '--out', str(tmp_path / 'other')]) == 2
    assert 'not empty' in capsys.readouterr().err
    assert (tmp_path / 'other' / 'notes.txt').read_text() == 'mine'
    assert '--altitude-min' in pairs_mod.parser().format_help()
