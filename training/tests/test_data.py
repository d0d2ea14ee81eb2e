"""Pair JSON readers (skyloc_training.data) and the merge command (skyloc_training.merge)."""
import json
import logging
import math
import os

import cv2
import numpy as np
import pytest

from skyloc_training import merge as merge_mod
from skyloc_training.data import gallery, load_pairs, positive_indices


def _image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), 120, np.uint8))


def _gta_record(name, tiles, loc=(100.0, 200.0), semis=(), height=200.0):
    """A GTA-UAV record: positives ``tiles`` [(name, iou, (x, y))], semi-positives extra."""
    both = list(tiles) + list(semis)
    return {
        'drone_img_dir': 'drone/images', 'drone_img_name': name, 'drone_loc_x_y': list(loc),
        'sate_img_dir': 'satellite',
        'pair_pos_sate_img_list': [t[0] for t in tiles],
        'pair_pos_sate_weight_list': [t[1] for t in tiles],
        'pair_pos_sate_loc_x_y_list': [list(t[2]) for t in tiles],
        'pair_pos_semipos_sate_img_list': [t[0] for t in both],
        'pair_pos_semipos_sate_weight_list': [t[1] for t in both],
        'pair_pos_semipos_sate_loc_x_y_list': [list(t[2]) for t in both],
        'drone_metadata': {'height': height, 'drone_yaw': 10.0}}


