"""The localizer's loop without ROS: descriptor queries, IMU, barometer -> pose (no ROS imports).

:class:`LocalizerCore` owns the parts and runs them in the order DESIGN.md gives:

1. IMU samples predict the Kalman filter (:class:`~skyloc_localization.kalman.FusionKalman`);
   barometer readings correct its altitude.
2. A query (the embedder's descriptor and its north-up crop, stamped with the image's time):
   the probability map (:class:`~skyloc_localization.histogram.HistogramFilter`) is predicted
   with the filter's odometer since the previous query; retrieval ranks the tiles of the
   altitude band; geometric verification correlates the crop with the map around the filter's
   predicted position (tracking) and around the best tiles, and the best peak is the fine fix;
   the health monitor checks it (minimum similarity, minimum correlation peak); the map is
   updated with the top-K similarities and the fix.
3. The Kalman filter takes the fix at the image's stamp (gated), or is re-seeded from the map
   when the map is confident about a place the filter rules out (a kidnap, or no position yet).
4. The query rate follows flight mode, battery, uncertainty, health and the thermal cap.
"""

from contextlib import nullcontext
from dataclasses import dataclass, field
import math
import time

import numpy as np

from skyloc_localization.fine import CHROMA, CorrelationMatcher
from skyloc_localization.health import HealthConfig, HealthMonitor, KidnapDetector, LOST, OK
from skyloc_localization.histogram import HistogramFilter
from skyloc_localization.kalman import FusionKalman, KalmanConfig
from skyloc_localization.rate import combined_uncertainty, QueryRatePolicy, RateConfig
from skyloc_localization.retrieval import Localizer


@dataclass
class CoreConfig:
    """Query-side settings (the filters have their own configs)."""

    top_k: int = 10                 # tiles in the probability map's likelihood
    verify_k: int = 3               # distinct tiles verified geometrically per query
    fallback_k: int = 8             # ... when the best similarity is weak
    weak_similarity: float = 0.35
    # weight of colour edges in the correlation fix (fine.CorrelationMatcher.chroma; 0: grey)
    correlation_chroma: float = CHROMA
    histogram_cell_m: float = 5.0
    prior_max_sigma_m: float = 40.0  # track around the filter's position below this std
    fix_agreement_sigma: float = 3.0  # a retrieval fix must agree with the map's mode
    min_fix_sigma_m: float = 1.0    # floor of a fix's std (the correlation is at 1 m/px)
    max_gated: int = 3              # consecutive gated tracking fixes that agree: reseed
    # ... agree: each within this of the previous one plus the filter's odometer since
    gated_agreement_m: float = 15.0
    reseed_velocity_std: float = 3.0  # m/s, horizontal velocity std after such a reseed
    # the map may re-seed the filter only after this long without an accepted fix (a filter
    # that keeps accepting fixes is not lost, whatever the map says)
    kidnap_quiet_s: float = 3.0
    # an initialised filter is re-seeded from the map only after this many queries whose
    # verified fixes confirm the map's mode and agree with each other (gated_agreement_m, the
    # odometer since taken into account) within reseed_window_s: one fix confirming a wrong
    # mode (a fault run: the altitude 16% off after a barometer step, the crop's scale with
    # it) moved the filter 300 m during a landing
    reseed_confirmations: int = 2
    reseed_window_s: float = 10.0
    # flight mode 'hold' (the mission's LOST failsafe: hover and climb) for hold_settle_s:
    # the horizontal velocity is measured as 0 with this std, m/s (0: off); without it the
    # IMU-only velocity random walk carries the estimate away while no fix comes
    hold_velocity_std: float = 1.0
    hold_settle_s: float = 3.0


@dataclass
class QueryOutcome:
    """What one query did (for logs, /diagnostics, tests and benchmarks)."""

    t: float
    localization: object            # retrieval.Localization
    valid: bool
    reason: str
    estimate: object                # histogram.HistogramEstimate after the update
    fix_result: object = None       # kalman.FixResult, None when no fix went to the filter
    reseeded: bool = False
    source: str = ''                # 'prior' (tracking window) or 'retrieval'
    timings_ms: dict = field(default_factory=dict)


