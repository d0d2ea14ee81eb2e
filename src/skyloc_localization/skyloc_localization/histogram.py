"""Probability map: a grid Bayes (histogram) filter over the map (no ROS imports).

The belief is a grid of cell probabilities over the map extent that is carried from query to
query (it is not rebuilt at each query):

- predict: shift by the vehicle's displacement since the last query and diffuse by its
  uncertainty. The shift is applied in whole cells and the fractional remainder is carried to the
  next predict (and added to the reported positions), so that many small displacements add up
  exactly; the diffusion is a Gaussian blur whose sigma comes from the displacement covariance
  plus a process noise. A small uniform floor is then mixed in, so that a kidnapped vehicle is
  found again.
- update: a likelihood from the top-K retrieval candidates (tile centres and cosine
  similarities): temperature-scaled softmax weights, each spread over the tile's footprint as a
  Gaussian, above a likelihood floor; optionally multiplied by a visual fix (x, y, 2x2 cov).

Frames: the map frame (ENU, metres). Cell (row, col) has its centre at
(origin_x + (col + 0.5) * cell, origin_y + (row + 0.5) * cell): row 0 is the bottom (south)
row, as in nav_msgs/OccupancyGrid whose origin is the lower-left corner of cell (0, 0).
"""

from dataclasses import dataclass
import math
import time

import numpy as np
from scipy import ndimage


@dataclass
class HistogramEstimate:
    """What the filter says about the position.

    mode: (x, y) of the most probable cell (plus the carried sub-cell shift).
    mode_cov: 2x2 covariance around the mode, from the cells within ``window_m`` of it.
    mode_mass: the probability within that window (how much of the belief the mode explains).
    mean, cov: mean and covariance of the whole belief (multi-modal beliefs give a large cov).
    entropy: normalised entropy in [0, 1] (0 = one cell, 1 = uniform): the uncertainty.
    """

    mode: np.ndarray
    mode_cov: np.ndarray
    mode_mass: float
    mean: np.ndarray
    cov: np.ndarray
    entropy: float


