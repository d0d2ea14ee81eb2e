"""IMU / baro / visual-fix Kalman filter on synthetic IMU of known trajectories."""

import math

import numpy as np
import pytest

from skyloc_localization.kalman import (FusionKalman, GRAVITY, KalmanConfig,
                                        rotation_from_quaternion)
from skyloc_perception.attitude import baro_altitude
from skyloc_sim.sensors import isa_pressure, quaternion_from_rpy

RATE = 100.0


def _circle(t, radius=100.0, speed=10.0, z=50.0):
    """Position, velocity, acceleration (ENU) on a circle about the origin, and yaw, roll, pitch
    of a multirotor that flies it facing along the track (tilted into the turn)."""
    w = speed / radius
    a = w * t
    pos = np.array([radius * math.cos(a), radius * math.sin(a), z])
    vel = np.array([-speed * math.sin(a), speed * math.cos(a), 0.0])
    acc = np.array([-speed * w * math.cos(a), -speed * w * math.sin(a), 0.0])
    yaw = a + math.pi / 2
    # acceleration to the left (towards the centre) needs a roll to the left (negative x-rot)
    roll = -math.atan2(-speed * w, GRAVITY)
    return pos, vel, acc, yaw, roll, 0.0


def _imu(acc, yaw, roll, pitch, bias=(0.0, 0.0, 0.0), rng=None, noise=0.0):
    q = quaternion_from_rpy(roll, pitch, yaw)
    R = rotation_from_quaternion(*q)
    f = R.T @ (acc + np.array([0.0, 0.0, GRAVITY])) + np.asarray(bias)
    if rng is not None and noise > 0:
        f = f + rng.normal(0.0, noise, 3)
    return q, f


def _start_on_circle(kf, t0=0.0):
    pos, vel, *_ = _circle(t0)
    kf.set_prior(t0, pos, np.diag([4.0, 4.0, 1.0]))
    kf.kf.x[3:6, 0] = vel
    return pos


def _fly(kf, t0, t1, rng=None, bias=(0.0, 0.0, 0.0), fix_every=None, fix_std=3.0,
         baro=True, on_step=None):
    """Feed IMU (and 1 Hz fixes, 20 Hz baro) between t0 and t1; returns horizontal errors."""
    errs = []
    n0, n1 = int(round(t0 * RATE)), int(round(t1 * RATE))
    for k in range(n0 + 1, n1 + 1):
        t = k / RATE
        pos, vel, acc, yaw, roll, pitch = _circle(t)
        q, f = _imu(acc, yaw, roll, pitch, bias, rng, 0.02)
        kf.predict_imu(t, q, f)
        if baro and k % 5 == 0:
            kf.update_altitude(t, pos[2] + (rng.normal(0, 0.3) if rng is not None else 0.0))
        if fix_every and k % int(fix_every * RATE) == 0:
            noise = rng.normal(0, fix_std, 2) if rng is not None else np.zeros(2)
            kf.update_fix(t, pos[:2] + noise, np.eye(2) * fix_std ** 2)
        if on_step:
            on_step(k, t, pos)
        errs.append(np.linalg.norm(kf.position[:2] - pos[:2]))
    return np.array(errs)


def test_quaternion_rotation_matches_the_simulator():
    from skyloc_sim.camera import rotation_base_to_map
    for rpy in [(0.1, -0.2, 2.0), (0.0, 0.0, -1.0), (0.3, 0.1, 0.5)]:
        R = rotation_from_quaternion(*quaternion_from_rpy(*rpy))
        np.testing.assert_allclose(R, rotation_base_to_map(rpy[2], rpy[0], rpy[1]), atol=1e-12)
    assert rotation_from_quaternion(0, 0, 0, 0) is None