class LocalizerCore:
    """Database + filters + health + rate policy; the localizer node is a thin shell on it."""

    def __init__(self, database, config=None, kalman_config=None, health_config=None,
                 rate_config=None, method='correlation', lock=None):
        self.cfg = config or CoreConfig()
        # held while the filters change: the node's IMU callbacks run beside a query, whose
        # retrieval and verification (the slow part) run outside the lock
        self.lock = lock if lock is not None else nullcontext()
        c = self.cfg
        self.db = database
        self.retriever = Localizer(database, None, top_k=c.top_k, verify_k=c.verify_k,
                                   weak_similarity=c.weak_similarity, fallback_k=c.fallback_k,
                                   method=method, global_fallback=False,
                                   matcher=CorrelationMatcher(chroma=c.correlation_chroma)
                                   if method == 'correlation' else None)
        _, grid, _ = database.map_image()
        self.hist = HistogramFilter.from_extent(
            grid.origin_x, grid.origin_y, grid.origin_x + grid.width * grid.resolution,
            grid.origin_y + grid.height * grid.resolution, cell=c.histogram_cell_m)
        self.kf = FusionKalman(kalman_config or KalmanConfig())
        self.health = HealthMonitor(health_config or HealthConfig(
            min_similarity=0.05, min_geometric_score=self.retriever.matcher.min_peak))
        self.kidnap = KidnapDetector()
        self.rate_policy = QueryRatePolicy(rate_config or RateConfig())
        self.prev_odo = None
        self.gated = []             # consecutive gated fixes: (t, xy, cov, odometer)
        self.confirms = []          # fixes confirming a far map mode: (t, xy, odometer)
        self.last_accept_t = None   # stamp of the last fix the filter accepted
        self.queries = 0
        self.last = None            # the last QueryOutcome
        self.prepare_map()

    def prepare_map(self):
        """Load the map image and its correlation field now (the first query is then fast)."""
        t0 = time.perf_counter()
        self.retriever._map_field()
        return (time.perf_counter() - t0) * 1e3

    # ------------------------------------------------------------------ sensors
    def imu(self, t, orientation, linear_acceleration):
        with self.lock:
            return self.kf.predict_imu(t, orientation, linear_acceleration)

    def baro(self, t, pressure_pa):
        with self.lock:
            return self.kf.update_baro(t, pressure_pa)

    def initial_pose(self, t, position, cov):
        """/initialpose: a prior for the filter and the probability map."""
        with self.lock:
            return self._initial_pose(t, position, cov)

    def _initial_pose(self, t, position, cov):
        ok = self.kf.set_prior(t, position, cov)
        if ok:
            c = np.asarray(cov, float)
            c = c.reshape(int(round(math.sqrt(c.size))), -1)[:2, :2]
            self.hist.reset(np.asarray(position, float)[:2], c)
            self.prev_odo = None
        return ok

    # ------------------------------------------------------------------ queries
    def band_for_altitude(self, altitude_m):
        return self.db.band_for_altitude(altitude_m)

    def prior(self, t):
        """(x, y) the filter expects at stamp t, when it is sure enough to track; else None."""
        if not self.kf.initialized:
            return None
        pos, cov = self.kf.position_at(t)
        sigma = math.sqrt(max(np.linalg.eigvalsh(cov[:2, :2]).max(), 0.0))
        return (float(pos[0]), float(pos[1])) if sigma <= self.cfg.prior_max_sigma_m else None

    def query(self, t, descriptor, crop, footprint_m, altitude_m):
        """One query at image stamp t: descriptor [D] (unit), crop (north-up RGB of
        footprint_m, or None: retrieval only), the altitude it was normalised with. Returns a
        QueryOutcome."""
        t0 = time.perf_counter()
        band = self.band_for_altitude(altitude_m)
        with self.lock:
            odo, ostd = self.kf.odometer(t)
            if self.prev_odo is not None:
                self.hist.predict(odo - self.prev_odo[0],
                                  np.diag(np.maximum(ostd - self.prev_odo[1], 0.0) ** 2))
            self.prev_odo = (odo, ostd)
            prior = self.prior(t)
            wide = self.health.advice().geometric_fallback
        loc = self.retriever.localize_descriptor(descriptor, crop, footprint_m, band, prior,
                                                 wide=wide)
        if loc.fix == 'fine' and self.cfg.min_fix_sigma_m > 0:
            loc.covariance = loc.covariance + np.eye(2) * self.cfg.min_fix_sigma_m ** 2
        source = ''
        if loc.fix == 'fine':
            source = 'prior' if prior is not None and loc.candidates and \
                loc.candidates[0].row == -1 else 'retrieval'
            valid, reason = self.health.check(loc.similarity, loc.geometric_score)
        else:
            valid = False
            reason = loc.fine.reason if loc.fine is not None and loc.fine.reason else \
                ('no query image: retrieval only' if crop is None
                 else f'no fine fix ({loc.fix})')
        cands = [c for c in loc.candidates if c.row >= 0]
        band_stride = float(self.db.bands[band]['stride_m'])
        with self.lock:
            self.health.report(t, valid, reason)
            t1 = time.perf_counter()
            self.hist.update(np.array([(c.x, c.y) for c in cands]).reshape(-1, 2),
                             np.array([c.similarity for c in cands]),
                             sigma_m=max(band_stride, self.cfg.histogram_cell_m),
                             fix=(loc.x, loc.y, loc.covariance) if valid else None)
            est = self.hist.estimate()
            hist_ms = (time.perf_counter() - t1) * 1e3
            out = QueryOutcome(t, loc, valid, reason, est, source=source)
            kxy, kcov = self.kf.position_at(t)
            quiet = self.last_accept_t is None or t - self.last_accept_t >= \
                self.cfg.kidnap_quiet_s
            # the map's mode alone is unverified tile similarities: a wrong tile that keeps
            # ranking first while fine matching fails gathers probability; so an initialised
            # filter is moved only where this query's verified fix confirms the mode
            confirmed = not self.kf.initialized or (valid and self._near_mode(loc, est))
            if self.kidnap.update(est, kxy[:2], kcov[:2, :2], self.kf.initialized) and quiet \
                    and confirmed and self._confirm(t, loc, odo):
                self.kf.reseed(t, est.mode, est.mode_cov)
                out.reseeded = True
                self.confirms = []
                self.kidnap.reset()
            if valid and (source == 'prior' or self._agrees(loc, est)):
                out.fix_result = self.kf.update_fix(t, (loc.x, loc.y), loc.covariance,
                                                    gate=self.kf.initialized)
                if out.fix_result.accepted:
                    self.last_accept_t = t
                    self.confirms = []
                self._gate_streak(t, loc, odo, out)
            self.queries += 1
            out.timings_ms = dict(loc.timings_ms, histogram=hist_ms,
                                  total=(time.perf_counter() - t0) * 1e3)
            self.last = out
        return out

    def _confirm(self, t, loc, odo):
        """Count one confirmation of a far mode; True once reseed_confirmations agreeing ones
        came within reseed_window_s (at once while the filter has no position yet)."""
        if not self.kf.initialized:
            return True
        xy = np.array([loc.x, loc.y])
        self.confirms = [c for c in self.confirms if t - c[0] <= self.cfg.reseed_window_s]
        if self.confirms and not self._moved_as_odometry(self.confirms[-1], xy, odo):
            self.confirms = []
        self.confirms.append((t, xy, odo))
        return len(self.confirms) >= max(1, self.cfg.reseed_confirmations)

    def _gate_streak(self, t, loc, odo, out):
        """Fixes that the filter gates out but that agree with each other (each where the
        previous one plus the filter's own displacement puts it) mean the filter is wrong, not
        the fixes (e.g. its velocity drifted while no fix came): after max_gated of them the
        filter is re-seeded from the last one, with an uncertain velocity."""
        if out.fix_result is None or out.fix_result.accepted:
            self.gated = []
            return
        xy = np.array([loc.x, loc.y])
        if self.gated and not self._moved_as_odometry(self.gated[-1], xy, odo):
            self.gated = []
        self.gated.append((t, xy, loc.covariance, odo))
        if len(self.gated) >= self.cfg.max_gated:
            self.kf.reseed(t, xy, loc.covariance, velocity_std=self.cfg.reseed_velocity_std)
            out.reseeded = True
            self.gated = []

    def _moved_as_odometry(self, prev, xy, odo):
        """A fix at xy agrees with an earlier one (prev: (t, xy, ..., odometer)): it is where
        that one plus the filter's odometer since puts it, within gated_agreement_m."""
        return np.linalg.norm((xy - prev[1]) - (odo - prev[-1])) <= self.cfg.gated_agreement_m

    def _agrees(self, loc, est):
        """A fix from retrieval (not the tracking window) goes to the filter only if the
        probability map's mode agrees with it, or the filter already has a position (its
        gate then decides)."""
        return self.kf.initialized or self._near_mode(loc, est)

    def _near_mode(self, loc, est):
        d = math.hypot(loc.x - est.mode[0], loc.y - est.mode[1])
        return d <= self.cfg.fix_agreement_sigma * math.sqrt(np.trace(est.mode_cov)) + \
            self.hist.cell

    # ------------------------------------------------------------------ outputs
    def tick(self, t):
        """Time-based health checks (camera blackout, covariance growth); returns the state."""
        with self.lock:
            return self.health.tick(t, self.position_std())

    def hover(self, t):
        """The vehicle holds position (flight mode 'hold', settled): a zero-velocity
        measurement at t bounds the drift of a filter that gets no fix. False when off."""
        std = self.cfg.hold_velocity_std
        if not std > 0:
            return False
        with self.lock:
            return self.kf.update_velocity(t, (0.0, 0.0), std)

    def position_std(self):
        """Horizontal 1-sigma (m): the major axis of the filter's x/y covariance."""
        if not self.kf.initialized:
            return math.inf
        return float(math.sqrt(max(np.linalg.eigvalsh(self.kf.P[:2, :2]).max(), 0.0)))

    def uncertainty(self):
        ent = self.last.estimate.entropy if self.last is not None else None
        return combined_uncertainty(ent, self.position_std(),
                                    self.rate_policy.cfg.position_std_ref_m)

    def rate(self, mode='survey', battery=None, cap=None):
        """(rate Hz, the policy's explanation dict)."""
        info = self.rate_policy.explain(mode, battery, self.uncertainty(), cap,
                                        self.health.state)
        return info['rate_hz'], info

    def state(self):
        return self.health.state

    def healthy(self):
        return self.health.state == OK

    def lost(self):
        return self.health.state == LOST