class HistogramFilter:
    """Grid Bayes filter over a rectangular map extent.

    origin: (x, y) of the lower-left corner of the grid (map frame, m); shape: (rows, cols);
    cell: cell size (m).
    uniform_floor: probability mass mixed in uniformly at each predict (kidnap recovery).
    likelihood_floor: likelihood of a cell near no candidate, relative to a candidate's peak
        (1): how much one retrieval can rule a place out.
    temperature: softmax temperature on the cosine similarities.
    spread_sigma_m: default sigma (m) of a candidate's Gaussian over its tile footprint.
    process_noise_m: diffusion sigma added at each predict (m), and per metre travelled
        (``process_noise_per_m``) for the odometry's scale error.
    fix_outlier_prob: probability that a visual fix is an outlier (uniform over the grid): the
        fix's likelihood is the mixture (1 - e) N(fix, cov) + e / area, so that one wrong fix
        cannot zero the true place.
    window_m: radius of the window around the mode for its covariance and mass.
    """

    def __init__(self, origin, shape, cell=5.0, uniform_floor=1e-3, likelihood_floor=0.03,
                 temperature=0.03, spread_sigma_m=25.0, process_noise_m=1.0,
                 process_noise_per_m=0.05, fix_outlier_prob=0.05, window_m=50.0, dtype=np.float32):
        rows, cols = (int(v) for v in shape)
        if rows < 1 or cols < 1 or not cell > 0:
            raise ValueError(f'bad grid: shape {shape}, cell {cell}')
        self.origin = np.array([float(origin[0]), float(origin[1])])
        self.rows, self.cols = rows, cols
        self.cell = float(cell)
        self.uniform_floor = float(uniform_floor)
        self.likelihood_floor = float(likelihood_floor)
        self.temperature = float(temperature)
        self.spread_sigma_m = float(spread_sigma_m)
        self.process_noise_m = float(process_noise_m)
        self.process_noise_per_m = float(process_noise_per_m)
        self.fix_outlier_prob = float(fix_outlier_prob)
        self.window_m = float(window_m)
        self.dtype = np.dtype(dtype).type
        # cell-centre coordinates along each axis
        self.xs = self.origin[0] + (np.arange(cols) + 0.5) * self.cell
        self.ys = self.origin[1] + (np.arange(rows) + 0.5) * self.cell
        self.residual = np.zeros(2)  # sub-cell shift (m) not yet applied to the grid
        self.p = np.empty((rows, cols), dtype=dtype)
        self._buf = np.empty_like(self.p)
        self.updates = 0
        self.reset()

    @classmethod
    def from_extent(cls, xmin, ymin, xmax, ymax, cell=5.0, **kwargs):
        """A grid covering [xmin, xmax] x [ymin, ymax] (map frame, m)."""
        cols = max(1, int(math.ceil((xmax - xmin) / cell - 1e-9)))
        rows = max(1, int(math.ceil((ymax - ymin) / cell - 1e-9)))
        return cls((xmin, ymin), (rows, cols), cell, **kwargs)

    @property
    def shape(self):
        return self.rows, self.cols

    @property
    def size(self):
        return self.rows * self.cols

    # ---------------------------------------------------------------- initialisation
    def reset(self, xy=None, cov=None):
        """Uniform belief, or a Gaussian prior at xy with covariance cov (2x2, m^2)."""
        self.residual[:] = 0.0
        if xy is None:
            self.p.fill(1.0 / self.size)
            return
        cov = np.eye(2) * 100.0 if cov is None else np.asarray(cov, float)
        self.p[:] = self._gaussian(xy, cov)
        self._mix_floor(self.uniform_floor)
        self._normalise()

    # ---------------------------------------------------------------- predict
    def predict(self, displacement, cov=None):
        """Shift the belief by displacement (dx, dy in m) and diffuse it.

        cov: 2x2 covariance (m^2) of the displacement, or None for only the process noise.
        A displacement that is NaN/inf is treated as unknown motion: no shift, large blur.
        """
        d = np.asarray(displacement, dtype=float)[:2]
        var = np.zeros(2) if cov is None else np.diag(np.asarray(cov, float))[:2].copy()
        if not np.all(np.isfinite(d)) or not np.all(np.isfinite(var)):
            d = np.zeros(2)
            var = np.full(2, (10.0 * self.cell) ** 2)
        total = (self.residual + d) / self.cell  # in cells
        n = np.round(total)
        self.residual = (total - n)
        shift_c, shift_r = int(n[0]), int(n[1])
        if shift_c or shift_r:
            self._shift(shift_r, shift_c)
        self.residual *= self.cell  # stored in metres
        var = var + self.process_noise_m ** 2 + (self.process_noise_per_m * np.hypot(*d)) ** 2
        sigma = np.sqrt(np.maximum(var, 0.0)) / self.cell  # (x, y) in cells
        self._blur(sigma[1], sigma[0])
        self._mix_floor(self.uniform_floor)
        self._normalise()

    def _shift(self, dr, dc):
        """Move the grid content by dr rows (north) and dc columns (east); mass moved off the
        grid is lost (renormalised by the caller)."""
        out = self._buf
        out.fill(0.0)
        r, c = self.rows, self.cols
        if abs(dr) < r and abs(dc) < c:
            src_r = slice(max(0, -dr), min(r, r - dr))
            dst_r = slice(max(0, dr), min(r, r + dr))
            src_c = slice(max(0, -dc), min(c, c - dc))
            dst_c = slice(max(0, dc), min(c, c + dc))
            out[dst_r, dst_c] = self.p[src_r, src_c]
        self._buf, self.p = self.p, out

    def _blur(self, sigma_r, sigma_c):
        """Gaussian diffusion (sigmas in cells). Large sigmas use a cheap triple box filter."""
        if sigma_r < 0.2 and sigma_c < 0.2:
            return
        if max(sigma_r, sigma_c) <= 6.0:
            ndimage.gaussian_filter(self.p, (sigma_r, sigma_c), output=self._buf,
                                    mode='constant', truncate=3.0)
            self._buf, self.p = self.p, self._buf
            return
        # three box passes of width w approximate a Gaussian of variance 3 (w^2 - 1) / 12
        for axis, sigma in ((0, sigma_r), (1, sigma_c)):
            w = int(round(math.sqrt(4.0 * sigma * sigma + 1.0)))
            if w < 2:
                continue
            for _ in range(3):
                ndimage.uniform_filter1d(self.p, w, axis=axis, output=self._buf,
                                         mode='constant')
                self._buf, self.p = self.p, self._buf

    # ---------------------------------------------------------------- update
    def candidate_likelihood(self, centres, similarities, sigma_m=None, confidence=1.0):
        """Likelihood grid (peak ~1) of the top-K candidates: floor + confidence * sum_i w_i G_i.

        centres: K x 2 tile centres (m, map frame); similarities: K cosine similarities;
        sigma_m: spread of each candidate over its footprint (m); confidence in [0, 1] scales
        how much this retrieval is trusted (0: no information).
        """
        c = np.asarray(centres, float).reshape(-1, 2)
        s = np.asarray(similarities, float).reshape(-1)
        ok = np.all(np.isfinite(c), axis=1) & np.isfinite(s)
        c, s = c[ok], s[ok]
        if len(s) == 0 or not confidence > 0:
            return None
        sigma = float(sigma_m or self.spread_sigma_m)
        w = np.exp((s - s.max()) / max(self.temperature, 1e-6))
        w *= min(float(confidence), 1.0) / w.sum()
        cx = c[:, :1] - self.residual[0]
        cy = c[:, 1:] - self.residual[1]
        gx = np.exp(-0.5 * np.minimum(((self.xs[None, :] - cx) / sigma) ** 2, 80.0))  # K x cols
        gy = np.exp(-0.5 * np.minimum(((self.ys[None, :] - cy) / sigma) ** 2, 80.0))  # K x rows
        like = gy.T.astype(self.dtype) @ (w[:, None] * gx).astype(self.dtype)
        like += self.dtype(self.likelihood_floor)
        return like

    def update(self, centres=None, similarities=None, sigma_m=None, confidence=1.0, fix=None):
        """Bayes update with the top-K candidates and/or a visual fix (x, y, cov 2x2).

        Returns False (belief unchanged) when there was nothing usable to update with.
        """
        used = False
        if centres is not None and similarities is not None and len(similarities):
            like = self.candidate_likelihood(centres, similarities, sigma_m, confidence)
            if like is not None:
                self.p *= like
                used = True
        if fix is not None:
            used = self._apply_fix(*fix) or used
        if used:
            if not self._normalise():
                self.reset()  # numerically empty: start again from uniform
            self.updates += 1
        return used

    def update_fix(self, xy, cov):
        """Bayes update with only a visual fix."""
        return self.update(fix=(xy[0], xy[1], cov))

    def _apply_fix(self, x, y, cov):
        cov = np.asarray(cov, float).reshape(2, 2)
        if not (math.isfinite(x) and math.isfinite(y) and np.all(np.isfinite(cov))):
            return False
        # the Gaussian is evaluated only within 6 sigma (beyond, it is below the floor anyway)
        cov = 0.5 * (cov + cov.T) + np.eye(2) * self.cell ** 2 / 12.0
        hx, hy = 6.0 * np.sqrt(np.maximum(np.diag(cov), 0.0))
        e = min(max(self.fix_outlier_prob, 1e-9), 1.0 - 1e-9)
        area = self.size * self.cell ** 2
        det = max(float(np.linalg.det(cov)), 1e-12)
        floor = e / (1.0 - e) * 2.0 * math.pi * math.sqrt(det) / area  # relative to the peak
        gx, gy = x - self.residual[0], y - self.residual[1]
        c0 = max(0, int(math.floor((gx - hx - self.origin[0]) / self.cell)))
        c1 = min(self.cols, int(math.ceil((gx + hx - self.origin[0]) / self.cell)) + 1)
        r0 = max(0, int(math.floor((gy - hy - self.origin[1]) / self.cell)))
        r1 = min(self.rows, int(math.ceil((gy + hy - self.origin[1]) / self.cell)) + 1)
        if c0 >= c1 or r0 >= r1:  # the fix is off the grid: only the floor
            self.p *= floor
            return True
        win = self.p[r0:r1, c0:c1].copy()
        g = self._gaussian((x, y), cov, (r0, r1, c0, c1), widen=False)
        self.p *= self.dtype(floor)
        self.p[r0:r1, c0:c1] += win * g
        return True

    def _gaussian(self, xy, cov, window=None, widen=True):
        """exp(-d^2/2) on the cell centres (of a window r0, r1, c0, c1), d the Mahalanobis
        distance (peak 1); the covariance is widened by the cell's own variance (cell^2 / 12).
        The carried sub-cell shift moves the grid's cells, so it is taken off the point."""
        cov = np.asarray(cov, float).reshape(2, 2)
        if widen:
            cov = cov + np.eye(2) * self.cell ** 2 / 12.0
        try:
            inv = np.linalg.inv(0.5 * (cov + cov.T))
        except np.linalg.LinAlgError:
            inv = np.eye(2) / max(self.cell ** 2, 1e-6)
        r0, r1, c0, c1 = window or (0, self.rows, 0, self.cols)
        dx = (self.xs[c0:c1] - (xy[0] - self.residual[0])).astype(self.dtype)
        dy = (self.ys[r0:r1] - (xy[1] - self.residual[1])).astype(self.dtype)
        a, b, d = (self.dtype(v) for v in (inv[0, 0], 2.0 * inv[0, 1], inv[1, 1]))
        q = (a * dx * dx)[None, :] + b * dy[:, None] * dx[None, :] + (d * dy * dy)[:, None]
        np.minimum(q, 80.0, out=q)  # no denormals
        q *= -0.5
        return np.exp(q, out=q)

    def _mix_floor(self, a):
        if a > 0:
            s = self.p.sum()
            self.p *= (1.0 - a) / s if s > 0 else 0.0
            self.p += a / self.size

    def _normalise(self):
        s = float(self.p.sum())
        if not (s > 0 and math.isfinite(s)):
            return False
        self.p /= s
        return True

    # ---------------------------------------------------------------- outputs
    def entropy(self):
        """Normalised entropy in [0, 1]."""
        if self.size < 2:
            return 0.0
        p = self.p.reshape(-1)
        h = -float(np.dot(p, np.log(np.maximum(p, self.dtype(1e-30)))))
        return min(1.0, max(0.0, h / math.log(self.size)))

    def estimate(self):
        """Mode, covariance around the mode, mean/covariance and normalised entropy."""
        k = int(np.argmax(self.p))
        r, c = divmod(k, self.cols)
        mode = np.array([self.xs[c], self.ys[r]]) + self.residual
        w = max(1, int(math.ceil(self.window_m / self.cell)))
        r0, r1 = max(0, r - w), min(self.rows, r + w + 1)
        c0, c1 = max(0, c - w), min(self.cols, c + w + 1)
        win = self.p[r0:r1, c0:c1]
        mass = float(win.sum())
        dx = self.xs[c0:c1] - self.xs[c]
        dy = self.ys[r0:r1] - self.ys[r]
        cell_var = self.cell ** 2 / 12.0
        if mass > 0:
            px, py = win.sum(axis=0), win.sum(axis=1)
            mode_cov = np.array([
                [px @ (dx * dx), dy @ win @ dx],
                [0.0, py @ (dy * dy)]]) / mass
            mode_cov[1, 0] = mode_cov[0, 1]
        else:
            mode_cov = np.zeros((2, 2))
        mode_cov += np.eye(2) * cell_var
        px, py = self.p.sum(axis=0), self.p.sum(axis=1)
        mx, my = float(px @ self.xs), float(py @ self.ys)
        ex, ey = self.xs - mx, self.ys - my
        cov = np.array([[px @ (ex * ex), ey @ self.p @ ex], [0.0, py @ (ey * ey)]])
        cov[1, 0] = cov[0, 1]
        cov += np.eye(2) * cell_var
        mean = np.array([mx, my]) + self.residual
        return HistogramEstimate(mode, mode_cov, mass, mean, cov, self.entropy())

    def probability_at(self, x, y):
        """Probability of the cell containing (x, y) (0 outside the grid)."""
        c = int(math.floor((x - self.residual[0] - self.origin[0]) / self.cell))
        r = int(math.floor((y - self.residual[1] - self.origin[1]) / self.cell))
        if 0 <= r < self.rows and 0 <= c < self.cols:
            return float(self.p[r, c])
        return 0.0

    def mass_within(self, x, y, radius_m):
        """Probability mass within radius_m of (x, y)."""
        dx = self.xs + self.residual[0] - x
        dy = self.ys + self.residual[1] - y
        inside = (dy[:, None] ** 2 + dx[None, :] ** 2) <= radius_m ** 2
        return float(self.p[inside].sum())

    def occupancy(self, log_scale=False):
        """The belief as nav_msgs/OccupancyGrid data: int8 0..100, row-major, row 0 = bottom.

        Scaled so that the most probable cell is 100. log_scale maps log10(p / max) from
        [-4, 0] to [0, 100] (shows the secondary modes that a linear scale hides).
        """
        pmax = float(self.p.max())
        if not pmax > 0:
            return np.zeros(self.size, dtype=np.int8)
        rel = self.p / pmax
        if log_scale:
            rel = np.clip(1.0 + np.log10(np.maximum(rel, 1e-12)) / 4.0, 0.0, 1.0)
        return np.round(rel * 100.0).astype(np.int8).reshape(-1)

    def occupancy_info(self):
        """(resolution, width, height, origin x, origin y) for OccupancyGrid.info; the origin
        includes the carried sub-cell shift."""
        return (self.cell, self.cols, self.rows, float(self.origin[0] + self.residual[0]),
                float(self.origin[1] + self.residual[1]))


