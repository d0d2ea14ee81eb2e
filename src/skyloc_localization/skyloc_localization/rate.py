"""Adaptive query rate (no ROS imports).

The seed's policy (quantized-dino-pi-zero-roadmap.md, adaptive_query_rate): a base rate of one
query every 5 s, faster for precision tasks and when uncertain, slower in cruise and on a low
battery. Here the factors combine (the seed's if/elif chain ignored the battery whenever the
vehicle was uncertain), the uncertainty acts smoothly, the result stays within [min_hz, max_hz]
and under the thermal cap (/skyloc/query_rate_cap) of the health node.

Flight modes are the std_msgs/String values of /skyloc/flight_mode (the mission node publishes
them): takeoff, cruise, survey, precision_landing, land, and hold (the LOST failsafe: hovering
and climbing; the localizer then also holds the velocity at zero). An unknown or empty mode
counts as survey.
"""

from dataclasses import dataclass, field
import math

MODES = ('takeoff', 'cruise', 'survey', 'precision_landing', 'land', 'hold')


def _default_mode_factors():
    # seed: precision_landing x5, cruise x0.5; land is a landing (x2.5), take-off as survey
    # hold: the LOST failsafe, which also boosts through the uncertainty: as survey
    return {'takeoff': 1.0, 'cruise': 0.5, 'survey': 1.0, 'precision_landing': 5.0,
            'land': 2.5, 'hold': 1.0}


@dataclass
class RateConfig:
    base_hz: float = 0.2                  # the seed's 5-second interval
    mode_factors: dict = field(default_factory=_default_mode_factors)
    uncertainty_low: float = 0.4          # below: no boost
    uncertainty_high: float = 0.7         # above: the full boost (seed: > 0.7 -> x2)
    uncertainty_gain: float = 2.0
    position_std_ref_m: float = 25.0      # a position std of this counts as uncertainty 1
    battery_low: float = 0.2              # seed: < 20% -> x0.3
    battery_low_factor: float = 0.3
    battery_critical: float = 0.1
    battery_critical_factor: float = 0.15
    safety_modes: tuple = ('precision_landing', 'land')   # battery never slows these
    min_hz: float = 0.05
    max_hz: float = 2.0


def normalise_battery(fraction):
    """sensor_msgs/BatteryState.percentage is 0..1 (NaN when unknown); some drivers send
    0..100. Returns 0..1, or None when unknown."""
    if fraction is None:
        return None
    f = float(fraction)
    if not math.isfinite(f) or f < 0.0:
        return None
    if f > 1.0:
        f = f / 100.0 if f <= 100.0 else 1.0
    return f


def combined_uncertainty(entropy=None, position_std_m=None, std_ref_m=25.0):
    """One uncertainty in [0, 1]: the larger of the histogram's normalised entropy and the
    filter's position std relative to std_ref_m. None when neither is known."""
    vals = []
    if entropy is not None and math.isfinite(entropy):
        vals.append(min(1.0, max(0.0, float(entropy))))
    if position_std_m is not None and math.isfinite(position_std_m) and std_ref_m > 0:
        vals.append(min(1.0, max(0.0, float(position_std_m) / std_ref_m)))
    return max(vals) if vals else None


class QueryRatePolicy:
    """rate() in Hz from flight mode, battery, uncertainty, health and the thermal cap."""

    def __init__(self, config=None):
        self.cfg = config or RateConfig()

    def explain(self, mode='survey', battery=None, uncertainty=None, cap=None, health=None):
        """The rate and its factors, for /diagnostics."""
        c = self.cfg
        mode = (mode or 'survey').strip().lower()
        mode_factor = c.mode_factors.get(mode, c.mode_factors.get('survey', 1.0))
        u = None if uncertainty is None else float(uncertainty)
        if u is not None and not math.isfinite(u):
            u = None
        if health in ('DEGRADED', 'LOST'):
            u = 1.0   # query faster to get the position back
        unc_factor = 1.0
        if u is not None:
            span = max(c.uncertainty_high - c.uncertainty_low, 1e-9)
            k = min(1.0, max(0.0, (u - c.uncertainty_low) / span))
            unc_factor = 1.0 + (c.uncertainty_gain - 1.0) * k
        b = normalise_battery(battery)
        bat_factor = 1.0
        if b is not None and mode not in c.safety_modes:
            if b < c.battery_critical:
                bat_factor = c.battery_critical_factor
            elif b < c.battery_low:
                bat_factor = c.battery_low_factor
        rate = c.base_hz * mode_factor * unc_factor * bat_factor
        rate = min(c.max_hz, max(c.min_hz, rate))
        capped = False
        cap_hz = None
        if cap is not None and math.isfinite(float(cap)) and float(cap) > 0.0:
            cap_hz = float(cap)
            if rate > cap_hz:   # the thermal cap wins over min_hz
                rate, capped = cap_hz, True
        return {'rate_hz': rate, 'mode': mode, 'mode_factor': mode_factor,
                'uncertainty': u, 'uncertainty_factor': unc_factor, 'battery': b,
                'battery_factor': bat_factor, 'cap_hz': cap_hz, 'capped': capped}

    def rate(self, mode='survey', battery=None, uncertainty=None, cap=None, health=None):
        """Query rate (Hz).

        mode: flight mode string; battery: fraction 0..1 (or 0..100, None/NaN unknown);
        uncertainty: 0..1 (see combined_uncertainty); cap: thermal cap in Hz (None, NaN, inf
        or <= 0: no cap); health: 'OK' / 'DEGRADED' / 'LOST' (not OK counts as uncertain).
        """
        return self.explain(mode, battery, uncertainty, cap, health)['rate_hz']
