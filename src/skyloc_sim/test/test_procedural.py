"""Tests of the procedural aerial world (skyloc_sim.procedural): layout, rendering, obstacles.

Worlds are small (300-600 m at 0.5 m/px, or 1.2 km at 2 m/px) so the whole file runs in seconds.
"""

import cv2
import numpy as np
import pytest

from skyloc_sim import procedural as P

LC = P.LANDCOVER


@pytest.fixture(scope='module')
def small():
    return P.generate_layout(3, 300.0, 0.5)


@pytest.fixture(scope='module')
def mid():
    return P.generate_layout(5, 600.0, 0.5)


@pytest.fixture(scope='module')
def mid_map(mid):
    return P.render_orthophoto(mid, 'map', 0)


@pytest.fixture(scope='module')
def mid_summer(mid):
    return P.render_orthophoto(mid, 'summer', 1)


@pytest.fixture(scope='module')
def coarse():
    """Full-size (1.2 km) worlds at 2 m/px: cheap, but with the real object counts."""
    return [P.generate_layout(s, 1200.0, 2.0) for s in range(4)]


def _same_layout(a, b):
    return (np.array_equal(a.landcover, b.landcover) and np.array_equal(a.field_id, b.field_id)
            and a.fields == b.fields and a.buildings == b.buildings and a.trees == b.trees
            and a.vehicles == b.vehicles and a.tall_structures == b.tall_structures)


def test_deterministic_per_seed(small):
    again = P.generate_layout(3, 300.0, 0.5)
    assert _same_layout(small, again)
    assert np.array_equal(P.render_orthophoto(small, 'summer', 2),
                          P.render_orthophoto(again, 'summer', 2))
    assert np.array_equal(P.obstacle_heights(small, 'winter', 2),
                          P.obstacle_heights(again, 'winter', 2))
    other = P.generate_layout(4, 300.0, 0.5)
    assert not np.array_equal(small.landcover, other.landcover)
    assert np.mean(small.landcover != other.landcover) > 0.2


def test_shape_dtype_resolution(small, mid_map):
    assert small.landcover.shape == (600, 600) and small.landcover.dtype == np.uint8
    assert small.field_id.shape == (600, 600) and small.field_id.dtype == np.int32
    assert small.resolution == 0.5 and small.seed == 3 and small.size_m == 300.0
    lay = P.generate_layout(1, 250.0, 0.25)
    assert lay.landcover.shape == (1000, 1000)
    assert mid_map.shape == (1200, 1200, 3) and mid_map.dtype == np.uint8
    obst = P.obstacle_heights(small)
    assert obst.shape == (600, 600) and obst.dtype == np.float32
    assert obst.min() >= 0.0
    with pytest.raises(ValueError):
        P.render_orthophoto(small, 'monsoon')
    with pytest.raises(ValueError):
        P.generate_layout(0, -5.0)


def test_landcover_classes_and_fractions(coarse):
    for lay in coarse:
        frac = np.bincount(lay.landcover.ravel(), minlength=len(LC)) / lay.landcover.size
        assert 0.45 < frac[LC['field']] < 0.85, frac
        assert 0.05 < frac[LC['forest']] < 0.30, frac
        assert 0.001 < frac[LC['water']] < 0.10, frac
        assert 0.005 < frac[LC['road']] < 0.08, frac
        assert 0.0005 < frac[LC['building']] < 0.05, frac
        assert frac[LC['building_lot']] > 0.001, frac
        assert frac[LC['hedge']] + frac[LC['track']] > 0.005, frac   # field boundaries
        # field_id is set exactly on field pixels and indexes the field list
        assert np.array_equal(lay.field_id >= 0, lay.landcover == LC['field'])
        assert lay.field_id.max() < len(lay.fields)
        assert 20 <= len(np.unique(lay.field_id[lay.field_id >= 0])) <= 400
        assert len({f['crop'] for f in lay.fields}) >= 4
        assert all(0.0 <= f['row_angle_rad'] < np.pi and f['row_spacing_m'] > 0
                   for f in lay.fields)
        assert len(lay.roads) >= 2 and len(lay.vehicles) >= 5 and len(lay.trees) > 1000
        forest_trees = [t for t in lay.trees if t['group'] == 'forest']
        assert len(forest_trees) > 500
        assert any(b['removable'] for b in lay.buildings)
        assert any(not b['removable'] for b in lay.buildings)


