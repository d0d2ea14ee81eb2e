"""LIDAR occupancy mapping: log-odds ray tracing, a static layer, a decaying dynamic layer.

LaserScan ranges follow REP 117: a finite range in [range_min, range_max) is a return (cells
before it are free, its cell is hit); +inf (or >= range_max) means nothing within range_max
(cells up to range_max are free); -inf (too close) and NaN (invalid) say nothing and are
skipped. The dynamic layer's log-odds decay towards 0 (unknown) with time constant
``decay_s``, so an obstacle that is no longer re-observed fades; the static layer (a map file)
never decays. With a static layer, returns within ``static_match_m`` of a static obstacle are
taken as that obstacle seen from a drifted pose and do not enter the dynamic layer.
``obstacle_max_range`` / ``raytrace_max_range`` (0: the sensor's) limit how far returns mark
obstacles and clear free space: a heading error moves a far return by range x error.
"""

import math

import numpy as np

from skyloc_coverage.grid import FREE, GridMap, OCCUPIED, UNKNOWN


class OccupancyMapper:
    """Occupancy grid from scans and poses (grid geometry as GridMap: row 0 = bottom)."""

    def __init__(self, shape, resolution, origin, static=None, hit=0.85, miss=-0.4,
                 clamp=(-2.0, 3.5), occupied_logodds=2.0, free_logodds=-0.6, decay_s=120.0,
                 static_match_m=0.0, obstacle_max_range=0.0, raytrace_max_range=0.0):
        self.shape = tuple(int(v) for v in shape)
        self.resolution = float(resolution)
        self.origin = (float(origin[0]), float(origin[1]))
        if static is not None and static.shape != self.shape:
            raise ValueError(f'static layer shape {static.shape} does not match {self.shape}')
        self.static = None if static is None else np.asarray(static, np.int8)
        self.logodds = np.zeros(self.shape, np.float32)
        self.hit, self.miss = float(hit), float(miss)
        self.clamp = clamp
        self.occupied_logodds, self.free_logodds = occupied_logodds, free_logodds
        self.decay_s = float(decay_s)
        self.obstacle_max_range = float(obstacle_max_range)
        self.raytrace_max_range = float(raytrace_max_range)
        # returns this close to a static obstacle are that obstacle, seen from a pose that has
        # drifted (wheel odometry): they do not become dynamic obstacles
        self._explained = None
        if self.static is not None and static_match_m > 0:
            from skyloc_coverage.grid import inflate
            self._explained = inflate(self.static >= 50, self.resolution,
                                      static_match_m).reshape(-1)
        self._stamp = None
        self._occupied = self._occupied_mask()

    @classmethod
    def from_static(cls, grid, **kwargs):
        return cls(grid.data.shape, grid.resolution, grid.origin, static=grid.data, **kwargs)

    def _occupied_mask(self):
        occ = self.logodds > self.occupied_logodds
        if self.static is not None:
            occ |= self.static >= 50
        return occ

    def integrate(self, x, y, yaw, angles, ranges, range_min, range_max, stamp_s=None):
        """Add one horizontal scan taken at pose (x, y, yaw) in the map frame.

        Returns (newly occupied cells, newly freed cells) as flat-index arrays, and the
        number of beams used.
        """
        ranges = np.asarray(ranges, np.float64)
        angles = np.asarray(angles, np.float64)
        if stamp_s is not None and self._stamp is not None and self.decay_s > 0:
            dt = max(0.0, stamp_s - self._stamp)
            if dt > 0:
                self.logodds *= math.exp(-dt / self.decay_s)
        if stamp_s is not None:
            self._stamp = stamp_s
        with np.errstate(invalid='ignore'):
            hit = np.isfinite(ranges) & (ranges >= range_min) & (ranges < range_max)
            clear = np.isposinf(ranges) | (np.isfinite(ranges) & (ranges >= range_max))
        used = hit | clear
        length = np.where(hit, ranges, range_max)
        # far returns carry the heading error times the range: mark obstacles only near,
        # clear free space a little farther (Nav2's obstacle/raytrace max range)
        if self.raytrace_max_range > 0:
            length = np.minimum(length, self.raytrace_max_range)
        if self.obstacle_max_range > 0:
            with np.errstate(invalid='ignore'):
                hit &= ranges <= self.obstacle_max_range
        a = yaw + angles[used]
        length = length[used]
        res = self.resolution
        h, w = self.shape
        free_idx = np.zeros(0, np.int64)
        if len(a):
            step = 0.5 * res
            t = np.arange(0.0, float(length.max()), step)
            tt = t[None, :]
            valid = tt < (length[:, None] - 0.5 * res)
            px = x + np.cos(a)[:, None] * tt
            py = y + np.sin(a)[:, None] * tt
            cols = np.floor((px - self.origin[0]) / res).astype(np.int64)
            rows = np.floor((py - self.origin[1]) / res).astype(np.int64)
            ok = valid & (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
            free_idx = np.unique(rows[ok] * w + cols[ok])
        hx = x + np.cos(yaw + angles[hit]) * ranges[hit]
        hy = y + np.sin(yaw + angles[hit]) * ranges[hit]
        hc = np.floor((hx - self.origin[0]) / res).astype(np.int64)
        hr = np.floor((hy - self.origin[1]) / res).astype(np.int64)
        ok = (hc >= 0) & (hc < w) & (hr >= 0) & (hr < h)
        hit_idx = np.unique(hr[ok] * w + hc[ok])
        free_idx = np.setdiff1d(free_idx, hit_idx, assume_unique=True)
        if self._explained is not None:
            hit_idx = hit_idx[~self._explained[hit_idx]]
        flat = self.logodds.reshape(-1)
        flat[free_idx] += self.miss
        flat[hit_idx] += self.hit
        np.clip(self.logodds, self.clamp[0], self.clamp[1], out=self.logodds)
        return self._changes() + (int(used.sum()),)

    def decay_to(self, stamp_s):
        """Apply decay up to `stamp_s` without a scan; returns the changes."""
        if self._stamp is not None and self.decay_s > 0 and stamp_s > self._stamp:
            self.logodds *= math.exp(-(stamp_s - self._stamp) / self.decay_s)
        self._stamp = stamp_s
        return self._changes()

    def _changes(self):
        occ = self._occupied_mask()
        new_occ = np.flatnonzero(occ & ~self._occupied)
        new_free = np.flatnonzero(~occ & self._occupied)
        self._occupied = occ
        return new_occ, new_free

    def occupancy(self):
        """Combined int8 grid: static obstacles + dynamic obstacles, free, unknown."""
        data = np.full(self.shape, UNKNOWN, np.int8)
        if self.static is not None:
            data[:] = self.static
        data[self.logodds < self.free_logodds] = FREE
        if self.static is not None:
            data[self.static >= 50] = OCCUPIED
        data[self.logodds > self.occupied_logodds] = OCCUPIED
        return data

    def grid_map(self):
        return GridMap(self.occupancy(), self.resolution, self.origin)
