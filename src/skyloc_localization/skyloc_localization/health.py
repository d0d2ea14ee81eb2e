"""Failure handling (no ROS imports): validity checks, consecutive-failure counting, the
OK / DEGRADED / LOST state machine with hysteresis and its advice, and the kidnap detector that
says when to reseed the Kalman filter from the histogram filter.

From the seed (RobustLocalizationPipeline): a result is invalid below a minimum similarity or a
minimum geometric score; after max_failures (3) consecutive failures the pipeline falls back to
keypoint matching (here: geometric verification of more candidates, a wider search).
"""

from dataclasses import dataclass
import math

import numpy as np

OK, DEGRADED, LOST = 'OK', 'DEGRADED', 'LOST'
LEVELS = {OK: 0, DEGRADED: 1, LOST: 2}   # diagnostic_msgs/DiagnosticStatus OK / WARN / ERROR


@dataclass
class HealthConfig:
    min_similarity: float = 0.3        # seed: similarity < 0.3 is invalid
    min_geometric_score: float = 12.0  # RANSAC inliers (the seed's 0.5 was a normalised score)
    degrade_after: int = 3             # consecutive failures OK -> DEGRADED (seed max_failures)
    lost_after: int = 8                # consecutive failures -> LOST
    recover_after: int = 2             # consecutive successes to go one state up
    blackout_s: float = 10.0           # no valid fix for this long: DEGRADED
    lost_s: float = 60.0               # ... for this long: LOST
    lost_std_m: float = 100.0          # position std above this: LOST
    degraded_search_scale: float = 2.0  # advice: search radius multiplier when DEGRADED


@dataclass
class Advice:
    """What the localizer should do in the current state."""

    geometric_fallback: bool = False   # verify candidates geometrically even if the match is weak
    search_scale: float = 1.0          # multiply the search radius around the estimate
    global_search: bool = False        # search the whole map, not around the estimate
    query_faster: bool = False         # (the rate policy does this from the state)


def check_result(similarity, geometric_score=None, config=None):
    """(valid, reason) of one query's result: a finite similarity >= min_similarity and, when a
    geometric score (inlier count) is given, >= min_geometric_score."""
    c = config or HealthConfig()
    if similarity is None or not math.isfinite(float(similarity)):
        return False, 'no similarity'
    if float(similarity) < c.min_similarity:
        return False, f'similarity {float(similarity):.3f} < {c.min_similarity}'
    if geometric_score is not None:
        g = float(geometric_score)
        if not math.isfinite(g) or g < c.min_geometric_score:
            return False, f'geometric score {g:g} < {c.min_geometric_score:g}'
    return True, ''


