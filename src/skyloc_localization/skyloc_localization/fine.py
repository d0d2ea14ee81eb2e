"""Fine position: where, inside a map window, the north-up query crop lies (metres, 2x2 cov).

Once the query is north-up and at map scale (skyloc_perception.normalize), the unknowns left
between it and the map are a translation (the position), a small rotation (the heading error,
a few degrees) and a small scale (the barometric altitude error, 5-10%).  Two matchers:

* :class:`CorrelationMatcher` (the default): normalised cross-correlation of *orientation
  fields* -- the doubled-angle gradient direction weighted by the square root of the gradient
  magnitude, after a small blur -- of the query crop inside the map window (OpenCV
  matchTemplate).  Field boundaries, roads and tree lines keep their direction across seasons
  and exposure while colour, texture detail and even contrast polarity change (the doubled
  angle makes a dark road on light fields and a light road on dark fields the same), which is
  where keypoints fail: on the procedural world's summer-vs-map pairs SIFT + RANSAC found a
  verifiable transform for about a quarter of the queries, the orientation correlation for
  over 90% (median error about 1 m at 1 m/px).  The small rotation/scale is searched by the
  caller (query variants); the peak is refined to sub-pixel by a quadratic fit.  Quality:
  the peak value and its ratio to the best peak outside ``exclusion_m``; a query crop
  larger than the view is black outside it, and that part is masked out; below
  ``min_peak``/``min_ratio`` there is no fix.  The covariance is the inverse curvature of the
  correlation surface at the peak (elongated along a road), scaled so that its mean sigma
  shrinks as the peak stands out: sigma = res * (0.5 + 2 / (ratio - 1)).
* :class:`KeypointMatcher`: SIFT (RootSIFT descriptors, CLAHE), Lowe's ratio test and a
  RANSAC 4-DOF similarity (estimateAffinePartial2D: better conditioned than an 8-DOF
  homography for the same matches); the inlier count is the geometric score.  Good on real
  imagery with stable texture, weak across the procedural seasons.

A "no fix" is ``FineResult.ok`` False with ``reason`` saying why, never a wrong position with
a small covariance.
"""

from dataclasses import dataclass, field
import math

import cv2
import numpy as np


