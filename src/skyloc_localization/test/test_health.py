"""Failure handling: validity checks, the OK / DEGRADED / LOST state machine, kidnap detection."""

import numpy as np

from skyloc_localization.health import (check_result, DEGRADED, HealthConfig, HealthMonitor,
                                        KidnapDetector, LOST, OK)
from skyloc_localization.histogram import HistogramEstimate


def test_validity_checks():
    assert check_result(0.8) == (True, '')
    assert check_result(0.8, 40) == (True, '')
    assert not check_result(0.2)[0]                  # seed: similarity < 0.3
    assert not check_result(0.8, 5)[0]               # too few inliers
    assert not check_result(float('nan'))[0] and not check_result(None)[0]
    assert not check_result(0.8, float('nan'))[0]
    assert check_result(0.2, config=HealthConfig(min_similarity=0.1))[0]


def test_failures_degrade_then_lose_and_successes_recover_with_hysteresis():
    h = HealthMonitor(t0=0.0)
    t = 0.0
    for i in range(2):
        t += 1
        assert h.report(t, False, 'low similarity') == OK
    assert h.report(t + 1, False) == DEGRADED            # 3rd consecutive failure (seed)
    a = h.advice()
    assert a.geometric_fallback and a.search_scale == 2.0 and not a.global_search
    t += 1
    assert h.report(t + 1, True) == DEGRADED             # one success is not enough
    assert h.report(t + 2, False) == DEGRADED            # and resets the success count
    for k in range(7):
        h.report(t + 3 + k, False)
    assert h.state == LOST and h.advice().global_search
    assert h.failures == 8
    t = 30.0
    assert h.report(t, True) == LOST
    assert h.report(t + 1, True) == DEGRADED             # LOST -> DEGRADED after 2
    assert h.report(t + 2, True) == DEGRADED
    assert h.report(t + 3, True) == OK                   # DEGRADED -> OK after 2 more
    assert [(a, b) for _, a, b, _ in h.transitions] == [
        (OK, DEGRADED), (DEGRADED, LOST), (LOST, DEGRADED), (DEGRADED, OK)]
    level, msg, values = h.diagnostic()
    assert level == 0 and msg.startswith('OK') and values['state'] == OK


def test_isolated_failures_do_not_degrade():
    h = HealthMonitor(t0=0.0)
    for k in range(20):
        h.report(k, k % 3 != 0)   # one failure in three, never three in a row
    assert h.state == OK and h.total_failures == 7


def test_camera_blackout_and_large_covariance():
    h = HealthMonitor(t0=0.0)
    h.report(1.0, True)
    assert h.tick(5.0) == OK
    assert h.tick(11.5) == DEGRADED                      # > 10 s without a valid fix
    level, msg, _ = h.diagnostic()
    assert level == 1 and 'no valid fix' in msg
    assert h.tick(62.0) == LOST                          # > 60 s
    h.report(63.0, True)
    h.report(64.0, True)
    h.report(65.0, True)
    h.report(66.0, True)
    assert h.state == OK
    assert h.tick(66.5, position_std=150.0) == LOST
    assert h.diagnostic()[0] == 2


def _est(mode, entropy=0.3, mass=0.9, std=5.0):
    return HistogramEstimate(np.asarray(mode, float), np.eye(2) * std ** 2, mass,
                             np.asarray(mode, float), np.eye(2) * std ** 2, entropy)


def test_kidnap_detector():
    kd = KidnapDetector(consecutive=2)
    kf_xy, kf_cov = np.array([100.0, 100.0]), np.eye(2) * 25.0
    assert not kd.update(_est([102.0, 99.0]), kf_xy, kf_cov)          # agrees
    assert not kd.update(_est([500.0, 100.0], entropy=0.8), kf_xy, kf_cov)   # not confident
    assert not kd.update(_est([500.0, 100.0], mass=0.3), kf_xy, kf_cov)
    assert not kd.update(_est([500.0, 100.0]), kf_xy, kf_cov)         # 1st time far away
    assert kd.update(_est([500.0, 100.0]), kf_xy, kf_cov)             # 2nd in a row: reseed
    assert kd.kidnaps == 1
    # not re-seeded (the caller waits for confirmations): it fires again, the same streak
    assert kd.update(_est([500.0, 100.0]), kf_xy, kf_cov) and kd.kidnaps == 1
    kd.reset()
    assert not kd.update(_est([500.0, 100.0]), kf_xy, kf_cov) and kd.count == 1
    assert kd.update(_est([500.0, 100.0]), kf_xy, kf_cov) and kd.kidnaps == 2
    kd.reset()
    # an uncertain filter is not "far" (Mahalanobis) even 60 m off
    assert not kd.update(_est([160.0, 100.0]), kf_xy, np.eye(2) * 60.0 ** 2)
    assert not kd.update(_est([160.0, 100.0]), kf_xy, np.eye(2) * 60.0 ** 2)
    # a filter with no position takes a confident histogram at once
    assert kd.update(_est([7.0, 8.0]), None, None, kf_initialized=False)
