#!/usr/bin/env python3
"""Peak RSS of the inference core alone (no ROS): bundle + backbone + VLAD + PCA + a
memory-mapped database of N tiles, one query described and searched.

    python bench/core_rss.py BUNDLE [--tiles 10000] -> prints one JSON line
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np


def peak_rss_mb():
    with open('/proc/self/status') as stream:
        for line in stream:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('bundle')
    parser.add_argument('--tiles', type=int, default=10000)
    parser.add_argument('--queries', type=int, default=5)
    args = parser.parse_args()
    from skyloc_perception.bundle import DescriptorPipeline, load_bundle
    start_rss = peak_rss_mb()
    pipeline = DescriptorPipeline(load_bundle(args.bundle), threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'descriptors.npy')
        db = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32,
                                       shape=(args.tiles, pipeline.dim))
        rng = np.random.default_rng(0)
        for i in range(0, args.tiles, 1000):  # written in chunks, as build_db would
            block = rng.standard_normal((min(1000, args.tiles - i), pipeline.dim))
            db[i:i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        db.flush()
        del db
        database = np.load(path, mmap_mode='r')
        crop = rng.integers(0, 255, (pipeline.input_size, pipeline.input_size, 3), np.uint8)
        times = []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            vector = pipeline.describe(crop)
            scores = database @ vector
            best = int(np.argmax(scores))
            times.append((time.perf_counter() - t0) * 1e3)
        search_t0 = time.perf_counter()
        database @ vector
        search_ms = (time.perf_counter() - search_t0) * 1e3
    print(json.dumps({'bundle_backend': pipeline.bundle.backend, 'tiles': args.tiles,
                      'descriptor_dim': pipeline.dim, 'peak_rss_mb': round(peak_rss_mb(), 1),
                      'python_baseline_rss_mb': round(start_rss, 1),
                      'query_ms_median': round(float(np.median(times)), 1),
                      'search_ms': round(search_ms, 2), 'best': best}))


if __name__ == '__main__':
    main()
