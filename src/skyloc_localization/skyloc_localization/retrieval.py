"""Retrieval over a map database, geometric re-ranking, and the camera-image localiser.

* :func:`top_k`: cosine similarity of one or more query descriptors with the (memory-mapped,
  float16 or float32) rows of one altitude band, computed in float32 chunks; with several
  query variants a tile's score is its best variant's.
* Rotation/scale search: the IMU heading and the barometric altitude are off by a few degrees
  and 5-10%, and a descriptor of a crop rotated or scaled by that much is measurably less
  similar to its tile.  :class:`Localizer` embeds the query at ``yaw_offsets_deg`` x
  ``scales`` (default -6/0/+6 deg x 0.93/1/1.07, nine descriptors) and keeps each tile's best.
* Geometric verification (:mod:`skyloc_localization.fine`): the top ``verify_k`` distinct
  tiles are re-ranked by the geometric score between the query crop and the map window around
  them (the orientation-correlation peak, or the RANSAC inlier count of SIFT keypoints with
  ``method='keypoints'``); the best verified one gives the fine fix.  When the best
  similarity is weak (below ``weak_similarity``) ``fallback_k`` candidates are verified
  instead (a wider search).
"""

from dataclasses import dataclass, field
import math
import time

import numpy as np

from skyloc_localization.fine import CorrelationMatcher, FineResult, KeypointMatcher, solve


def top_k(descriptors, queries, k, rows=None, chunk=8192):
    """Best ``k`` rows by cosine: (row indices [k], scores [k], best variant per row [k]).

    ``descriptors``: [N, D] float16/float32 (a memmap is read ``chunk`` rows at a time);
    ``queries``: [V, D] or [D] unit vectors; ``rows``: (start, end) to search a slice.
    """
    q = np.asarray(queries, np.float32)
    q = q[None, :] if q.ndim == 1 else q
    start, end = rows if rows is not None else (0, len(descriptors))
    if descriptors.ndim != 2 or descriptors.shape[1] != q.shape[1]:
        raise ValueError(f'database descriptors have dimension {descriptors.shape[-1]}, the '
                         f'query {q.shape[1]}')
    n = end - start
    scores = np.empty(n, np.float32)
    variant = np.empty(n, np.int32)
    for s in range(start, end, chunk):
        block = np.asarray(descriptors[s:min(end, s + chunk)], dtype=np.float32)
        sims = block @ q.T
        variant[s - start:s - start + len(block)] = np.argmax(sims, axis=1)
        scores[s - start:s - start + len(block)] = sims.max(axis=1)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, int), np.zeros(0, np.float32), np.zeros(0, np.int32)
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind='stable')]
    return idx + start, scores[idx], variant[idx]


@dataclass
class Candidate:
    row: int
    x: float
    y: float
    band: int
    similarity: float
    variant: int = 0
    inliers: int = -1            # keypoint inliers; -1: not verified that way
    score: float = -1.0          # geometric score (correlation peak or inliers); -1: none
    fine: FineResult = None
    peak: tuple = None
    to_map: object = None

    def as_dict(self):
        return {'x': round(self.x, 2), 'y': round(self.y, 2), 'band': self.band,
                'similarity': round(float(self.similarity), 4),
                'geometric_score': round(float(self.score), 4)}


@dataclass
class Localization:
    """One query's answer. ``fix``: 'fine' (x, y from fine matching), 'tile' (no fine fix: x,
    y is the best tile's centre, covariance its footprint) or 'none' (empty band)."""

    fix: str
    x: float
    y: float
    covariance: np.ndarray
    similarity: float
    geometric_score: float
    band: int
    footprint_m: float
    candidates: list = field(default_factory=list)
    fine: FineResult = None
    yaw_offset_deg: float = 0.0
    scale: float = 1.0
    timings_ms: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.fix == 'fine'

    @property
    def sigma_m(self):
        return float(math.sqrt(max(np.linalg.eigvalsh(self.covariance))))