def benchmark_step(rows=200, cols=200, cell=5.0, k=10, repeats=200, seed=0):
    """Time one predict + update (+ estimate) on a rows x cols grid; returns a dict of ms.

    Not a test: bench/bench_filters.py calls it. The update uses k candidates and a fix.
    Wall-clock times per phase, and the process CPU time of the whole step (robust to other
    processes sharing the cores).
    """
    rng = np.random.default_rng(seed)
    hf = HistogramFilter((0.0, 0.0), (rows, cols), cell)
    span = np.array([cols * cell, rows * cell])
    pos = span / 2
    times = {'predict': [], 'update': [], 'estimate': [], 'total': [], 'total_cpu': []}
    for _ in range(repeats):
        d = rng.normal(0.0, 10.0, 2)
        pos = np.clip(pos + d, 0.0, span)
        centres = np.vstack([pos + rng.normal(0, 10, 2), rng.uniform(0, span, (k - 1, 2))])
        sims = np.concatenate([[0.8], rng.uniform(0.4, 0.7, k - 1)])
        c0 = time.process_time()
        t0 = time.perf_counter()
        hf.predict(d, np.eye(2) * 4.0)
        t1 = time.perf_counter()
        hf.update(centres, sims, fix=(pos[0], pos[1], np.eye(2) * 9.0))
        t2 = time.perf_counter()
        hf.estimate()
        t3 = time.perf_counter()
        c1 = time.process_time()
        times['predict'].append(t1 - t0)
        times['update'].append(t2 - t1)
        times['estimate'].append(t3 - t2)
        times['total'].append(t3 - t0)
        times['total_cpu'].append(c1 - c0)
    out = {'grid': [rows, cols], 'cell_m': cell, 'k': k, 'repeats': repeats}
    for key, v in times.items():
        v = np.asarray(v) * 1e3
        out[f'{key}_ms_median'] = round(float(np.median(v)), 3)
        out[f'{key}_ms_p95'] = round(float(np.percentile(v, 95)), 3)
    return out
