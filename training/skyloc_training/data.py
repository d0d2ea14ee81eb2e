"""Readers for drone -> satellite pair JSON: GTA-UAV (Game4Loc), UAV-VisLoc, VPAIR, our own.

The files hold a JSON list with one record per drone image (Game4Loc field names)::

    {"drone_img_dir": "drone/images", "drone_img_name": "200_0001_0000000001.png",
     "drone_loc_x_y": [x, y],                    # metres (GTA-UAV, skyloc_training.pairs)
     "drone_loc_lat_lon": [lat, lon],            # degrees (UAV-VisLoc, VPAIR) instead
     "sate_img_dir": "satellite",
     "pair_pos_sate_img_list": [...],            # tiles with IoU > 0.39
     "pair_pos_sate_weight_list": [...],         # their IoU
     "pair_pos_sate_loc_x_y_list": [[x, y], ...] # or ..._loc_lat_lon_list (optional)
     "pair_pos_semipos_sate_img_list": [...],    # tiles with IoU > 0.14 (positives included)
     "pair_pos_semipos_sate_weight_list": [...], "pair_pos_semipos_sate_loc_x_y_list": [...],
     "drone_metadata": {"height": 200.0, ...},
     # added by skyloc_training.merge (optional elsewhere):
     "dataset_source": "gta", "data_root": "/data/GTA-UAV", "altitude_meters": 200.0,
     "duplicate_id": 0}

Image paths are ``data_root / <dir> / <name>``; ``data_root`` is the argument of
:func:`load_pairs`, else the record's ``data_root``, else the folder of the JSON file.

:func:`load_pairs` turns them into the normalised records the training code uses::

    {'drone_img': '/abs/drone.png', 'drone_loc': (x, y),          # metres
     'positives': [('/abs/tile.png', iou_weight, (x, y)), ...],   # IoU > 0.39
     'semi_positives': [...],                                      # 0.14 < IoU <= 0.39 only
     'dataset_source': 'gta', 'data_root': '/abs/root', 'altitude_meters': 200.0 or None,
     'duplicate_id': 0}

Latitude/longitude locations are converted to metres east/north of a datum (the local
tangent plane of ``skyloc_sim.geo``): the ``datum`` argument, else the first record's
position rounded to whole degrees, so that the train and test files of one area share it.
Tile locations a file does not give are (nan, nan).
"""

import json
import logging
import math
import os

import numpy as np

LOG = logging.getLogger('skyloc_training.data')

POSITIVE_IOU = 0.39        # Game4Loc: a tile is a positive above this IoU with the drone view
SEMI_POSITIVE_IOU = 0.14   # ... and a semi-positive above this one
HIGH_ALTITUDE_SOURCES = ('visloc', 'vpair')
DEFAULT_REAL_ALTITUDE_M = 400.0   # UAV-VisLoc and VPAIR are flown at about 400 m

_NAN_LOC = (math.nan, math.nan)


class PairSet:
    """The normalised records of one pair JSON file.

    ``records``: list of dicts (module docstring); ``skipped``: how many entries were left out
    (drone image missing, or no positive tile on disk); ``skip_reasons``: {reason: count};
    ``path``: the JSON file.
    """

    def __init__(self, path, records, skipped=0, skip_reasons=None):
        self.path = path
        self.records = records
        self.skipped = skipped
        self.skip_reasons = dict(skip_reasons or {})

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def sources(self):
        """{dataset_source: number of records}."""
        counts = {}
        for record in self.records:
            counts[record['dataset_source']] = counts.get(record['dataset_source'], 0) + 1
        return counts

    def __repr__(self):
        return (f'PairSet({self.path!r}: {len(self.records)} records, '
                f'{self.skipped} skipped)')


def read_json_records(path):
    """The list of raw records of a pair JSON file.

    ValueError naming the file and the line/column of a syntax error, or saying that the
    top level is not a list of objects (naming the first bad index).
    """
    try:
        with open(path, encoding='utf-8') as stream:
            doc = json.load(stream)
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}') from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f'{path}: not UTF-8 text: {exc}') from exc
    except OSError as exc:
        raise ValueError(f'{path}: cannot read pair JSON: {exc.strerror or exc}') from exc
    if not isinstance(doc, list):
        raise ValueError(f'{path}: a pair JSON must be a list of records (one per drone '
                         f'image), got a {type(doc).__name__}')
    for index, raw in enumerate(doc):
        if not isinstance(raw, dict):
            raise ValueError(f'{path}: record {index} must be an object, got '
                             f'{type(raw).__name__}')
    return doc


def detect_source(raw, path):
    """The dataset source of a raw record: its ``dataset_source``, else 'gta' for metre
    locations, else 'vpair' when the file name says so, else 'visloc'."""
    if raw.get('dataset_source'):
        return str(raw['dataset_source'])
    if 'drone_loc_x_y' in raw:
        return 'gta'
    return 'vpair' if 'vpair' in os.path.basename(str(path)).lower() else 'visloc'


class RecordError(ValueError):
    """A record lacks a required field or has a malformed one (file, index and field named)."""