def _gta_dataset(root, records, files=None, name='same-area-drone2sate-train.json'):
    """Write the JSON and every image it names (or only ``files``) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for r in records:
        names = [(r['drone_img_dir'], r['drone_img_name'])] + [
            (r['sate_img_dir'], t) for t in r['pair_pos_semipos_sate_img_list']]
        for folder, fname in names:
            if files is None or fname in files:
                _image(root / folder / fname)
    path = root / name
    path.write_text(json.dumps(records, indent=2))
    return path


def test_reads_gta_style(tmp_path):
    recs = [_gta_record('200_0001.png', [('5_1_2.png', 0.62, (90.0, 210.0))],
                        semis=[('5_1_3.png', 0.2, (90.0, 330.0))]),
            _gta_record('300_0002.png', [('5_1_2.png', 0.45, (90.0, 210.0)),
                                         ('6_3_4.png', 0.41, (95.0, 205.0))],
                        loc=(80.0, 215.0), height=300.0)]
    path = _gta_dataset(tmp_path / 'gta', recs)
    pairs = load_pairs(str(path))
    assert len(pairs) == 2 and pairs.skipped == 0 and pairs.path == str(path)
    r = pairs.records[0]
    root = str(tmp_path / 'gta')
    assert r['drone_img'] == os.path.join(root, 'drone/images', '200_0001.png')
    assert os.path.isabs(r['drone_img'])
    assert r['drone_loc'] == (100.0, 200.0)
    assert r['positives'] == [(os.path.join(root, 'satellite', '5_1_2.png'), 0.62, (90.0, 210.0))]
    # Game4Loc's pos_semipos list repeats the positives: only the semi-positive one is kept
    assert r['semi_positives'] == [(os.path.join(root, 'satellite', '5_1_3.png'), 0.2,
                                    (90.0, 330.0))]
    assert r['dataset_source'] == 'gta' and r['data_root'] == root
    assert r['altitude_meters'] == 200.0 and r['duplicate_id'] == 0
    assert pairs.records[1]['altitude_meters'] == 300.0
    assert len(pairs.records[1]['positives']) == 2
    # explicit source and data_root win
    other = load_pairs(str(path), source='procedural', data_root=root)
    assert other.records[0]['dataset_source'] == 'procedural'

    paths, locs = gallery(pairs.records)
    assert paths == sorted({os.path.join(root, 'satellite', n)
                            for n in ('5_1_2.png', '5_1_3.png', '6_3_4.png')})
    assert locs.shape == (3, 2) and locs.dtype == np.float64
    assert locs[paths.index(os.path.join(root, 'satellite', '6_3_4.png'))].tolist() == [95, 205]
    assert gallery(pairs.records, semi=False)[0] == [p for p in paths if '5_1_3' not in p]
    hits = positive_indices(pairs.records, paths)
    assert [[paths[i] for i in h] for h in hits] == [
        [os.path.join(root, 'satellite', '5_1_2.png')],
        sorted(os.path.join(root, 'satellite', n) for n in ('5_1_2.png', '6_3_4.png'))]


def _latlon_record(name, lat, lon, tiles, with_locs=True):
    rec = {'drone_img_dir': 'drone', 'drone_img_name': name, 'drone_loc_lat_lon': [lat, lon],
           'sate_img_dir': 'satellite',
           'pair_pos_sate_img_list': [t[0] for t in tiles],
           'pair_pos_sate_weight_list': [t[1] for t in tiles],
           'pair_pos_semipos_sate_img_list': [t[0] for t in tiles],
           'pair_pos_semipos_sate_weight_list': [t[1] for t in tiles]}
    if with_locs:
        rec['pair_pos_sate_loc_lat_lon_list'] = [list(t[2]) for t in tiles]
    return rec


def test_reads_visloc_and_vpair_style_latlon(tmp_path):
    # VisLoc: lat/lon degrees; a tile 0.001 deg north of the drone is ~111 m north of it
    north_tile = ('01_6_3_4.png', 0.5, (29.751, 115.98))
    west_tile = ('01_6_3_5.png', 0.4, (29.75, 115.98))
    recs = [_latlon_record('01_0001.JPG', 29.75, 115.98, [north_tile]),
            _latlon_record('01_0002.JPG', 29.75, 115.981, [west_tile])]
    root = tmp_path / 'visloc'
    for r in recs:
        _image(root / 'drone' / r['drone_img_name'])
        _image(root / 'satellite' / r['pair_pos_sate_img_list'][0])
    (root / 'cross-area-drone2sate-train.json').write_text(json.dumps(recs))
    pairs = load_pairs(str(root / 'cross-area-drone2sate-train.json'))
    assert pairs.sources() == {'visloc': 2} and pairs.skipped == 0
    a, b = pairs.records
    assert a['altitude_meters'] is None   # VisLoc JSON has no height: merge adds 400 m
    (x0, y0), (tx, ty) = a['drone_loc'], a['positives'][0][2]
    assert tx - x0 == pytest.approx(0.0, abs=1e-6)
    assert ty - y0 == pytest.approx(110.9, abs=0.5)          # 0.001 deg of latitude at 30 N
    east = b['drone_loc'][0] - a['drone_loc'][0]
    assert east == pytest.approx(96.6, abs=0.5)              # 0.001 deg of longitude at 30 N
    # datum: whole degrees of the first record, so train and test files share it
    assert a['drone_loc'][0] == pytest.approx(-0.02 * 96.6e3, rel=0.01)

    # VPAIR (named so), tile locations not given -> nan
    vp = tmp_path / 'vpair'
    rec = _latlon_record('00001.png', 50.6, 7.1, [('00001.png', 1.0, (50.6, 7.1))],
                         with_locs=False)
    _image(vp / 'drone' / '00001.png')
    _image(vp / 'satellite' / '00001.png')
    (vp / 'vpair-drone2drone-train.json').write_text(json.dumps([rec]))
    pairs = load_pairs(str(vp / 'vpair-drone2drone-train.json'))
    assert pairs.records[0]['dataset_source'] == 'vpair'
    assert all(math.isnan(v) for v in pairs.records[0]['positives'][0][2])
    assert np.isnan(gallery(pairs.records)[1]).all()


def test_missing_images_are_skipped_and_counted(tmp_path, caplog):
    recs = [_gta_record('a.png', [('t1.png', 0.5, (0, 0))]),                 # complete
            _gta_record('b.png', [('t1.png', 0.5, (0, 0))]),                 # no drone image
            _gta_record('c.png', [('t2.png', 0.5, (0, 0))]),                 # no positive tile
            _gta_record('d.png', [('t1.png', 0.6, (0, 0)), ('t3.png', 0.4, (1, 1))],
                        semis=[('t4.png', 0.2, (2, 2))])]                    # t3, t4 missing
    path = _gta_dataset(tmp_path / 'g', recs, files={'a.png', 'c.png', 'd.png', 't1.png'})
    with caplog.at_level(logging.WARNING, logger='skyloc_training.data'):
        pairs = load_pairs(str(path))
    assert [os.path.basename(r['drone_img']) for r in pairs.records] == ['a.png', 'd.png']
    assert pairs.skipped == 2
    assert pairs.skip_reasons == {'drone image missing': 1, 'no positive tile on disk': 1}
    d = pairs.records[1]
    assert [os.path.basename(t[0]) for t in d['positives']] == ['t1.png']
    assert d['semi_positives'] == []
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1   # one summary line, not one per record
    assert 'skipped 2 of 4' in warnings[0] and str(path) in warnings[0]
    # without file checks nothing is dropped
    assert len(load_pairs(str(path), check_files=False)) == 4


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / 'bad.json'
    path.write_text('[\n  {"drone_img_name": "a.png",\n   "drone_loc_x_y": [1, 2],,\n  }\n]\n')
    with pytest.raises(ValueError) as err:
        load_pairs(str(path))
    assert f'{path}:3:' in str(err.value) and 'malformed JSON' in str(err.value)
    path.write_text('{"drone_img_name": "a.png"}')
    with pytest.raises(ValueError, match='must be a list of records'):
        load_pairs(str(path))
    with pytest.raises(ValueError, match='cannot read'):
        load_pairs(str(tmp_path / 'absent.json'))


def test_bad_record_names_file_index_and_field(tmp_path):
    good = _gta_record('a.png', [('t.png', 0.5, (0, 0))])
    missing = dict(good)
    del missing['pair_pos_sate_img_list']
    path = _gta_dataset(tmp_path / 'g', [good, missing])
    with pytest.raises(ValueError) as err:
        load_pairs(str(path))
    msg = str(err.value)
    assert str(path) in msg and 'record 1' in msg and "'pair_pos_sate_img_list'" in msg

    no_loc = dict(good)
    del no_loc['drone_loc_x_y']
    (tmp_path / 'g' / 'x.json').write_text(json.dumps([no_loc]))
    with pytest.raises(ValueError, match=r"record 0: field 'drone_loc_x_y' \(or "
                                         r"'drone_loc_lat_lon'\) is missing"):
        load_pairs(str(tmp_path / 'g' / 'x.json'))

    short = dict(good, pair_pos_sate_weight_list=[0.5, 0.4])
    (tmp_path / 'g' / 'y.json').write_text(json.dumps([good, good, short]))
    with pytest.raises(ValueError, match=r"record 2: field 'pair_pos_sate_weight_list' must "
                                         r"be a list of 1 numbers"):
        load_pairs(str(tmp_path / 'g' / 'y.json'))


# ----------------------------------------------------------------------------- merge

def _three_sources(tmp_path):
    gta = _gta_dataset(tmp_path / 'gta', [
        _gta_record(f'{i}.png', [(f't{i}.png', 0.5, (i, 0))], height=150.0 + i)
        for i in range(2)])
    visloc_root = tmp_path / 'visloc'
    recs = [_latlon_record(f'v{i}.JPG', 29.75 + 1e-3 * i, 115.98,
                           [(f'vt{i}.png', 0.5, (29.75, 115.98))]) for i in range(3)]
    for r in recs:
        _image(visloc_root / 'drone' / r['drone_img_name'])
        _image(visloc_root / 'satellite' / r['pair_pos_sate_img_list'][0])
    # the JSON lives apart from its data root, as in the seed plan
    visloc_json = tmp_path / 'lists' / 'cross-area-drone2sate-train.json'
    visloc_json.parent.mkdir()
    visloc_json.write_text(json.dumps(recs))
    ours = _gta_dataset(tmp_path / 'ours', [
        _gta_record(f'{i:06d}.jpg', [(f'0_{i}_0.png', 0.6, (i, i))], height=90.0)
        for i in range(4)], name='pairs_train.json')
    return gta, visloc_root, visloc_json, ours


def test_merge_counts_fields_and_duplicates(tmp_path):
    gta, visloc_root, visloc_json, ours = _three_sources(tmp_path)
    lines = []
    merged = merge_mod.merge(
        [('gta', str(gta)), merge_mod.Source('visloc', str(visloc_json), str(visloc_root)),
         {'name': 'procedural', 'json_path': str(ours), 'altitude': 100.0}],
        {'visloc': 10, 'procedural': 2}, log=lines.append)
    by = {}
    for r in merged:
        by.setdefault(r['dataset_source'], []).append(r)
    assert {k: len(v) for k, v in by.items()} == {'gta': 2, 'visloc': 30, 'procedural': 8}
    assert len(merged) == 40
    # each visloc record 10 times, duplicate_id 0..9, altitude 400 m (none in the file)
    for name in ('v0.JPG', 'v1.JPG', 'v2.JPG'):
        copies = [r for r in by['visloc'] if r['drone_img_name'] == name]
        assert sorted(r['duplicate_id'] for r in copies) == list(range(10))
    assert {r['altitude_meters'] for r in by['visloc']} == {400.0}
    assert {r['data_root'] for r in by['visloc']} == {str(visloc_root)}
    assert [r['altitude_meters'] for r in by['gta']] == [150.0, 151.0]   # their own height
    assert [r['duplicate_id'] for r in by['gta']] == [0, 0]
    assert {r['altitude_meters'] for r in by['procedural']} == {100.0}    # given
    assert by['gta'][0]['pair_pos_sate_img_list'] == ['t0.png']            # Game4Loc fields kept
    assert lines[1] == 'visloc: 3 read, 0 skipped, 3 x 10 = 30 entries (75.0%)'
    assert lines[-1] == 'TOTAL: 40 entries'

    # the CLI writes it; load_pairs resolves each record against its own data_root
    out = tmp_path / 'combined-lora-train.json'
    assert merge_mod.main(['--gta-json', str(gta), '--visloc-json', str(visloc_json),
                           '--visloc-root', str(visloc_root), '--visloc-multiplier', '10',
                           '--source', 'procedural', str(ours), '-', '100',
                           '--multiplier', 'procedural', '2', '--output', str(out)]) == 0
    pairs = load_pairs(str(out))
    assert pairs.skipped == 0
    assert pairs.sources() == {'gta': 2, 'visloc': 30, 'procedural': 8}
    v = next(r for r in pairs.records if r['dataset_source'] == 'visloc')
    assert v['drone_img'].startswith(str(visloc_root)) and os.path.isfile(v['drone_img'])
    assert v['altitude_meters'] == 400.0
    assert sorted({r['duplicate_id'] for r in pairs.records}) == list(range(10))


def test_merge_skips_missing_and_splits_test(tmp_path):
    gta, visloc_root, visloc_json, ours = _three_sources(tmp_path)
    os.remove(visloc_root / 'drone' / 'v1.JPG')
    lines = []
    train, test = merge_mod.merge(
        [('visloc', str(visloc_json), str(visloc_root)), ('procedural', str(ours))],
        {'visloc': 3, 'procedural': 5}, test_fraction=0.5, seed=1, log=lines.append)
    assert lines[0].startswith(f'{visloc_json}: skipped 1 of 3 records (drone image missing: 1)')
    assert lines[1].startswith('visloc: 3 read, 1 skipped, 1 x 3 = 3 entries')
    assert lines[1].endswith('test 1')
    # split by drone image before duplication: the test part is not duplicated
    assert sum(r['dataset_source'] == 'procedural' for r in test) == 2
    assert sum(r['dataset_source'] == 'procedural' for r in train) == 2 * 5
    assert {r['duplicate_id'] for r in test} == {0}
    train_names = {(r['dataset_source'], r['drone_img_name']) for r in train}
    test_names = {(r['dataset_source'], r['drone_img_name']) for r in test}
    assert not train_names & test_names
    assert 'v1.JPG' not in {n for _, n in train_names | test_names}

    out = tmp_path / 'm' / 'combined-train.json'
    assert merge_mod.main(['--source', 'procedural', str(ours), str(tmp_path / 'ours'),
                           '--output', str(out), '--split-test', '0.25']) == 0
    assert len(json.loads(out.read_text())) == 3
    assert len(json.loads((tmp_path / 'm' / 'combined-test.json').read_text())) == 1


def test_merge_cli_errors(tmp_path, capsys):
    bad = tmp_path / 'bad.json'
    bad.write_text('[{"drone_img_name": 1,}]')
    assert merge_mod.main(['--gta-json', str(bad), '--output', str(tmp_path / 'o.json')]) == 2
    assert f'{bad}:1:' in capsys.readouterr().err
    assert not (tmp_path / 'o.json').exists()
    with pytest.raises(SystemExit):
        merge_mod.main(['--output', str(tmp_path / 'o.json')])   # no source
    with pytest.raises(SystemExit):
        merge_mod.main(['--source', 'x', str(bad), '--output', 'o.json'])  # ROOT missing
    with pytest.raises(ValueError, match='not merged'):
        merge_mod.merge([('gta', str(bad))], {'visloc': 2})