def test_small_world_has_all_classes(small):
    present = set(np.unique(small.landcover).tolist())
    for name in ('field', 'forest', 'water', 'road', 'building'):
        assert LC[name] in present, name
    assert small.tall_structures == []      # all of it is inside the central clear square


def test_tall_structures(coarse):
    ranges = dict(mast=(100.0, 200.0), tower=(50.0, 120.0), wind_turbine=(100.0, 140.0))
    kinds = set()
    for lay in coarse:
        tall = lay.tall_structures
        assert 4 <= len(tall) <= 8
        obst = P.obstacle_heights(lay)
        h, w = lay.shape
        for s in tall:
            kinds.add(s['kind'])
            lo, hi = ranges[s['kind']]
            assert lo <= s['height_m'] <= hi
            assert 0.5 <= s['radius_m'] <= 10.0
            # outside the central 300 m x 300 m square
            dx = abs(s['x_px'] - w / 2) * lay.resolution
            dy = abs(s['y_px'] - h / 2) * lay.resolution
            assert max(dx, dy) > 150.0
            assert obst[int(s['y_px']), int(s['x_px'])] == pytest.approx(s['height_m'])
            if s['kind'] == 'wind_turbine':
                # only the tower disc is an obstacle, not the rotor
                assert 40.0 <= s['rotor_radius_m'] <= 65.0
                far = np.array([s['x_px'], s['y_px']]) + 30.0 / lay.resolution * np.array(
                    [np.cos(s['yaw_rad'] + np.pi / 2), -np.sin(s['yaw_rad'] + np.pi / 2)])
                fx, fy = np.clip(far.astype(int), 0, w - 1)
                assert obst[fy, fx] < 60.0
        # the central square is clear of anything that tall
        c0, c1 = int(h / 2 - 150 / lay.resolution), int(h / 2 + 150 / lay.resolution)
        assert obst[c0:c1, c0:c1].max() < 45.0
    assert kinds == {'mast', 'tower', 'wind_turbine'}


def test_obstacle_heights_buildings_and_trees(small):
    obst = P.obstacle_heights(small)
    for b in small.buildings:
        assert 2.0 < obst[int(b['y_px']), int(b['x_px'])] <= b['height_m'] + 1.0
    singles = [t for t in small.trees if t['group'] == 'forest']
    assert singles
    hit = [obst[int(t['y_px']), int(t['x_px'])] == pytest.approx(t['height_m'])
           for t in singles]
    assert np.mean(hit) > 0.9
    fields = small.landcover == LC['field']
    assert np.median(obst[fields]) == 0.0


def test_map_independent_of_seed(small):
    a = P.render_orthophoto(small, 'map', 0)
    b = P.render_orthophoto(small, 'map', 17)
    assert np.array_equal(a, b)
    assert np.array_equal(P.obstacle_heights(small, 'map', 0),
                          P.obstacle_heights(small, 'map', 9))
    assert P.condition_layout(small, 'map', 3) is small


def _saturation(img):
    return cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)


def test_flight_condition_differs_but_keeps_roads(mid, mid_map, mid_summer):
    # colour statistics differ ...
    d_mean = np.abs(mid_map.reshape(-1, 3).mean(0) - mid_summer.reshape(-1, 3).mean(0))
    d_pix = np.abs(mid_map.astype(np.int16) - mid_summer.astype(np.int16)).mean()
    assert d_mean.max() > 1.0 or d_pix > 8.0
    assert d_pix > 5.0
    # ... but roads stay where they were: in the layout, and visibly (grey asphalt) in both
    lay = P.condition_layout(mid, 'summer', 1)
    assert np.array_equal(lay.landcover == LC['road'], mid.landcover == LC['road'])
    road = cv2.erode((mid.landcover == LC['road']).astype(np.uint8), np.ones((5, 5), np.uint8))
    assert road.sum() > 500
    grass_field = np.isin(mid.landcover, [LC['field'], LC['grass']])
    for img in (mid_map, mid_summer):
        s = _saturation(img)
        assert s[road > 0].mean() < 0.5 * s[grass_field].mean()
    # roads also line up between the two images: correlation of the 'greyness' maps
    g1 = 255.0 - _saturation(mid_map)
    g2 = 255.0 - _saturation(mid_summer)
    band = cv2.dilate(road, np.ones((31, 31), np.uint8)) > 0
    assert np.corrcoef(g1[band], g2[band])[0, 1] > 0.5