def _fail(path, index, field, message):
    raise RecordError(f"{path}: record {index}: field '{field}' {message}")


def _required(raw, path, index, *names):
    """The value of the first of ``names`` present in ``raw`` (the first name if none)."""
    for name in names:
        if name in raw and raw[name] is not None:
            return raw[name], name
    others = ''.join(f" (or '{n}')" for n in names[1:])
    _fail(path, index, names[0], f'{others} is missing'.lstrip())


def _number(value, path, index, field):
    try:
        number = float(value)
    except (TypeError, ValueError):
        _fail(path, index, field, f'must be a number, got {value!r}')
    if not math.isfinite(number):
        _fail(path, index, field, f'must be finite, got {value!r}')
    return number


def _pair(value, path, index, field):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        _fail(path, index, field, f'must be a pair of numbers, got {value!r}')
    return (_number(value[0], path, index, field), _number(value[1], path, index, field))


def _datum_of(raw):
    """Whole-degree datum from a raw record's lat/lon (None if it has none)."""
    loc = raw.get('drone_loc_lat_lon')
    if isinstance(loc, (list, tuple)) and len(loc) == 2:
        try:
            return (float(round(float(loc[0]))), float(round(float(loc[1]))))
        except (TypeError, ValueError):
            return None
    return None


def _to_metres(latlon, datum):
    from skyloc_sim.geo import latlon_to_map
    return latlon_to_map(latlon[0], latlon[1], datum)


def _location(raw, path, index, datum):
    """(x, y) metres of the drone: drone_loc_x_y, else drone_loc_lat_lon through the datum."""
    if raw.get('drone_loc_x_y') is not None:
        return _pair(raw['drone_loc_x_y'], path, index, 'drone_loc_x_y')
    value, field = _required(raw, path, index, 'drone_loc_x_y', 'drone_loc_lat_lon')
    latlon = _pair(value, path, index, field)
    if not (-90.0 <= latlon[0] <= 90.0 and -180.0 <= latlon[1] <= 180.0):
        _fail(path, index, field, f'is not a latitude, longitude: {value!r}')
    return _to_metres(latlon, datum)


def _tile_list(raw, path, index, prefix, required, datum):
    """[(name, weight, (x, y))] of one of the pair_<prefix>_sate_* lists of a record."""
    names_field = f'pair_{prefix}_sate_img_list'
    if names_field not in raw or raw[names_field] is None:
        if required:
            _fail(path, index, names_field, 'is missing')
        return []
    names = raw[names_field]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        _fail(path, index, names_field, 'must be a list of file names')
    weights_field = f'pair_{prefix}_sate_weight_list'
    weights = raw.get(weights_field)
    if weights is None:
        weights = [1.0] * len(names)
    if not isinstance(weights, list) or len(weights) != len(names):
        _fail(path, index, weights_field, f'must be a list of {len(names)} numbers (one per '
              f'tile of {names_field}), got {weights!r}'[:300])
    weights = [_number(w, path, index, weights_field) for w in weights]
    locs, loc_field, in_metres = None, None, True
    for suffix, metres in (('loc_x_y', True), ('loc_xy', True), ('loc_lat_lon', False)):
        field = f'pair_{prefix}_sate_{suffix}_list'
        if raw.get(field) is not None:
            locs, loc_field, in_metres = raw[field], field, metres
            break
    if locs is None:
        locs = [_NAN_LOC] * len(names)
    elif not isinstance(locs, list) or len(locs) != len(names):
        _fail(path, index, loc_field, f'must be a list of {len(names)} locations (one per tile '
              f'of {names_field})')
    else:
        locs = [_pair(v, path, index, loc_field) for v in locs]
        if not in_metres:
            locs = [_to_metres(v, datum) for v in locs]
    return list(zip(names, weights, locs))


