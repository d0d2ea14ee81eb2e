"""IMU / barometer / visual-fix Kalman filter (filterpy), in the map frame (ENU). No ROS imports.

State (9): position x, y, z (m), velocity vx, vy, vz (m/s), accelerometer bias bx, by, bz (m/s^2,
in the IMU's own frame, base_link: a MEMS bias turns with the vehicle).

- predict at IMU rate: the specific force f (sensor_msgs/Imu linear_acceleration, which includes
  gravity: a level IMU at rest reads +9.81 on z) less the bias, rotated to ENU by the IMU
  orientation R, less gravity: a = R (f - b) - g. The filter is linear in the state for a given R.
- visual fix (x, y, 2x2 covariance) with Mahalanobis gating (outliers rejected and counted),
  applied at its image's stamp: the filter keeps a short log of its inputs and states, rolls back
  to the stamp, applies the fix and replays the later inputs.
- barometric altitude (ISA, relative to the pressure at the first reading); without barometer the
  vertical covariance is inflated.
- reseed(): after a kidnap (the histogram filter is confident about a place far from the
  estimate) the position is reset to it with its covariance, instead of gating every fix away.
  set_prior(): the same for /initialpose.
- Bad input (NaN samples, time going backwards, gaps) is skipped and counted, never raised.
"""

from dataclasses import dataclass, field
import math

from filterpy.kalman import KalmanFilter
import numpy as np

from skyloc_perception.attitude import baro_altitude

GRAVITY = 9.80665
CHI2_2DOF_999 = 13.816   # 99.9% gate for a 2-D fix
CHI2_1DOF_999 = 10.828   # 99.9% gate for a 1-D measurement

POS, VEL, BIAS = slice(0, 3), slice(3, 6), slice(6, 9)


def rotation_from_quaternion(x, y, z, w):
    """3x3 rotation (body -> map) of a unit quaternion (x, y, z, w); None if not usable."""
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not (0.5 < n < 2.0):
        return None
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@dataclass
class KalmanConfig:
    """Noise model and limits. Densities per sqrt(Hz), random walks per sqrt(s)."""

    accel_noise: float = 0.05          # m/s^2/sqrt(Hz): sensor noise + attitude/heading error
    accel_bias_walk: float = 1e-3      # m/s^2/sqrt(s)
    accel_bias_init: float = 0.1       # m/s^2, std of the bias at start
    initial_position_std: float = 1e3  # m, x/y before any fix or prior
    initial_altitude_std: float = 1.0  # m (start on the ground at the barometer's reference)
    initial_velocity_std: float = 0.5  # m/s
    baro_std: float = 0.5              # m, barometric altitude noise
    baro_gate: float = CHI2_1DOF_999
    baro_max_rejects: int = 20         # then accept anyway (a step in the barometer, not noise)
    baro_timeout_s: float = 1.0        # no barometer for longer: vertical covariance inflated
    no_baro_vertical_var_rate: float = 1.0   # m^2/s added to z (0.1 (m/s)^2/s to vz)
    fix_gate: float = CHI2_2DOF_999
    history_s: float = 2.0             # how far back a late fix can be applied at its stamp
    max_dt: float = 0.25               # s; a longer IMU gap is bridged without acceleration
    gap_accel_std: float = 3.0         # m/s^2, unknown manoeuvre acceleration over a gap
    clock_reset_s: float = 3.0         # time going back by more than this: a clock reset
    gravity: float = GRAVITY


@dataclass
class FixResult:
    """Outcome of a visual fix: accepted or gated out, its squared Mahalanobis distance, the
    time it was applied at, and a reason when it was not applied."""

    accepted: bool
    mahalanobis2: float = float('nan')
    applied_at: float = float('nan')
    late_s: float = 0.0
    reason: str = ''


@dataclass
class _Entry:
    t: float
    kind: str       # 'imu' | 'baro' | 'fix' | 'reseed' | 'vel'
    data: tuple
    snap: tuple = field(default=None)
    result: object = None


