"""build_db / localize / import_geotiff end to end on a tiny map, and their bad-input exits."""

import json
import math
import os
import subprocess
import sys

import cv2
import pytest

from localization_testdata import camera_image, tiny_bundle, tiny_world


def _run(*args):
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = here + os.pathsep + env.get('PYTHONPATH', '')
    return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp('loccli')
    world = tiny_world(str(root))
    bundle = tiny_bundle(str(root), world)
    db = str(root / 'db')
    proc = _run('skyloc_localization.build_db', '--map', world, '--bundle', bundle.path,
                '--out', db, '--bands', '90-110', '--footprint', '100', '--stride', '25',
                '--quiet')
    assert proc.returncode == 0, proc.stderr
    image, _ = camera_image(world, -25.0, 30.0, 100.0, math.radians(70.0))
    path = str(root / 'query.png')
    cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root, world, bundle, db, path


def test_localize_prints_one_json_per_image(built):
    root, world, bundle, db, image = built
    proc = _run('skyloc_localization.localize', '--db', db, '--bundle', bundle.path,
                '--altitude', '96', '--yaw-deg', '73', '--hfov-deg', '90', image, image)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    out = json.loads(lines[0])
    for key in ('x', 'y', 'lat', 'lon', 'similarity', 'uncertainty', 'top_k', 'fix',
                'covariance', 'geometric_score'):
        assert key in out
    assert out['fix'] == 'fine' and math.hypot(out['x'] + 25.0, out['y'] - 30.0) < 3.0
    assert 47.0 < out['lat'] < 48.0 and 8.0 < out['lon'] < 9.0   # the procedural datum
    assert out['top_k'] and {'x', 'y', 'similarity', 'geometric_score'} <= set(out['top_k'][0])


@pytest.mark.parametrize('args, message', [
    (['--altitude', '-5', '--yaw-deg', '0'], '--altitude'),
    (['--altitude', '100', '--yaw-deg', 'nan'], '--yaw-deg'),
    (['--altitude', '100', '--yaw-deg', '0', '--hfov-deg', '200'], '--hfov-deg'),
])
def test_localize_bad_arguments(built, args, message):
    _, _, bundle, db, image = built
    proc = _run('skyloc_localization.localize', '--db', db, '--bundle', bundle.path, *args,
                image)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_localize_bad_inputs(built, tmp_path):
    root, world, bundle, db, image = built
    proc = _run('skyloc_localization.localize', '--db', db, '--bundle', bundle.path,
                '--altitude', '100', '--yaw-deg', '0', str(tmp_path / 'missing.png'))
    assert proc.returncode == 2 and 'missing.png' in proc.stderr
    proc = _run('skyloc_localization.localize', '--db', str(tmp_path / 'nodb'), '--bundle',
                bundle.path, '--altitude', '100', '--yaw-deg', '0', image)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    # a database built with another bundle: both model_ids named
    from skyloc_perception.build_bundle import build, parser
    other = str(tmp_path / 'other_bundle')
    build(parser().parse_args(['--map', world, '--out', other, '--tiles', '40', '--k', '4',
                               '--pca-dim', '16', '--footprints', '100', '--seed', '1',
                               '--quiet']), log=lambda m: None)
    proc = _run('skyloc_localization.localize', '--db', db, '--bundle', other,
                '--altitude', '100', '--yaw-deg', '0', image)
    assert proc.returncode == 2
    other_id = json.load(open(os.path.join(other, 'bundle.json')))['model_id']
    assert bundle.model_id in proc.stderr and other_id in proc.stderr


def test_build_db_bad_inputs(built, tmp_path):
    _, world, bundle, _, _ = built
    proc = _run('skyloc_localization.build_db', '--map', world, '--bundle', bundle.path,
                '--out', str(tmp_path / 'x'), '--bands', '120-90')
    assert proc.returncode == 2 and 'LOW <= HIGH' in proc.stderr
    proc = _run('skyloc_localization.build_db', '--map', str(tmp_path / 'no.yaml'),
                '--bundle', bundle.path, '--out', str(tmp_path / 'x'))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_import_geotiff(tmp_path):
    rasterio = pytest.importorskip('rasterio')
    import numpy as np
    from rasterio.transform import from_origin

    from skyloc_sim.geo import load_map_yaml, map_to_latlon
    data = (np.random.default_rng(0).random((3, 60, 80)) * 255).astype(np.uint8)
    tif = str(tmp_path / 'in.tif')
    with rasterio.open(tif, 'w', driver='GTiff', height=60, width=80, count=3, dtype='uint8',
                       crs='EPSG:32632', transform=from_origin(465000, 5247000, 0.5, 0.5)) as d:
        d.write(data)
    out = str(tmp_path / 'map' / 'map.yaml')
    proc = _run('skyloc_localization.import_geotiff', tif, '--out', out)
    assert proc.returncode == 0, proc.stderr
    meta = load_map_yaml(out, require_datum=True)
    assert meta.resolution == pytest.approx(0.5, rel=0.01)
    image = cv2.imread(meta.image_path)
    # the map frame's centre is the datum, the map about 40 x 30 m around it
    w, h = image.shape[1] * meta.resolution, image.shape[0] * meta.resolution
    assert meta.origin[0] + w / 2 == pytest.approx(0.0, abs=1.0)
    assert meta.origin[1] + h / 2 == pytest.approx(0.0, abs=1.0)
    assert w == pytest.approx(40.0, abs=2.0) and h == pytest.approx(30.0, abs=2.0)
    assert map_to_latlon(0, 0, meta.datum) == pytest.approx(meta.datum)
    proc = _run('skyloc_localization.import_geotiff', str(tmp_path / 'none.tif'), '--out', out)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
