"""Adaptive query rate policy (skyloc_localization.rate)."""

import math

import pytest

from skyloc_localization.rate import (combined_uncertainty, normalise_battery,
                                      QueryRatePolicy, RateConfig)

P = QueryRatePolicy()


def test_modes_follow_the_seed():
    assert P.rate('survey') == pytest.approx(0.2)            # seed: 5-second intervals
    assert P.rate('precision_landing') == pytest.approx(1.0)  # seed: min(1.0, base x 5)
    assert P.rate('cruise') == pytest.approx(0.1)            # seed: base x 0.5
    assert P.rate('takeoff') == pytest.approx(0.2)
    assert P.rate('land') == pytest.approx(0.5)
    assert P.rate('') == P.rate(None) == P.rate('hover') == pytest.approx(0.2)
    assert P.rate(' Cruise ') == pytest.approx(0.1)


def test_uncertainty_boost_is_smooth_and_bounded():
    assert P.rate('survey', uncertainty=0.2) == pytest.approx(0.2)
    assert P.rate('survey', uncertainty=0.55) == pytest.approx(0.3)   # half way: x1.5
    assert P.rate('survey', uncertainty=0.7) == pytest.approx(0.4)    # seed: base x 2
    assert P.rate('survey', uncertainty=1.0) == pytest.approx(0.4)
    assert P.rate('survey', uncertainty=float('nan')) == pytest.approx(0.2)
    # not OK health counts as fully uncertain
    assert P.rate('survey', uncertainty=0.1, health='DEGRADED') == pytest.approx(0.4)
    assert P.rate('survey', health='OK') == pytest.approx(0.2)


def test_battery_slows_down_except_in_safety_modes():
    assert P.rate('survey', battery=0.5) == pytest.approx(0.2)
    assert P.rate('survey', battery=0.15) == pytest.approx(0.06)      # seed: base x 0.3
    assert P.rate('survey', battery=0.05) == pytest.approx(0.05)      # x0.15 -> min_hz
    assert P.rate('survey', battery=15.0) == pytest.approx(0.06)      # 0..100 drivers
    assert P.rate('survey', battery=float('nan')) == pytest.approx(0.2)
    assert P.rate('precision_landing', battery=0.05) == pytest.approx(1.0)
    # factors combine: uncertain on a low battery
    assert P.rate('survey', battery=0.15, uncertainty=0.9) == pytest.approx(0.12)


def test_limits_and_thermal_cap():
    fast = QueryRatePolicy(RateConfig(base_hz=1.0, max_hz=2.0))
    assert fast.rate('precision_landing') == pytest.approx(2.0)       # max_hz
    assert fast.rate('precision_landing', cap=0.5) == pytest.approx(0.5)
    assert fast.rate('survey', cap=3.0) == pytest.approx(1.0)         # cap above: no effect
    for no_cap in (None, 0.0, -1.0, float('nan'), float('inf')):
        assert fast.rate('survey', cap=no_cap) == pytest.approx(1.0)
    # the cap wins over min_hz
    assert P.rate('cruise', battery=0.05, cap=0.02) == pytest.approx(0.02)
    info = fast.explain('precision_landing', battery=0.9, uncertainty=0.8, cap=0.5)
    assert info['capped'] and info['cap_hz'] == 0.5 and info['mode_factor'] == 5.0
    assert info['uncertainty_factor'] == pytest.approx(2.0) and info['battery'] == 0.9


def test_helpers():
    assert normalise_battery(None) is None and normalise_battery(float('nan')) is None
    assert normalise_battery(-1.0) is None and normalise_battery(0.4) == 0.4
    assert normalise_battery(40.0) == pytest.approx(0.4) and normalise_battery(400.0) == 1.0
    assert combined_uncertainty() is None
    assert combined_uncertainty(0.3) == 0.3
    assert combined_uncertainty(0.3, 20.0) == pytest.approx(0.8)
    assert combined_uncertainty(0.3, 100.0) == 1.0
    assert combined_uncertainty(float('nan'), 5.0) == pytest.approx(0.2)
    assert math.isclose(combined_uncertainty(1.4), 1.0)
