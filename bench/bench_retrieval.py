"""Retrieval benchmark: map tiles ('map' condition) vs camera queries (another condition).

Queries are rendered by the simulator's camera at random poses over the procedural world, in
a flight condition (season, crops, shadows changed), and normalised with a *noisy* yaw
(+-3 deg) and altitude (+-7%), as real sensors give them. Recall@1: the best tile's centre is
within half a footprint of the true position. Used to compare backends and the INT8 model
against FP32 side by side.
"""

import math
import time

import numpy as np

FOOTPRINT_M = 100.0
ALTITUDE_M = 100.0


def database_tiles(world, stride_m, footprint_m, input_size, margin_m=80.0):
    """North-up map tiles on a grid: (centres [M, 2], tiles list)."""
    from skyloc_perception.normalize import map_tile
    g = world.grid
    w, h = g.size_m
    xs = np.arange(g.origin_x + margin_m, g.origin_x + w - margin_m + 1e-6, stride_m)
    ys = np.arange(g.origin_y + margin_m, g.origin_y + h - margin_m + 1e-6, stride_m)
    centres = np.array([(x, y) for y in ys for x in xs])
    tiles = [map_tile(world.map_image, g, x, y, footprint_m, input_size) for x, y in centres]
    return centres, tiles


def queries(world, condition, count, input_size, seed=0, yaw_noise_deg=3.0,
            altitude_noise=0.07, margin_m=150.0):
    """Normalised camera queries: (true positions [N, 2], crops)."""
    from skyloc_perception.normalize import CameraIntrinsics, normalize_query
    from skyloc_sim.camera import OrthoRenderer, PinholeCamera
    rng = np.random.default_rng(seed)
    camera = PinholeCamera(640, 480, 90.0)
    renderer = OrthoRenderer(world.camera_image(condition), world.grid)
    intrinsics = CameraIntrinsics.from_hfov(640, 480, 90.0)
    g = world.grid
    w, h = g.size_m
    truth, crops = [], []
    for _ in range(count):
        x = g.origin_x + rng.uniform(margin_m, w - margin_m)
        y = g.origin_y + rng.uniform(margin_m, h - margin_m)
        z = ALTITUDE_M * rng.uniform(0.9, 1.1)
        yaw = rng.uniform(-math.pi, math.pi)
        image = renderer.render(camera, x, y, z, yaw)
        z_meas = z * (1.0 + rng.uniform(-altitude_noise, altitude_noise))
        yaw_meas = yaw + math.radians(rng.uniform(-yaw_noise_deg, yaw_noise_deg))
        crop, _ = normalize_query(image, intrinsics, z_meas, yaw_meas, FOOTPRINT_M, input_size)
        truth.append((x, y))
        crops.append(crop)
    return np.array(truth), crops


def fit_pipeline(backbone, tiles, k=32, pca_dim=256, seed=0):
    """Vocabulary + PCA fitted on the database tiles' features: a describe() function."""
    from skyloc_perception.vlad import fit_vocabulary, Pca, Vlad
    feats = [backbone.features(t) for t in tiles]
    vlad = Vlad(fit_vocabulary(np.concatenate(feats), k=k, seed=seed))
    vectors = np.stack([vlad.encode(f) for f in feats])
    pca = Pca().fit(vectors, min(pca_dim, len(vectors) - 1), whiten=True)
    return vlad, pca, pca.transform(vectors)


def recall_at_1(db_vectors, centres, query_vectors, truth, radius_m):
    """Share of queries whose most similar tile centre lies within radius_m of the truth."""
    best = np.argmax(query_vectors @ db_vectors.T, axis=1)
    err = np.hypot(*(centres[best] - truth).T)
    return float(np.mean(err <= radius_m)), float(np.median(err))


def bench_retrieval(world, backbones, condition='summer', stride_m=25.0, count=120,
                    input_size=224, seed=0):
    """Recall@1 and timing of each backbone, side by side on the same tiles and queries.

    backbones: {label: backbone}; the ViT labels share tiles/queries with RootSIFT.
    """
    centres, tiles = database_tiles(world, stride_m, FOOTPRINT_M, input_size)
    truth, crops = queries(world, condition, count, input_size, seed)
    results = {'tiles': len(tiles), 'queries': count, 'condition': condition,
               'stride_m': stride_m, 'footprint_m': FOOTPRINT_M,
               'yaw_noise_deg': 3.0, 'altitude_noise_percent': 7.0}
    for label, backbone in backbones.items():
        t0 = time.perf_counter()
        vlad, pca, db = fit_pipeline(backbone, tiles, seed=seed)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        q = pca.transform(np.stack([vlad.encode(backbone.features(c)) for c in crops]))
        per_query_ms = (time.perf_counter() - t0) * 1e3 / count
        r1, median = recall_at_1(db, centres, q, truth, FOOTPRINT_M / 2)
        results[label] = {'recall_at_1': round(r1, 3), 'median_error_m': round(median, 1),
                          'per_query_ms': round(per_query_ms, 1), 'fit_s': round(fit_s, 1)}
    return results