class HealthMonitor:
    """The OK / DEGRADED / LOST state machine.

    report(t, valid) after each query; tick(t, position_std) periodically (it catches a camera
    blackout: no query results at all). Going down needs degrade_after / lost_after consecutive
    failures (or a blackout / a large position std); going up one state needs recover_after
    consecutive successes: LOST -> DEGRADED -> OK.
    """

    def __init__(self, config=None, t0=None):
        self.cfg = config or HealthConfig()
        self.state = OK
        self.failures = 0
        self.successes = 0
        self.total_failures = 0
        self.transitions = []          # (t, from, to, why)
        self.last_valid_t = t0
        self.last_reason = ''

    def check(self, similarity, geometric_score=None):
        return check_result(similarity, geometric_score, self.cfg)

    def _go(self, t, state, why):
        if state != self.state:
            self.transitions.append((t, self.state, state, why))
            self.state = state
            self.failures = 0 if state == OK else self.failures
            self.successes = 0

    def report(self, t, valid, reason=''):
        """One query's outcome at time t (s). Returns the state."""
        if valid:
            self.last_valid_t = t
            self.failures = 0
            self.successes += 1
            self.last_reason = ''
            if self.successes >= self.cfg.recover_after:
                if self.state == LOST:
                    self._go(t, DEGRADED, f'{self.successes} valid results')
                elif self.state == DEGRADED:
                    self._go(t, OK, f'{self.successes} valid results')
            return self.state
        self.successes = 0
        self.failures += 1
        self.total_failures += 1
        self.last_reason = reason
        if self.failures >= self.cfg.lost_after and self.state != LOST:
            self._go(t, LOST, f'{self.failures} consecutive failures ({reason})')
        elif self.failures >= self.cfg.degrade_after and self.state == OK:
            self._go(t, DEGRADED, f'{self.failures} consecutive failures ({reason})')
        return self.state

    def tick(self, t, position_std=None):
        """Time-based checks: blackout (no valid result) and the filter's position std."""
        c = self.cfg
        if self.last_valid_t is None:
            self.last_valid_t = t
        since = t - self.last_valid_t
        if position_std is not None and math.isfinite(position_std) \
                and position_std > c.lost_std_m and self.state != LOST:
            self._go(t, LOST, f'position std {position_std:.0f} m > {c.lost_std_m:g} m')
        elif since > c.lost_s and self.state != LOST:
            self._go(t, LOST, f'no valid fix for {since:.0f} s')
        elif since > c.blackout_s and self.state == OK:
            self._go(t, DEGRADED, f'no valid fix for {since:.0f} s')
        return self.state

    def advice(self):
        if self.state == OK:
            return Advice()
        if self.state == DEGRADED:
            return Advice(geometric_fallback=True, search_scale=self.cfg.degraded_search_scale,
                          query_faster=True)
        return Advice(geometric_fallback=True, search_scale=float('inf'), global_search=True,
                      query_faster=True)

    def diagnostic(self):
        """(level 0/1/2, message, dict of key -> str) for a DiagnosticStatus."""
        msg = self.state if not self.transitions else f'{self.state}: {self.transitions[-1][3]}'
        return LEVELS[self.state], msg, {
            'state': self.state, 'consecutive_failures': str(self.failures),
            'consecutive_successes': str(self.successes),
            'total_failures': str(self.total_failures),
            'last_valid_t': '' if self.last_valid_t is None else f'{self.last_valid_t:.3f}',
            'last_failure': self.last_reason}


class KidnapDetector:
    """When to reseed the Kalman filter from the histogram filter.

    The histogram filter is confident (entropy <= max_entropy and the mode's window holds >=
    min_mode_mass) about a place that the Kalman filter rules out (squared Mahalanobis distance
    over both covariances > gate, and farther than min_distance_m), in `consecutive` queries in
    a row; or the Kalman filter has no position yet. Then reseed with (mode, mode_cov).
    """

    def __init__(self, max_entropy=0.45, min_mode_mass=0.6, gate=13.8, min_distance_m=30.0,
                 consecutive=2):
        self.max_entropy = max_entropy
        self.min_mode_mass = min_mode_mass
        self.gate = gate
        self.min_distance_m = min_distance_m
        self.consecutive = consecutive
        self.count = 0
        self.kidnaps = 0

    def confident(self, est):
        return est.entropy <= self.max_entropy and est.mode_mass >= self.min_mode_mass

    def update(self, est, kf_xy=None, kf_cov=None, kf_initialized=True):
        """est: a HistogramEstimate; kf_xy/kf_cov: the filter's horizontal position and 2x2
        covariance. Returns True when the filter should be reseeded from est now."""
        if not self.confident(est):
            self.count = 0
            return False
        if not kf_initialized or kf_xy is None:
            self.count = 0
            return True
        y = np.asarray(est.mode, float) - np.asarray(kf_xy, float)[:2]
        S = np.asarray(est.mode_cov, float) + np.asarray(kf_cov, float)[:2, :2]
        d2 = float(y @ np.linalg.solve(S, y))
        if d2 > self.gate and float(np.hypot(*y)) > self.min_distance_m:
            self.count += 1
        else:
            self.count = 0
        if self.count >= self.consecutive:
            # it goes on firing while the map stays far (the caller may want confirmations
            # before it re-seeds; reset() after a re-seed); kidnaps counts such streaks
            self.kidnaps += self.count == self.consecutive
            return True
        return False

    def reset(self):
        """After a re-seed: the next far estimate starts a new streak."""
        self.count = 0
