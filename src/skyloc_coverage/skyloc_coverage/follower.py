"""Path following: pure pursuit with speed and yaw-rate limits, corner-aware.

The look-ahead point never goes past a corner sharper than `corner_deg`, so boustrophedon
turns are flown as drawn (a plain pure pursuit would cut them and leave strips uncovered);
at a corner a ground robot turns in place. A holonomic vehicle (multirotor) flies towards
the look-ahead point in any direction and turns to face along the path.
"""

from dataclasses import dataclass
import math

import numpy as np


@dataclass
class FollowerConfig:
    lookahead_m: float = 0.5
    speed: float = 0.4               # m/s cruise
    max_yaw_rate: float = 1.0        # rad/s
    goal_tolerance_m: float = 0.1
    corner_deg: float = 30.0
    rotate_in_place_deg: float = 35.0   # ground robot: larger heading errors turn in place
    holonomic: bool = False
    yaw_gain: float = 1.5


class PurePursuit:
    """Follow a polyline; `command(x, y, yaw)` -> (vx, vy, yaw_rate) in the body frame."""

    def __init__(self, config=None):
        self.cfg = config or FollowerConfig()
        self.path = np.zeros((0, 2))
        self.done = True
        self._seg = 0
        self._s = 0.0
        self._cum = np.zeros(0)
        self._corners = np.zeros(0, int)
        self._corner_set = set()

    def set_path(self, points):
        pts = np.asarray(points, float).reshape(-1, 2)
        keep = np.ones(len(pts), bool)
        if len(pts) > 1:
            keep[1:] = np.hypot(*np.diff(pts, axis=0).T) > 1e-9
        self.path = pts[keep]
        self._seg = 0
        self.done = len(self.path) == 0
        d = np.diff(self.path, axis=0)
        self._cum = np.concatenate(([0.0], np.cumsum(np.hypot(*d.T)))) if len(d) else \
            np.zeros(len(self.path))
        heading = np.arctan2(d[:, 1], d[:, 0]) if len(d) else np.zeros(0)
        turn = np.abs((np.diff(heading) + np.pi) % (2 * np.pi) - np.pi)
        self._corners = np.flatnonzero(np.degrees(turn) > self.cfg.corner_deg) + 1
        self._corner_set = set(self._corners.tolist())
        self._s = 0.0

    def skip(self):
        """Give up the waypoint being approached (it cannot be reached): aim at the next."""
        if self.done or self._seg + 1 >= len(self.path) - 1:
            self.done = True
            return
        self._seg += 1
        self._s = self._cum[self._seg]

    @property
    def remaining_m(self):
        return float(self._cum[-1] - self._s) if len(self.path) > 1 and not self.done else 0.0

    def progress_index(self):
        return self._seg

    def _project(self, p):
        """Closest point on the path from the current segment up to the next corner."""
        best = None
        corners = self._corner_set
        for i in range(self._seg, len(self.path) - 1):
            a, b = self.path[i], self.path[i + 1]
            d = b - a
            l2 = float(d @ d)
            t = 0.0 if l2 < 1e-12 else float(np.clip((p - a) @ d / l2, 0.0, 1.0))
            dist = float(np.hypot(*(a + t * d - p)))
            if best is None or dist < best[0] - 1e-9:
                best = (dist, i, t)
            if i + 1 in corners or i - self._seg >= 8:
                break        # a corner is passed by reaching it, never by a shortcut
        return best

    def command(self, x, y, yaw):
        """Body-frame (vx, vy, yaw_rate); zeros once the end is reached (then `done`)."""
        cfg = self.cfg
        if self.done or len(self.path) == 0:
            self.done = True
            return 0.0, 0.0, 0.0
        p = np.array([x, y], float)
        goal = self.path[-1]
        if len(self.path) == 1:
            self._s = 0.0
            target = goal
        else:
            _, i, t = self._project(p)
            self._s = self._cum[i] + t * (self._cum[i + 1] - self._cum[i])
            # a segment is left only once its end is reached
            self._seg = i + 1 if t >= 1.0 - 1e-9 and i + 1 < len(self.path) - 1 else i
            s_target = self._s + cfg.lookahead_m
            nxt = self._corners[self._corners > self._seg]
            if len(nxt):
                s_target = min(s_target, self._cum[nxt[0]])
            s_target = min(s_target, self._cum[-1])
            k = int(np.clip(np.searchsorted(self._cum, s_target, side='right') - 1, 0,
                            len(self.path) - 2))
            seg_len = self._cum[k + 1] - self._cum[k]
            u = 0.0 if seg_len < 1e-12 else (s_target - self._cum[k]) / seg_len
            target = self.path[k] + min(1.0, u) * (self.path[k + 1] - self.path[k])
        to_goal = float(np.hypot(*(goal - p)))
        if to_goal <= cfg.goal_tolerance_m and (len(self.path) == 1
                                                or self._seg >= len(self.path) - 2):
            self.done = True
            return 0.0, 0.0, 0.0
        dx, dy = target - p
        dist = math.hypot(dx, dy)
        bearing = math.atan2(dy, dx)
        alpha = (bearing - yaw + math.pi) % (2 * math.pi) - math.pi
        # slow down near the target point (a corner or the end) to stop on it
        speed = min(cfg.speed, max(0.05, 1.5 * dist))
        if cfg.holonomic:
            c, s = math.cos(yaw), math.sin(yaw)
            vx_w, vy_w = (speed * dx / dist, speed * dy / dist) if dist > 1e-9 else (0.0, 0.0)
            wz = float(np.clip(cfg.yaw_gain * alpha, -cfg.max_yaw_rate, cfg.max_yaw_rate)) \
                if dist > 2 * cfg.goal_tolerance_m else 0.0
            return c * vx_w + s * vy_w, -s * vx_w + c * vy_w, wz
        if abs(alpha) > math.radians(cfg.rotate_in_place_deg):
            return 0.0, 0.0, math.copysign(cfg.max_yaw_rate, alpha) * min(1.0, abs(alpha))
        curvature = 2.0 * math.sin(alpha) / max(dist, 1e-3)
        v = speed * math.cos(alpha)
        wz = v * curvature
        if abs(wz) > cfg.max_yaw_rate:
            v *= cfg.max_yaw_rate / abs(wz)
            wz = math.copysign(cfg.max_yaw_rate, wz)
        return v, 0.0, wz
