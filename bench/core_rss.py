#!/usr/bin/env python3
"""Peak RSS of the inference core alone (no ROS): bundle + backbone + VLAD + PCA + a
memory-mapped database of N tiles, queries described and searched.

    python bench/core_rss.py BUNDLE [--tiles 10000] [--dtype float16] [--database DB.npy]
        -> prints one JSON line

``stages``: VmRSS / VmHWM (MB) after each step, to attribute the peak. Without --database a
child process writes a random unit-row database first (as build_db would, offline); this
process only maps it and searches it (``vlad.similarities``: float16 rows are converted to
float32 a chunk at a time). The harness itself imports only sys/os/json/time before the core.
"""

import json
import os
import sys
import time


def status_mb():
    out = {}
    with open('/proc/self/status') as stream:
        for line in stream:
            if line.startswith(('VmHWM:', 'VmRSS:')):
                out[line.split(':')[0]] = round(int(line.split()[1]) / 1024.0, 1)
    return out


def peak_rss_mb():
    return status_mb().get('VmHWM', float('nan'))


WRITE_DB = r'''
import sys
import numpy as np
path, tiles, dim, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
db = np.lib.format.open_memmap(path, mode='w+', dtype=dtype, shape=(tiles, dim))
rng = np.random.default_rng(0)
for i in range(0, tiles, 1000):
    block = rng.standard_normal((min(1000, tiles - i), dim))
    db[i:i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
db.flush()
'''


def write_database(path, tiles, dim, dtype='float16'):
    """A random [tiles, dim] unit-row database .npy, written by a child process."""
    import subprocess
    subprocess.run([sys.executable, '-c', WRITE_DB, path, str(int(tiles)), str(int(dim)),
                    str(dtype)], check=True)
    return path


def _args(argv):
    opts = {'--tiles': '10000', '--queries': '5', '--dtype': 'float16', '--database': ''}
    rest = []
    it = iter(argv)
    for a in it:
        if a in opts:
            opts[a] = next(it)
        else:
            rest.append(a)
    if len(rest) != 1:
        sys.exit(__doc__)
    return rest[0], int(opts['--tiles']), int(opts['--queries']), opts['--dtype'], \
        opts['--database']


def main(argv=None):
    bundle_dir, tiles, queries, dtype, database_path = _args(
        sys.argv[1:] if argv is None else argv)
    stages = {'python': status_mb()}
    import numpy as np
    stages['numpy'] = status_mb()
    from skyloc_perception.bundle import DescriptorPipeline, load_bundle
    from skyloc_perception.vlad import similarities
    stages['imports'] = status_mb()
    bundle = load_bundle(bundle_dir)
    stages['bundle_loaded'] = status_mb()
    pipeline = DescriptorPipeline(bundle, threads=1)
    stages['session_created'] = status_mb()
    tmp = None
    if not database_path:
        import tempfile
        tmp = tempfile.TemporaryDirectory()
        database_path = write_database(os.path.join(tmp.name, 'descriptors.npy'), tiles,
                                       pipeline.dim, dtype)
    database = np.load(database_path, mmap_mode='r')
    if database.shape[1] != pipeline.dim:
        sys.exit(f'{database_path}: dimension {database.shape[1]}, bundle {pipeline.dim}')
    # a fixed noise crop without numpy.random (importing it is +6.6 MB the core does not need)
    side = pipeline.input_size
    crop = ((np.arange(side * side * 3, dtype=np.uint32) * 2654435761) >> 24).astype(
        np.uint8).reshape(side, side, 3)
    times = []
    for i in range(queries):
        t0 = time.perf_counter()
        vector = pipeline.describe(crop)
        if i == 0:
            stages['first_descriptor'] = status_mb()
        best = int(np.argmax(similarities(database, vector)))
        times.append((time.perf_counter() - t0) * 1e3)
        if i == 0:
            stages['first_search'] = status_mb()
    search_t0 = time.perf_counter()
    similarities(database, vector)
    search_ms = (time.perf_counter() - search_t0) * 1e3
    stages['end'] = status_mb()
    print(json.dumps({'bundle_backend': pipeline.bundle.backend, 'tiles': len(database),
                      'descriptor_dim': pipeline.dim, 'db_dtype': str(database.dtype),
                      'db_mb': round(database.nbytes / 2 ** 20, 2),
                      'peak_rss_mb': round(peak_rss_mb(), 1),
                      'python_baseline_rss_mb': stages['python']['VmRSS'],
                      'modules': {m: m in sys.modules for m in
                                  ('cv2', 'numpy.random', '_hashlib', 'scipy')},
                      'query_ms_median': round(float(np.median(times)), 1),
                      'search_ms': round(search_ms, 2), 'best': best, 'stages': stages}))
    if tmp is not None:
        tmp.cleanup()


if __name__ == '__main__':
    main()