def variant_crop(base, base_footprint_m, dyaw_deg, scale, footprint_m, out_px):
    """The crop normalize_query would give at yaw + dyaw and altitude * scale, resampled from
    a larger north-up ``base`` crop (same centre) instead of from the camera image.

    On flat ground under a nadir camera, a yaw offset rotates the north-up crop about its
    centre and an altitude factor scales it: the variant at ground offset d samples the base
    at R(-dyaw) d / scale.  Interpolation aside it equals normalize_query's result.
    """
    import cv2
    b_px = base.shape[0]
    b_res, res = base_footprint_m / b_px, footprint_m / out_px
    th = math.radians(dyaw_deg)
    # crop px -> ground (east, north): S (p - c); ground -> base px: S_b^-1 d + c_b
    s_out = np.diag([res, -res])
    s_base_inv = np.diag([1.0 / b_res, -1.0 / b_res])
    rot = np.array([[math.cos(th), math.sin(th)], [-math.sin(th), math.cos(th)]])  # R(-dyaw)
    a = s_base_inv @ rot @ s_out / scale
    c_out, c_base = (out_px - 1) / 2.0, (b_px - 1) / 2.0
    t = np.array([c_base, c_base]) - a @ np.array([c_out, c_out])
    m = np.hstack((a, t[:, None]))
    interp = cv2.INTER_AREA if res / b_res > 1.5 else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:  # warpAffine has no area filter: pre-shrink the base
        f = b_res / res * 1.25
        small = cv2.resize(base, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        m = np.diag([small.shape[1] / b_px, small.shape[0] / b_px]) @ m
        m[:, 2] += 0.5 * (np.array([small.shape[1], small.shape[0]]) / b_px - 1.0)
        base, interp = small, cv2.INTER_LINEAR
    return cv2.warpAffine(base, m, (out_px, out_px), flags=interp | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class Localizer:
    """North-up query crops / camera images -> Localization, over one Database.

    ``pipeline``: the bundle's DescriptorPipeline (its model_id must be the database's); None
    when descriptors come from elsewhere (the embedder node): then only
    :meth:`localize_descriptor` is available.
    ``top_k``: candidates reported; ``verify_k``: how many distinct candidates are verified
    geometrically (0: no re-ranking, no fine fix); ``weak_similarity``/``fallback_k``: the
    wider verification when the best descriptor match is weak.  ``yaw_offsets_deg`` x
    ``scales``: the query variants searched.  ``method``: 'correlation' (orientation-field
    correlation, the default) or 'keypoints' (SIFT + RANSAC similarity).  ``fine_res_m``:
    metres per pixel of fine matching (never finer than the map); ``window_factor``: the map
    window around a candidate is this many footprints wide.  ``verify_factor``: the
    correlation query crop is up to this many footprints wide where the base crop holds that
    much of the camera's view: :meth:`localize` crops VIEW_MARGIN x verify_factor footprints
    (at least BASE_FACTOR) of the camera image, black where the camera did not see, and the
    correlation masks that out; a footprint-sized crop, as the embedder publishes, stays as
    it is.  The candidate window then leaves ``+-search_m`` around the candidate (None:
    ``window_factor``).  On the procedural benchmark (queries of seed 1, not
    the reported ones) 1.5 footprints, masked, +-12 m lifted Recall@1 from 0.69 to 0.81.
    ``global_fallback``: when no retrieved tile verifies, the query is also correlated over
    the whole map (:meth:`global_candidates`, maps up to ``global_max_px`` pixels at
    ``global_coarse`` x the fine resolution); ``global_always``: those candidates are
    verified beside the retrieved ones on every query, and the best fix of either wins (a
    wrong tile that verifies no longer hides the right place); ``global_k``: how many of
    those places (6 instead of 3 lost 1-2 points on seeds 2 and 3).  With 2 footprints, colour
    edges (``CorrelationMatcher.chroma``) and ``global_always``, Recall@1 on the tuning seeds
    2 and 3 (30 queries per altitude and season) went from 0.89 / 0.91 (summer) and 0.76 /
    0.72 (autumn) to 0.96 / 0.96 and 0.90 / 0.93 (bench/bench_localization.py's queries).
    """

    BASE_FACTOR = 1.55  # base crop / footprint: holds the variants rotated 45 deg and / 0.93
    VIEW_MARGIN = 1.15  # base crop / verification crop: room for the rotation/scale variants
    LARGE_CROP = 1.1    # a base crop this many footprints wide gets the larger verification

    def __init__(self, database, pipeline, top_k=5, verify_k=8, yaw_offsets_deg=(-6.0, 0.0, 6.0),
                 scales=(0.93, 1.0, 1.07), weak_similarity=0.35, fallback_k=20,
                 method='correlation', matcher=None, fine_res_m=1.0, window_factor=2.0,
                 refine_n=2, global_fallback=True, global_coarse=2, global_max_px=4e6,
                 verify_factor=2.0, search_m=12.0, global_always=True, global_k=3):
        if pipeline is not None and pipeline.model_id != database.model_id:
            from skyloc_localization.database import DatabaseError
            raise DatabaseError(f'{database.path}: built with model_id {database.model_id} but '
                                f'the bundle has model_id {pipeline.model_id}')
        if method not in ('correlation', 'keypoints'):
            raise ValueError(f"method must be 'correlation' or 'keypoints', got '{method}'")
        self.db = database
        self.pipeline = pipeline
        self.top_k = int(top_k)
        self.verify_k = int(verify_k)
        self.yaw_offsets_deg = tuple(float(v) for v in yaw_offsets_deg) or (0.0,)
        self.scales = tuple(float(v) for v in scales) or (1.0,)
        self.weak_similarity = float(weak_similarity)
        self.fallback_k = int(fallback_k)
        self.method = method
        self.matcher = matcher or (CorrelationMatcher() if method == 'correlation'
                                   else KeypointMatcher())
        self.fine_res_m = float(fine_res_m)
        self.window_factor = float(window_factor)
        self.refine_n = int(refine_n)
        self.global_fallback = bool(global_fallback) and method == 'correlation'
        self.global_coarse = int(global_coarse)
        self.global_max_px = float(global_max_px)
        if not (math.isfinite(verify_factor) and verify_factor >= 1.0):
            raise ValueError(f'verify_factor must be >= 1, got {verify_factor}')
        self.verify_factor = float(verify_factor)
        self.search_m = None if search_m is None else float(search_m)
        self.global_always = bool(global_always)
        if int(global_k) < 1:
            raise ValueError(f'global_k must be >= 1, got {global_k}')
        self.global_k = int(global_k)
        self.refine_m = 6.0
        self._window_cache = {}
        self._band_centres = {}     # band -> its tiles' centres, float64 (whole-map places)
        self._field = {}
        # localize_descriptor: a fix elsewhere must beat the tracking window's peak by this
        self.prior_margin = 1.3

    def variants(self):
        """[(yaw offset deg, scale)], the order of the descriptors and fine crops."""
        return [(dyaw, s) for s in self.scales for dyaw in self.yaw_offsets_deg]

    def fine_res(self):
        _, grid, _ = self.db.map_image()
        return max(grid.resolution, self.fine_res_m)

    # --------------------------------------------------------------------- query side
    def base_crop(self, image, intrinsics, altitude_m, yaw_rad, band):
        """(north-up base crop, its footprint m) at descriptor scale: BASE_FACTOR footprints,
        more (up to VIEW_MARGIN x verify_factor) where the camera's view reaches that far
        (its ground diagonal; the parts it does not see are black)."""
        from skyloc_perception.normalize import normalize_query
        fp = self.db.bands[band]['footprint_m']
        factor = self.BASE_FACTOR
        if self.method == 'correlation':
            i = intrinsics
            view = 2.0 * altitude_m * math.hypot(max(i.cx, i.width - i.cx) / i.fx,
                                                 max(i.cy, i.height - i.cy) / i.fy)
            factor = max(factor, min(view / fp, self.VIEW_MARGIN * self.verify_factor))
        footprint = fp * factor
        px = int(round(self.pipeline.input_size * factor))
        crop, _ = normalize_query(image, intrinsics, altitude_m, yaw_rad, footprint, px)
        return crop, footprint

    def describe(self, base, base_footprint_m, band):
        """[V, D] descriptors of the variants of a base crop."""
        footprint = self.db.bands[band]['footprint_m']
        return np.stack([self.pipeline.describe(
            variant_crop(base, base_footprint_m, dyaw, s, footprint, self.pipeline.input_size))
            for dyaw, s in self.variants()]).astype(np.float32)

    def search(self, descriptors, band, k):
        """Top-``k`` Candidates of one band for [V, D] (or [D]) descriptors."""
        rows, scores, variant = top_k(self.db.descriptors, descriptors, k,
                                      rows=self.db.band_rows(band))
        c = self.db.centres
        return [Candidate(int(r), float(c[r, 0]), float(c[r, 1]), band, float(s), int(v))
                for r, s, v in zip(rows, scores, variant)]

    # --------------------------------------------------------------------- map side
    def _window(self, x, y, side_px, res):
        """(matcher features or field of the map window centred at (x, y), side px), cached."""
        from skyloc_perception.normalize import map_tile
        key = (round(x, 2), round(y, 2), side_px, round(res, 6))
        hit = self._window_cache.get(key)
        if hit is None:
            image, grid, _ = self.db.map_image()
            tile = map_tile(image, grid, x, y, side_px * res, side_px)
            hit = self.matcher.field(tile) if self.method == 'correlation' \
                else self.matcher.features(tile)
            if len(self._window_cache) > 256:
                self._window_cache.clear()
            self._window_cache[key] = hit
        return hit

    @staticmethod
    def _distinct(candidates, count, footprint, at_fix=False):
        """Up to ``count`` (None: all) candidates in order, leaving out any whose position lies
        within a quarter footprint of one already kept.  ``at_fix``: a candidate's position is
        its fine fix where it has a valid one, else its centre (a retrieved tile and a
        whole-map place are often the same place)."""
        out, seen = [], []
        for cand in candidates:
            if count is not None and len(out) >= count:
                break
            ok = at_fix and cand.fine is not None and cand.fine.ok
            xy = (cand.fine.x, cand.fine.y) if ok else (cand.x, cand.y)
            if all(math.hypot(xy[0] - a, xy[1] - b) >= footprint / 4 for a, b in seen):
                out.append(cand)
                seen.append(xy)
        return out

    def verify(self, candidates, base, base_footprint_m, band, count):
        """Verify up to ``count`` distinct candidates, best first; sets their ``inliers``
        (keypoints) or ``score`` (correlation) and ``fine``.  Returns the verified ones."""
        from skyloc_perception.normalize import ground_of_crop_pixel
        footprint = self.db.bands[band]['footprint_m']
        res = self._map_field()[1] if self.method == 'correlation' else self.fine_res()
        q_px = max(16, int(round(footprint / res)))
        side = int(round(self.window_factor * q_px))
        small_px = None     # set: the larger crop, masked outside the view, then refined
        if self.method == 'correlation' and self.verify_factor > 1.0:
            # a larger query crop (as far as the base crop reaches) is more distinctive; the
            # window then leaves +-search_m for the translation around the candidate
            big = max(16, int(round(min(footprint * self.verify_factor, base_footprint_m)
                                    / res)))
            # only a crop clearly larger than the footprint (localize's base crop; not the
            # embedder's footprint-sized crop of the node path, which may be ~2% larger)
            if big > q_px and base_footprint_m >= self.LARGE_CROP * footprint:
                side = big + 2 * int(round(self.search_m / res)) if self.search_m is not None \
                    else max(side, big + 2)
                small_px, q_px = q_px, big
        q_footprint = q_px * res   # the fine crop is at exactly the map field's m/px
        large = small_px is not None
        chosen = self._distinct(candidates, count, footprint)
        variants = self.variants()

        def to_map(cand):
            def convert(col, row):
                dx, dy = ground_of_crop_pixel(col, row, side * res, side)
                return cand.x + float(dx), cand.y + float(dy)
            return convert

        if self.method == 'keypoints':
            crop = variant_crop(base, base_footprint_m, 0.0, 1.0, footprint, q_px)
            query = self.matcher.features(crop)
            for cand in chosen:
                match = self.matcher.match(query, self._window(cand.x, cand.y, side, res))
                cand.fine = solve(self.matcher, match, ((q_px - 1) / 2.0,) * 2, to_map(cand),
                                  res)
                cand.inliers = match.score
                cand.score = float(match.score)
            return chosen
        fields = {}

        def field(v):
            if v not in fields:
                dyaw, s = variants[v]
                fields[v] = self.matcher.field(
                    variant_crop(base, base_footprint_m, dyaw, s, q_footprint, q_px))
            return fields[v]

        # stage 1: each window with its candidate's best retrieval variant
        for cand in chosen:
            window, cand.to_map = self._field_window(cand.x, cand.y, side)
            peak = self.matcher.correlate(window, field(cand.variant), res, large)
            cand.score, cand.peak = peak.score, (peak, cand.variant)
        # stage 2: the best windows with every variant
        for cand in sorted(chosen, key=lambda c: -c.score)[:self.refine_n]:
            window, _ = self._field_window(cand.x, cand.y, side)
            for v in range(len(variants)):
                if v != cand.peak[1]:
                    peak = self.matcher.correlate(window, field(v), res, large)
                    if peak.score > cand.peak[0].score:
                        cand.peak = (peak, v)
            cand.score = cand.peak[0].score
        for cand in chosen:
            peak, v = cand.peak
            cand.fine = self.matcher.fix(peak, cand.to_map, res, *variants[v])
            if not (large and cand.fine.ok):
                continue
            # a peak on the edge of the +-search_m window: the place may lie beyond it (a
            # neighbouring candidate's window holds it; seed-1 queries: same Recall@1,
            # median error 1.6 -> 1.1 m in autumn at 100 m)
            sc, sr = peak.col - (q_px - 1) / 2.0, peak.row - (q_px - 1) / 2.0
            if min(sc, sr) < 0.5 or max(sc, sr) > side - q_px - 0.5:
                cand.fine = FineResult(False, rotation_deg=cand.fine.rotation_deg,
                                       scale=cand.fine.scale, peak=peak.score,
                                       peak_ratio=peak.ratio,
                                       reason='correlation peak on the edge of the search '
                                              'window')
            else:
                self._refine(cand.fine, base, base_footprint_m, variants[v], small_px, res)
        return chosen

    def _refine(self, fine, base, base_footprint_m, variant, q_px, res):
        """Move a fix found with the large query crop to the peak of the footprint-sized
        centre crop within +-refine_m of it (the centre is what is being located; the outer
        parts of the large crop widen the peak where the yaw/scale are slightly off)."""
        dyaw, s = variant
        crop = variant_crop(base, base_footprint_m, dyaw, s, q_px * res, q_px)
        side = q_px + 2 * max(2, int(round(self.refine_m / res)))
        window, to_map = self._field_window(fine.x, fine.y, side)
        peak = self.matcher.correlate(window, self.matcher.field(crop), res)
        edge = (side - q_px) / 2.0 - 1.0
        if peak.score >= self.matcher.min_peak and abs(peak.col - (side - 1) / 2.0) < edge \
                and abs(peak.row - (side - 1) / 2.0) < edge:
            fine.x, fine.y = to_map(peak.col, peak.row)

    def _map_field(self, coarse=1):
        """(orientation field of the whole map at ``coarse`` x the fine resolution, its m/px),
        cached: a correlation window is then a slice (the map is resampled and filtered
        once)."""
        if coarse not in self._field:
            import cv2
            image, grid, _ = self.db.map_image()
            f = grid.resolution / (self.fine_res() * coarse)
            if f < 1.0:
                size = (max(1, int(round(grid.width * f))), max(1, int(round(grid.height * f))))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            res = grid.width * grid.resolution / image.shape[1]
            self._field[coarse] = (self.matcher.field(image), res)
        return self._field[coarse]

    def global_candidates(self, base, base_footprint_m, band, count=3):
        """The wider search of the degraded mode: the query's orientation field correlated
        over the whole map at ``global_coarse`` x the fine resolution (yaw variants at the
        measured scale), independent of the descriptors; the ``count`` best distinct peaks
        as Candidates (similarity NaN)."""
        import cv2
        field, res = self._map_field(self.global_coarse)
        _, grid, _ = self.db.map_image()
        footprint = self.db.bands[band]['footprint_m']
        q_px = max(8, int(round(min(footprint * self.verify_factor, base_footprint_m) / res)))
        if q_px >= min(field.shape[:2]):
            return []
        top = grid.origin_y + grid.height * grid.resolution
        variants = self.variants()
        peaks = []
        for v, (dyaw, s) in enumerate(variants):
            if s != 1.0 and len(self.scales) > 1:
                continue
            q = self.matcher.field(variant_crop(base, base_footprint_m, dyaw, s, q_px * res,
                                                q_px))
            surface = self.matcher.surface(field, q, mask=True)
            for _ in range(count):
                _, score, _, (c, r) = cv2.minMaxLoc(surface)
                peaks.append((score, c, r, v))
                cv2.circle(surface, (c, r), max(1, int(footprint / 4 / res)), -1.0, -1)
        out = []
        for score, c, r, v in sorted(peaks, reverse=True):
            x = grid.origin_x + (c + (q_px - 1) / 2.0 + 0.5) * res
            y = top - (r + (q_px - 1) / 2.0 + 0.5) * res
            if all(math.hypot(o.x - x, o.y - y) >= footprint / 4 for o in out):
                out.append(Candidate(-1, x, y, band, math.nan, v))
            if len(out) >= count:
                break
        return out

    def _field_window(self, x, y, side):
        """(side x side slice of the map field centred near (x, y), zero outside the map;
        window pixel -> map (x, y) function)."""
        field, res = self._map_field()
        _, grid, _ = self.db.map_image()
        top = grid.origin_y + grid.height * grid.resolution
        c0 = int(round((x - grid.origin_x) / res - 0.5 - (side - 1) / 2.0))
        r0 = int(round((top - y) / res - 0.5 - (side - 1) / 2.0))
        out = np.zeros((side, side, field.shape[2]), np.float32)
        h, w = field.shape[:2]
        a0, a1 = max(r0, 0), min(r0 + side, h)
        b0, b1 = max(c0, 0), min(c0 + side, w)
        if a0 < a1 and b0 < b1:
            out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = field[a0:a1, b0:b1]

        def to_map(col, row):
            return (grid.origin_x + (c0 + col + 0.5) * res, top - (r0 + row + 0.5) * res)
        return out, to_map

    # --------------------------------------------------------------------- the localiser
    def localize_crop(self, base, base_footprint_m, band):
        """A north-up crop centred on the nadir point (``base_footprint_m`` wide, at least
        the band's footprint; BASE_FACTOR footprints lets every variant fill its crop)."""
        timings = {}
        t0 = time.perf_counter()
        descriptors = self.describe(base, base_footprint_m, band)
        t1 = time.perf_counter()
        k = max(self.top_k, self.verify_k, self.fallback_k)
        candidates = self.search(descriptors, band, k)
        t2 = time.perf_counter()
        timings['describe'], timings['retrieval'] = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        footprint = self.db.bands[band]['footprint_m']
        if not candidates:
            return Localization('none', math.nan, math.nan, np.full((2, 2), np.nan), 0.0, 0,
                                band, footprint, timings_ms=timings)
        verified = []
        if self.verify_k > 0:
            weak = candidates[0].similarity < self.weak_similarity
            verified = self.verify(candidates, base, base_footprint_m, band,
                                   self.fallback_k if weak else self.verify_k)
            timings['verification'] = (time.perf_counter() - t2) * 1e3
        fixes = [c for c in verified if c.fine is not None and c.fine.ok]
        if (not fixes or self.global_always) and self.global_fallback and self.verify_k > 0:
            _, grid, _ = self.db.map_image()
            coarse_px = grid.width * grid.height * (grid.resolution / (
                self.fine_res() * self.global_coarse)) ** 2
            if coarse_px <= self.global_max_px:
                t3 = time.perf_counter()
                places = self.global_candidates(base, base_footprint_m, band, self.global_k)
                self._nearest_tile_similarity(places, descriptors, band)
                extra = self.verify(places, base, base_footprint_m, band, self.global_k)
                timings['global_search'] = (time.perf_counter() - t3) * 1e3
                verified += extra
                fixes += [c for c in extra if c.fine is not None and c.fine.ok]
        ranked = self._distinct(sorted(verified, key=lambda c: -c.score) + [
            c for c in candidates if c not in verified], None, footprint, at_fix=True)
        variants = self.variants()
        if fixes:
            best = max(fixes, key=lambda c: c.score)
            f = best.fine
            return Localization('fine', f.x, f.y, f.covariance, best.similarity, best.score,
                                band, footprint, ranked[:self.top_k], f,
                                yaw_offset_deg=f.rotation_deg if self.method == 'correlation'
                                else 0.0, scale=f.scale, timings_ms=timings)
        best = ranked[0]
        # no fine fix: the tile centre, with a covariance of half a footprint
        sigma = footprint / 2.0
        dyaw, s = variants[best.variant] if best.variant < len(variants) else (0.0, 1.0)
        return Localization('tile', best.x, best.y, np.eye(2) * sigma ** 2, best.similarity,
                            max(best.score, 0.0), band, footprint, ranked[:self.top_k],
                            best.fine, yaw_offset_deg=dyaw, scale=s, timings_ms=timings)

    def _nearest_tile_similarity(self, places, descriptors, band):
        """A whole-map correlation place has no descriptor score of its own: give it the
        cosine similarity (best variant) of the band's tile nearest to it."""
        start, end = self.db.band_rows(band)
        centres = self._band_centres.get(band)
        if centres is None:
            centres = self._band_centres[band] = np.asarray(self.db.centres[start:end],
                                                            np.float64)
        for cand in places:
            row = start + int(np.argmin(np.hypot(centres[:, 0] - cand.x,
                                                 centres[:, 1] - cand.y)))
            tile = np.asarray(self.db.descriptors[row], np.float32)
            cand.similarity = float(np.max(np.atleast_2d(descriptors) @ tile))

    def localize_descriptor(self, descriptor, crop, footprint_m, band, prior=None, wide=False):
        """The localizer node's query: one descriptor computed by the embedder from ``crop``
        (its north-up crop of ``footprint_m``, the band's footprint), no re-embedding.

        Retrieval uses the one descriptor; geometric verification still searches the yaw /
        scale variants (resampled from the crop: the parts they need outside it are black and
        carry no weight in the correlation).  ``prior``: (x, y) where the filter expects the
        vehicle; its map window is verified first (tracking: the fine fix is found even when
        retrieval ranks the right tile low); ``crop`` None: retrieval only.  ``wide``: verify
        ``fallback_k`` tiles (the degraded mode's wider search).  Same Localization as
        :meth:`localize_crop`.
        """
        timings = {}
        t0 = time.perf_counter()
        centre = self.variants().index((0.0, 1.0)) if (0.0, 1.0) in self.variants() else 0
        k = max(self.top_k, self.verify_k, self.fallback_k)
        candidates = self.search(np.asarray(descriptor, np.float32), band, k)
        for cand in candidates:
            cand.variant = centre
        t1 = time.perf_counter()
        timings['retrieval'] = (t1 - t0) * 1e3
        fp = self.db.bands[band]['footprint_m']
        if not candidates:
            return Localization('none', math.nan, math.nan, np.full((2, 2), np.nan), 0.0, 0,
                                band, fp, timings_ms=timings)
        pool = list(candidates)
        if prior is not None and all(math.isfinite(v) for v in prior[:2]):
            near = min(candidates, key=lambda c: math.hypot(c.x - prior[0], c.y - prior[1]))
            pool.insert(0, Candidate(-1, float(prior[0]), float(prior[1]), band,
                                     near.similarity, centre))
        verified = []
        if self.verify_k > 0 and crop is not None:
            weak = wide or candidates[0].similarity < self.weak_similarity
            count = (self.fallback_k if weak else self.verify_k) + int(prior is not None)
            verified = self.verify(pool, crop, footprint_m, band, count)
            timings['verification'] = (time.perf_counter() - t1) * 1e3
        fixes = [c for c in verified if c.fine is not None and c.fine.ok]
        ranked = sorted(verified, key=lambda c: -c.score) + \
            [c for c in candidates if c not in verified]
        timings['total'] = (time.perf_counter() - t0) * 1e3
        if fixes:
            best = max(fixes, key=lambda c: c.score)
            tracked = [c for c in fixes if c.row == -1]
            if tracked and best.score < self.prior_margin * tracked[0].score:
                best = tracked[0]   # the window where the filter expects it, unless beaten
            f = best.fine
            return Localization('fine', f.x, f.y, f.covariance, candidates[0].similarity,
                                best.score, band, fp, ranked[:self.top_k], f,
                                yaw_offset_deg=f.rotation_deg, scale=f.scale, timings_ms=timings)
        best = candidates[0]
        return Localization('tile', best.x, best.y, np.eye(2) * (fp / 2.0) ** 2,
                            best.similarity, max(ranked[0].score, 0.0), band, fp,
                            ranked[:self.top_k], timings_ms=timings)

    def localize(self, image, intrinsics, altitude_m, yaw_rad):
        """A nadir camera image (RGB) with its measured altitude above ground (m) and REP 103
        yaw (rad) -> Localization (``timings_ms`` per step)."""
        t0 = time.perf_counter()
        band = self.db.band_for_altitude(altitude_m)
        base, base_footprint = self.base_crop(image, intrinsics, altitude_m, yaw_rad, band)
        t1 = time.perf_counter()
        result = self.localize_crop(base, base_footprint, band)
        result.timings_ms['normalize'] = (t1 - t0) * 1e3
        result.timings_ms['total'] = (time.perf_counter() - t0) * 1e3
        return result