def test_condition_layout_structural_change(mid):
    lay = P.condition_layout(mid, 'summer', 1)
    assert lay.condition == 'summer' and lay is not mid
    assert _same_layout(lay, P.condition_layout(mid, 'summer', 1))
    assert not _same_layout(lay, P.condition_layout(mid, 'summer', 2))
    # static things stay
    for name in ('road', 'water', 'forest'):
        assert np.array_equal(lay.landcover == LC[name], mid.landcover == LC[name]), name
    assert [(s['x_px'], s['y_px'], s['height_m']) for s in lay.tall_structures] == \
        [(s['x_px'], s['y_px'], s['height_m']) for s in mid.tall_structures]
    fixed = [b for b in mid.buildings if not b['removable']]
    assert fixed == [b for b in lay.buildings if not b['removable']]
    # crops, parcels, small buildings, cars change
    n = len(mid.fields)
    assert sum(lay.fields[i]['crop'] != mid.fields[i]['crop'] for i in range(n)) >= 0.1 * n
    assert sum(lay.fields[i]['row_angle_rad'] != mid.fields[i]['row_angle_rad']
               for i in range(n)) >= 1
    assert any(f.get('merged_into') is not None for f in lay.fields)
    assert any(f.get('split_from') is not None for f in lay.fields)
    assert len(lay.fields) > n
    assert np.mean(lay.field_id != mid.field_id) > 0.005
    key = lambda b: (round(b['x_px'], 3), round(b['y_px'], 3))  # noqa: E731
    assert {key(b) for b in lay.buildings} != {key(b) for b in mid.buildings}
    assert [(v['x_px'], v['y_px']) for v in lay.vehicles] != \
        [(v['x_px'], v['y_px']) for v in mid.vehicles]
    # building changes reach the obstacle map
    gone = [b for b in mid.buildings if key(b) not in {key(c) for c in lay.buildings}]
    new = [b for b in lay.buildings if key(b) not in {key(c) for c in mid.buildings}]
    assert gone or new
    o_map = P.obstacle_heights(mid, 'map')
    o_sum = P.obstacle_heights(mid, 'summer', 1)
    changed = 0
    for b in gone:
        a, c = o_map[int(b['y_px']), int(b['x_px'])], o_sum[int(b['y_px']), int(b['x_px'])]
        assert c < a or c > b['height_m'] + 0.5       # gone, unless a tree crown is above
        changed += c != a
    for b in new:
        a, c = o_map[int(b['y_px']), int(b['x_px'])], o_sum[int(b['y_px']), int(b['x_px'])]
        assert c >= b['height_m'] - 0.5               # (a tree may have made way for it)
        changed += c != a
    assert changed >= 1
    # a conditioned layout renders as that condition only
    assert np.array_equal(P.render_orthophoto(lay, 'summer', 1)[:50, :50],
                          P.render_orthophoto(mid, 'summer', 1)[:50, :50])
    with pytest.raises(ValueError):
        P.condition_layout(lay, 'winter', 1)


def test_texture_everywhere_and_sift(mid_map):
    grey = cv2.cvtColor(mid_map, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mu = cv2.blur(grey, (9, 9))
    sd = np.sqrt(np.maximum(cv2.blur(grey * grey, (9, 9)) - mu * mu, 0.0))
    assert np.mean(sd > 3.0) >= 0.95
    h, w = grey.shape
    crop = grey[h // 2 - 300:h // 2 + 300, w // 2 - 300:w // 2 + 300].astype(np.uint8)
    kps = cv2.SIFT_create().detect(crop, None)
    assert len(kps) > 2000


def test_all_conditions(small):
    ref = P.render_orthophoto(small, 'map')
    grey = {}
    for cond in P.CONDITIONS:
        img = P.render_orthophoto(small, cond, 4)
        assert img.shape == (600, 600, 3) and img.dtype == np.uint8
        grey[cond] = float(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).mean())
        if cond != 'map':
            assert np.abs(img.astype(np.int16) - ref.astype(np.int16)).mean() > 5.0, cond
        obst = P.obstacle_heights(small, cond, 4)
        assert obst.shape == (600, 600) and obst.max() > 5.0
        p = P.condition_params(cond, 4)
        assert 0.0 < p['sun_el_deg'] < 90.0 and 0.0 <= p['sun_az_deg'] < 360.0
    assert grey['winter'] > grey['map'] + 25.0        # snow
    assert grey['evening'] < grey['map'] - 10.0       # low sun, long shadows
    assert P.condition_params('evening', 4)['sun_el_deg'] < 15.0
    assert P.condition_params('haze', 4)['haze'] > 0.3
