"""Coverage tracking: which cells the footprint has swept, from the vehicle's own pose.

The footprint is the planner's: a disc of diameter ``swath_width`` dragged along the pose
track (OpenCV draws thick lines with round ends, which is that shape). `at_path_end` and
`mop_up_decision` decide, at the end of a path, whether the uncovered remainder is planned
again (a mop-up pass).
"""

import math

import cv2
import numpy as np


class CoverageTracker:
    """Covered cells of a grid (row 0 = bottom, as GridMap) and progress over a target mask."""

    def __init__(self, shape, resolution, origin, swath_width, target=None, max_jump_m=None):
        self.resolution = float(resolution)
        self.origin = (float(origin[0]), float(origin[1]))
        self.half_cells = swath_width / 2.0 / self.resolution
        self.covered = np.zeros(shape, bool)
        self.target = np.ones(shape, bool) if target is None else np.asarray(target, bool)
        self.max_jump_m = max_jump_m if max_jump_m is not None else 4.0 * swath_width
        self._last = None
        self._canvas = np.zeros(shape, np.uint8)

    def _px(self, x, y):
        return ((x - self.origin[0]) / self.resolution - 0.5,
                (y - self.origin[1]) / self.resolution - 0.5)

    def update(self, x, y):
        """Sweep from the last pose to (x, y). A jump longer than max_jump_m (a relocalised
        pose, a teleport) is not swept: only the disc at the new pose is. Returns the newly
        covered cell count."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return 0
        p = self._px(x, y)
        last, self._last = self._last, p
        shift = 4
        scale = 1 << shift
        canvas = self._canvas
        canvas[:] = 0
        radius = int(round(self.half_cells * scale))
        thickness = max(1, int(round(2 * self.half_cells)))
        a = (int(round(p[0] * scale)), int(round(p[1] * scale)))
        if last is not None and math.hypot(p[0] - last[0], p[1] - last[1]) * \
                self.resolution <= self.max_jump_m:
            b = (int(round(last[0] * scale)), int(round(last[1] * scale)))
            cv2.line(canvas, a, b, 1, thickness, cv2.LINE_8, shift)
        cv2.circle(canvas, a, radius, 1, -1, cv2.LINE_8, shift)
        new = (canvas > 0) & ~self.covered
        self.covered |= new
        return int(new.sum())

    def set_target(self, target):
        self.target = np.asarray(target, bool)

    @property
    def progress_percent(self):
        n = int(self.target.sum())
        if n == 0:
            return 100.0
        return 100.0 * float((self.covered & self.target).sum()) / n


def at_path_end(path, index, position, tolerance, still_s, idle_s):
    """Whether the vehicle is done with `path` (N x 2): on the last segment (`index`: the
    segment it is on) within `tolerance` of the last waypoint, or standing still for `idle_s`
    anywhere (`still_s`: since when; the follower has given up waypoints it got stuck at, the
    last one included, and the segment index may have lost it). Any consistent units."""
    if len(path) == 0 or still_s >= idle_s:
        return True
    if index < len(path) - 2:
        return False
    end = np.asarray(path[-1], float)
    return math.hypot(position[0] - end[0], position[1] - end[1]) <= tolerance


def mop_up_decision(progress_percent, goal_percent, mop_ups, max_mop_ups):
    """At the end of a path: (True, why) when the uncovered remainder is to be planned again,
    (False, why) when the survey stops there (goal met, or every mop-up pass spent)."""
    if progress_percent >= goal_percent:
        return False, f'coverage {progress_percent:.1f}% >= {goal_percent:g}%'
    if mop_ups >= max_mop_ups:
        return False, (f'coverage {progress_percent:.1f}% < {goal_percent:g}% but '
                       f'{mop_ups} of {max_mop_ups} mop-up passes spent')
    return True, f'coverage {progress_percent:.1f}% < {goal_percent:g}%'