def test_level_imu_at_rest_stays_put():
    kf = FusionKalman()
    kf.set_prior(0.0, (10.0, 20.0, 0.0), np.diag([1.0, 1.0, 0.25]))
    for k in range(1, 501):   # 5 s, level IMU reading +g on z
        assert kf.predict_imu(k / RATE, (0, 0, 0, 1), (0.0, 0.0, GRAVITY))
    np.testing.assert_allclose(kf.position, [10.0, 20.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(kf.velocity, 0.0, atol=1e-9)


def test_dead_reckoning_on_a_tilted_circle_without_noise():
    kf = FusionKalman()
    _start_on_circle(kf)
    err = _fly(kf, 0.0, 20.0, baro=False)
    assert err.max() < 0.5   # exact IMU: only the integration scheme's error


def test_fixes_converge_within_a_few_metres_with_biased_noisy_imu():
    rng = np.random.default_rng(0)
    kf = FusionKalman()
    # start 50 m off, with an unknown accelerometer bias
    pos0, *_ = _circle(0.0)
    kf.set_prior(0.0, pos0 + [40.0, -30.0, 0.0], np.diag([50.0 ** 2, 50.0 ** 2, 1.0]))
    kf.kf.x[3:6, 0] = _circle(0.0)[1]
    err = _fly(kf, 0.0, 60.0, rng=rng, bias=(0.08, -0.05, 0.1), fix_every=1.0, fix_std=3.0)
    assert err[0] > 40.0
    late = err[int(20 * RATE):]
    assert np.sqrt(np.mean(late ** 2)) < 3.0 and late.max() < 6.0
    assert kf.stats['fixes_rejected'] <= 1
    # the bias is observed (body frame; z from the barometer)
    np.testing.assert_allclose(kf.accel_bias, [0.08, -0.05, 0.1], atol=0.05)


def test_gating_rejects_an_outlier_fix_and_counts_it():
    rng = np.random.default_rng(1)
    kf = FusionKalman()
    _start_on_circle(kf)
    _fly(kf, 0.0, 10.0, rng=rng, fix_every=1.0)
    before = kf.position.copy()
    res = kf.update_fix(kf.t, before[:2] + [150.0, -80.0], np.eye(2) * 9.0)
    assert not res.accepted and res.reason == 'gated' and res.mahalanobis2 > 100
    assert kf.stats['fixes_rejected'] == 1
    np.testing.assert_allclose(kf.position, before)
    ok = kf.update_fix(kf.t, before[:2] + [2.0, -1.0], np.eye(2) * 9.0)
    assert ok.accepted
    # without gating (e.g. a deliberate correction) the same outlier would be applied
    assert kf.update_fix(kf.t, before[:2] + [150.0, -80.0], np.eye(2) * 9.0, gate=False).accepted


def test_a_late_fix_is_applied_at_its_stamp():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    on_time, late = FusionKalman(), FusionKalman()
    for kf in (on_time, late):
        _start_on_circle(kf)
    _fly(on_time, 0.0, 5.0, rng=rng_a)
    _fly(late, 0.0, 5.0, rng=rng_b)
    fix_t = 5.0
    pos, *_ = _circle(fix_t)
    fix = pos[:2] + [6.0, -4.0]   # 2.4 sigma off the estimate: a strong correction
    on_time.update_fix(fix_t, fix, np.eye(2) * 4.0)
    _fly(on_time, 5.0, 5.8, rng=rng_a)
    _fly(late, 5.0, 5.8, rng=rng_b)
    res = late.update_fix(fix_t, fix, np.eye(2) * 4.0)   # arrives 0.8 s after its image
    assert res.accepted and res.late_s == pytest.approx(0.8)
    assert late.stats['fixes_late'] == 1
    np.testing.assert_allclose(late.position, on_time.position, atol=1e-6)
    np.testing.assert_allclose(late.P, on_time.P, atol=1e-6)
    # applying it at arrival instead would be visibly different (10 m/s x 0.8 s)
    naive = FusionKalman()
    _start_on_circle(naive)
    _fly(naive, 0.0, 5.8, rng=np.random.default_rng(3))
    naive.update_fix(naive.t, fix, np.eye(2) * 4.0)
    assert np.linalg.norm(naive.position - on_time.position) > 2.0


def test_a_fix_older_than_the_history_is_applied_now_widened():
    kf = FusionKalman(KalmanConfig(history_s=0.5))
    _start_on_circle(kf)
    _fly(kf, 0.0, 3.0)
    pos, *_ = _circle(1.0)
    res = kf.update_fix(1.0, pos[:2], np.eye(2) * 4.0)
    assert kf.stats['fixes_too_old'] == 1 and res.late_s == pytest.approx(2.0)


def test_reseed_after_a_kidnap():
    kf = FusionKalman()
    _start_on_circle(kf)
    _fly(kf, 0.0, 5.0, fix_every=1.0)
    # kidnapped 300 m away: the fixes there are all gated away ...
    pos, *_ = _circle(5.0)
    far = pos[:2] + [300.0, 100.0]
    assert not kf.update_fix(5.0, far, np.eye(2) * 9.0).accepted
    # ... until the localizer reseeds from the confident histogram mode
    assert kf.reseed(5.0, far, np.eye(2) * 100.0)
    np.testing.assert_allclose(kf.position[:2], far)
    np.testing.assert_allclose(kf.P[:2, :2], np.eye(2) * 100.0)
    assert np.all(kf.P[:2, 2:] == 0)
    assert kf.update_fix(5.0, far + [3.0, 0.0], np.eye(2) * 9.0).accepted
    assert kf.stats['reseeds'] == 2   # set_prior is one too


def test_first_fix_initialises_an_unknown_position():
    kf = FusionKalman()
    assert not kf.initialized
    for k in range(1, 101):
        kf.predict_imu(k / RATE, (0, 0, 0, 1), (0.0, 0.0, GRAVITY))
    res = kf.update_fix(1.0, (500.0, -300.0), np.eye(2) * 25.0)
    assert res.accepted and kf.initialized
    np.testing.assert_allclose(kf.position[:2], [500.0, -300.0], atol=0.1)


def test_isa_baro_altitude():
    # ISA: 1 hPa is about 8.3 m near sea level; 100 m above a 101325 Pa ground: ~1194 Pa less
    assert baro_altitude(101325.0, 101325.0) == pytest.approx(0.0)
    assert baro_altitude(isa_pressure(100.0), 101325.0) == pytest.approx(100.0, abs=1e-6)
    assert isa_pressure(100.0) == pytest.approx(101325.0 - 1194.0, abs=2.0)
    assert baro_altitude(101325.0 - 100.0, 101325.0) == pytest.approx(8.3, abs=0.05)
    # relative to another reference (take-off at 500 m)
    assert baro_altitude(isa_pressure(600.0), isa_pressure(500.0)) == pytest.approx(
        100.0, abs=1.5)


def test_barometer_updates_altitude_relative_to_first_reading():
    kf = FusionKalman()
    kf.set_prior(0.0, (0.0, 0.0), np.eye(2))
    p0 = isa_pressure(0.0, 95000.0)
    kf.update_baro(0.0, p0)
    assert kf.p_ref == p0
    z = 0.0
    for k in range(1, 1001):   # climb at 2 m/s for 10 s (acceleration ignored: small)
        t = k / RATE
        z = 2.0 * t
        kf.predict_imu(t, (0, 0, 0, 1), (0.0, 0.0, GRAVITY))
        if k % 5 == 0:
            kf.update_baro(t, isa_pressure(z, 95000.0))
    assert kf.position[2] == pytest.approx(z, abs=0.5)
    assert kf.stats['baro_updates'] >= 150


def test_no_barometer_inflates_vertical_covariance():
    with_baro, without = FusionKalman(), FusionKalman()
    for kf in (with_baro, without):
        kf.set_prior(0.0, (0.0, 0.0, 0.0), np.diag([1.0, 1.0, 0.25]))
    for k in range(1, 1001):
        t = k / RATE
        for kf in (with_baro, without):
            kf.predict_imu(t, (0, 0, 0, 1), (0.0, 0.0, GRAVITY))
        if k % 5 == 0:
            with_baro.update_altitude(t, 0.0)
    assert with_baro.baro_ok and not without.baro_ok
    assert with_baro.P[2, 2] < 0.5
    assert without.P[2, 2] > 9.0   # >= 1 m^2/s over 10 s, plus the IMU's own growth


def test_bad_imu_input_is_skipped_and_counted():
    kf = FusionKalman()
    kf.set_prior(0.0, (0.0, 0.0, 0.0), np.eye(3))
    assert kf.predict_imu(0.00, (0, 0, 0, 1), (0, 0, GRAVITY))
    assert kf.predict_imu(0.01, (0, 0, 0, 1), (0, 0, GRAVITY))
    assert not kf.predict_imu(0.02, (0, 0, 0, 1), (np.nan, 0, GRAVITY))
    assert not kf.predict_imu(0.02, (np.nan, 0, 0, 1), (0, 0, GRAVITY))
    assert not kf.predict_imu(float('nan'), (0, 0, 0, 1), (0, 0, GRAVITY))
    assert not kf.predict_imu(0.02, (0, 0, 0, 0), (0, 0, GRAVITY))
    assert not kf.predict_imu(0.005, (0, 0, 0, 1), (0, 0, GRAVITY))   # backwards
    assert not kf.predict_imu(0.01, (0, 0, 0, 1), (0, 0, GRAVITY))    # same stamp
    assert kf.predict_imu(0.02, (0, 0, 0, 1), (0, 0, GRAVITY))
    assert kf.stats['nan_imu'] == 3 and kf.stats['bad_quaternion'] == 1
    assert kf.stats['time_backwards'] == 1 and kf.stats['duplicate_stamps'] == 1
    assert kf.t == 0.02 and np.all(np.isfinite(kf.P))
    # a gap is bridged, a restarted clock is followed
    assert kf.predict_imu(1.5, (0, 0, 0, 1), (0, 0, GRAVITY))
    assert kf.stats['imu_gaps'] == 1
    assert not kf.predict_imu(0.1, (0, 0, 0, 1), (0, 0, GRAVITY))   # 1.4 s back: dropped
    assert kf.predict_imu(5.0, (0, 0, 0, 1), (0, 0, GRAVITY))
    assert kf.predict_imu(0.1, (0, 0, 0, 1), (0, 0, GRAVITY))
    assert kf.stats['clock_resets'] == 1 and kf.t == 0.1
    assert kf.stats['time_backwards'] == 2 and kf.stats['imu_gaps'] == 2
    # bad baro / fix inputs
    assert not kf.update_baro(0.1, float('nan')) and not kf.update_baro(0.1, -5.0)
    assert not kf.update_fix(0.1, (np.nan, 0.0), np.eye(2)).accepted
    assert not kf.update_fix(0.1, (0.0, 0.0), np.zeros((2, 2))).accepted
    assert kf.stats['bad_baro'] == 2 and kf.stats['bad_fix'] == 2
    np.testing.assert_allclose(kf.position, 0.0, atol=1e-9)


def test_odometer_is_the_integrated_velocity():
    kf = FusionKalman()
    _start_on_circle(kf)
    _fly(kf, 0.0, 3.0)
    a, sa = kf.odometer(1.0)
    b, sb = kf.odometer()
    p1, _ = _circle(1.0)[:2]
    p3, _ = _circle(3.0)[:2]
    np.testing.assert_allclose(b - a, (p3 - p1)[:2], atol=0.3)
    assert np.all(sb >= sa)


def test_zero_velocity_while_hovering_bounds_the_drift_of_a_biased_imu():
    """A hovering vehicle with a biased accelerometer and no fixes (LOST): IMU alone drifts
    hundreds of metres in 2 minutes; the hover's zero-velocity measurement keeps it within a
    few metres (the mission's hold; issue: unbounded drift while LOST)."""
    def hover(with_hold):
        kf = FusionKalman()
        kf.set_prior(0.0, (0.0, 0.0, 50.0), np.diag([4.0, 4.0, 1.0]))
        q, f = _imu(np.zeros(3), 0.3, 0.0, 0.0, bias=(0.05, -0.04, 0.0))
        for k in range(1, int(120 * RATE) + 1):
            t = k / RATE
            kf.predict_imu(t, q, f)
            if with_hold and k % int(RATE // 2) == 0:
                assert kf.update_velocity(t, (0.0, 0.0), 1.0)
        return float(np.linalg.norm(kf.position[:2])), kf
    drift_imu, _ = hover(False)
    drift_hold, kf = hover(True)
    assert drift_imu > 300.0
    assert drift_hold < 10.0, drift_hold
    assert kf.stats['velocity_updates'] == 240
    assert not kf.update_velocity(1e3, (float('nan'), 0.0), 1.0)
    assert not kf.update_velocity(1e3, (0.0, 0.0), 0.0)


def test_a_late_fix_replays_the_velocity_updates_after_it():
    kf = FusionKalman()
    kf.set_prior(0.0, (0.0, 0.0, 0.0), np.diag([4.0, 4.0, 1.0]))
    for k in range(1, 101):
        kf.predict_imu(k / RATE, (0, 0, 0, 1), (0.0, 0.0, GRAVITY))
        if k % 50 == 0:
            kf.update_velocity(k / RATE, (0.0, 0.0), 0.5)
    v_var = kf.P[3, 3]
    res = kf.update_fix(0.3, (1.0, 1.0), np.eye(2))
    assert res.accepted and res.late_s > 0.5
    # the velocity update at 0.5 s was replayed after the fix: its variance is as small again
    assert kf.P[3, 3] <= v_var * 1.5 and kf.stats['velocity_updates'] == 2
