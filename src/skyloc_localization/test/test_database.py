"""Map database: band plan, tile geometry, build/load round trip and the load refusals."""

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from localization_testdata import tiny_bundle, tiny_database, tiny_world
from skyloc_localization.database import (band_plan, DatabaseError, load_database, parse_bands,
                                          tile_centres)
from skyloc_sim.geo import MapGrid


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('locdb'))
    world = tiny_world(root)
    bundle = tiny_bundle(root, world)
    return world, bundle, tiny_database(root, world, bundle)


def test_band_plan_footprint_scales_with_altitude():
    plan = band_plan(((70, 90), (90, 120), (120, 150)))
    assert [b['altitude'] for b in plan] == pytest.approx([79.4, 103.9, 134.2], abs=0.1)
    assert [b['footprint_m'] for b in plan] == pytest.approx([79.4, 103.9, 134.2], abs=0.1)
    assert [b['stride_m'] for b in plan] == pytest.approx([19.8, 26.0, 33.5], abs=0.1)
    same = band_plan(((70, 90), (90, 120)), footprint_m=100, stride_m=[20, 30])
    assert [b['footprint_m'] for b in same] == [100.0, 100.0]
    assert [b['stride_m'] for b in same] == [20.0, 30.0]
    with pytest.raises(DatabaseError, match='2 values for 3 bands'):
        band_plan(((70, 90), (90, 120), (120, 150)), footprint_m=[80, 90])
    assert parse_bands('70-90,90-150') == ((70.0, 90.0), (90.0, 150.0))
    for bad in ('70', '90-70', 'a-b', '-5-10'):
        with pytest.raises(DatabaseError):
            parse_bands(bad)


def test_tile_centres_grid_inside_the_map():
    grid = MapGrid(600, 400, 0.5, -150.0, -100.0)   # 300 x 200 m
    c = tile_centres(grid, footprint_m=100.0, stride_m=25.0)
    xs, ys = np.unique(c[:, 0]), np.unique(c[:, 1])
    assert len(c) == len(xs) * len(ys) == 9 * 5
    assert np.allclose(np.diff(xs), 25.0) and np.allclose(np.diff(ys), 25.0)
    # every footprint inside the map, the unused border equal on both sides
    assert xs.min() - 50 >= -150 and xs.max() + 50 <= 150
    assert ys.min() - 50 >= -100 and ys.max() + 50 <= 100
    assert xs.mean() == pytest.approx(0.0) and ys.mean() == pytest.approx(0.0)
    with_margin = tile_centres(grid, 100.0, 25.0, margin_m=25.0)
    assert len(with_margin) == 7 * 3
    assert len(tile_centres(grid, 500.0, 25.0)) == 1   # map smaller than a footprint


def test_build_and_load_round_trip(tiny):
    from skyloc_perception.bundle import DescriptorPipeline
    from skyloc_perception.normalize import map_tile
    from skyloc_sim.world import load_world
    world_yaml, bundle, db = tiny
    meta = json.load(open(os.path.join(db.path, 'db.json')))
    for key in ('format_version', 'model_id', 'map_yaml', 'map_sha256', 'footprint_m', 'bands',
                'stride_m', 'dim', 'dtype', 'count', 'map_image'):
        assert key in meta
    assert meta['model_id'] == bundle.model_id and meta['dim'] == bundle.descriptor_dim
    assert isinstance(db.descriptors, np.memmap)
    assert db.descriptors.dtype == np.float16 and db.descriptors.shape == (len(db), 32)
    assert len(db) == 81 and np.all(db.centres[:, 2] == 0)   # (300 - 100) / 25 + 1 = 9
    assert db.bands[0]['footprint_m'] == 100.0
    # row i describes the tile of footprint_m centred at centres[i]
    world = load_world(world_yaml)
    pipe = DescriptorPipeline(bundle)
    for i in (0, 40, 80):
        x, y, _ = db.centres[i]
        want = pipe.describe(map_tile(world.map_image, world.grid, x, y, 100.0, 224))
        assert float(np.dot(want, db.descriptors[i].astype(np.float32))) > 0.999
    assert db.band_for_altitude(100) == 0 and db.band_for_altitude(300) == 0


def _copy(db, tmp_path):
    dst = str(tmp_path / 'copy')
    shutil.copytree(db.path, dst)
    return dst


def _edit(path, **changes):
    meta = json.load(open(os.path.join(path, 'db.json')))
    meta.update(changes)
    json.dump(meta, open(os.path.join(path, 'db.json'), 'w'))


def test_load_refusals(tiny, tmp_path):
    _, bundle, db = tiny
    other = SimpleNamespace(model_id='f' * 64, descriptor_dim=32, path='/other/bundle')
    with pytest.raises(DatabaseError) as err:
        load_database(db.path, other)
    assert bundle.model_id in str(err.value) and 'f' * 64 in str(err.value)
    wrong_dim = SimpleNamespace(model_id=bundle.model_id, descriptor_dim=64, path='b')
    with pytest.raises(DatabaseError, match='descriptor dim 32 does not match'):
        load_database(db.path, wrong_dim)
    path = _copy(db, tmp_path)
    _edit(path, format_version=99)
    with pytest.raises(DatabaseError, match='format_version 99'):
        load_database(path)
    _edit(path, format_version=1, count=5)
    with pytest.raises(DatabaseError, match='shape'):
        load_database(path)
    _edit(path, count=81)
    os.remove(os.path.join(path, 'descriptors.npy'))
    with pytest.raises(DatabaseError, match='missing file descriptors.npy'):
        load_database(path)
    open(os.path.join(path, 'db.json'), 'w').write('{not json')
    with pytest.raises(DatabaseError, match='cannot parse'):
        load_database(path)
    with pytest.raises(DatabaseError, match='not found'):
        load_database(str(tmp_path / 'nowhere'))
