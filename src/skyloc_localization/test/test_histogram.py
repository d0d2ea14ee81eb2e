"""Grid Bayes (histogram) filter: shift, diffusion, likelihoods, convergence, kidnap recovery."""

import math

import numpy as np
import pytest

from skyloc_localization.histogram import benchmark_step, HistogramFilter

STRIDE = 25.0
TILE_CENTRES = np.stack(np.meshgrid(np.arange(12.5, 1000.0, STRIDE),
                                    np.arange(12.5, 1000.0, STRIDE)), -1).reshape(-1, 2)


def _retrieve(rng, pos, k=10, p_correct=0.7):
    """Noisy top-K: with p_correct the nearest tile (and its neighbours) rank high, else only
    random tiles (perceptual aliasing); similarities noisy."""
    d = np.linalg.norm(TILE_CENTRES - pos, axis=1)
    if rng.random() < p_correct:
        near = np.argsort(d)[:3]
        others = rng.choice(len(TILE_CENTRES), k - 3, replace=False)
        idx = np.concatenate([near, others])
        sims = np.concatenate([0.75 - 0.02 * np.arange(3), rng.uniform(0.5, 0.68, k - 3)])
    else:
        idx = rng.choice(len(TILE_CENTRES), k, replace=False)
        sims = rng.uniform(0.5, 0.72, k)
    sims = sims + rng.normal(0, 0.01, k)
    return TILE_CENTRES[idx], sims


def _track(n, speed=10.0, dt=1.0):
    """Lawnmower over the map: east-west lanes 100 m apart."""
    pts, x, y, east = [], 100.0, 100.0, True
    for _ in range(n):
        x += speed * dt if east else -speed * dt
        if x > 900 or x < 100:
            east = not east
            x = min(max(x, 100.0), 900.0)
            y += 100.0 if y < 850 else -700.0
        pts.append((x, y))
    return np.array(pts)


def _grid():
    return HistogramFilter((0.0, 0.0), (200, 200), 5.0)


def test_geometry_and_uniform_start():
    hf = HistogramFilter.from_extent(-100.0, -50.0, 900.0, 950.0, cell=5.0)
    assert hf.shape == (200, 200)
    assert hf.xs[0] == pytest.approx(-97.5) and hf.ys[0] == pytest.approx(-47.5)
    assert hf.p.sum() == pytest.approx(1.0, rel=1e-5)
    assert hf.entropy() == pytest.approx(1.0, abs=1e-5)
    est = hf.estimate()
    assert np.allclose(est.mean, [400.0, 450.0], atol=1e-3)


def test_shift_is_sub_cell_exact_over_many_steps():
    hf = _grid()
    hf.process_noise_m = 0.0
    hf.process_noise_per_m = 0.0
    hf.uniform_floor = 0.0
    hf.reset((300.0, 400.0), np.eye(2) * 4.0)
    for _ in range(37):  # 37 x 1.3 m = 48.1 m east, 37 x -0.7 m = -25.9 m
        hf.predict((1.3, -0.7))
    est = hf.estimate()
    assert est.mode == pytest.approx([348.1, 374.1], abs=2.6)
    assert est.mean == pytest.approx([348.1, 374.1], abs=0.3)


def test_predict_diffuses_with_displacement_covariance():
    hf = _grid()
    hf.uniform_floor = 0.0
    hf.reset((500.0, 500.0), np.eye(2) * 25.0)
    before = hf.estimate().cov[0, 0]
    hf.predict((0.0, 0.0), np.diag([400.0, 1.0]))
    after = hf.estimate().cov
    assert after[0, 0] == pytest.approx(before + 400.0 + hf.process_noise_m ** 2, rel=0.1)
    assert after[1, 1] < before + 10.0


def test_large_blur_is_fast_path_and_keeps_mass():
    hf = _grid()
    hf.reset((500.0, 500.0), np.eye(2) * 25.0)
    hf.predict((0.0, 0.0), np.eye(2) * 200.0 ** 2)   # sigma 40 cells: box-filter path
    assert hf.p.sum() == pytest.approx(1.0, rel=1e-4)
    cov = hf.estimate().cov
    assert 120.0 ** 2 < cov[0, 0] < 260.0 ** 2


def test_mass_shifted_off_the_grid_is_renormalised():
    hf = _grid()
    hf.reset((980.0, 500.0), np.eye(2) * 25.0)
    hf.predict((200.0, 0.0))
    assert hf.p.sum() == pytest.approx(1.0, rel=1e-4)
    assert np.all(np.isfinite(hf.p))


