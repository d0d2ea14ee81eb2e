"""Merge pair JSON files of several datasets into one, balanced by per-source multipliers.

    python -m skyloc_training.merge --visloc-json VISLOC/cross-area-drone2sate-train.json \\
        --visloc-root VISLOC --vpair-json VPAIR/train.json --vpair-root VPAIR \\
        --visloc-multiplier 10 --vpair-multiplier 10 --output combined-train.json
    python -m skyloc_training.merge --source procedural pairs/pairs_train.json pairs \\
        --gta-json GTA/same-area-drone2sate-train.json --gta-root GTA \\
        --output combined-train.json --split-test 0.2

The seed plan's merge_json_balanced: every record keeps its Game4Loc fields and gains
``dataset_source``, ``data_root`` (so that one file mixes datasets with different roots),
``altitude_meters`` (the given altitude, else the record's own, else 400 m for the
high-altitude real sources UAV-VisLoc and VPAIR) and ``duplicate_id`` (0..N-1 for the N
copies a multiplier makes).  Train and test are separate invocations (multiplier 1 for
test), or one with ``--split-test FRACTION``, which splits each source by drone image and
duplicates the train part only.  Records whose drone image or every positive tile is
missing are left out and counted (``--no-check-files`` keeps them).
"""

import argparse
from dataclasses import dataclass
import json
import logging
import math
import os
import sys

import numpy as np

from skyloc_training.data import (DEFAULT_REAL_ALTITUDE_M, ExistsCache,
                                  HIGH_ALTITUDE_SOURCES, log_skips, normalise_record,
                                  read_json_records)

LOG = logging.getLogger('skyloc_training.merge')
KNOWN_SOURCES = ('gta', 'visloc', 'vpair')


@dataclass
class Source:
    """One input: dataset_source ``name``, its pair JSON, the folder its image paths are
    relative to (None: the JSON's folder) and an altitude (m) for all its records (None:
    each record's own, else 400 m for visloc/vpair)."""

    name: str
    json_path: str
    data_root: str = None
    altitude: float = None


def _as_source(item):
    if isinstance(item, Source):
        return item
    if isinstance(item, dict):
        return Source(**item)
    return Source(*item)


def _altitude(raw, source):
    if source.altitude is not None:
        return float(source.altitude)
    if raw.get('altitude_meters') is not None:
        return float(raw['altitude_meters'])
    meta = raw.get('drone_metadata')
    if isinstance(meta, dict) and meta.get('height') is not None:
        return float(meta['height'])
    return DEFAULT_REAL_ALTITUDE_M if source.name in HIGH_ALTITUDE_SOURCES else None


def read_source(source, check_files=True, log=None):
    """The raw records of one source that are usable, each with dataset_source, data_root and
    altitude_meters added, and the skip counts {reason: n}.  ValueError for a malformed file
    or record (naming file, record index and field)."""
    source = _as_source(source)
    path = os.path.abspath(source.json_path)
    root = os.path.abspath(source.data_root) if source.data_root else os.path.dirname(path)
    raws = read_json_records(path)
    exists = ExistsCache() if check_files else None
    kept, reasons, first = [], {}, None
    for index, raw in enumerate(raws):
        # validates every record (a bad one is an error here, not at training time)
        record, reason = normalise_record(raw, index, path, source.name, root, exists=exists)
        if record is None:
            reasons[reason] = reasons.get(reason, 0) + 1
            first = first or f'record {index} ({raw.get("drone_img_name")}: {reason})'
            continue
        out = dict(raw)
        out['dataset_source'] = source.name
        out['data_root'] = root
        out['altitude_meters'] = _altitude(raw, source)
        kept.append(out)
    log_skips(path, reasons, len(raws), first, log)
    return kept, reasons


def duplicate(records, multiplier):
    """``multiplier`` copies of each record (in order), with duplicate_id 0..multiplier-1."""
    multiplier = int(multiplier)
    if multiplier < 1:
        raise ValueError(f'a multiplier must be a positive integer, got {multiplier}')
    return [dict(record, duplicate_id=d) for record in records for d in range(multiplier)]