@dataclass
class Features:
    """Keypoints (px, [N, 2] float32) and RootSIFT descriptors ([N, 128] float32)."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self):
        return len(self.points)


@dataclass
class FineResult:
    ok: bool
    x: float = math.nan
    y: float = math.nan
    covariance: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))
    inliers: int = 0
    matches: int = 0
    rotation_deg: float = math.nan   # query -> map rotation (yaw error, CCW positive)
    scale: float = math.nan          # query -> map scale (altitude error: true = meas / scale)
    rms_px: float = math.nan
    peak: float = math.nan           # correlation peak (CorrelationMatcher)
    peak_ratio: float = math.nan     # peak / best peak elsewhere
    reason: str = ''

    @property
    def sigma_m(self):
        """sqrt of the largest eigenvalue of the covariance (m), NaN without a fix."""
        if not self.ok:
            return math.nan
        return float(math.sqrt(max(np.linalg.eigvalsh(self.covariance))))

    def as_dict(self):
        return {'ok': self.ok, 'x': self.x, 'y': self.y,
                'covariance': np.asarray(self.covariance).tolist(), 'inliers': self.inliers,
                'matches': self.matches, 'rotation_deg': self.rotation_deg,
                'scale': self.scale, 'rms_px': self.rms_px, 'peak': self.peak,
                'peak_ratio': self.peak_ratio, 'reason': self.reason}


class KeypointMatcher:
    """SIFT + ratio test + RANSAC similarity between a query crop and a map window.

    ``max_rotation_deg``, ``scale_range``: the transform must stay within them (the sensors'
    error budget, with margin); ``min_inliers``: below this there is no fix; ``ransac_px``:
    RANSAC reprojection threshold in pixels.
    """

    def __init__(self, min_inliers=12, ratio=0.8, ransac_px=3.0, max_rotation_deg=15.0,
                 scale_range=(0.8, 1.25), max_features=1500, clahe=True):
        self.min_inliers = int(min_inliers)
        self.ratio = float(ratio)
        self.ransac_px = float(ransac_px)
        self.max_rotation_deg = float(max_rotation_deg)
        self.scale_range = tuple(float(s) for s in scale_range)
        self._sift = cv2.SIFT_create(nfeatures=int(max_features))
        self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)) if clahe else None
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    def features(self, rgb, mask=None):
        """Features of an RGB (or grey) uint8 image; ``mask``: uint8, 0 = ignore."""
        grey = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb),
                                                      cv2.COLOR_RGB2GRAY)
        if mask is None:
            mask = (grey > 0).astype(np.uint8) * 255  # black = outside the view / the map
            mask = cv2.erode(mask, np.ones((9, 9), np.uint8))
        if self._clahe is not None:
            grey = self._clahe.apply(grey)
        keypoints, desc = self._sift.detectAndCompute(grey, mask)
        if desc is None or not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
        desc = desc.astype(np.float32)
        desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
        desc = np.sqrt(desc)
        points = np.array([k.pt for k in keypoints], np.float32)
        # OpenCV keypoint coordinates have pixel centres at integers, as our pixel indices
        return Features(points, desc)

    def match(self, query, window):
        """RANSAC similarity query -> window: a Match (matrix None when none was found)."""
        empty = np.zeros((0, 2), np.float32)
        if len(query) < 3 or len(window) < 3:
            return Match(None, np.zeros(0, bool), empty, empty)
        pairs = self._matcher.knnMatch(query.descriptors, window.descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        src = query.points[[m.queryIdx for m in good]].reshape(-1, 2)
        dst = window.points[[m.trainIdx for m in good]].reshape(-1, 2)
        if len(good) < 3:
            return Match(None, np.zeros(len(good), bool), src, dst)
        matrix, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_px,
            maxIters=2000, confidence=0.995, refineIters=10)
        if matrix is None:
            return Match(None, np.zeros(len(good), bool), src, dst)
        return Match(matrix, inliers.ravel().astype(bool), src, dst)


@dataclass
class Match:
    """A RANSAC similarity (2x3, query px -> window px), its inlier mask and the matches."""

    matrix: np.ndarray
    inliers: np.ndarray
    src: np.ndarray
    dst: np.ndarray

    @property
    def count(self):
        return len(self.src)

    @property
    def score(self):
        """The geometric score: RANSAC inliers (0 without a transform)."""
        return int(self.inliers.sum()) if self.matrix is not None else 0


def locate(matcher, query_features, query_centre_px, window_features, window_to_map,
           map_px_m):
    """Fine fix of the query centre in the map: a FineResult.

    ``query_centre_px``: (col, row) of the nadir point in the query crop; ``window_to_map``:
    function (col, row) -> map (x, y) of a window pixel; ``map_px_m``: metres per window pixel
    (the same scale as the query crop's, both north-up).
    """
    return solve(matcher, matcher.match(query_features, window_features), query_centre_px,
                 window_to_map, map_px_m)


def solve(matcher, match, query_centre_px, window_to_map, map_px_m):
    """The FineResult of a Match (see :func:`locate`)."""
    matrix, inliers, count, n = match.matrix, match.inliers, match.count, match.score
    if matrix is None or n < matcher.min_inliers:
        return FineResult(False, inliers=n, matches=count,
                          reason=f'{n} inliers of {count} matches (< {matcher.min_inliers})')
    a, b = matrix[0, 0], matrix[1, 0]
    scale = math.hypot(a, b)
    # pixel rows point down: a CCW rotation of the ground is a negative image angle
    rotation = -math.degrees(math.atan2(b, a))
    common = dict(inliers=n, matches=count, rotation_deg=rotation, scale=scale)
    if abs(rotation) > matcher.max_rotation_deg:
        return FineResult(False, reason=f'rotation {rotation:.1f} deg outside '
                                        f'+-{matcher.max_rotation_deg:g}', **common)
    if not matcher.scale_range[0] <= scale <= matcher.scale_range[1]:
        return FineResult(False, reason=f'scale {scale:.3f} outside {matcher.scale_range}',
                          **common)
    src, dst = match.src[inliers], match.dst[inliers]
    pred = src @ matrix[:, :2].T + matrix[:, 2]
    residual = np.linalg.norm(pred - dst, axis=1)
    rms = float(math.sqrt(np.mean(residual ** 2)))
    cx, cy = matrix @ np.array([query_centre_px[0], query_centre_px[1], 1.0])
    x, y = window_to_map(cx, cy)
    # spread of the inliers: bunched inliers extrapolate the centre badly
    spread = float(np.sqrt(np.mean(np.sum((dst - dst.mean(axis=0)) ** 2, axis=1))))
    offset = float(np.hypot(*(dst.mean(axis=0) - (cx, cy))))
    leverage = 1.0 + (offset / max(spread, 1.0)) ** 2
    sigma_px = max(1.0, rms * math.sqrt(2.0 * leverage / n) * (1.0 + 10.0 / n))
    sigma = sigma_px * map_px_m
    cov = np.eye(2) * sigma ** 2
    return FineResult(True, float(x), float(y), cov, rms_px=rms, **common)


def orientation_field(rgb, blur_px=1.0, chroma=0.0):
    """[H, W, 2] float32 orientation field of an RGB/grey uint8 image (zero where black).

    ``chroma`` > 0 (RGB input): the gradients of the CIE Lab a and b channels, times
    ``chroma``, join the grey one in one structure tensor (Di Zenzo): a boundary between two
    fields of the same brightness but another colour is an edge too.  ``chroma`` 0 is the grey
    field alone.
    """
    grey = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    inside = (grey > 0).astype(np.float32)
    valid = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8))
    lab = None
    if chroma > 0 and rgb.ndim == 3:
        lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
    # the blur is normalised by the share of seen pixels under it: the step from the image to
    # the black outside the view (or the map) leaves no edge just inside its border
    norm = None
    if blur_px > 0 and not inside.all():
        norm = np.maximum(cv2.GaussianBlur(inside, (0, 0), blur_px), 1e-3)
    # one channel at a time, in place where possible: the whole map's field is computed once
    # and its peak memory counts on a Pi
    jxx = jyy = jxy = None
    for k in range(1 if lab is None else 3):
        g = grey.astype(np.float32) if k == 0 else lab[..., k].astype(np.float32)
        if k:
            g *= chroma
        if norm is not None:
            g *= inside
            g = cv2.GaussianBlur(g, (0, 0), blur_px)
            g /= norm
        elif blur_px > 0:
            g = cv2.GaussianBlur(g, (0, 0), blur_px)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1)
        del g
        if jxx is None:
            jxx, jyy, jxy = gx * gx, gy * gy, gx * gy
        else:
            jxx += gx * gx
            jyy += gy * gy
            jxy += gx * gy
        del gx, gy
    del lab, norm, inside
    # |field| = sqrt(mag), doubled angle: weight = valid / mag^1.5
    mag = jxx + jyy
    np.sqrt(mag, out=mag)
    mag += 1e-3
    weight = np.sqrt(mag)
    weight *= mag
    np.divide(valid, weight, out=weight)
    del mag
    out = np.empty(grey.shape + (2,), np.float32)
    np.subtract(jxx, jyy, out=jxx)
    np.multiply(jxx, weight, out=out[..., 0])
    del jxx, jyy
    jxy *= 2.0
    np.multiply(jxy, weight, out=out[..., 1])
    return out


@dataclass
class Peak:
    """A correlation peak: score, second-best score, template-centre position (window px,
    sub-pixel) and the 2x2 curvature (Hessian) of the score there."""

    score: float
    second: float
    col: float
    row: float
    hessian: np.ndarray

    @property
    def ratio(self):
        return self.score / max(self.second, 1e-3)


# weight of the colour edges beside the grey ones (orientation_field).  Localizer with 2
# footprints, procedural Recall@1 summer / autumn, tuning seeds 2 and 3 (90 queries a season
# each): grey alone 0.90 / 0.77 and 0.94 / 0.81; chroma 2: 0.93 / 0.84 and 0.95 / 0.85;
# chroma 3: 0.90 / 0.88 and 0.94 / 0.90; chroma 4: 0.89 / 0.87 and 0.94 / 0.90; chroma 6:
# 0.83 / 0.82 and 0.94 / 0.92.  The closed-loop survey (bench_survey.py, node path):
# fused RMSE 4.42 -> 2.39 m, valid fixes 0.79 -> 0.82 from grey to chroma 3
CHROMA = 3.0


class CorrelationMatcher:
    """Orientation-field correlation of a query crop inside a larger map window; ``chroma``:
    see :func:`orientation_field`."""

    MASK_MIN_SHARE = 0.02   # below this share of black, the mask changes nothing but the time

    def __init__(self, blur_px=1.0, min_peak=0.12, min_ratio=1.3, exclusion_m=8.0,
                 chroma=CHROMA):
        self.blur_px = float(blur_px)
        if not (math.isfinite(chroma) and chroma >= 0):
            raise ValueError(f'chroma must be a finite number >= 0, got {chroma}')
        self.chroma = float(chroma)
        self.min_peak = float(min_peak)
        self.min_ratio = float(min_ratio)
        self.exclusion_m = float(exclusion_m)

    def field(self, rgb):
        return orientation_field(rgb, self.blur_px, self.chroma)

    def surface(self, window_field, query_field, mask=False):
        """The TM_CCORR_NORMED surface of the query field over the window field; with
        ``mask``, the query's black parts (outside the camera's view) are left out of the
        window's norm too, so a larger query crop may reach past the view without penalty.
        The caller decides, once for all the variants it compares (masked and plain scores
        differ); the masked matchTemplate takes ~1.7x as long."""
        if mask:
            valid = (np.abs(query_field).sum(axis=2) > 0).astype(np.float32)
            if valid.mean() < 1.0 - self.MASK_MIN_SHARE:
                mask = np.ascontiguousarray(np.dstack([valid] * query_field.shape[2]))
                surface = cv2.matchTemplate(window_field, query_field, cv2.TM_CCORR_NORMED,
                                            mask=mask)
                # a window part with (almost) no energy under the mask divides by ~0: NaN or
                # values past +-1, no evidence either way
                surface[~(np.abs(surface) <= 1.0 + 1e-3)] = 0.0
                return np.clip(surface, -1.0, 1.0)
        return cv2.matchTemplate(window_field, query_field, cv2.TM_CCORR_NORMED)

    def correlate(self, window_field, query_field, res_m, mask=False):
        """The best Peak of the query field inside the window field (same m/px: ``res_m``);
        ``mask``: see :meth:`surface`."""
        wh, ww = window_field.shape[:2]
        qh, qw = query_field.shape[:2]
        if qh > wh or qw > ww:
            raise ValueError(f'query field {qw}x{qh} is larger than the window {ww}x{wh}')
        surface = self.surface(window_field, query_field, mask)
        _, top, _, (c, r) = cv2.minMaxLoc(surface)
        masked = surface.copy()
        cv2.circle(masked, (c, r), max(1, int(round(self.exclusion_m / res_m))), -1.0, -1)
        second = float(masked.max()) if masked.size else 0.0
        dc = dr = 0.0
        hess = np.eye(2) * -1.0
        if 0 < c < surface.shape[1] - 1 and 0 < r < surface.shape[0] - 1:
            p = surface[r - 1:r + 2, c - 1:c + 2].astype(np.float64)
            gx = (p[1, 2] - p[1, 0]) / 2.0
            gy = (p[2, 1] - p[0, 1]) / 2.0
            hxx = p[1, 2] - 2 * p[1, 1] + p[1, 0]
            hyy = p[2, 1] - 2 * p[1, 1] + p[0, 1]
            hxy = (p[2, 2] - p[2, 0] - p[0, 2] + p[0, 0]) / 4.0
            hess = np.array([[hxx, hxy], [hxy, hyy]])
            if np.all(np.linalg.eigvalsh(hess) < 0):
                dc, dr = np.clip(-np.linalg.solve(hess, [gx, gy]), -1.0, 1.0)
        return Peak(float(top), second, c + dc + (qw - 1) / 2.0, r + dr + (qh - 1) / 2.0, hess)

    def fix(self, peak, window_to_map, res_m, rotation_deg=0.0, scale=1.0):
        """FineResult of a Peak; ``window_to_map(col, row)`` -> map (x, y)."""
        common = dict(rotation_deg=rotation_deg, scale=scale, peak=peak.score,
                      peak_ratio=peak.ratio)
        if peak.score < self.min_peak or peak.ratio < self.min_ratio:
            return FineResult(False, reason=f'correlation peak {peak.score:.3f} (ratio '
                                            f'{peak.ratio:.2f}) below {self.min_peak} / '
                                            f'{self.min_ratio}', **common)
        x, y = window_to_map(peak.col, peak.row)
        sigma = res_m * (0.5 + 2.0 / max(peak.ratio - 1.0, 1e-3))
        shape = np.eye(2)
        curv = -peak.hessian
        evals, evecs = np.linalg.eigh(curv)
        if np.all(evals > 0):
            inv = 1.0 / np.clip(evals, evals.max() / 10.0, None)  # at most 10:1 in variance
            # pixel rows point south: flip the row axis into north
            flip = np.diag([1.0, -1.0])
            shape = flip @ (evecs * inv) @ evecs.T @ flip
            shape /= math.sqrt(np.linalg.det(shape))
        return FineResult(True, float(x), float(y), shape * sigma ** 2, **common)
