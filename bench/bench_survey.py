"""Closed-loop survey benchmark: the localizer's loop (LocalizerCore) on rendered camera images.

    python bench/bench_survey.py [--minutes 10] [--seed 0] [--altitude 100] [--prior]

Issue 4: "fused pose RMSE over a 10-minute simulated survey at 1 Hz queries: <= 5 m, reported
side by side with vision-only fixes and IMU-only dead reckoning over the same flight".

The flight: skyloc_sim.vehicle.Multirotor (wind 3, -1 m/s and gusts) flies the lawnmower of
bench_filters (8 east-west lanes 800 m long, 100 m apart, from the take-off point
(-400, -350)) at ``--altitude`` over the default procedural world (seed 7, 1200 m, 0.5 m/px),
with the simulator's ImuModel (100 Hz; MEMS noise, bias random walk, attitude noise, 2 deg
heading bias) and Barometer (20 Hz; noise and drift).

The camera: every second the nadir camera (640x480, HFOV 90 deg, gimbal) is rendered from the
truth in the 'summer' condition (the database is built from the 'map' rendering).  The
embedder's path: the measured yaw is the IMU's (its noise and heading bias), the altitude the
fused filter's; the footprint is the database band's for that altitude; queries whose crop is
less than 90 % in view (low altitude) are skipped, as the embedder node skips them; the crop
is described with the default bundle (.cache/bundles/default, RootSIFT + VLAD + PCA).  The
descriptor reaches the core ``--latency`` s after the image (default 0.5 s: between the median
and the p95 of embedding + query measured on the shared 2-core machine, about 0.2 and 0.7 s;
fixed so that a run is reproducible; the IMU goes on meanwhile) and the core applies its fix
at the image's stamp (roll back and replay).

The localizer: skyloc_localization.core.LocalizerCore on the default database
(.cache/databases/default), fed every IMU and barometer sample; by default no initial pose
(GNSS-free: the filter is initialised by its first map-confirmed fix, as in the demo); with
``--prior`` it gets /initialpose at the take-off point (5 m std).  IMU-only dead reckoning: a
second FusionKalman fed the same IMU and barometer samples only, with that prior.

Figures (horizontal errors against the truth, m): fused = the core's filter at 10 Hz while
airborne (z > 20 m) and initialised; IMU-only over the same samples; vision-only = each valid
fine fix at its image's stamp.  Prints one JSON object.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

GOAL_RMSE_M = 5.0
CONDITION = 'summer'
AIRBORNE_M = 20.0
MIN_VALID_FRACTION = 0.9    # the embedder node's default
PRIOR_STD_M = 5.0
LATENCY_S = 0.5             # image stamp -> descriptor at the core (fixed: reproducible)
LOST_M = 25.0


def _stats(e):
    e = np.asarray(e, float)
    if not len(e):
        return {'count': 0}
    return {'count': int(len(e)), 'rmse_m': round(float(np.sqrt(np.mean(e ** 2))), 2),
            'median_m': round(float(np.median(e)), 2),
            'p95_m': round(float(np.percentile(e, 95)), 2), 'max_m': round(float(e.max()), 2)}


def _pct(v, q):
    return round(float(np.percentile(v, q)), 1) if len(v) else None


def setup(log):
    """(world yaml, world, bundle, database) of the default demo set-up (cached)."""
    from skyloc_localization.database import load_database
    from skyloc_perception.bundle import load_bundle
    from skyloc_sim.demo import prepare_bundle, prepare_database
    from skyloc_sim.world import load_world, procedural_world
    world_yaml = procedural_world(os.path.join(ROOT, '.cache', 'worlds'), 7, 1200.0, 0.5,
                                  conditions=(CONDITION,), log=log)
    bundle_dir = prepare_bundle(ROOT, world_yaml, log=log)
    db_dir = prepare_database(ROOT, world_yaml, bundle_dir, log=log)
    bundle = load_bundle(bundle_dir)
    return world_yaml, load_world(world_yaml), bundle, load_database(db_dir, bundle)


def simulate(minutes=10.0, seed=0, altitude=100.0, prior=False, progress=True, log=None,
             latency_s=LATENCY_S):
    """Fly the survey with the localizer in the loop; returns the raw logs (see bench_survey)."""
    from bench_filters import _Pilot, _survey_waypoints
    from skyloc_localization.core import LocalizerCore
    from skyloc_localization.kalman import FusionKalman
    from skyloc_perception.attitude import attitude_from_quaternion
    from skyloc_perception.bundle import DescriptorPipeline
    from skyloc_perception.normalize import band_for_altitude, CameraIntrinsics, normalize_query
    from skyloc_sim.camera import OrthoRenderer, PinholeCamera
    from skyloc_sim.sensors import Barometer, BaroConfig, ImuConfig, ImuModel
    from skyloc_sim.vehicle import Limits, Multirotor
    from tqdm import tqdm

    log = log or (lambda m: print(f'[bench_survey] {m}', file=sys.stderr, flush=True))
    _, world, bundle, db = setup(log)
    pipeline = DescriptorPipeline(bundle)
    t0 = time.perf_counter()
    core = LocalizerCore(db)
    core_ready_s = time.perf_counter() - t0
    renderer = OrthoRenderer(world.camera_image(CONDITION), world.grid)
    camera = PinholeCamera(640, 480, 90.0)
    intrinsics = CameraIntrinsics.from_hfov(640, 480, 90.0)

    imu_cfg, baro_cfg = ImuConfig(), BaroConfig()
    imu = ImuModel(imu_cfg, np.random.default_rng(seed + 1))
    baro = Barometer(baro_cfg, np.random.default_rng(seed + 2))
    start = np.array([-400.0, -350.0])
    veh = Multirotor(Limits(), x=start[0], y=start[1], z=0.0, yaw=0.0, wind=(3.0, -1.0),
                     wind_gust_std=0.5, rng=np.random.default_rng(seed + 3))
    pilot = _Pilot(_survey_waypoints(altitude=altitude) * 4)
    prior_cov = np.diag([PRIOR_STD_M ** 2, PRIOR_STD_M ** 2, 0.25])
    imu_only = FusionKalman()
    imu_only.set_prior(0.0, (start[0], start[1], 0.0), prior_cov)
    if prior:
        core.initial_pose(0.0, (start[0], start[1], 0.0), prior_cov)

    dt = 1.0 / imu_cfg.rate
    n_steps = int(round(minutes * 60.0 * imu_cfg.rate))
    baro_every = int(round(imu_cfg.rate / baro_cfg.rate))
    eval_every = int(round(imu_cfg.rate / 10.0))
    query_every = int(round(imu_cfg.rate / 1.0))
    pending = []        # (arrival t, image t, descriptor, crop, footprint, altitude, truth xy)
    samples = []        # (t, truth xyz, fused xyz, imu-only xyz, fused initialised)
    queries = []        # one dict per query that reached the core
    skipped = {'low_altitude': 0, 'footprint_out_of_view': 0}
    render_ms, embed_ms = [], []
    first_fix_t = None
    init_t = 0.0 if prior else None     # when the fused filter got its position
    bar = tqdm(total=int(round(minutes * 60)), unit='s sim', desc='survey', file=sys.stderr,
               disable=not progress, mininterval=2.0)
    t = 0.0
    q = (0.0, 0.0, 0.0, 1.0)
    for k in range(1, n_steps + 1):
        veh.command = pilot.command(veh)
        veh.step(dt)
        t = k * dt
        q, _, f = imu.sample(veh.acceleration, veh.angular_velocity_body(), veh.roll, veh.pitch,
                             veh.yaw)
        core.imu(t, q, f)
        imu_only.predict_imu(t, q, f)
        if k % baro_every == 0:
            p = baro.sample(veh.position[2])
            core.baro(t, p)
            imu_only.update_baro(t, p)
        if k % query_every == 0:   # a camera image, stamped now
            alt = float(core.kf.position[2])      # the embedder's altitude: the filter's
            if alt < 5.0:
                skipped['low_altitude'] += 1
            else:
                r0 = time.perf_counter()
                image = renderer.render(camera, veh.position[0], veh.position[1],
                                        veh.position[2], veh.yaw)
                r1 = time.perf_counter()
                yaw = attitude_from_quaternion(*q)[2]   # the IMU's yaw (noise + heading bias)
                footprint = float(db.bands[band_for_altitude(db.bands, alt)]['footprint_m'])
                crop, valid = normalize_query(image, intrinsics, alt, yaw, footprint,
                                              pipeline.input_size)
                if valid < MIN_VALID_FRACTION:
                    skipped['footprint_out_of_view'] += 1
                else:
                    descriptor = pipeline.describe(crop)
                    render_ms.append((r1 - r0) * 1e3)
                    embed_ms.append((time.perf_counter() - r1) * 1e3)
                    pending.append((t + latency_s, t, descriptor, crop, footprint, alt,
                                    veh.position[:2].copy(), float(veh.position[2])))
        while pending and pending[0][0] <= t + 1e-9:
            _, ts, descriptor, crop, footprint, alt, truth, z = pending.pop(0)
            was_initialized = core.kf.initialized
            out = core.query(ts, descriptor, crop, footprint, alt)
            if core.kf.initialized and init_t is None:
                init_t = ts
            loc = out.localization
            accepted = out.fix_result is not None and out.fix_result.accepted
            if accepted and first_fix_t is None:
                first_fix_t = ts
            queries.append({
                't': ts, 'fix': loc.fix, 'valid': bool(out.valid), 'source': out.source,
                'error_m': float(math.hypot(loc.x - truth[0], loc.y - truth[1])),
                'xy': (float(loc.x), float(loc.y)), 'truth': (float(truth[0]), float(truth[1])),
                'similarity': float(loc.similarity),
                'map_mode': tuple(float(v) for v in out.estimate.mode),
                'map_entropy': float(out.estimate.entropy),
                'accepted': accepted, 'gated': out.fix_result is not None and not accepted,
                'reseeded': bool(out.reseeded and was_initialized),
                'query_ms': out.timings_ms.get('total', 0.0),
                'altitude_error_m': alt - z, 'reason': out.reason})
        if k % eval_every == 0:
            samples.append((t, veh.position.copy(), core.kf.position, imu_only.position,
                            bool(core.kf.initialized)))
        if k % query_every == 0:
            bar.update(1)
            if k % (10 * query_every) == 0 and core.kf.initialized:
                err = float(np.linalg.norm(core.kf.position[:2] - veh.position[:2]))
                bar.set_postfix(fused_err=f'{err:.1f} m', queries=len(queries), refresh=False)
    bar.close()
    return {'samples': samples, 'queries': queries, 'skipped': skipped, 'render_ms': render_ms,
            'embed_ms': embed_ms, 'first_fix_t': first_fix_t, 'init_t': init_t,
            'sim_time_s': t,
            'core_ready_s': core_ready_s, 'kf_stats': dict(core.kf.stats),
            'health': core.health.state, 'tiles': len(db)}


def plot_survey(path, ts, truth, fused, dr, use, queries):
    """PNG: the flown track (truth, fused, IMU-only) and the errors over time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(13, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    a, b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    a.plot(truth[:, 0], truth[:, 1], color='0.2', lw=2.5, label='ground truth')
    a.plot(fused[use, 0], fused[use, 1], color='tab:green', lw=1, label='fused (skyloc)')
    a.plot(dr[:, 0], dr[:, 1], color='tab:red', lw=0.8, alpha=0.7, label='IMU only')
    a.set_xlim(-600, 600)
    a.set_ylim(-600, 600)
    a.set_aspect('equal')
    a.set_xlabel('x east (m)')
    a.set_ylabel('y north (m)')
    a.legend(loc='upper right', fontsize=8)
    a.set_title('track over the 1200 m procedural world')
    h_fused = np.linalg.norm(fused[:, :2] - truth[:, :2], axis=1)
    h_dr = np.linalg.norm(dr[:, :2] - truth[:, :2], axis=1)
    b.semilogy(ts[use], np.maximum(h_fused[use], 0.05), color='tab:green', lw=1,
               label='fused')
    b.semilogy(ts, np.maximum(h_dr, 0.05), color='tab:red', lw=0.8, label='IMU only')
    v = [(q['t'], max(q['error_m'], 0.05)) for q in queries if q['valid']]
    if v:
        b.semilogy(*zip(*v), '.', color='tab:blue', ms=3, label='vision-only fixes')
    b.axhline(5.0, color='0.5', ls='--', lw=0.8, label='goal 5 m (RMSE)')
    b.set_xlabel('time (s)')
    b.set_ylabel('horizontal error (m)')
    b.legend(loc='upper left', fontsize=8)
    b.set_title('error against the ground truth')
    fig.tight_layout()
    fig.savefig(path)
    return path


def bench_survey(minutes=10.0, seed=0, altitude=100.0, prior=False, progress=True, log=None,
                 latency_s=LATENCY_S, plot=None):
    """Fused vs vision-only vs IMU-only errors over one flight; see the module docstring.
    ``plot``: a PNG path for the track and the errors over time."""
    t0 = time.perf_counter()
    r = simulate(minutes, seed, altitude, prior, progress, log, latency_s)
    wall = time.perf_counter() - t0
    ts = np.array([s[0] for s in r['samples']])
    truth = np.array([s[1] for s in r['samples']])
    fused = np.array([s[2] for s in r['samples']])
    dr = np.array([s[3] for s in r['samples']])
    init = np.array([s[4] for s in r['samples']])
    airborne = truth[:, 2] > AIRBORNE_M
    use = airborne & init
    h_fused = np.linalg.norm(fused[:, :2] - truth[:, :2], axis=1)
    h_dr = np.linalg.norm(dr[:, :2] - truth[:, :2], axis=1)
    qs = r['queries']
    valid = [q for q in qs if q['valid']]
    fine = [q for q in qs if q['fix'] == 'fine']
    vis = np.array([q['error_m'] for q in valid])
    qms = np.array([q['query_ms'] for q in qs])
    fused_stats = _stats(h_fused[use])
    fused_stats['altitude_rmse_m'] = round(float(np.sqrt(np.mean(
        (fused[use, 2] - truth[use, 2]) ** 2))), 2) if use.any() else None
    vision = _stats(vis)
    vision['within_25m_share'] = round(float(np.mean(vis <= 25.0)), 3) if len(vis) else None
    dr_stats = _stats(h_dr[use])
    dr_stats['all_airborne'] = _stats(h_dr[airborne])
    dr_stats['final_m'] = round(float(h_dr[-1]), 1)
    k60 = int(np.searchsorted(ts, 60.0))
    dr_stats['after_60s_m'] = round(float(h_dr[min(k60, len(h_dr) - 1)]), 1)
    airborne_s = float(np.sum(airborne)) / 10.0
    out = {
        'minutes': minutes, 'seed': seed, 'altitude_m': altitude, 'condition': CONDITION,
        'world': 'procedural seed 7, 1200 m, 0.5 m/px', 'database_tiles': r['tiles'],
        'initial_pose': f'take-off point, {PRIOR_STD_M:g} m std' if prior else
        'none (GNSS-free: first map-confirmed fix)',
        'latency_s': latency_s, 'wall_s': round(wall, 1), 'sim_time_s': round(r['sim_time_s'], 1),
        'core_ready_s': round(r['core_ready_s'], 2),
        'distance_km': round(float(np.sum(np.linalg.norm(
            np.diff(truth[:, :2], axis=0), axis=1))) / 1e3, 2),
        'airborne_s': round(airborne_s, 1),
        'initialised_s': round(r['init_t'], 1) if r['init_t'] is not None else None,
        'first_accepted_fix_s': round(r['first_fix_t'], 1) if r['first_fix_t'] is not None
        else None,
        'evaluated_s': round(float(np.sum(use)) / 10.0, 1),
        'queries': len(qs), 'skipped': r['skipped'],
        'fine_fixes': len(fine), 'valid_fixes': len(valid),
        'valid_fix_fraction': round(len(valid) / len(qs), 3) if qs else None,
        'from_tracking_window': sum(q['source'] == 'prior' for q in valid),
        'fixes_accepted': sum(q['accepted'] for q in qs),
        'fixes_gated': sum(q['gated'] for q in qs),
        'reseeds': sum(q['reseeded'] for q in qs),   # after the filter had a position
        'reseeds_at_s': [round(q['t'], 1) for q in qs if q['reseeded']],
        'lost_episodes': _episodes(ts[use], h_fused[use]),
        'time_over_25m_s': round(float(np.sum(h_fused[use] > LOST_M)) / 10.0, 1),
        'invalid_reasons': _reasons(qs),
        'fused': fused_stats, 'vision_only': vision, 'imu_only': dr_stats,
        'query_ms': {'median': _pct(qms, 50), 'p95': _pct(qms, 95), 'max': _pct(qms, 100)},
        'embed_ms': {'median': _pct(r['embed_ms'], 50), 'p95': _pct(r['embed_ms'], 95)},
        'render_ms': {'median': _pct(r['render_ms'], 50)},
        'filter_stats': {k: r['kf_stats'][k] for k in (
            'fixes_accepted', 'fixes_rejected', 'fixes_late', 'reseeds', 'baro_rejected')},
        'final_health': r['health'],
        'goal_fused_rmse_m': GOAL_RMSE_M,
        'pass': bool(fused_stats.get('rmse_m') is not None
                     and fused_stats['rmse_m'] <= GOAL_RMSE_M)}
    if plot:
        out['plot'] = os.path.relpath(plot_survey(plot, ts, truth, fused, dr, use, qs))
    return out


def _episodes(ts, err, limit=LOST_M):
    """[start s, end s, max error m] of the stretches where the fused error exceeds limit."""
    out = []
    for t, e in zip(ts, err):
        if e > limit:
            if out and t - out[-1][1] <= 0.15:
                out[-1][1] = round(float(t), 1)
                out[-1][2] = max(out[-1][2], round(float(e), 1))
            else:
                out.append([round(float(t), 1), round(float(t), 1), round(float(e), 1)])
    return out


def _reasons(qs):
    """The most common reasons of invalid queries (first words), with counts."""
    counts = {}
    for q in qs:
        if not q['valid']:
            key = (q['reason'] or q['fix'])[:60]
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:5])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--minutes', type=float, default=10.0, help='simulated flight time')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--altitude', type=float, default=100.0, help='survey altitude, m')
    p.add_argument('--prior', action='store_true',
                   help='give the localizer an initial pose at the take-off point')
    p.add_argument('--latency', type=float, default=LATENCY_S,
                   help='image stamp -> descriptor at the localizer, s')
    p.add_argument('--no-progress', action='store_true')
    p.add_argument('--plot', help='write the track and errors over time to this PNG')
    args = p.parse_args(argv)
    out = bench_survey(args.minutes, args.seed, args.altitude, args.prior,
                       not args.no_progress, latency_s=args.latency, plot=args.plot)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