def split_by_drone_image(records, test_fraction, seed=0):
    """(train, test): records split by drone image (all records of one image on one side),
    ceil(test_fraction x images) images to test, drawn with ``seed``."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f'the test fraction must be in [0, 1), got {test_fraction}')
    keys = sorted({(r['data_root'], r.get('drone_img_dir') or '',
                    r.get('drone_img_name') or r.get('drone_img')) for r in records})
    order = np.random.default_rng(seed).permutation(len(keys))
    n_test = int(math.ceil(test_fraction * len(keys)))
    test_keys = {keys[i] for i in order[:n_test]}
    train, test = [], []
    for r in records:
        key = (r['data_root'], r.get('drone_img_dir') or '',
               r.get('drone_img_name') or r.get('drone_img'))
        (test if key in test_keys else train).append(r)
    return train, test


def merge(sources, multipliers=None, check_files=True, test_fraction=None, seed=0,
          log=print):
    """Merge ``sources`` (Source, or (name, json, root[, altitude]) tuples or dicts).

    ``multipliers``: {source name: copies} (default 1).  Returns the merged list of records;
    with ``test_fraction`` a (train, test) pair, the test part not duplicated.  ``log``
    receives one count line per source and a total.
    """
    multipliers = dict(multipliers or {})
    sources = [_as_source(s) for s in sources]
    if not sources:
        raise ValueError('nothing to merge: give at least one source')
    unknown = set(multipliers) - {s.name for s in sources}
    if unknown:
        raise ValueError(f'multiplier for a source that is not merged: {sorted(unknown)}')
    train, test, lines = [], [], []
    for source in sources:
        kept, reasons = read_source(source, check_files, log=log)
        factor = int(multipliers.get(source.name, 1))
        if test_fraction is not None:
            part_train, part_test = split_by_drone_image(kept, test_fraction, seed)
        else:
            part_train, part_test = kept, []
        train += duplicate(part_train, factor)
        test += duplicate(part_test, 1)
        lines.append((source.name, len(kept) + sum(reasons.values()), sum(reasons.values()),
                      len(part_train), factor, len(part_test)))
    for name, read, skipped, n_train, factor, n_test in lines:
        share = 100.0 * n_train * factor / max(1, len(train))
        line = (f'{name}: {read} read, {skipped} skipped, {n_train} x {factor} = '
                f'{n_train * factor} entries ({share:.1f}%)')
        if test_fraction is not None:
            line += f', test {n_test}'
        log(line)
    log(f'TOTAL: {len(train)} entries' + (f', test {len(test)}' if test_fraction is not None
                                          else ''))
    return (train, test) if test_fraction is not None else train


def write_json(records, path):
    """Write records as a JSON list (atomically: a reader never sees half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or '.', exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as stream:
        json.dump(records, stream, indent=1, ensure_ascii=False)
    os.replace(tmp, path)
    return path


def default_test_output(output):
    """combined-train.json -> combined-test.json; other.json -> other-test.json."""
    stem, ext = os.path.splitext(output)
    if stem.endswith('train'):
        return stem[:-len('train')] + 'test' + (ext or '.json')
    return f'{stem}-test{ext or ".json"}'


def parser():
    p = argparse.ArgumentParser(
        prog='python -m skyloc_training.merge',
        description='Merge GTA-UAV / UAV-VisLoc / VPAIR style pair JSON (and pairs made by '
                    'skyloc_training.pairs) into one file with dataset_source, data_root, '
                    'altitude_meters and duplicate_id per record.')
    for name, label in (('gta', 'GTA-UAV'), ('visloc', 'UAV-VisLoc'), ('vpair', 'VPAIR')):
        p.add_argument(f'--{name}-json', help=f'{label} pair JSON')
        p.add_argument(f'--{name}-root', help=f'{label} data root (default: the folder of '
                       'the JSON)')
        p.add_argument(f'--{name}-multiplier', type=int, default=1,
                       help=f'copies of each {label} record (default 1)')
        p.add_argument(f'--{name}-altitude', type=float,
                       help=f'altitude (m) of every {label} record (default: the record\'s '
                       + ('own' if name == 'gta' else 'own, else 400') + ')')
    p.add_argument('--source', nargs='+', action='append', default=[],
                   metavar='NAME JSON ROOT [ALTITUDE]',
                   help='another source, e.g. pairs made by skyloc_training.pairs: its '
                        'dataset_source NAME, pair JSON, data root (- for the JSON\'s folder) '
                        'and optionally one altitude (m) for all its records (repeatable)')
    p.add_argument('--multiplier', nargs=2, action='append', default=[], metavar=('NAME', 'N'),
                   help='copies of each record of source NAME (repeatable)')
    p.add_argument('--output', required=True, help='merged JSON (the train part with '
                   '--split-test)')
    p.add_argument('--split-test', type=float, metavar='FRACTION',
                   help='also split each source by drone image: FRACTION of the images go '
                        'to --test-output, not duplicated')
    p.add_argument('--test-output', help='test JSON with --split-test (default: --output '
                   'with train -> test, or -test appended)')
    p.add_argument('--seed', type=int, default=0, help='seed of the train/test split')
    p.add_argument('--no-check-files', action='store_true',
                   help='keep records whose images are missing (no file checks)')
    return p


def _sources_from_args(args, p):
    sources, multipliers = [], {}
    for name in KNOWN_SOURCES:
        path = getattr(args, f'{name}_json')
        if path:
            sources.append(Source(name, path, getattr(args, f'{name}_root'),
                                  getattr(args, f'{name}_altitude')))
            multipliers[name] = getattr(args, f'{name}_multiplier')
        elif getattr(args, f'{name}_root'):
            p.error(f'--{name}-root given without --{name}-json')
    for values in args.source:
        if len(values) not in (3, 4):
            p.error(f'--source takes NAME JSON ROOT [ALTITUDE], got {" ".join(values)}')
        altitude = None
        if len(values) == 4:
            try:
                altitude = float(values[3])
            except ValueError:
                p.error(f'--source {values[0]}: ALTITUDE must be metres, got {values[3]}')
        root = None if values[2] == '-' else values[2]
        sources.append(Source(values[0], values[1], root, altitude))
    for name, count in args.multiplier:
        try:
            multipliers[name] = int(count)
        except ValueError:
            p.error(f'--multiplier {name}: N must be an integer, got {count}')
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        p.error(f'a source name is given twice: {names}')
    if not sources:
        p.error('give at least one source (--gta-json, --visloc-json, --vpair-json, --source)')
    for name, count in multipliers.items():
        if count < 1:
            p.error(f'the multiplier of {name} must be at least 1, got {count}')
    return sources, {k: v for k, v in multipliers.items() if k in names}


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    sources, multipliers = _sources_from_args(args, p)
    logging.basicConfig(level=logging.INFO, format='[merge] %(message)s')
    say = lambda m: print(f'[merge] {m}', flush=True)  # noqa: E731
    try:
        result = merge(sources, multipliers, not args.no_check_files, args.split_test,
                       args.seed, log=say)
    except ValueError as exc:
        print(f'[merge] error: {exc}', file=sys.stderr)
        return 2
    if args.split_test is None:
        say(f'wrote {write_json(result, args.output)}')
    else:
        test_output = args.test_output or default_test_output(args.output)
        say(f'wrote {write_json(result[0], args.output)} and '
            f'{write_json(result[1], test_output)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