def normalise_record(raw, index, path, source=None, data_root=None, datum=None, exists=None):
    """One raw record -> (normalised record, None) or (None, skip reason).

    RecordError if a required field is missing or malformed.  ``exists``: a callable telling
    whether an image path exists (cached by :func:`load_pairs`); None: no file checks.
    """
    json_dir = os.path.dirname(os.path.abspath(path))
    if data_root is not None:
        root = os.path.abspath(data_root)
    else:  # a record's own data_root is relative to its JSON file
        root = os.path.abspath(os.path.join(json_dir, str(raw.get('data_root') or '.')))
    name, name_field = _required(raw, path, index, 'drone_img_name', 'drone_img')
    if not isinstance(name, str) or not name:
        _fail(path, index, name_field, f'must be a file name, got {name!r}')
    drone_dir = raw.get('drone_img_dir') or ''
    sate_dir = raw.get('sate_img_dir') or ''
    if not isinstance(drone_dir, str) or not isinstance(sate_dir, str):
        _fail(path, index, 'drone_img_dir' if not isinstance(drone_dir, str)
              else 'sate_img_dir', 'must be a folder name')
    if datum is None:
        datum = _datum_of(raw)
    drone_loc = _location(raw, path, index, datum)
    positives = _tile_list(raw, path, index, 'pos', True, datum)
    semis = _tile_list(raw, path, index, 'pos_semipos', False, datum)
    altitude = raw.get('altitude_meters')
    if altitude is None and isinstance(raw.get('drone_metadata'), dict):
        altitude = raw['drone_metadata'].get('height')
    altitude = None if altitude is None else _number(
        altitude, path, index, 'altitude_meters' if 'altitude_meters' in raw
        else 'drone_metadata.height')
    duplicate_id = raw.get('duplicate_id', 0)
    if not isinstance(duplicate_id, int) or isinstance(duplicate_id, bool) or duplicate_id < 0:
        _fail(path, index, 'duplicate_id', f'must be a non-negative integer, got '
              f'{duplicate_id!r}')

    drone_img = os.path.join(root, drone_dir, name)
    tile_dir = os.path.join(root, sate_dir)
    positive_names = {n for n, _, _ in positives}
    positives = [(os.path.join(tile_dir, n), w, loc) for n, w, loc in positives]
    # Game4Loc's pos_semipos lists include the positives: keep the semi-positives only
    semis = [(os.path.join(tile_dir, n), w, loc) for n, w, loc in semis
             if n not in positive_names]
    if exists is not None:
        if not exists(drone_img):
            return None, 'drone image missing'
        if not positives:
            return None, 'no positive tile listed'
        positives = [t for t in positives if exists(t[0])]
        if not positives:
            return None, 'no positive tile on disk'
        semis = [t for t in semis if exists(t[0])]
    elif not positives:
        return None, 'no positive tile listed'
    return {
        'drone_img': drone_img, 'drone_loc': drone_loc, 'positives': positives,
        'semi_positives': semis,
        'dataset_source': source or detect_source(raw, path), 'data_root': root,
        'altitude_meters': altitude, 'duplicate_id': duplicate_id}, None


class ExistsCache:
    """os.path.isfile with memory: tiles are shared by many records."""

    def __init__(self):
        self.known = {}

    def __call__(self, file_path):
        hit = self.known.get(file_path)
        if hit is None:
            hit = self.known[file_path] = os.path.isfile(file_path)
        return hit


def log_skips(path, skip_reasons, total, first_missing=None, log=None):
    """One summary line for the records left out of a file (nothing if none)."""
    skipped = sum(skip_reasons.values())
    if not skipped:
        return
    reasons = ', '.join(f'{reason}: {n}' for reason, n in sorted(skip_reasons.items()))
    line = f'{path}: skipped {skipped} of {total} records ({reasons})'
    if first_missing:
        line += f'; first: {first_missing}'
    (log or LOG.warning)(line)


def load_pairs(json_path, source=None, data_root=None, datum=None, check_files=True):
    """Read a pair JSON file (any of the styles in the module docstring) -> :class:`PairSet`.

    ``source``: dataset_source for every record (default: each record's own, else detected,
    see :func:`detect_source`).  ``data_root``: folder the image paths are relative to
    (default: each record's ``data_root``, else the JSON's folder).  ``datum``: (lat, lon)
    for lat/lon files.  Entries whose drone image is missing or none of whose positive tiles
    exists are skipped and counted (one warning line sums them up); semi-positive tiles that
    are missing are dropped.  ValueError for malformed JSON (file:line) or a bad record (file,
    record index and field).
    """
    path = os.path.abspath(json_path)
    raws = read_json_records(path)
    if datum is None:
        datum = next((d for d in map(_datum_of, raws) if d is not None), None)
    exists = ExistsCache() if check_files else None
    records, reasons, first_missing = [], {}, None
    for index, raw in enumerate(raws):
        record, reason = normalise_record(raw, index, path, source, data_root, datum, exists)
        if record is None:
            reasons[reason] = reasons.get(reason, 0) + 1
            if first_missing is None:
                first_missing = f'record {index} ({raw.get("drone_img_name")}: {reason})'
            continue
        records.append(record)
    log_skips(path, reasons, len(raws), first_missing)
    return PairSet(path, records, sum(reasons.values()), reasons)


def gallery(records, semi=True):
    """The unique satellite tiles of ``records`` for evaluation, sorted by path.

    Returns (paths list of M str, locs float64 array [M, 2] in metres, nan where unknown).
    ``semi``: also the semi-positive tiles (distractors that partly overlap a query).
    """
    locs = {}
    for record in records:
        tiles = record['positives'] + (record['semi_positives'] if semi else [])
        for tile_path, _, loc in tiles:
            locs.setdefault(tile_path, loc)
    paths = sorted(locs)
    return paths, np.array([locs[p] for p in paths], dtype=np.float64).reshape(-1, 2)


def positive_indices(records, paths, semi=False):
    """For each record, the indices into ``paths`` (a gallery) of its positive tiles (and
    semi-positive ones with ``semi``): what Recall@K counts as a hit."""
    where = {p: i for i, p in enumerate(paths)}
    out = []
    for record in records:
        tiles = record['positives'] + (record['semi_positives'] if semi else [])
        out.append(sorted({where[t[0]] for t in tiles if t[0] in where}))
    return out