def test_update_peaks_at_best_candidate_and_fix_sharpens():
    hf = _grid()
    centres = np.array([[200.0, 300.0], [700.0, 800.0], [450.0, 450.0]])
    hf.update(centres, [0.80, 0.70, 0.65], sigma_m=20.0)
    est = hf.estimate()
    assert est.mode == pytest.approx([200.0, 300.0], abs=5.0)
    h1 = est.entropy
    hf.update(fix=(205.0, 298.0, np.diag([9.0, 4.0])))
    est = hf.estimate()
    assert est.mode == pytest.approx([205.0, 298.0], abs=3.0)
    assert est.entropy < h1
    assert est.mode_cov[0, 0] < 40.0 and est.mode_mass > 0.9


def test_temperature_controls_weights():
    hot = HistogramFilter((0.0, 0.0), (200, 200), 5.0, temperature=1.0)
    cold = HistogramFilter((0.0, 0.0), (200, 200), 5.0, temperature=0.01)
    centres = np.array([[200.0, 200.0], [800.0, 800.0]])
    for hf in (hot, cold):
        hf.update(centres, [0.8, 0.7])
    ratio_hot = hot.probability_at(200, 200) / hot.probability_at(800, 800)
    ratio_cold = cold.probability_at(200, 200) / cold.probability_at(800, 800)
    assert 1.0 < ratio_hot < 1.5 and ratio_cold > 10.0


def test_bad_inputs_leave_the_belief_usable():
    hf = _grid()
    assert not hf.update(np.array([[np.nan, 1.0]]), [np.nan])
    assert not hf.update(np.zeros((0, 2)), [])
    assert not hf.update(fix=(np.nan, 1.0, np.eye(2)))
    hf.predict((np.nan, 0.0))
    assert np.all(np.isfinite(hf.p)) and hf.p.sum() == pytest.approx(1.0, rel=1e-4)
    hf.update(fix=(5000.0, 5000.0, np.eye(2)))   # off the grid: only the floor
    assert hf.p.sum() == pytest.approx(1.0, rel=1e-4)


def test_occupancy_grid_layout():
    hf = HistogramFilter((10.0, 20.0), (4, 6), 5.0, uniform_floor=0.0)
    hf.reset((10.0 + 5 * 5 + 2.5, 20.0 + 0 * 5 + 2.5), np.eye(2) * 0.5)   # row 0, col 5
    data = hf.occupancy()
    assert data.dtype == np.int8 and data.shape == (24,)
    assert data.max() == 100 and int(np.argmax(data)) == 5   # row 0 = bottom, row-major
    assert data.min() >= 0
    res, w, h, ox, oy = hf.occupancy_info()
    assert (res, w, h, ox, oy) == (5.0, 6, 4, 10.0, 20.0)
    log = hf.occupancy(log_scale=True)
    assert log.dtype == np.int8 and log.max() == 100 and (log > 0).sum() >= (data > 0).sum()


def _run(hf, rng, truth, odo_noise=1.0):
    errors = []
    for i in range(1, len(truth)):
        d = truth[i] - truth[i - 1] + rng.normal(0, odo_noise, 2)
        hf.predict(d, np.eye(2) * odo_noise ** 2)
        centres, sims = _retrieve(rng, truth[i])
        hf.update(centres, sims, sigma_m=STRIDE)
        errors.append(float(np.linalg.norm(hf.estimate().mode - truth[i])))
    return np.array(errors)


def test_converges_on_a_synthetic_track():
    rng = np.random.default_rng(1)
    hf = _grid()
    truth = _track(120)
    err = _run(hf, rng, truth)
    first = int(np.argmax(err < 25.0))
    assert err[first] < 25.0 and first <= 5
    assert np.median(err[10:]) < 15.0
    assert np.mean(err[10:] < 25.0) > 0.95
    assert hf.estimate().entropy < 0.5


def test_recovers_after_a_kidnap():
    rng = np.random.default_rng(2)
    hf = _grid()
    truth = _track(60)
    _run(hf, rng, truth)
    assert np.linalg.norm(hf.estimate().mode - truth[-1]) < 25.0
    # teleport 500 m away; odometry knows nothing about it
    jump = truth[-1] + np.array([-300.0, 400.0])
    track2 = jump + (_track(40) - _track(40)[0]) * 0.5
    track2 = np.clip(track2, 20.0, 980.0)
    hf.predict((0.0, 0.0), np.eye(2))
    err = _run(hf, rng, np.vstack([track2[:1], track2]))
    found = int(np.argmax(err < 25.0))
    assert err[found] < 25.0 and found <= 10, err[:15]
    assert np.mean(err[found + 5:] < 25.0) > 0.9


def test_benchmark_step_reports_times():
    out = benchmark_step(rows=50, cols=50, repeats=5)
    assert out['grid'] == [50, 50] and out['total_ms_median'] > 0
    assert math.isfinite(out['total_ms_p95'])