class FusionKalman:
    """The localizer's IMU + barometer + visual-fix filter (see the module docstring)."""

    def __init__(self, config=None):
        self.cfg = config or KalmanConfig()
        self.kf = KalmanFilter(dim_x=9, dim_z=2)
        self.stats = dict.fromkeys((
            'imu_samples', 'nan_imu', 'bad_quaternion', 'time_backwards', 'duplicate_stamps',
            'clock_resets', 'imu_gaps', 'baro_updates', 'baro_rejected', 'baro_forced',
            'bad_baro', 'fixes_accepted', 'fixes_rejected', 'fixes_late', 'fixes_too_old',
            'bad_fix', 'reseeds', 'velocity_updates'), 0)
        self.p_ref = None          # barometer reference pressure (Pa)
        self.z_ref = 0.0           # altitude (map z) at the reference
        self._h_fix = np.zeros((2, 9))
        self._h_fix[0, 0] = self._h_fix[1, 1] = 1.0
        self._h_z = np.zeros((1, 9))
        self._h_z[0, 2] = 1.0
        self._h_v = np.zeros((2, 9))
        self._h_v[0, 3] = self._h_v[1, 4] = 1.0
        self._g = np.array([0.0, 0.0, self.cfg.gravity])
        self._mats = {}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self):
        """Unknown horizontal position, on the ground at the barometer's reference, at rest."""
        c = self.cfg
        self.kf.x = np.zeros((9, 1))
        self.kf.P = np.diag([c.initial_position_std ** 2] * 2 + [c.initial_altitude_std ** 2]
                            + [c.initial_velocity_std ** 2] * 3 + [c.accel_bias_init ** 2] * 3)
        self.t = None
        self.last_baro_t = None
        self.baro_rejects = 0
        self.initialized = False   # a fix, prior or reseed has set x/y
        self.odo = np.zeros(2)      # integral of the estimated horizontal velocity (m)
        self.odo_std = np.zeros(2)  # its accumulated std (m), see odometer()
        self.log = []

    @property
    def position(self):
        return self.kf.x[POS, 0].copy()

    @property
    def velocity(self):
        return self.kf.x[VEL, 0].copy()

    @property
    def accel_bias(self):
        return self.kf.x[BIAS, 0].copy()

    @property
    def P(self):
        return self.kf.P.copy()

    @property
    def baro_ok(self):
        return self.last_baro_t is not None and self.t is not None and \
            self.t - self.last_baro_t <= self.cfg.baro_timeout_s

    def state(self):
        """A dict: t, position, velocity, accel_bias, covariance (9x9), initialized, baro_ok,
        stats (counters)."""
        return {'t': self.t, 'position': self.position, 'velocity': self.velocity,
                'accel_bias': self.accel_bias, 'covariance': self.P,
                'initialized': self.initialized, 'baro_ok': self.baro_ok,
                'stats': dict(self.stats)}

    def _now(self):
        return self.t if self.t is not None else float('nan')

    def _snap(self):
        return (self.kf.x.copy(), self.kf.P.copy(), self.odo.copy(), self.odo_std.copy(), self.t,
                self.last_baro_t, self.baro_rejects, self.initialized)

    def _restore(self, snap):
        (x, P, odo, odo_std, self.t, self.last_baro_t, self.baro_rejects,
         self.initialized) = snap
        self.kf.x, self.kf.P = x.copy(), P.copy()
        self.odo, self.odo_std = odo.copy(), odo_std.copy()

    def _record(self, kind, data, result=None):
        if self.t is None:  # before the first IMU sample: nothing to roll back to
            return
        t = self.t
        self.log.append(_Entry(t, kind, data, self._snap(), result))
        horizon = t - self.cfg.history_s
        if len(self.log) > 8 and self.log[0].t < horizon:
            k = 0
            while k < len(self.log) - 1 and self.log[k].t < horizon:
                k += 1
            del self.log[:k]

    def _entry_index_at(self, t):
        """Index of the last log entry at or before t, or None."""
        lo, hi = 0, len(self.log)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.log[mid].t <= t:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1 if lo > 0 else None

    # ------------------------------------------------------------------ IMU
    def predict_imu(self, t, orientation, linear_acceleration):
        """One IMU sample: t (s), orientation quaternion (x, y, z, w) body -> ENU, specific
        force (m/s^2, base_link, gravity included). Returns False when the sample was skipped
        (NaN, bad quaternion, time not increasing): counted in stats."""
        q = [float(v) for v in orientation]
        fl = [float(v) for v in linear_acceleration]
        t = float(t)
        if not (len(q) == 4 and len(fl) == 3 and math.isfinite(t)
                and all(math.isfinite(v) for v in q) and all(math.isfinite(v) for v in fl)):
            self.stats['nan_imu'] += 1
            return False
        R = rotation_from_quaternion(*q)
        if R is None:
            self.stats['bad_quaternion'] += 1
            return False
        f = np.array(fl)
        if self.t is None:
            self.t = t
            self.stats['imu_samples'] += 1
            self._record('imu', (0.0, R, f, t))
            return True
        dt = t - self.t
        if dt <= 0.0:
            if dt < -self.cfg.clock_reset_s:  # a restarted clock (e.g. a bag looping)
                self.stats['clock_resets'] += 1
                self.t = t
                self.log = []
                self._record('imu', (0.0, R, f, t))
                return True
            self.stats['time_backwards' if dt < 0 else 'duplicate_stamps'] += 1
            return False
        if dt > self.cfg.max_dt:
            self.stats['imu_gaps'] += 1
        self.stats['imu_samples'] += 1
        self._imu_step(dt, R, f, t)
        self._record('imu', (dt, R, f, t))
        return True

    def _imu_step(self, dt, R, f, t):
        gap = dt > self.cfg.max_dt
        key = (round(dt * 1e6), gap, self.baro_ok)
        mats = self._mats.get(key)
        if mats is None:
            if len(self._mats) > 256:
                self._mats.clear()
            mats = self._mats[key] = self._matrices(key[0] * 1e-6, gap, key[2])
        F0, B, Q, dt = mats
        F = F0.copy()
        if gap:  # no acceleration known over a gap
            u = np.zeros((3, 1))
        else:
            F[0:3, 6:9] = (-0.5 * dt * dt) * R
            F[3:6, 6:9] = -dt * R
            u = (R @ f - self._g).reshape(3, 1)
        self.kf.predict(u=u, B=B, F=F, Q=Q)
        self.t = t
        x, P = self.kf.x, self.kf.P
        self.odo[0] += x[3, 0] * dt
        self.odo[1] += x[4, 0] * dt
        self.odo_std[0] += math.sqrt(max(P[3, 3], 0.0)) * dt
        self.odo_std[1] += math.sqrt(max(P[4, 4], 0.0)) * dt

    def _matrices(self, dt, gap, baro_ok):
        """F (without the bias blocks), B, Q for a step of dt."""
        c = self.cfg
        i3 = np.eye(3)
        F = np.eye(9)
        F[POS, VEL] = i3 * dt
        B = np.zeros((9, 3))
        if not gap:
            B[POS] = i3 * 0.5 * dt * dt
            B[VEL] = i3 * dt
        qa = c.gap_accel_std ** 2 * dt if gap else c.accel_noise ** 2
        Q = np.zeros((9, 9))
        Q[POS, POS] = i3 * qa * dt ** 3 / 3.0
        Q[POS, VEL] = Q[VEL, POS] = i3 * qa * dt ** 2 / 2.0
        Q[VEL, VEL] = i3 * qa * dt
        Q[BIAS, BIAS] = i3 * c.accel_bias_walk ** 2 * dt
        if not baro_ok:
            Q[2, 2] += c.no_baro_vertical_var_rate * dt
            Q[5, 5] += 0.1 * c.no_baro_vertical_var_rate * dt
        return F, B, Q, dt

    # ------------------------------------------------------------------ barometer
    def set_baro_reference(self, pressure_pa, altitude=0.0):
        """The pressure that reads ``altitude`` (map z); by default the first reading = z 0."""
        self.p_ref = float(pressure_pa)
        self.z_ref = float(altitude)

    def update_baro(self, t, pressure_pa, std_m=None):
        """Barometric altitude from a pressure (Pa); the first valid one is the reference."""
        p = float(pressure_pa)
        if not (math.isfinite(p) and p > 0.0):
            self.stats['bad_baro'] += 1
            return False
        if self.p_ref is None:
            self.set_baro_reference(p, float(self.kf.x[2, 0]) if self.t is not None else 0.0)
        return self.update_altitude(t, baro_altitude(p, self.p_ref) + self.z_ref, std_m)

    def update_altitude(self, t, z, std_m=None):
        """An altitude (map z, m) measurement, e.g. from the barometer."""
        z = float(z)
        var = float(std_m if std_m is not None else self.cfg.baro_std) ** 2
        if not (math.isfinite(z) and math.isfinite(var) and var > 0):
            self.stats['bad_baro'] += 1
            return False
        ok = self._baro(z, var, t=float(t))
        self._record('baro', (z, var), ok)
        return ok

    def _baro(self, z, var, replay=False, t=None):
        y = z - self.kf.x[2, 0]
        s = self.kf.P[2, 2] + var
        forced = False
        if y * y / s > self.cfg.baro_gate:
            self.baro_rejects += 1
            if self.baro_rejects < self.cfg.baro_max_rejects:
                if not replay:
                    self.stats['baro_rejected'] += 1
                return False
            forced = True
        self.kf.update(np.array([[z]]), R=np.array([[var]]), H=self._h_z)
        self.baro_rejects = 0
        self.last_baro_t = self.t if self.t is not None else t
        if not replay:
            self.stats['baro_updates'] += 1
            self.stats['baro_forced'] += int(forced)
        return True

    # ------------------------------------------------------------------ velocity
    def update_velocity(self, t, v_xy, std):
        """A horizontal velocity measurement (m/s, map frame) with std (m/s), at the latest
        state: the hover constraint while the vehicle holds position without fixes (a
        multirotor commanded to hover is near rest; without it the IMU-only velocity random
        walk carries the estimate kilometres away while LOST). Returns False on bad input."""
        v = np.asarray(v_xy, dtype=float).reshape(-1)[:2]
        std = float(std)
        if not (np.all(np.isfinite(v)) and math.isfinite(std) and std > 0) or self.t is None:
            return False
        data = (v, std * std)
        self._velocity(*data)
        self._record('vel', data)
        self.stats['velocity_updates'] += 1
        return True

    def _velocity(self, v, var):
        self.kf.update(v.reshape(2, 1), R=np.eye(2) * var, H=self._h_v)

    # ------------------------------------------------------------------ visual fix
    def update_fix(self, t, xy, cov, gate=True):
        """A visual fix (x, y in m, 2x2 covariance in m^2) of an image taken at stamp t.

        Applied at t: the filter rolls back to its state at t, applies the fix and replays the
        IMU / barometer inputs since. Gated by the squared Mahalanobis distance (config
        fix_gate) unless gate=False or the filter is not initialised yet (the first fix sets
        x/y). Returns a FixResult.
        """
        xy = np.asarray(xy, dtype=float).reshape(-1)[:2]
        cov = np.asarray(cov, dtype=float).reshape(2, 2)
        t = float(t)
        if not (math.isfinite(t) and np.all(np.isfinite(xy)) and np.all(np.isfinite(cov))
                and cov[0, 0] > 0 and cov[1, 1] > 0
                and np.linalg.det(cov) > 0):
            self.stats['bad_fix'] += 1
            return FixResult(False, reason='invalid fix')
        cov = 0.5 * (cov + cov.T)
        data = (xy, cov, bool(gate))
        if self.t is None or t >= self.t or not self.log:
            res = self._fix(*data)
            self._record('fix', data, res)
            return res
        i = self._entry_index_at(t)
        late = self.t - t
        if i is None:  # older than the history: apply now, widened by the motion since
            self.stats['fixes_too_old'] += 1
            v_var = np.diag(self.kf.P)[3:5]
            speed2 = self.kf.x[3:5, 0] ** 2
            widened = cov + np.diag((v_var + 0.1 * speed2) * late * late)
            res = self._fix(xy, widened, bool(gate))
            res.late_s = late
            self._record('fix', (xy, widened, bool(gate)), res)
            return res
        self.stats['fixes_late'] += 1
        later = self.log[i + 1:]
        self._restore(self.log[i].snap)
        del self.log[i + 1:]
        res = self._fix(*data)
        res.late_s = late
        self.log.append(_Entry(self.t, 'fix', data, self._snap(), res))
        self._replay(later)
        return res

    def _fix(self, xy, cov, gate, replay=False, previous=None):
        P = self.kf.P[:2, :2]
        y = xy - self.kf.x[:2, 0]
        S = P + cov
        d2 = float(y @ np.linalg.solve(S, y))
        if gate and self.initialized and d2 > self.cfg.fix_gate:
            res = FixResult(False, d2, self._now(), reason='gated')
        else:
            self.kf.update(xy.reshape(2, 1), R=cov, H=self._h_fix)
            self.initialized = True
            res = FixResult(True, d2, self._now())
        if previous is not None and previous.accepted != res.accepted:  # replay changed it
            k_old = 'fixes_accepted' if previous.accepted else 'fixes_rejected'
            self.stats[k_old] -= 1
        if not replay or (previous is not None and previous.accepted != res.accepted):
            self.stats['fixes_accepted' if res.accepted else 'fixes_rejected'] += 1
        return res

    def _replay(self, entries):
        for e in entries:
            if e.kind == 'imu':
                if e.data[0] > 0:
                    self._imu_step(*e.data)
            elif e.kind == 'baro':
                e.result = self._baro(*e.data, replay=True)
            elif e.kind == 'fix':
                res = self._fix(*e.data, replay=True, previous=e.result)
                res.late_s = e.result.late_s if e.result is not None else 0.0
                e.result = res
            elif e.kind == 'reseed':
                self._reseed(*e.data)
            elif e.kind == 'vel':
                self._velocity(*e.data)
            e.snap = self._snap()
            self.log.append(e)

    # ------------------------------------------------------------------ reseed / prior
    def reseed(self, t, xy, cov, z=None, z_var=None, velocity_std=None):
        """Reset the position to xy (and z) with covariance cov (2x2, m^2), keeping velocity and
        bias: after a kidnap, when the histogram filter is confident about a place far from the
        estimate. Applied at stamp t like a fix (later inputs replayed). ``velocity_std``
        (m/s): also make the horizontal velocity that uncertain (fixes that kept disagreeing
        with the filter: its velocity is wrong too)."""
        xy = np.asarray(xy, dtype=float).reshape(-1)[:2]
        cov = np.asarray(cov, dtype=float).reshape(2, 2)
        if not (np.all(np.isfinite(xy)) and np.all(np.isfinite(cov)) and math.isfinite(t)):
            self.stats['bad_fix'] += 1
            return False
        data = (xy, 0.5 * (cov + cov.T), z, z_var, velocity_std)
        self.stats['reseeds'] += 1
        i = None
        if self.t is not None and float(t) < self.t and self.log:
            i = self._entry_index_at(float(t))
        if i is None:
            self._reseed(*data)
            self._record('reseed', data)
            return True
        later = self.log[i + 1:]
        self._restore(self.log[i].snap)
        del self.log[i + 1:]
        self._reseed(*data)
        self.log.append(_Entry(self.t, 'reseed', data, self._snap()))
        self._replay(later)
        return True

    def _reseed(self, xy, cov, z=None, z_var=None, velocity_std=None):
        idx = [0, 1] if z is None else [0, 1, 2]
        if velocity_std is not None and math.isfinite(velocity_std) and velocity_std > 0:
            idx = idx + [3, 4]
        self.kf.x[0:2, 0] = xy
        self.kf.P[idx, :] = 0.0
        self.kf.P[:, idx] = 0.0
        self.kf.P[0:2, 0:2] = cov
        if 3 in idx:
            self.kf.P[3, 3] = self.kf.P[4, 4] = float(velocity_std) ** 2
        if z is not None:
            self.kf.x[2, 0] = float(z)
            self.kf.P[2, 2] = float(z_var if z_var is not None else self.cfg.baro_std ** 2)
        self.initialized = True

    def set_prior(self, t, position, cov):
        """A prior pose (e.g. /initialpose): position (x, y) or (x, y, z); covariance 2x2, 3x3
        or the message's 6x6 (m^2). z is used only with a positive variance."""
        p = np.asarray(position, dtype=float).reshape(-1)
        c = np.asarray(cov, dtype=float)
        c = c.reshape(int(round(math.sqrt(c.size))), -1)
        if len(p) >= 3 and c.shape[0] >= 3 and c[2, 2] > 0:
            return self.reseed(t, p[:2], c[:2, :2], z=p[2], z_var=c[2, 2])
        return self.reseed(t, p[:2], c[:2, :2])

    # ------------------------------------------------------------------ queries
    def odometer(self, t=None):
        """(xy, std): the integral of the estimated horizontal velocity (m) and its std (m) at
        the latest state, or at the last state at or before stamp t within the history. The
        difference between two calls is the displacement (and, as a sum of stds, its
        uncertainty) to predict the histogram filter with; unlike the position it does not
        jump when a fix corrects the estimate."""
        if t is not None and self.log and float(t) < self.t:
            i = self._entry_index_at(float(t))
            if i is not None:
                snap = self.log[i].snap
                return snap[2].copy(), snap[3].copy()
        return self.odo.copy(), self.odo_std.copy()

    def position_at(self, t):
        """(position (3,), covariance 3x3) at the last state at or before t within the history
        (the latest one when t is newer or older than the history)."""
        if self.log and t is not None and float(t) < self.t:
            i = self._entry_index_at(float(t))
            if i is not None:
                x, P = self.log[i].snap[:2]
                return x[POS, 0].copy(), P[POS, POS].copy()
        return self.position, self.kf.P[POS, POS].copy()

    def mahalanobis2(self, xy, cov, t=None):
        """Squared Mahalanobis distance of a horizontal position from the estimate (at t)."""
        pos, P = self.position_at(t)
        y = np.asarray(xy, float)[:2] - pos[:2]
        return float(y @ np.linalg.solve(P[:2, :2] + np.asarray(cov, float), y))
