"""Procedural rural/suburban world seen from above: semantic layout, orthophoto, obstacle heights.

A deterministic (per seed) generator of what a nadir camera at 0.25-0.5 m/px sees over
farmland: roads, field parcels with crop rows, hedges and tracks, forests, water, villages and
farmsteads, single trees, cars, and tall structures (radio masts, towers, wind turbines) that a
LIDAR flying at 70-150 m must avoid.  The same :class:`Layout` renders in several *conditions*
(:data:`CONDITIONS`): ``'map'`` is the reference (a summer satellite orthophoto, the source of the
localisation database); the others are flights months apart, so they differ not only in colour
but in structure (crops, field boundaries, cars, small buildings, shadows), while roads, large
forests, water, big buildings and tall structures stay put -- what localisation relies on.

Frames and units (the conventions of :mod:`skyloc_sim.geo`):

* rasters are ``H x W``, row 0 is the north edge, column 0 the west edge (image up = north);
* positions ``x_px, y_px`` are continuous pixel coordinates, ``x`` along columns from the left
  edge, ``y`` along rows from the top edge; the centre of pixel ``(col, row)`` is
  ``(col + 0.5, row + 0.5)``; so ``raster[int(y_px), int(x_px)]`` is the pixel holding a point;
* angles (``angle_rad``, ``row_angle_rad``, ``yaw_rad``) are counter-clockwise from east, as in
  the ENU map frame; in the image a direction ``a`` is ``(cos a, -sin a)`` in (col, row);
* sun azimuth is in degrees clockwise from north, elevation in degrees above the horizon;
* heights are metres above the (flat) ground; sizes ending in ``_m`` are metres, ``_px`` pixels.

Only numpy and OpenCV are used; everything is vectorised (per-object loops only over objects,
never over pixels) so a 1.2 km world at 0.5 m/px is generated and rendered in a few seconds.
"""

import dataclasses
import math
import zlib

import cv2
import numpy as np

LANDCOVER = dict(grass=0, field=1, forest=2, water=3, road=4, building_lot=5, building=6,
                 hedge=7, track=8, gravel=9)
"""Landcover class codes of :attr:`Layout.landcover`."""

CONDITIONS = ('map', 'summer', 'autumn', 'winter', 'evening', 'haze')
"""Condition names accepted by :func:`render_orthophoto`, :func:`obstacle_heights`, etc."""

CENTRAL_CLEAR_M = 300.0
"""Side of the central square (metres) kept free of tall structures, so a survey starts clear."""

_SEASON = dict(map='summer', summer='summer', autumn='autumn', winter='winter',
               evening='summer', haze='summer')

_GRASS, _FIELD, _FOREST, _WATER, _ROAD, _LOT, _BUILDING, _HEDGE, _TRACK, _GRAVEL = range(10)


@dataclasses.dataclass
class Layout:
    """The semantic world.  All rasters are ``H x W``, row 0 = north edge (see module doc).

    ``landcover`` (uint8, :data:`LANDCOVER` codes) is the final class map, buildings included;
    ``field_id`` (int32) the field index per pixel (-1 outside fields, also on field boundaries);
    ``parcels`` the field index before boundary strips were carved out; ``ground`` the landcover
    without field boundaries and buildings (what a condition re-composes from).

    Lists hold one dict per object (positions in continuous pixel coordinates):

    * ``fields``: ``crop``, ``row_angle_rad``, ``row_spacing_m`` (period of the row pattern as
      seen at this resolution), ``tramline_spacing_m``, ``row_phase``, ``tint`` (rgb factors),
      ``area_m2``, ``centroid_px``; ``merged_into`` / ``split_from`` after a condition change;
    * ``buildings``: ``x_px, y_px, w_px, h_px`` (centre, size along / across ``angle_rad``),
      ``angle_rad``, ``height_m`` (ridge), ``roof_rgb`` (uint8 triple), ``roof`` (``'gable'`` with
      the ridge along the long side, or ``'flat'``), ``kind``, ``removable`` (small buildings that
      a condition may add or remove);
    * ``trees``: ``x_px, y_px, radius_px`` (crown), ``height_m``, ``species``
      (``'deciduous'``/``'conifer'``), ``group`` (``forest, hedge, single, garden, avenue,
      riparian``), ``pair`` (the two field ids a hedge tree separates, else None);
    * ``vehicles``: ``x_px, y_px, angle_rad`` (heading), ``rgb``, ``length_m, width_m``, ``kind``;
    * ``tall_structures``: ``kind`` (``'mast'|'tower'|'wind_turbine'``), ``x_px, y_px``,
      ``radius_m`` (footprint; for turbines the tower base), ``height_m`` (turbines: hub
      height), turbines also ``rotor_radius_m, yaw_rad, rotor_phase_rad``;
    * ``roads`` (paved) and ``tracks`` (dirt): ``points_px`` (N x 2 float32 centreline),
      ``width_m``, ``kind``; ``streams``: ``points_px, width_m``;
    * ``lots``: ``polygon_px`` (4 x 2), ``angle_rad``, ``kind`` (``'house'|'farm'``);
    * ``details``: small ground features (``kind`` patio/pool/silage, ``polygon_px``).

    ``condition``/``condition_seed`` say which condition the layout shows ('map' for the
    reference from :func:`generate_layout`, else made by :func:`condition_layout`);
    ``young_fields`` lists the ids of fields created by a split in that condition.
    """

    resolution: float
    seed: int
    landcover: np.ndarray
    field_id: np.ndarray
    fields: list
    buildings: list
    trees: list
    vehicles: list
    tall_structures: list
    roads: list = dataclasses.field(default_factory=list)
    tracks: list = dataclasses.field(default_factory=list)
    streams: list = dataclasses.field(default_factory=list)
    lots: list = dataclasses.field(default_factory=list)
    details: list = dataclasses.field(default_factory=list)
    parcels: np.ndarray = None
    ground: np.ndarray = None
    size_m: float = 0.0
    condition: str = 'map'
    condition_seed: int = 0
    young_fields: tuple = ()

    @property
    def shape(self):
        """Raster shape ``(H, W)`` in pixels."""
        return self.landcover.shape

    def road_mask(self):
        """uint8 mask (1 = paved road), H x W."""
        return (self.landcover == _ROAD).astype(np.uint8)


# ----------------------------------------------------------------------------- small helpers

def _h(name):
    """Stable 32-bit hash of a stream name (Python's hash() is salted per process)."""
    return zlib.crc32(str(name).encode('utf-8'))


def _rng(*keys):
    """Independent deterministic random stream for a tuple of integer keys."""
    return np.random.default_rng([int(k) % (1 << 32) for k in keys])


def _hash01(a, b, salt=0):
    """Uniform [0, 1) per integer pair, vectorised (splitmix64).

    Used where randomness must be tied to an object's identity/position rather than to the
    order of a list, so that a condition that removes a few objects does not reshuffle the rest.
    """
    a = np.atleast_1d(np.asarray(a, np.int64)).view(np.uint64)
    b = np.atleast_1d(np.asarray(b, np.int64)).view(np.uint64)
    x = (a * np.uint64(0x9E3779B97F4A7C15)) ^ (b * np.uint64(0xC2B2AE3D27D4EB4F))
    x ^= np.uint64((int(salt) * 0x165667B19E3779F9) % (1 << 64))
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(32)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _cvpts(pts):
    """Continuous pixel coords -> cv2 fixed-point points (use with ``shift=4``)."""
    return np.round((np.asarray(pts, np.float64) - 0.5) * 16.0).astype(np.int32).reshape(-1, 1, 2)


def _fbm(rng, h, w, cell_px, octaves=5, persistence=0.5):
    """Zero-mean, unit-std multi-octave value noise, coarsest features ~``cell_px`` pixels.

    Built as a Laplacian-pyramid synthesis (pyrUp + fresh noise per octave) on a small grid and
    one final cubic upsampling, so the cost is about one full-resolution resize.
    """
    cell_px = max(float(cell_px), 1.0)
    octaves = int(max(1, min(octaves, int(math.log2(cell_px)) + 1)))
    fin = cell_px / 2 ** (octaves - 1)
    gh = int(math.ceil(h / cell_px)) + 3
    gw = int(math.ceil(w / cell_px)) + 3
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    amp = 1.0
    for _ in range(octaves - 1):
        g = cv2.pyrUp(g)
        amp *= persistence
        # pyrUp halves the std of what it interpolates; 2x keeps the octave weights as asked
        g += (2.0 * amp) * rng.standard_normal(g.shape, dtype=np.float32)
    g -= g.mean()
    g /= g.std() + 1e-6
    if fin <= 1.0:
        return np.ascontiguousarray(g[1:1 + h, 1:1 + w])
    # upsample only the part of the grid that covers the raster (plus a one-cell margin,
    # so the cubic kernel never sees the grid border)
    nh, nw = int(math.ceil(h / fin)) + 3, int(math.ceil(w / fin)) + 3
    g = cv2.resize(g[:nh, :nw], (int(nw * fin), int(nh * fin)), interpolation=cv2.INTER_CUBIC)
    off = int(fin)
    return np.ascontiguousarray(g[off:off + h, off:off + w])


def _rect_poly(cx, cy, w, h, ang):
    """Corners (4 x 2, continuous px) of a w x h rectangle centred at (cx, cy), w along ang."""
    ca, sa = math.cos(ang), math.sin(ang)
    ax = np.array([ca, -sa]) * (w / 2.0)
    ay = np.array([sa, ca]) * (h / 2.0)
    c = np.array([cx, cy], np.float64)
    return np.array([c - ax - ay, c + ax - ay, c + ax + ay, c - ax + ay])


def _bbox(poly, shape, pad=1):
    """Integer bounding box (x0, y0, x1, y1) of a polygon clipped to a raster, or None."""
    x0 = max(int(np.floor(poly[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(poly[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(poly[:, 0].max())) + pad, shape[1])
    y1 = min(int(np.ceil(poly[:, 1].max())) + pad, shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _poly_crop(poly, box):
    """uint8 mask of a polygon inside a bounding box."""
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, [_cvpts(poly - [x0, y0])], 1, lineType=cv2.LINE_8, shift=4)
    return m


def _arc(pts):
    """Cumulative arc length (px) along a polyline."""
    return np.r_[0.0, np.cumsum(np.hypot(*np.diff(pts, axis=0).T))]


def _point_at(pts, cum, s):
    """Point and unit tangent (image coords) at arc length s along a polyline."""
    s = float(np.clip(s, 0.0, cum[-1]))
    i = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(pts) - 2))
    seg = pts[i + 1] - pts[i]
    ln = max(float(np.hypot(*seg)), 1e-9)
    return pts[i] + seg * ((s - cum[i]) / ln), seg / ln


def _normals(pts):
    """Unit normals (image coords) of a polyline: the right-hand side of travel direction."""
    t = np.gradient(np.asarray(pts, np.float64), axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-9
    return np.stack([-t[:, 1], t[:, 0]], 1)


def _resample(pts, step):
    cum = _arc(pts)
    s = np.r_[np.arange(0.0, cum[-1], step), cum[-1]]
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], 1)


def _spline(ctrl, step):
    """Catmull-Rom curve through control points, resampled every ``step`` px."""
    p = np.asarray(ctrl, np.float64)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        k = max(2, int(np.hypot(*(p2 - p1)) / step) + 1)
        t = np.linspace(0.0, 1.0, k, endpoint=False)[:, None]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    out.append(p[-2][None])
    return _resample(np.vstack(out), step)


def _edge_point(rng, side, n, margin):
    t = rng.uniform(0.12, 0.88) * n
    return np.array([(t, -margin), (n + margin, t), (t, n + margin), (-margin, t)][side])


def _between(rng, a, b, k, curvy):
    """k control points between a and b, displaced sideways by ~curvy x distance."""
    d = b - a
    ln = max(float(np.hypot(*d)), 1e-9)
    nrm = np.array([-d[1], d[0]]) / ln
    return [a + d * t + nrm * rng.normal(0.0, curvy * ln)
            for t in np.linspace(0.0, 1.0, k + 2)[1:-1]]


def _crossing_path(rng, n, curvy, step, via=None, k=None):
    """A curve entering at one world edge and leaving at another (optionally via a point)."""
    s1 = int(rng.integers(4))
    s2 = (s1 + 2) % 4 if rng.random() < 0.7 else (s1 + 1 + 2 * int(rng.integers(2))) % 4
    a = _edge_point(rng, s1, n, 0.03 * n)
    b = _edge_point(rng, s2, n, 0.03 * n)
    k = int(rng.integers(1, 4)) if k is None else k
    if via is None:
        ctrl = [a] + _between(rng, a, b, k, curvy) + [b]
    else:
        ctrl = ([a] + _between(rng, a, via, k, curvy) + [via]
                + _between(rng, via, b, k, curvy) + [b])
    return _spline(ctrl, step)


def _walk_path(rng, start, heading, length, ctrl_step, turn_sigma, step):
    """A wandering curve from ``start`` with an initial image-space ``heading`` (rad)."""
    pts = [np.asarray(start, np.float64)]
    for _ in range(max(1, int(length / ctrl_step))):
        pts.append(pts[-1] + ctrl_step * np.array([math.cos(heading), math.sin(heading)]))
        heading += rng.normal(0.0, turn_sigma)
    return _spline(pts, step)


def _disk(k):
    k = max(1, int(k))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _enu_angle(v):
    """ENU angle (ccw from east) of an image-space direction vector (col, row)."""
    return math.atan2(-v[1], v[0])


# ----------------------------------------------------------------------------- generation

class _Ctx:
    """Mutable state while a layout is generated (rasters the later steps must respect)."""

    def __init__(self, seed, size_m, res):
        self.seed, self.size_m, self.res = int(seed), float(size_m), float(res)
        self.n = max(16, int(round(size_m / res)))
        n = self.n
        # unassigned ground is 'field'; the fields step claims what nothing else took
        self.ground = np.full((n, n), _FIELD, np.uint8)
        self.occ = np.zeros((n, n), np.uint8)       # no fields/forest/buildings may go here
        self.bmask = np.zeros((n, n), np.uint8)     # building footprints
        self.roads, self.tracks, self.streams = [], [], []
        self.buildings, self.lots, self.details = [], [], []
        self.tall = []
        self.area_scale = (self.size_m / 1200.0) ** 2

    def rng(self, name):
        return _rng(self.seed, _h(name))

    def px(self, metres):
        return metres / self.res


def _draw_path(img, pts, value, width_px):
    cv2.polylines(img, [_cvpts(pts)], False, value, thickness=max(1, int(round(width_px))),
                  lineType=cv2.LINE_8, shift=4)


def _gen_roads(ctx):
    rng = ctx.rng('roads')
    n, sc = ctx.n, ctx.size_m / 1200.0
    step = ctx.px(2.0)
    k_main = max(1, int(round(rng.uniform(1.6, 3.2) * sc)))
    for i in range(k_main):
        # the first main road passes near the centre: a survey there sees a strong landmark
        via = np.array([n / 2.0, n / 2.0]) + rng.normal(0.0, ctx.px(40.0), 2) if i == 0 else None
        curvy = float(rng.choice([0.02, 0.06, 0.12]))
        pts = _crossing_path(rng, n, curvy, step, via)
        ctx.roads.append(dict(points_px=pts.astype(np.float32),
                              width_m=float(rng.uniform(6.0, 7.5)), kind='main'))
    k_minor = max(1, int(round(rng.uniform(1.5, 4.0) * sc)))
    for _ in range(k_minor):
        par = ctx.roads[int(rng.integers(len(ctx.roads)))]
        pts = par['points_px'].astype(np.float64)
        cum = _arc(pts)
        p, t = _point_at(pts, cum, rng.uniform(0.2, 0.8) * cum[-1])
        side = 1.0 if rng.random() < 0.5 else -1.0
        head = math.atan2(t[1], t[0]) + side * (math.pi / 2 + rng.normal(0.0, 0.25))
        length = ctx.px(rng.uniform(0.3, 0.9) * ctx.size_m)
        pts2 = _walk_path(rng, p, head, length, ctx.px(90.0), 0.3, step)
        ctx.roads.append(dict(points_px=pts2.astype(np.float32),
                              width_m=float(rng.uniform(3.6, 5.0)), kind='minor'))
    road = np.zeros((n, n), np.uint8)
    verge = np.zeros((n, n), np.uint8)
    for r in ctx.roads:
        # grass verges along every road: real roads never touch the crop directly
        _draw_path(verge, r['points_px'], 1, ctx.px(r['width_m'] + rng.uniform(4.0, 8.0)))
        _draw_path(road, r['points_px'], 1, ctx.px(r['width_m']))
    ctx.ground[verge > 0] = _GRASS
    ctx.ground[road > 0] = _ROAD
    ctx.occ |= verge
    ctx.road = road
    ctx.road_dist = cv2.distanceTransform(1 - road, cv2.DIST_L2, 5)


def _blob_poly(rng, c, r, k=48, rough=0.12):
    th = np.linspace(0.0, 2 * np.pi, k, endpoint=False)
    rr = np.ones(k)
    for f in range(2, 6):
        rr += rng.uniform(0.0, rough) * np.cos(f * th + rng.uniform(0, 2 * np.pi))
    return np.stack([c[0] + r * rr * np.cos(th), c[1] + r * rr * np.sin(th)], 1)


def _gen_water(ctx):
    rng = ctx.rng('water')
    n = ctx.n
    water = np.zeros((n, n), np.uint8)
    if ctx.size_m >= 500 and rng.random() < 0.65:
        pts = _crossing_path(rng, n, 0.06, ctx.px(2.0), k=int(rng.integers(3, 6)))
        # meanders on top of the large-scale course
        cum = _arc(pts)
        lam = ctx.px(rng.uniform(70.0, 160.0))
        amp = ctx.px(rng.uniform(4.0, 14.0)) * (1 + 0.5 * np.sin(cum / (3.1 * lam)))
        pts = pts + _normals(pts) * (amp * np.sin(2 * np.pi * cum / lam))[:, None]
        width = float(rng.uniform(5.0, 11.0))
        for i in range(0, len(pts) - 1, 15):
            w = width * (1.0 + 0.25 * math.sin(i * 0.05 + rng.uniform(0, 6.3)))
            _draw_path(water, pts[i:i + 16], 1, ctx.px(w))
        ctx.streams.append(dict(points_px=pts.astype(np.float32), width_m=width))
    n_ponds = max(1, int(round(rng.uniform(1.0, 2.6) * ctx.area_scale)))
    rscale = min(1.0, ctx.size_m / 1200.0) ** 0.5
    for _ in range(n_ponds):
        for _try in range(300):
            r = ctx.px(rng.uniform(18.0, 50.0) * rscale)
            c = rng.uniform(r * 1.3 + 4, n - r * 1.3 - 4, 2)
            if ctx.road_dist[int(c[1]), int(c[0])] > r * 1.3 + ctx.px(12.0):
                break
        cv2.fillPoly(water, [_cvpts(_blob_poly(rng, c, r, rough=0.15))], 1, shift=4)
    water[ctx.road > 0] = 0         # bridges: the road stays on top
    ctx.ground[water > 0] = _WATER
    ctx.occ |= cv2.dilate(water, _disk(ctx.px(6.0)))


_ROOF_HOUSE = [(150, 72, 52), (128, 62, 48), (112, 80, 66), (80, 78, 82), (160, 95, 66),
               (96, 92, 90), (140, 60, 45)]
_ROOF_FARM = [(142, 144, 146), (116, 116, 120), (128, 78, 62), (88, 104, 86), (160, 160, 156),
              (100, 70, 58)]


def _free(ctx, poly, margin_px=2.0):
    """True if a polygon lies inside the world and touches nothing occupied."""
    n = ctx.n
    if (poly.min() < margin_px) or (poly.max() > n - margin_px):
        return False
    box = _bbox(poly, (n, n), 0)
    if box is None:
        return False
    m = _poly_crop(poly, box)
    x0, y0, x1, y1 = box
    return not np.any(m & (ctx.occ[y0:y1, x0:x1] | ctx.bmask[y0:y1, x0:x1]))


def _claim(ctx, poly, ground_cls=None, occ=True):
    cv = [_cvpts(poly)]
    if ground_cls is not None:
        cv2.fillPoly(ctx.ground, cv, int(ground_cls), shift=4)
    if occ:
        cv2.fillPoly(ctx.occ, cv, 1, shift=4)


def _add_building(ctx, cx, cy, w_m, h_m, ang, height_m, rgb, kind, roof, check=True):
    w, h = ctx.px(w_m), ctx.px(h_m)
    poly = _rect_poly(cx, cy, w, h, ang)
    if check:
        # buildings may stand on their own lot (occ) but not on roads/water/other buildings
        n = ctx.n
        if poly.min() < 2 or poly.max() > n - 2:
            return False
        box = _bbox(poly, (n, n), 0)
        x0, y0, x1, y1 = box
        m = _poly_crop(poly, box)
        bad = (ctx.bmask[y0:y1, x0:x1] | (ctx.ground[y0:y1, x0:x1] == _ROAD)
               | (ctx.ground[y0:y1, x0:x1] == _WATER))
        if np.any(m & bad):
            return False
    cv2.fillPoly(ctx.bmask, [_cvpts(poly)], 1, shift=4)
    ctx.buildings.append(dict(x_px=float(cx), y_px=float(cy), w_px=float(w), h_px=float(h),
                              angle_rad=float(ang), height_m=float(height_m),
                              roof_rgb=tuple(int(v) for v in rgb), roof=roof, kind=kind,
                              removable=bool(w_m * h_m < 60.0)))
    return True


def _gen_village(ctx, rng, road, s_mid, length):
    pts = road['points_px'].astype(np.float64)
    cum = _arc(pts)
    half_w = ctx.px(road['width_m']) / 2 + ctx.px(4.0)
    for side in (-1.0, 1.0):
        s = s_mid - length / 2 + rng.uniform(0.0, ctx.px(10.0))
        while s < s_mid + length / 2:
            front = ctx.px(rng.uniform(18.0, 30.0))
            depth = ctx.px(rng.uniform(26.0, 45.0))
            p, t = _point_at(pts, cum, s + front / 2)
            s += front
            if rng.random() < 0.12:       # gaps between houses
                continue
            nrm = np.array([-t[1], t[0]]) * side
            ang = _enu_angle(t)
            lot_c = p + nrm * (half_w + depth / 2 + ctx.px(1.0))
            lot = _rect_poly(lot_c[0], lot_c[1], front * 0.97, depth, ang)
            if not _free(ctx, lot):
                continue
            _claim(ctx, lot, _LOT)
            ctx.lots.append(dict(polygon_px=lot.astype(np.float32), angle_rad=ang, kind='house'))
            # long side along the street, or (a quarter of them) the gable end facing it;
            # the ridge follows the long side either way
            if rng.random() < 0.25:
                hw, hd = rng.uniform(8.0, 11.0), rng.uniform(11.0, 15.0)
            else:
                hw, hd = rng.uniform(10.0, 16.0), rng.uniform(8.0, 11.0)
            setback = ctx.px(rng.uniform(4.0, 9.0))
            along = rng.uniform(-0.2, 0.2) * front
            hc = p + nrm * (half_w + setback + ctx.px(hd) / 2) + t * along
            rgb = _ROOF_HOUSE[int(rng.integers(len(_ROOF_HOUSE)))]
            roof = 'gable' if rng.random() < 0.85 else 'flat'
            _add_building(ctx, hc[0], hc[1], hw, hd, ang, rng.uniform(7.0, 11.0), rgb, 'house',
                          roof)
            # driveway from the road, beside the house
            side_off = t * (ctx.px(hw) / 2 + ctx.px(2.5)) * (1 if rng.random() < 0.5 else -1)
            dc = p + nrm * (half_w + setback / 2) + t * along + side_off
            ctx.details.append(dict(kind='patio', polygon_px=_rect_poly(
                dc[0], dc[1], setback + ctx.px(2.0), ctx.px(3.5), ang + math.pi / 2)))
            # garage next to the house: small, so a condition may add/remove such buildings
            if rng.random() < 0.6:
                gc = hc + side_off * 1.1 + nrm * ctx.px(2.0)
                _add_building(ctx, gc[0], gc[1], 6.5, 4.0, ang + math.pi / 2, 3.0,
                              (110, 110, 112) if rng.random() < 0.5 else rgb, 'garage', 'flat')
            if rng.random() < 0.5:
                sc = p + nrm * (half_w + depth * rng.uniform(0.72, 0.88)) + t * rng.uniform(
                    -0.3, 0.3) * front
                _add_building(ctx, sc[0], sc[1], rng.uniform(3.0, 5.5), rng.uniform(2.5, 4.0),
                              ang, 2.6, (96, 80, 64), 'shed', 'flat')
            if rng.random() < 0.12:
                pc = p + nrm * (half_w + depth * 0.7) + t * rng.uniform(-0.25, 0.25) * front
                ctx.details.append(dict(kind='pool', polygon_px=_rect_poly(
                    pc[0], pc[1], ctx.px(8.0), ctx.px(4.0), ang)))


def _gen_farm(ctx, rng, road, s):
    pts = road['points_px'].astype(np.float64)
    cum = _arc(pts)
    p, t = _point_at(pts, cum, s)
    side = 1.0 if rng.random() < 0.5 else -1.0
    nrm = np.array([-t[1], t[0]]) * side
    ang = _enu_angle(t) + rng.normal(0.0, 0.1)
    fw, fd = ctx.px(rng.uniform(55.0, 90.0)), ctx.px(rng.uniform(45.0, 70.0))
    dist = ctx.px(road['width_m']) / 2 + ctx.px(rng.uniform(25.0, 60.0)) + fd / 2
    c = p + nrm * dist
    yard = _rect_poly(c[0], c[1], fw, fd, ang)
    if not _free(ctx, yard):
        return False
    _claim(ctx, yard, _LOT)
    ctx.lots.append(dict(polygon_px=yard.astype(np.float32), angle_rad=ang, kind='farm'))
    ctx.tracks.append(dict(points_px=np.array([p, c], np.float32), width_m=4.0, kind='access'))
    ca, sa = math.cos(ang), math.sin(ang)
    ex, ey = np.array([ca, -sa]), np.array([sa, ca])
    # the farm house near a corner, barns and sheds wherever they fit
    hc = c + ex * (fw / 2 - ctx.px(9.0)) * (1 if rng.random() < 0.5 else -1) - ey * (
        fd / 2 - ctx.px(8.0)) * side
    _add_building(ctx, hc[0], hc[1], 13.0, 10.0, ang, rng.uniform(8.0, 11.0),
                  _ROOF_HOUSE[int(rng.integers(len(_ROOF_HOUSE)))], 'house', 'gable')
    for k in range(int(rng.integers(1, 4)) + 4):
        big = k < 3
        bw = rng.uniform(28.0, 50.0) if big else rng.uniform(4.0, 8.0)
        bd = rng.uniform(13.0, 22.0) if big else rng.uniform(3.0, 6.0)
        for _try in range(15):
            bc = c + ex * rng.uniform(-0.5, 0.5) * fw + ey * rng.uniform(-0.5, 0.5) * fd
            a2 = ang + (math.pi / 2 if rng.random() < 0.3 else 0.0)
            poly = _rect_poly(bc[0], bc[1], ctx.px(bw), ctx.px(bd), a2)
            yard32 = yard.astype(np.float32)
            inside = all(cv2.pointPolygonTest(yard32, (float(x), float(y)), False) >= 0
                         for x, y in poly)
            if inside and _add_building(ctx, bc[0], bc[1], bw, bd, a2,
                                        rng.uniform(8.0, 13.0) if big else 3.0,
                                        _ROOF_FARM[int(rng.integers(len(_ROOF_FARM)))],
                                        'barn' if big else 'shed',
                                        'gable' if rng.random() < 0.7 else 'flat'):
                break
    if rng.random() < 0.6:
        for _try in range(10):
            sc = c + ex * rng.uniform(-0.4, 0.4) * fw + ey * rng.uniform(-0.4, 0.4) * fd
            poly = _rect_poly(sc[0], sc[1], ctx.px(rng.uniform(20.0, 35.0)), ctx.px(9.0), ang)
            box = _bbox(poly, ctx.ground.shape, 0)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            if not np.any(_poly_crop(poly, box) & ctx.bmask[y0:y1, x0:x1]):
                ctx.details.append(dict(kind='silage', polygon_px=poly))
                break
    return True


def _gen_settlements(ctx):
    rng = ctx.rng('settlements')
    sc = ctx.size_m / 1200.0
    n_vil = max(1, int(round(rng.uniform(1.0, 2.4) * ctx.area_scale)))
    n_farm = int(round(rng.uniform(2.0, 4.5) * ctx.area_scale))
    mains = [r for r in ctx.roads if r['kind'] == 'main'] or ctx.roads
    for v in range(n_vil):
        road = mains[v % len(mains)] if v == 0 else ctx.roads[int(rng.integers(len(ctx.roads)))]
        cum = _arc(road['points_px'].astype(np.float64))
        length = min(ctx.px(rng.uniform(140.0, 320.0)), 0.6 * ctx.n) * max(0.5, min(1.0, sc))
        _gen_village(ctx, rng, road, rng.uniform(0.25, 0.75) * cum[-1], length)
    for _ in range(n_farm):
        road = ctx.roads[int(rng.integers(len(ctx.roads)))]
        cum = _arc(road['points_px'].astype(np.float64))
        for _try in range(8):
            if _gen_farm(ctx, rng, road, rng.uniform(0.1, 0.9) * cum[-1]):
                break
    ctx.occ |= ctx.bmask


def _gen_forest(ctx):
    rng = ctx.rng('forest')
    n = ctx.n
    target = rng.uniform(0.10, 0.20)
    # the mask is smooth at the 10 m scale: work at quarter resolution, upsample at the end
    q = 4
    m = (n + q - 1) // q
    noise = _fbm(rng, m, m, ctx.px(rng.uniform(250.0, 400.0)) / q, 5, 0.5)
    allowed_full = (ctx.occ == 0) & (ctx.ground == _FIELD)
    allowed = cv2.resize(allowed_full.astype(np.uint8), (m, m), interpolation=cv2.INTER_AREA)
    sub = allowed > 0
    frac = max(float(sub.mean()), 1e-3)
    thr = float(np.quantile(noise[sub], float(np.clip(1 - target / frac, 0, 1))))
    forest = ((noise > thr) & sub).astype(np.uint8)
    # drop slivers and tiny patches: woods are coherent
    forest = cv2.morphologyEx(forest, cv2.MORPH_OPEN, _disk(ctx.px(20.0) / q))
    num, lab, stats, _ = cv2.connectedComponentsWithStats(forest, connectivity=4)
    small = np.nonzero(stats[:, cv2.CC_STAT_AREA] * (ctx.res * q) ** 2 < 4000.0)[0]
    if len(small):
        forest[np.isin(lab, small)] = 0
    forest = cv2.resize(forest.astype(np.float32), (m * q, m * q),
                        interpolation=cv2.INTER_LINEAR)[:n, :n] > 0.5
    forest = (forest & allowed_full).astype(np.uint8)
    ctx.forest = forest
    ctx.ground[forest > 0] = _FOREST


def _nearest_road_point(ctx, p):
    allp = np.vstack([r['points_px'] for r in ctx.roads]).astype(np.float64)
    inside = (allp.min(1) > 0) & (allp.max(1) < ctx.n)
    allp = allp[inside] if inside.any() else allp
    return allp[int(np.argmin(np.hypot(*(allp - p).T)))]


def _gen_tall(ctx):
    rng = ctx.rng('tall')
    n, res = ctx.n, ctx.res
    n_nom = int(rng.integers(4, 9))
    free = ctx.size_m ** 2 - min(ctx.size_m, CENTRAL_CLEAR_M) ** 2
    count = min(n_nom, int(round(n_nom * free / (1200.0 ** 2 - CENTRAL_CLEAR_M ** 2))))
    kinds = ['wind_turbine', 'mast', 'tower']
    rng.shuffle(kinds)
    kinds = (kinds + [str(k) for k in rng.choice(['wind_turbine', 'mast', 'tower'], size=8,
                                                 p=[0.5, 0.25, 0.25])])[:count]
    built = cv2.distanceTransform(1 - np.maximum(ctx.bmask, (ctx.ground == _LOT).astype(
        np.uint8)), cv2.DIST_L2, 5)
    water = cv2.distanceTransform((ctx.ground != _WATER).astype(np.uint8), cv2.DIST_L2, 5)
    c0 = n / 2.0
    for kind in kinds:
        if kind == 'wind_turbine':
            s = dict(kind=kind, radius_m=float(rng.uniform(2.0, 3.5)),
                     height_m=float(rng.uniform(100.0, 140.0)))
            s['rotor_radius_m'] = float(min(rng.uniform(40.0, 65.0), 0.47 * s['height_m']))
            s['yaw_rad'] = float(rng.uniform(0, 2 * np.pi))
            s['rotor_phase_rad'] = float(rng.uniform(0, 2 * np.pi))
            clear, road_min, sep = s['rotor_radius_m'] + 5.0, 45.0, 200.0
        elif kind == 'mast':
            s = dict(kind=kind, radius_m=float(rng.uniform(1.0, 2.0)),
                     height_m=float(rng.uniform(100.0, 200.0)))
            clear, road_min, sep = 10.0, 25.0, 100.0
        else:
            s = dict(kind=kind, radius_m=float(rng.uniform(3.0, 8.0)),
                     height_m=float(rng.uniform(50.0, 120.0)))
            clear, road_min, sep = s['radius_m'] + 10.0, 20.0, 100.0
        for _try in range(600):
            x, y = rng.uniform(ctx.px(30.0), n - ctx.px(30.0), 2)
            if max(abs(x - c0), abs(y - c0)) * res < CENTRAL_CLEAR_M / 2 + clear:
                continue
            iy, ix = int(y), int(x)
            if ctx.road_dist[iy, ix] * res < road_min or built[iy, ix] * res < 60.0:
                continue
            if water[iy, ix] * res < 25.0:
                continue
            if kind == 'wind_turbine' and ctx.ground[iy, ix] != _FIELD:
                continue
            if any(math.hypot(x - o['x_px'], y - o['y_px']) * res < max(
                    sep, 200.0 if o['kind'] == kind == 'wind_turbine' else 100.0)
                    for o in ctx.tall):
                continue
            s.update(x_px=float(x), y_px=float(y))
            ctx.tall.append(s)
            _tall_base(ctx, rng, s)
            break


def _tall_base(ctx, rng, s):
    """Gravel pad / compound at a tall structure's foot and a dirt access track to a road."""
    c = np.array([s['x_px'], s['y_px']])
    if s['kind'] == 'wind_turbine':
        ang = rng.uniform(0, np.pi)
        d = np.array([math.cos(ang), -math.sin(ang)])
        pc = c + d * ctx.px(s['radius_m'] + 14.0)
        poly = _rect_poly(pc[0], pc[1], ctx.px(40.0), ctx.px(22.0), ang)
        cv2.circle(ctx.ground, tuple(int(v) for v in c), int(ctx.px(s['radius_m'] + 6.0)),
                   _GRAVEL, -1)
        cv2.circle(ctx.occ, tuple(int(v) for v in c), int(ctx.px(s['radius_m'] + 6.0)), 1, -1)
    elif s['kind'] == 'mast':
        pc = c
        poly = _rect_poly(c[0], c[1], ctx.px(22.0), ctx.px(22.0), rng.uniform(0, np.pi))
    else:
        pc = c
        poly = _blob_poly(rng, c, ctx.px(s['radius_m'] + 10.0), rough=0.02)
    _claim(ctx, poly, _GRAVEL)
    if s['kind'] == 'mast':
        # equipment hut beside the mast
        hc = c + ctx.px(6.0) * np.array([1.0, 0.0])
        _add_building(ctx, hc[0], hc[1], 4.0, 3.0, 0.0, 3.0, (120, 122, 124), 'hut', 'flat',
                      check=False)
    q = _nearest_road_point(ctx, pc)
    ctx.tracks.append(dict(points_px=np.array([q, pc], np.float32), width_m=4.0, kind='access'))


def _draw_tracks(ctx):
    m = np.zeros_like(ctx.ground)
    for t in ctx.tracks:
        _draw_path(m, t['points_px'], 1, ctx.px(t['width_m']))
    ok = (m > 0) & (ctx.ground != _ROAD) & (ctx.ground != _WATER) & (ctx.ground != _LOT)
    ok &= ctx.bmask == 0
    ctx.ground[ok] = _TRACK
    ctx.occ[ok] = 1


def _tessellate(rng, n, cell):
    """Voronoi blocks of a jittered square lattice (cv2.Subdiv2D facets): int32 label raster."""
    diag = math.hypot(n, n)
    k = int(diag / cell) + 4
    j, i = np.mgrid[-k // 2:k // 2 + 1, -k // 2:k // 2 + 1]
    q = np.stack([i * cell, j * cell], -1).reshape(-1, 2).astype(np.float64)
    q += rng.uniform(-0.35, 0.35, q.shape) * cell
    a = rng.uniform(0, np.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    q = q @ rot.T + n / 2.0
    q = q[((q > -2 * cell) & (q < n + 2 * cell)).all(1)]
    lo = int(-3 * cell)
    sub = cv2.Subdiv2D((lo, lo, int(n + 6 * cell), int(n + 6 * cell)))
    sub.insert([(float(x), float(y)) for x, y in q])
    facets, _ = sub.getVoronoiFacetList([])
    lab = np.full((n, n), -1, np.int32)
    nb = 0
    for f in facets:
        f = np.clip(np.asarray(f, np.float64), -10 * n, 11 * n)
        if f[:, 0].max() < 0 or f[:, 1].max() < 0 or f[:, 0].min() > n or f[:, 1].min() > n:
            continue
        cv2.fillPoly(lab, [_cvpts(f)], nb, shift=4)
        nb += 1
    return lab, nb


_CROP_P = dict(wheat=0.16, wheat_green=0.10, barley=0.10, maize=0.16, rapeseed=0.07,
               sugarbeet=0.07, potato=0.05, meadow=0.17, fallow=0.04, stubble=0.04,
               ploughed=0.04)
# visible row-pattern period (m) at aerial GSD: drill passes, bed rows, mowing swaths, furrows
_ROW_M = dict(wheat=(1.5, 3.5), wheat_green=(1.5, 3.5), barley=(1.5, 3.5), maize=(1.5, 2.6),
              maize_ripe=(1.5, 2.6), rapeseed=(1.5, 3.5), rapeseed_young=(1.5, 3.0),
              sugarbeet=(1.5, 2.6), potato=(1.5, 2.4), meadow=(3.0, 7.0), fallow=(3.0, 8.0),
              stubble=(3.0, 7.0), ploughed=(1.4, 2.6), sown=(1.5, 3.0),
              winter_cereal=(1.5, 3.0))


def _tint(rng):
    """Per-field colour factors: mostly brightness, a little hue (never a pink wheat field)."""
    return tuple(float(v) for v in rng.uniform(0.88, 1.12) * rng.uniform(0.96, 1.04, 3))


def _new_crop_params(rng, crop, base_angle, res):
    lo, hi = _ROW_M[crop]
    ang = base_angle + (math.pi / 2 if rng.random() < 0.12 else 0.0) + rng.normal(0.0, 0.02)
    return dict(crop=crop, row_angle_rad=float(ang % math.pi),
                row_spacing_m=float(max(rng.uniform(lo, hi), 3.0 * res)),
                tramline_spacing_m=float(rng.choice([12.0, 15.0, 18.0, 21.0, 24.0, 28.0, 36.0])),
                row_phase=float(rng.uniform(0, 1)),
                tint=_tint(rng))


def _gen_fields(ctx):
    """Parcels: Voronoi blocks, each cut into parallel strips (and those across, sometimes).

    That is how consolidated farmland looks from above: long straight shared boundaries,
    T-junctions, one orientation per block, strip widths that vary.
    """
    rng = ctx.rng('fields')
    n = ctx.n
    blocks, nb = _tessellate(rng, n, ctx.px(rng.uniform(230.0, 380.0)))
    nb = max(nb, 1)
    base = rng.uniform(0, np.pi)
    phi = base + rng.choice([0.0, np.pi / 2], nb, p=[0.6, 0.4]) + rng.normal(0.0, 0.15, nb)
    spacing = ctx.px(rng.uniform(35.0, 110.0, nb)).astype(np.float32)
    cut = np.where(rng.random(nb) < 0.7, ctx.px(rng.uniform(150.0, 450.0, nb)), 1e9)
    b = np.maximum(blocks, 0)
    xs = np.arange(n, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(n, dtype=np.float32)[:, None] + 0.5
    c, s_ = np.cos(phi).astype(np.float32)[b], np.sin(phi).astype(np.float32)[b]
    v = (xs * c + ys * s_) / spacing[b]
    # monotonic warp (slope 1 +- 0.68): strips of unequal width
    v += 0.4 * np.sin(v * np.float32(2 * np.pi / 3.7) + rng.uniform(0, 6.3, nb).astype(
        np.float32)[b])
    strip = np.floor(v + rng.uniform(0, 1, nb).astype(np.float32)[b]).astype(np.int64)
    w = (ys * c - xs * s_) / cut.astype(np.float32)[b]
    strip2 = np.floor(w + rng.uniform(0, 1, nb).astype(np.float32)[b]).astype(np.int64)
    del v, w, c, s_
    key = (blocks.astype(np.int64) + 1) * 4096 + (strip & 63) * 64 + (strip2 & 63)
    key[(blocks < 0) | (ctx.ground != _FIELD)] = 0
    # compact relabelling (keys are small ints: bincount, not a sort)
    counts = np.bincount(key.ravel())
    counts[0] = 0
    keep = counts * ctx.res ** 2 >= 1500.0   # slivers become verge grass
    remap = np.full(len(counts), -1, np.int32)
    remap[keep] = np.arange(int(keep.sum()), dtype=np.int32)
    parcels = remap[key]
    block_of = np.nonzero(keep)[0] // 4096 - 1
    ctx.ground[(ctx.ground == _FIELD) & (parcels < 0)] = _GRASS
    nf = int(keep.sum())
    fields = []
    ys, xs = np.nonzero(parcels >= 0)
    pid = parcels[ys, xs]
    cnt = np.bincount(pid, minlength=nf).astype(np.float64)
    cx = np.bincount(pid, xs, minlength=nf) / np.maximum(cnt, 1) + 0.5
    cy = np.bincount(pid, ys, minlength=nf) / np.maximum(cnt, 1) + 0.5
    crops = list(_CROP_P)
    probs = np.array([_CROP_P[c] for c in crops])
    for f in range(nf):
        ph = phi[block_of[f]]
        # rows run along the strip (ENU angle of the image direction (-sin phi, cos phi))
        along = _enu_angle((-math.sin(ph), math.cos(ph)))
        crop = str(rng.choice(crops, p=probs / probs.sum()))
        d = _new_crop_params(rng, crop, along, ctx.res)
        d.update(area_m2=float(cnt[f] * ctx.res ** 2), centroid_px=(float(cx[f]), float(cy[f])),
                 merged_into=None, split_from=None)
        fields.append(d)
    ctx.parcels = parcels
    ctx.fields = fields


def _pair_style(lo, hi, seed, young=()):
    """Boundary style of a field pair: 0 none, 1 hedge, 2 track, 3 grass margin."""
    u = _hash01(lo, hi, seed + 77)
    style = np.select([u < 0.15, u < 0.42, u < 0.62], [0, 1, 2], 3).astype(np.uint8)
    if len(young):
        # boundaries of freshly split fields are tracks or margins, never grown hedges
        y = np.isin(lo, young) | np.isin(hi, young)
        style[y] = np.where(u[y] < 0.5, 2, 3)
    return style


def _field_edges(parcels, seed, young=()):
    """1-px boundary pixels between different parcels: (ys, xs, lo, hi, style)."""
    a = parcels
    ys1, xs1 = np.nonzero(a[:, :-1] != a[:, 1:])
    p1, q1 = a[ys1, xs1], a[ys1, xs1 + 1]
    ys2, xs2 = np.nonzero(a[:-1, :] != a[1:, :])
    p2, q2 = a[ys2, xs2], a[ys2 + 1, xs2]
    ys, xs = np.r_[ys1, ys2], np.r_[xs1, xs2]
    p, q = np.r_[p1, p2], np.r_[q1, q2]
    lo, hi = np.minimum(p, q), np.maximum(p, q)
    ok = lo >= 0
    ys, xs, lo, hi = ys[ok], xs[ok], lo[ok], hi[ok]
    return ys, xs, lo, hi, _pair_style(lo, hi, seed, young)


def _compose(ground, parcels, buildings, res, seed, young=()):
    """Landcover and field_id from ground + parcels (boundary strips) + building footprints."""
    ys, xs, lo, hi, style = _field_edges(parcels, seed, young)
    lc = ground.copy()
    isfield = ground == _FIELD
    for st, cls, width_m in ((3, _GRASS, 2.0), (2, _TRACK, 3.5), (1, _HEDGE, 3.5)):
        m = np.zeros(ground.shape, np.uint8)
        sel = style == st
        m[ys[sel], xs[sel]] = 1
        k = int(round(width_m / res))
        if k > 1:
            m = cv2.dilate(m, _disk(k))
        lc[(m > 0) & isfield] = cls
    lc[isfield & (parcels < 0)] = _GRASS
    for b in buildings:
        poly = _rect_poly(b['x_px'], b['y_px'], b['w_px'], b['h_px'], b['angle_rad'])
        cv2.fillPoly(lc, [_cvpts(poly)], _BUILDING, shift=4)
    field_id = np.where(lc == _FIELD, parcels, -1).astype(np.int32)
    return lc, field_id


def _tree(x, y, r_px, h, species, group, pair=None):
    return dict(x_px=float(x), y_px=float(y), radius_px=float(r_px), height_m=float(h),
                species=species, group=group, pair=pair)


def _gen_trees(ctx, lc):
    rng = ctx.rng('trees')
    n, res = ctx.n, ctx.res
    trees = []
    road_dist = ctx.road_dist
    bfree = cv2.dilate(ctx.bmask, _disk(ctx.px(3.0))) == 0

    def ok(x, y, r):
        ix, iy = int(x), int(y)
        return (0 <= ix < n and 0 <= iy < n and road_dist[iy, ix] > r + ctx.px(1.5)
                and bfree[iy, ix] and lc[iy, ix] not in (_WATER, _ROAD, _GRAVEL, _BUILDING))

    # forest: a jittered grid of crowns, conifer stands where a noise field says so
    cell = ctx.px(rng.uniform(4.6, 5.6))
    gy, gx = np.mgrid[0:n:cell, 0:n:cell]
    gx = gx.ravel() + rng.uniform(-0.45, 0.45, gx.size) * cell + cell / 2
    gy = gy.ravel() + rng.uniform(-0.45, 0.45, gy.size) * cell + cell / 2
    inb = (gx >= 0) & (gx < n) & (gy >= 0) & (gy < n)
    gx, gy = gx[inb], gy[inb]
    keep = (ctx.forest[gy.astype(int), gx.astype(int)] > 0) & (rng.random(gx.size) < 0.95)
    keep &= road_dist[gy.astype(int), gx.astype(int)] > ctx.px(3.0)
    gx, gy = gx[keep], gy[keep]
    con = _fbm(rng, n, n, ctx.px(150.0), 3, 0.5)[gy.astype(int), gx.astype(int)] > 0.35
    big = rng.random(gx.size) < 0.06
    rad = np.where(con, rng.uniform(0.5, 0.68, gx.size), rng.uniform(0.55, 0.85, gx.size))
    rad = rad * cell * np.where(big, 1.5, 1.0)
    hgt = np.where(con, rng.uniform(18.0, 32.0, gx.size), rng.uniform(15.0, 28.0, gx.size))
    for x, y, r, h, c in zip(gx, gy, rad, hgt, con):
        trees.append(_tree(x, y, r, h, 'conifer' if c else 'deciduous', 'forest'))
    # hedgerows along hedge-style field boundaries, with gaps
    ys, xs, lo, hi, style = _field_edges(ctx.parcels, ctx.seed)
    sel = style == 1
    ys, xs, lo, hi = ys[sel], xs[sel], lo[sel], hi[sel]
    if len(ys):
        step = ctx.px(2.8)
        ox, oy = rng.uniform(0, step, 2)
        key = ((xs + ox) // step).astype(np.int64) * 100003 + ((ys + oy) // step).astype(np.int64)
        _, first = np.unique(key, return_index=True)
        gap = _fbm(rng, n, n, ctx.px(40.0), 3, 0.5)
        for i in first:
            x, y = xs[i] + 0.5 + rng.normal(0, 0.3) * step, ys[i] + 0.5 + rng.normal(0, 0.3) * step
            if gap[int(ys[i]), int(xs[i])] < -0.55:
                continue
            if rng.random() < 0.08:
                r, h = ctx.px(rng.uniform(3.5, 6.0)), rng.uniform(10.0, 20.0)
            else:
                r, h = ctx.px(rng.uniform(1.4, 2.6)), rng.uniform(3.0, 7.0)
            if ok(x, y, r * 0.5):
                trees.append(_tree(x, y, r, h, 'deciduous' if rng.random() < 0.93 else 'conifer',
                                   'hedge', (int(lo[i]), int(hi[i]))))
    # avenues along some roads
    for road in ctx.roads:
        if rng.random() > (0.35 if road['kind'] == 'main' else 0.2):
            continue
        pts = road['points_px'].astype(np.float64)
        cum = _arc(pts)
        s0 = rng.uniform(0, 0.6) * cum[-1]
        s1 = min(cum[-1], s0 + ctx.px(rng.uniform(150.0, 400.0)))
        spacing = ctx.px(rng.uniform(9.0, 14.0))
        off = ctx.px(road['width_m']) / 2 + ctx.px(3.0)
        for s in np.arange(s0, s1, spacing):
            p, t = _point_at(pts, cum, s)
            for side in (-1.0, 1.0):
                q = p + np.array([-t[1], t[0]]) * side * off
                r = ctx.px(rng.uniform(3.0, 5.0))
                if ok(q[0], q[1], 0) and road_dist[int(q[1]), int(q[0])] > ctx.px(2.0):
                    trees.append(_tree(q[0], q[1], r, rng.uniform(10.0, 18.0), 'deciduous',
                                       'avenue'))
    # riparian trees along streams and around ponds
    for st in ctx.streams:
        pts = st['points_px'].astype(np.float64)
        nr = _normals(pts)
        every = max(1, int(ctx.px(8.0) / ctx.px(2.0)))
        for i in range(0, len(pts), every):
            if rng.random() < 0.45:
                continue
            side = 1.0 if rng.random() < 0.5 else -1.0
            q = pts[i] + nr[i] * side * ctx.px(st['width_m'] / 2 + rng.uniform(2.0, 5.0))
            r = ctx.px(rng.uniform(2.5, 5.0))
            if ok(q[0], q[1], r * 0.3):
                trees.append(_tree(q[0], q[1], r, rng.uniform(8.0, 18.0), 'deciduous',
                                   'riparian'))
    water = (ctx.ground == _WATER).astype(np.uint8)
    shore = cv2.dilate(water, _disk(ctx.px(8.0))) - cv2.dilate(water, _disk(ctx.px(4.0)))
    sy_, sx_ = np.nonzero(shore)
    if len(sy_):
        for i in rng.choice(len(sy_), size=min(len(sy_), int(25 * ctx.area_scale) + 4),
                            replace=False):
            r = ctx.px(rng.uniform(2.5, 4.5))
            if ok(sx_[i] + 0.5, sy_[i] + 0.5, r * 0.3):
                trees.append(_tree(sx_[i] + 0.5, sy_[i] + 0.5, r, rng.uniform(7.0, 15.0),
                                   'deciduous', 'riparian'))
    # garden trees in house lots
    for lot in ctx.lots:
        poly = lot['polygon_px'].astype(np.float64)
        for _ in range(int(rng.integers(0, 4)) if lot['kind'] == 'house' else 1):
            w = rng.dirichlet([1.0, 1.0, 1.0, 1.0])
            q = w @ poly
            r = ctx.px(rng.uniform(2.0, 4.5))
            if ok(q[0], q[1], 0) and lc[int(q[1]), int(q[0])] == _LOT:
                trees.append(_tree(q[0], q[1], r, rng.uniform(5.0, 14.0),
                                   'conifer' if rng.random() < 0.25 else 'deciduous', 'garden'))
    # solitary trees in meadows and at field corners
    for fi, f in enumerate(ctx.fields):
        k = int(rng.integers(0, 5)) if f['crop'] == 'meadow' else int(rng.random() < 0.12)
        cx, cy = f['centroid_px']
        for _ in range(k):
            q = np.array([cx, cy]) + rng.normal(0, 1, 2) * math.sqrt(f['area_m2']) / res / 4
            iq = q.astype(int)
            if 0 <= iq[0] < n and 0 <= iq[1] < n and ctx.parcels[iq[1], iq[0]] == fi:
                r = ctx.px(rng.uniform(3.0, 7.0))
                if ok(q[0], q[1], r * 0.3):
                    trees.append(_tree(q[0], q[1], r, rng.uniform(10.0, 22.0), 'deciduous',
                                       'single'))
    return trees


_CAR_RGB = [((235, 235, 232), 0.22), ((40, 40, 44), 0.18), ((150, 152, 156), 0.2),
            ((90, 92, 98), 0.12), ((30, 45, 90), 0.08), ((150, 30, 30), 0.07),
            ((20, 70, 60), 0.04), ((200, 170, 60), 0.03), ((110, 40, 40), 0.06)]


def _gen_vehicles(rng, roads, res, n):
    """Cars (and a few vans/trucks/tractors) in their lane, right-hand traffic."""
    lens = []
    for r in roads:
        p = r['points_px']
        inside = (p[:, 0] > 0) & (p[:, 0] < n) & (p[:, 1] > 0) & (p[:, 1] < n)
        lens.append(float(inside.mean()) * _arc(p.astype(np.float64))[-1])
    lens = np.asarray(lens)
    if lens.sum() <= 0:
        return []
    count = int(rng.poisson(lens.sum() * res / 85.0))
    cols = np.array([c for c, _ in _CAR_RGB])
    cp = np.array([p for _, p in _CAR_RGB])
    out = []
    for _try in range(count * 10):
        if len(out) >= count:
            break
        r = roads[int(rng.choice(len(roads), p=lens / lens.sum()))]
        pts = r['points_px'].astype(np.float64)
        cum = _arc(pts)
        p, t = _point_at(pts, cum, rng.uniform(0, cum[-1]))
        d = 1.0 if rng.random() < 0.5 else -1.0
        wpx = r['width_m'] / res
        q = p + np.array([-t[1], t[0]]) * d * wpx / 4
        if not (4 < q[0] < n - 4 and 4 < q[1] < n - 4):
            continue
        if any(math.hypot(q[0] - o['x_px'], q[1] - o['y_px']) * res < 8.0 for o in out):
            continue
        u = rng.random()
        if u < 0.88:
            kind, ln, wd = 'car', rng.uniform(4.1, 4.9), rng.uniform(1.75, 1.9)
            rgb = cols[int(rng.choice(len(cols), p=cp / cp.sum()))]
        elif u < 0.94:
            kind, ln, wd, rgb = 'van', rng.uniform(5.0, 6.0), 2.0, cols[0]
        elif u < 0.98:
            kind, ln, wd = 'truck', rng.uniform(9.0, 14.0), 2.5
            rgb = cols[int(rng.integers(len(cols)))]
        else:
            kind, ln, wd, rgb = 'tractor', 4.5, 2.4, np.array([(40, 110, 50), (170, 40, 30)][
                int(rng.integers(2))])
        rgb = np.clip(rgb * rng.uniform(0.92, 1.08), 0, 255)
        out.append(dict(x_px=float(q[0]), y_px=float(q[1]), angle_rad=_enu_angle(t * d),
                        rgb=tuple(int(v) for v in rgb), length_m=float(ln), width_m=float(wd),
                        kind=kind))
    return out


def generate_layout(seed: int, size_m: float = 1200.0, resolution: float = 0.5) -> Layout:
    """Generate the semantic world of a square area ``size_m`` x ``size_m`` metres.

    ``resolution`` is metres per pixel; rasters are ``round(size_m / resolution)`` pixels a side,
    north up.  Deterministic: the same ``(seed, size_m, resolution)`` gives identical arrays.
    Object counts scale with the area; a 1.2 km world has 2-3 main roads, 1-3 minor roads, 1-2
    villages, 2-4 farmsteads, ponds (and often a stream), 10-20 % forest and 4-8 tall structures
    outside the central ``CENTRAL_CLEAR_M`` square (worlds that small have none).
    """
    if size_m <= 0 or resolution <= 0:
        raise ValueError('size_m and resolution must be positive')
    ctx = _Ctx(seed, size_m, resolution)
    _gen_roads(ctx)
    _gen_water(ctx)
    _gen_settlements(ctx)
    _gen_forest(ctx)
    _gen_tall(ctx)
    _draw_tracks(ctx)
    _gen_fields(ctx)
    lc, field_id = _compose(ctx.ground, ctx.parcels, ctx.buildings, ctx.res, ctx.seed)
    trees = _gen_trees(ctx, lc)
    vehicles = _gen_vehicles(ctx.rng('vehicles'), ctx.roads, ctx.res, ctx.n)
    return Layout(resolution=float(resolution), seed=int(seed), landcover=lc, field_id=field_id,
                  fields=ctx.fields, buildings=ctx.buildings, trees=trees, vehicles=vehicles,
                  tall_structures=ctx.tall, roads=ctx.roads, tracks=ctx.tracks,
                  streams=ctx.streams, lots=ctx.lots, details=ctx.details,
                  parcels=ctx.parcels, ground=ctx.ground, size_m=float(size_m))


# ----------------------------------------------------------------------------- conditions

def _check_condition(condition):
    if condition not in CONDITIONS:
        raise ValueError('unknown condition %r (known: %s)' % (condition, ', '.join(CONDITIONS)))


def condition_params(condition: str = 'map', seed: int = 0) -> dict:
    """Rendering parameters of a condition: sun, light, exposure, haze, sensor.

    ``sun_az_deg`` clockwise from north, ``sun_el_deg`` above the horizon; ``ambient`` and
    ``direct`` are rgb light of sky and sun (a sunlit flat surface receives their sum);
    ``exposure`` a global gain, ``gamma`` a tone exponent, ``haze`` the fraction of contrast lost,
    ``noise_dn`` the sensor noise std (0-255 units), ``blur_px`` a Gaussian blur sigma.
    'map' is fixed (independent of ``seed``); the others are drawn from ``seed``.
    """
    _check_condition(condition)
    season = _SEASON[condition]
    if condition == 'map':
        return dict(condition='map', season='summer', sun_az_deg=152.0, sun_el_deg=56.0,
                    ambient=(0.36, 0.39, 0.45), direct=(0.64, 0.61, 0.55), exposure=1.0,
                    gamma=1.0, wb=(1.0, 1.0, 1.0), haze=0.0, noise_dn=1.2, blur_px=0.5)
    rng = _rng(seed, _h('params'), _h(condition))
    az = dict(summer=(100.0, 260.0), autumn=(130.0, 230.0), winter=(150.0, 210.0),
              evening=(255.0, 295.0), haze=(120.0, 240.0))[condition]
    el = dict(summer=(38.0, 62.0), autumn=(20.0, 34.0), winter=(11.0, 19.0),
              evening=(6.0, 12.0), haze=(35.0, 58.0))[condition]
    p = dict(condition=condition, season=season, sun_az_deg=float(rng.uniform(*az)),
             sun_el_deg=float(rng.uniform(*el)), exposure=float(rng.uniform(0.85, 1.15)),
             gamma=float(rng.uniform(0.9, 1.1)),
             wb=tuple(float(v) for v in 1.0 + rng.normal(0.0, 0.035, 3)),
             haze=float(rng.uniform(0.0, 0.08)), noise_dn=float(rng.uniform(1.5, 3.0)),
             blur_px=float(rng.uniform(0.5, 1.0)),
             ambient=(0.36, 0.39, 0.45), direct=(0.64, 0.61, 0.55))
    if condition == 'autumn':
        p.update(ambient=(0.40, 0.41, 0.45), direct=(0.60, 0.56, 0.48))
    elif condition == 'winter':
        p.update(ambient=(0.40, 0.43, 0.50), direct=(0.60, 0.58, 0.54),
                 exposure=float(rng.uniform(0.8, 0.95)))
    elif condition == 'evening':
        p.update(ambient=(0.26, 0.28, 0.36), direct=(0.80, 0.58, 0.36),
                 exposure=float(rng.uniform(0.72, 0.88)))
    elif condition == 'haze':
        p.update(haze=float(rng.uniform(0.38, 0.55)), blur_px=float(rng.uniform(0.8, 1.3)),
                 ambient=(0.45, 0.47, 0.50), direct=(0.55, 0.53, 0.50))
    return p


_SUMMER_NEXT = dict(wheat=['wheat_green', 'stubble'], wheat_green=['wheat', 'wheat'],
                    barley=['stubble', 'stubble', 'ploughed'], maize=['maize', 'maize_ripe'],
                    rapeseed=['stubble', 'wheat'], sugarbeet=['sugarbeet'], potato=['potato'],
                    meadow=['meadow'], fallow=['fallow', 'meadow'], stubble=['ploughed', 'sown'],
                    ploughed=['sown', 'maize'])
_AUTUMN = dict(wheat=['stubble', 'stubble', 'ploughed', 'sown'],
               wheat_green=['stubble', 'ploughed', 'sown'],
               barley=['stubble', 'ploughed', 'rapeseed_young'],
               maize=['maize_ripe', 'maize_ripe', 'stubble', 'ploughed'],
               rapeseed=['rapeseed_young', 'stubble', 'ploughed'],
               sugarbeet=['sugarbeet', 'ploughed'], potato=['ploughed', 'sown'],
               meadow=['meadow'], fallow=['fallow'], stubble=['ploughed', 'sown', 'stubble'],
               ploughed=['sown', 'ploughed'])
_WINTER = dict(wheat=['winter_cereal', 'ploughed'], wheat_green=['winter_cereal', 'ploughed'],
               barley=['winter_cereal', 'ploughed', 'stubble'],
               maize=['stubble', 'ploughed'], rapeseed=['rapeseed_young', 'winter_cereal'],
               sugarbeet=['ploughed'], potato=['ploughed', 'winter_cereal'], meadow=['meadow'],
               fallow=['fallow'], stubble=['ploughed', 'stubble'],
               ploughed=['ploughed', 'winter_cereal'])


def _evolve_field(rng, f, season, res):
    """The same parcel at another time: crop rotation, growth stage, harvest, ploughing."""
    g = dict(f)
    crop = f['crop']
    if crop == 'meadow' and rng.random() < 0.85:
        # grassland stays grassland, but is mown in other swaths
        g.update(_new_crop_params(rng, 'meadow', f['row_angle_rad'], res), crop='meadow')
        return g
    if season == 'summer':
        u = rng.random()
        if u < 0.35:
            new = str(rng.choice(list(_CROP_P)))          # another year: rotation
        elif u < 0.7:
            new = str(rng.choice(_SUMMER_NEXT.get(crop, [crop])))
        else:
            new = crop
    else:
        new = str(rng.choice((_AUTUMN if season == 'autumn' else _WINTER).get(crop, [crop])))
    if new == crop and rng.random() < 0.75:
        # unchanged crop: keep the drill direction but the field is resown elsewhere in phase
        g['row_phase'] = float(rng.uniform(0, 1))
        g['tint'] = _tint(rng)
        return g
    # a new tillage pass: along the old rows or turned by 90 deg or freely
    base = f['row_angle_rad'] + float(rng.choice([0.0, 0.0, math.pi / 2, rng.uniform(0, 3.2)]))
    g.update(_new_crop_params(rng, new, base, res))
    return g


def _adjacent_pairs(parcels, seed):
    ys, xs, lo, hi, _ = _field_edges(parcels, seed)
    if len(lo) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    key = lo.astype(np.int64) * 1000003 + hi
    uk, cnt = np.unique(key, return_counts=True)
    return np.stack([uk // 1000003, uk % 1000003], 1), cnt


def condition_layout(layout: Layout, condition: str = 'map', seed: int = 0) -> Layout:
    """The layout as seen in ``condition`` (deterministic in ``seed``); 'map' returns it as is.

    Structural changes of a flight condition: crops at another stage (crop, row angle, row
    spacing; some fields ploughed or harvested), 1-3 pairs of neighbouring fields merged and
    1-2 fields split (``fields[i]['merged_into']``/``['split_from']``; ``field_id``,
    ``landcover`` and boundary hedges follow), vehicles re-drawn, removable buildings removed or
    added, a few single trees felled or planted, turbines yawed.  Roads, water, forests, big
    buildings and tall structures are unchanged.  A layout that is already in a condition is
    returned unchanged for the same (condition, seed) and rejected otherwise.
    """
    _check_condition(condition)
    if layout.condition != 'map':
        if (layout.condition, layout.condition_seed) == (condition, int(seed)):
            return layout
        raise ValueError('condition_layout needs the reference (map) layout, got %r'
                         % layout.condition)
    if condition == 'map':
        return layout
    res = layout.resolution
    h, w = layout.shape
    rng = _rng(layout.seed, seed, _h(condition), _h('layout'))
    season = _SEASON[condition]
    fields = [_evolve_field(rng, f, season, res) for f in layout.fields]
    parcels = layout.parcels.copy()
    nf = len(fields)
    # --- merge neighbouring fields (a boundary disappears)
    pairs, cnt = _adjacent_pairs(parcels, layout.seed)
    merged = set()
    removed_pairs = set()
    n_merge = min(len(pairs), max(1, int(round(rng.uniform(1.0, 3.0) * nf / 50.0))))
    for i in rng.permutation(len(pairs)):
        if n_merge <= 0:
            break
        a, b = int(pairs[i, 0]), int(pairs[i, 1])
        if a in merged or b in merged or cnt[i] * res < 25.0:
            continue
        parcels[parcels == b] = a
        fields[b] = dict(fields[b], merged_into=a)
        merged.update((a, b))
        removed_pairs.add((a, b))
        n_merge -= 1
    # --- split big fields along a line through their centroid
    young = []
    order = [i for i in rng.permutation(nf) if i not in merged and
             layout.fields[i]['area_m2'] > 15000.0]
    for f in order[:int(rng.integers(1, 3))]:
        ys, xs = np.nonzero(parcels == f)
        if len(ys) < 100:
            continue
        cx, cy = xs.mean(), ys.mean()
        a = fields[f]['row_angle_rad'] + rng.normal(0.0, 0.2)
        side = (xs - cx) * math.sin(a) + (ys - cy) * math.cos(a) > rng.normal(0, 0.1) * math.sqrt(
            len(ys))
        nid = len(fields)
        parcels[ys[side], xs[side]] = nid
        g = _new_crop_params(rng, str(rng.choice(list(_CROP_P))), fields[f]['row_angle_rad'],
                             res)
        if season != 'summer':
            g = _evolve_field(rng, dict(fields[f], **g), season, res)
        g.update(area_m2=float(side.sum() * res ** 2), split_from=f, merged_into=None,
                 centroid_px=(float(xs[side].mean() + 0.5), float(ys[side].mean() + 0.5)))
        fields.append(g)
        young.append(nid)
    # --- small buildings come and go
    # (removed ones keep blocking bmask: new sheds go to fresh spots, so changes are visible)
    bmask = np.zeros((h, w), np.uint8)
    buildings = []
    for b in layout.buildings:
        cv2.fillPoly(bmask, [_cvpts(_rect_poly(b['x_px'], b['y_px'], b['w_px'], b['h_px'],
                                               b['angle_rad']))], 1, shift=4)
        if b['removable'] and rng.random() < 0.3:
            continue
        buildings.append(dict(b))
    lots = [lt for lt in layout.lots if lt['kind'] == 'house'] or layout.lots
    for _ in range(int(rng.integers(1, 5)) if lots else 0):
        lot = lots[int(rng.integers(len(lots)))]
        poly = lot['polygon_px'].astype(np.float64)
        for _try in range(20):
            q = rng.dirichlet([2.0, 2.0, 2.0, 2.0]) @ poly
            bw, bd = rng.uniform(3.0, 7.0), rng.uniform(2.5, 5.0)
            rect = _rect_poly(q[0], q[1], bw / res, bd / res, lot['angle_rad'])
            box = _bbox(rect, (h, w), 0)
            if box is None or rect.min() < 2 or rect.max() > min(h, w) - 2:
                continue
            x0, y0, x1, y1 = box
            m = _poly_crop(rect, box)
            okm = (layout.ground[y0:y1, x0:x1] == _LOT) & (cv2.dilate(
                bmask[y0:y1, x0:x1], _disk(3)) == 0)
            if np.all(okm[m > 0]):
                cv2.fillPoly(bmask, [_cvpts(rect)], 1, shift=4)
                buildings.append(dict(x_px=float(q[0]), y_px=float(q[1]), w_px=bw / res,
                                      h_px=bd / res, angle_rad=float(lot['angle_rad']),
                                      height_m=float(rng.uniform(2.5, 3.5)),
                                      roof_rgb=tuple(int(v) for v in rng.integers(60, 170, 3)),
                                      roof='flat', kind='shed', removable=True))
                break
    lc, field_id = _compose(layout.ground, parcels, buildings, res, layout.seed, young)
    # --- trees: hedges of merged boundaries are grubbed out, a few trees felled/planted
    trees = []
    for t in layout.trees:
        if t['group'] == 'hedge' and t['pair'] is not None and tuple(t['pair']) in removed_pairs:
            continue
        if t['group'] in ('single', 'garden', 'avenue') and rng.random() < 0.06:
            continue
        ix, iy = int(t['x_px']), int(t['y_px'])
        if bmask[min(iy, h - 1), min(ix, w - 1)]:
            continue
        trees.append(t)
    for _ in range(int(rng.integers(2, 8))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if lc[int(y), int(x)] in (_GRASS, _LOT) and not bmask[int(y), int(x)]:
            trees.append(_tree(x, y, rng.uniform(2.0, 4.0) / res, rng.uniform(5.0, 12.0),
                               'deciduous', 'single'))
    vehicles = _gen_vehicles(rng, layout.roads, res, min(h, w))
    tall = []
    for s in layout.tall_structures:
        s = dict(s)
        if s['kind'] == 'wind_turbine':
            s['yaw_rad'] = float(rng.uniform(0, 2 * np.pi))
            s['rotor_phase_rad'] = float(rng.uniform(0, 2 * np.pi))
        tall.append(s)
    return dataclasses.replace(layout, landcover=lc, field_id=field_id, fields=fields,
                               buildings=buildings, trees=trees, vehicles=vehicles,
                               tall_structures=tall, parcels=parcels, condition=condition,
                               condition_seed=int(seed), young_fields=tuple(young))


# ----------------------------------------------------------------------------- heights

def _building_heights(shape, buildings, res, chimneys=False):
    """Surface height of buildings: gable roofs (ridge along the long side) or flat roofs."""
    hmap = np.zeros(shape, np.float32)
    for b in buildings:
        poly = _rect_poly(b['x_px'], b['y_px'], b['w_px'], b['h_px'], b['angle_rad'])
        box = _bbox(poly, shape, 1)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        m = _poly_crop(poly, box) > 0
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        dx, dy = xx - b['x_px'], yy - b['y_px']
        ca, sa = math.cos(b['angle_rad']), math.sin(b['angle_rad'])
        u = dx * ca - dy * sa
        v = dx * sa + dy * ca
        top = b['height_m']
        if b.get('roof') == 'gable':
            short = min(b['w_px'], b['h_px'])
            t = np.abs(v) / (b['h_px'] / 2) if b['w_px'] >= b['h_px'] else np.abs(u) / (
                b['w_px'] / 2)
            eave = max(2.2, top - 0.45 * short * res)
            z = eave + (top - eave) * np.clip(1.0 - t, 0.0, 1.0)
        else:
            z = np.full(u.shape, top, np.float32)
        if chimneys and b.get('roof') == 'gable' and b['w_px'] * b['h_px'] * res ** 2 < 250:
            # chimneys: small blocks on houses, placed from the building's identity
            k = _hash01(int(b['x_px'] * 16), int(b['y_px'] * 16), 5)[0]
            if k < 0.7:
                cu = (k - 0.35) * (b['w_px'] if b['w_px'] >= b['h_px'] else b['h_px'])
                cv_ = 0.25 * (b['h_px'] if b['w_px'] >= b['h_px'] else b['w_px'])
                if b['w_px'] < b['h_px']:
                    cu, cv_ = cv_, cu
                z = np.where((np.abs(u - cu) < 0.5 / res) & (np.abs(v - cv_) < 0.5 / res),
                             top + 0.8, z)
        sub = hmap[y0:y1, x0:x1]
        sub[m] = np.maximum(sub[m], z[m])
    return hmap


def _tree_arrays(trees):
    if not trees:
        z = np.zeros(0)
        return z, z, z, z, np.zeros(0, bool)
    a = np.array([(t['x_px'], t['y_px'], t['radius_px'], t['height_m']) for t in trees],
                 np.float64)
    con = np.array([t['species'] == 'conifer' for t in trees], bool)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3], con


def _crowns(shape, trees):
    """Per pixel: index of the nearest tree centre (-1 if none) and the distance to it (px).

    One distance transform with labels (a Voronoi diagram of the crown centres) renders
    thousands of touching crowns at once; each crown is clipped by its neighbours like in a
    real canopy.
    """
    h, w = shape
    x, y, r, ht, con = _tree_arrays(trees)
    if len(x) == 0:
        return np.full(shape, -1, np.int32), np.full(shape, 1e6, np.float32), (x, y, r, ht, con)
    ix = np.clip(x.astype(int), 0, w - 1)
    iy = np.clip(y.astype(int), 0, h - 1)
    src = np.full(shape, 255, np.uint8)
    src[iy, ix] = 0
    dist, lab = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.full(int(lab.max()) + 1, -1, np.int32)
    lut[lab[iy, ix]] = np.arange(len(x), dtype=np.int32)
    return lut[lab], dist, (x, y, r, ht, con)


def _tall_discs(hmap, tall, res):
    for s in tall:
        r = max(1, int(round(s['radius_m'] / res)))
        cx, cy = s['x_px'], s['y_px']
        x0, y0 = max(int(cx) - r - 1, 0), max(int(cy) - r - 1, 0)
        x1, y1 = min(int(cx) + r + 2, hmap.shape[1]), min(int(cy) + r + 2, hmap.shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        m = np.hypot(xx - cx, yy - cy) <= max(s['radius_m'] / res, 0.75)
        sub = hmap[y0:y1, x0:x1]
        sub[m] = np.maximum(sub[m], s['height_m'])


def obstacle_heights(layout: Layout, condition: str = 'map', seed: int = 0) -> np.ndarray:
    """Obstacle height above ground (metres, float32, H x W, north up) in a condition.

    Buildings (roof surface: gable or flat), trees (a disc of the crown radius at the tree's
    height, clipped between touching crowns), tall structures (a disc of ``radius_m`` at
    ``height_m``; wind turbines: the tower disc only), 0 elsewhere.  Condition changes of
    buildings and trees apply (same ``condition_layout`` as the rendering).
    """
    lay = condition_layout(layout, condition, seed)
    res = lay.resolution
    hmap = _building_heights(lay.shape, lay.buildings, res)
    idx, dist, (x, y, r, ht, con) = _crowns(lay.shape, lay.trees)
    if len(x):
        safe = np.maximum(idx, 0)
        inside = (idx >= 0) & (dist <= np.asarray(r, np.float32)[safe] + 0.5)
        tree_h = np.where(inside, np.asarray(ht, np.float32)[safe], 0.0)
        np.maximum(hmap, tree_h.astype(np.float32), out=hmap)
    _tall_discs(hmap, lay.tall_structures, res)
    return hmap


# ----------------------------------------------------------------------------- rendering

# crop looks: base colour, stripe colour (soil between rows, swath, furrow shadow),
# stripe amplitude, tramline darkening (negative: lighter tramlines), micro-relief of rows (m)
_LOOK = {
    'wheat': ((0.62, 0.57, 0.33), (0.47, 0.43, 0.26), 0.35, 0.30, 0.03),
    'wheat_green': ((0.40, 0.50, 0.22), (0.31, 0.38, 0.18), 0.35, 0.30, 0.03),
    'barley': ((0.71, 0.65, 0.43), (0.56, 0.50, 0.32), 0.30, 0.30, 0.03),
    'maize': ((0.24, 0.36, 0.13), (0.36, 0.32, 0.22), 0.45, 0.08, 0.12),
    'maize_ripe': ((0.55, 0.51, 0.31), (0.40, 0.35, 0.24), 0.40, 0.05, 0.12),
    'rapeseed': ((0.45, 0.45, 0.24), (0.34, 0.33, 0.20), 0.25, 0.25, 0.03),
    'rapeseed_young': ((0.27, 0.42, 0.16), (0.44, 0.37, 0.27), 0.45, 0.12, 0.02),
    'sugarbeet': ((0.20, 0.38, 0.13), (0.38, 0.32, 0.23), 0.40, 0.10, 0.05),
    'potato': ((0.27, 0.40, 0.16), (0.44, 0.35, 0.25), 0.55, 0.05, 0.12),
    'meadow': ((0.32, 0.44, 0.19), (0.43, 0.50, 0.26), 0.35, 0.00, 0.02),
    'fallow': ((0.40, 0.44, 0.24), (0.50, 0.47, 0.31), 0.15, 0.00, 0.02),
    'stubble': ((0.73, 0.67, 0.49), (0.86, 0.81, 0.62), 0.40, -0.25, 0.02),
    'ploughed': ((0.43, 0.35, 0.26), (0.27, 0.21, 0.16), 0.60, 0.00, 0.10),
    'sown': ((0.48, 0.40, 0.30), (0.37, 0.40, 0.23), 0.30, 0.20, 0.03),
    'winter_cereal': ((0.35, 0.40, 0.22), (0.45, 0.37, 0.27), 0.45, 0.30, 0.03),
}
_VEG = {'meadow', 'wheat_green', 'maize', 'rapeseed_young', 'sugarbeet', 'potato', 'fallow',
        'winter_cereal'}


class _Mats:
    """Material table: per-material properties gathered per pixel through the material map."""

    SATURATION = 0.8

    KEYS = dict(c0=3, c1=3, samp=1, kx=1, ky=1, ph=1, tamp=1, tkx=1, tky=1, tper=1, relief=1,
                am=1, ad=1, asm=1, af=1, chroma=1, snow=1, dyn=1, pamp=1, spot=1)

    def __init__(self):
        self.rows = []

    def add(self, c0, **kw):
        d = dict(c0=c0, c1=kw.pop('c1', c0), samp=0.0, kx=0.0, ky=0.0, ph=0.0, tamp=0.0,
                 tkx=0.0, tky=0.0, tper=1.0, relief=0.0, am=0.05, ad=0.05, asm=0.04, af=0.04,
                 chroma=0.0, snow=0.0, dyn=0.0, pamp=0.0, spot=0.0)
        d.update(kw)
        self.rows.append(d)
        return len(self.rows) - 1

    def arrays(self):
        out = {}
        for k, dim in self.KEYS.items():
            a = np.array([r[k] for r in self.rows], np.float32)
            if dim > 1:
                # aerial imagery is less saturated than the nominal palette
                a = a.reshape(-1, dim)
                lum = a @ np.float32([0.3, 0.59, 0.11])
                a = lum[:, None] + self.SATURATION * (a - lum[:, None])
                out[k] = np.ascontiguousarray(a.T).T    # columns contiguous for gathers
            else:
                out[k] = a
        return out


def _season_palettes(season):
    if season == 'autumn':
        return dict(grass=(0.40, 0.45, 0.23), lawn=(0.36, 0.46, 0.22),
                    floor=(0.30, 0.23, 0.13),
                    decid=[(0.58, 0.40, 0.12), (0.64, 0.52, 0.17), (0.46, 0.24, 0.10),
                           (0.33, 0.35, 0.14), (0.52, 0.33, 0.15), (0.40, 0.38, 0.15)],
                    conif=(0.13, 0.21, 0.12))
    if season == 'winter':
        return dict(grass=(0.44, 0.43, 0.32), lawn=(0.40, 0.42, 0.30),
                    floor=(0.32, 0.27, 0.20),
                    decid=[(0.36, 0.32, 0.28), (0.32, 0.29, 0.26), (0.40, 0.35, 0.30)],
                    conif=(0.11, 0.17, 0.11))
    return dict(grass=(0.34, 0.45, 0.20), lawn=(0.32, 0.47, 0.19), floor=(0.17, 0.21, 0.10),
                decid=[(0.22, 0.32, 0.12), (0.26, 0.36, 0.14), (0.19, 0.29, 0.12),
                       (0.30, 0.38, 0.16), (0.24, 0.30, 0.11)],
                conif=(0.13, 0.22, 0.12))


def _stripe_k(angle_rad, period_px):
    """Wave vector (cycles/px, image col/row) across rows running along ``angle_rad``."""
    return math.sin(angle_rad) / period_px, math.cos(angle_rad) / period_px


def _shadow_excess(dsm, res, az_deg, el_deg):
    """How far (m) the sun ray from each pixel passes below the surface (>0: in shadow).

    Max over all distances k toward the sun of ``dsm(p + k s) - k res tan(el)``, computed by
    doubling (k = 1, 2, 4, ...): log2(shadow length) image shifts instead of one per pixel.
    """
    h, w = dsm.shape
    az, el = math.radians(az_deg), math.radians(el_deg)
    sx, sy = math.sin(az), -math.cos(az)        # image direction toward the sun
    drop = res * math.tan(el)
    top = float(dsm.max())
    steps = int(math.ceil(math.log2(max(top / max(drop, 1e-3), 1.0) + 1.0)))
    s = dsm.copy()
    k = 1.0
    for _ in range(min(steps, 12)):
        m = np.float32([[1, 0, k * sx], [0, 1, k * sy]])
        sh = cv2.warpAffine(s, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        np.maximum(s, sh - np.float32(k * drop), out=s)
        k *= 2.0
    return s - dsm


class _Tex:
    """Noise fields of a render: layout-tied ones (static texture) and condition-tied ones."""

    def __init__(self, lay, cond_seed):
        h, w = lay.shape
        res = lay.resolution
        r = _rng(lay.seed, _h('texture'))
        self.macro = _fbm(r, h, w, 220.0 / res, 4, 0.5)
        self.mid = _fbm(r, h, w, 24.0 / res, 4, 0.55)
        self.small = _fbm(r, h, w, max(3.0 / res, 1.0), 3, 0.6)
        self.warp = _fbm(r, h, w, 30.0 / res, 3, 0.5)
        g = r.standard_normal((h, w), dtype=np.float32)
        self.fine = cv2.GaussianBlur(g, (0, 0), 0.6) * np.float32(1.6)
        rc = _rng(lay.seed, _h('texture-cond'), cond_seed)
        self.cmid = _fbm(rc, h, w, 35.0 / res, 4, 0.55)
        self.csmall = _fbm(rc, h, w, max(4.0 / res, 1.0), 3, 0.6)


def _render(lay, p, cond_seed):
    h, w = lay.shape
    res = lay.resolution
    season = p['season']
    winter = season == 'winter'
    pal = _season_palettes(season)
    tex = _Tex(lay, cond_seed)
    mats = _Mats()
    lc = lay.landcover
    snowy = 0.97 if winter else 0.0
    # fixed materials
    m_grass = mats.add(pal['grass'], c1=(0.42, 0.47, 0.24), am=0.05, ad=0.06, asm=0.10,
                       af=0.08, chroma=0.9, snow=snowy, dyn=0.5, spot=0.17)
    m_lawn = mats.add(pal['lawn'], am=0.03, ad=0.08, asm=0.16, af=0.08, chroma=0.8,
                      snow=snowy, spot=0.2)
    m_floor = mats.add(pal['floor'], am=0.08, ad=0.12, asm=0.15, af=0.08, chroma=0.4,
                       snow=0.85 if winter else 0.0, spot=0.2)
    ice = winter and _rng(lay.seed, cond_seed, 9).random() < 0.6
    m_water = mats.add((0.58, 0.62, 0.66) if ice else (0.10, 0.15, 0.15), am=0.05, ad=0.06,
                       asm=0.05, af=0.035, snow=0.6 if ice else 0.0)
    m_main = mats.add((0.35, 0.35, 0.36), am=0.04, ad=0.07, asm=0.05, af=0.09,
                      snow=0.05 if winter else 0.0, spot=0.12)
    m_minor = mats.add((0.41, 0.40, 0.39), am=0.05, ad=0.10, asm=0.08, af=0.09,
                       snow=0.2 if winter else 0.0, spot=0.15)
    m_track = mats.add((0.56, 0.50, 0.41), am=0.05, ad=0.10, asm=0.12, af=0.08, dyn=0.6,
                       snow=0.8 if winter else 0.0, spot=0.25)
    m_gravel = mats.add((0.63, 0.61, 0.57), am=0.04, ad=0.06, asm=0.08, af=0.10,
                        snow=0.8 if winter else 0.0, spot=0.2)
    m_yard = mats.add((0.53, 0.52, 0.50), am=0.05, ad=0.12, asm=0.10, af=0.07,
                      snow=0.55 if winter else 0.0, dyn=0.5, spot=0.3)
    m_hedge = mats.add((0.20, 0.28, 0.12) if not winter else (0.33, 0.30, 0.26), am=0.05,
                       ad=0.12, asm=0.2, af=0.12, chroma=0.5, snow=0.5 if winter else 0.0,
                       spot=0.2)
    m_glass = mats.add((0.10, 0.11, 0.13), am=0.0, ad=0.0, asm=0.0, af=0.03)
    m_patio = mats.add((0.60, 0.58, 0.55), am=0.03, ad=0.05, asm=0.05, af=0.08,
                       snow=0.4 if winter else 0.0, spot=0.1)
    m_pool = mats.add((0.30, 0.66, 0.76) if not winter else (0.45, 0.50, 0.52), am=0.0,
                      ad=0.03, asm=0.02, af=0.03)
    ks = _stripe_k(0.0, max(1.2 / res, 2.5))
    m_silage = mats.add((0.12, 0.12, 0.12), c1=(0.5, 0.5, 0.5), samp=0.15, kx=ks[0], ky=ks[1],
                        am=0.0, ad=0.1, asm=0.1, af=0.08, snow=0.6 if winter else 0.0)
    lc_mat = np.array([m_grass, m_grass, m_floor, m_water, m_minor, m_lawn, m_yard, m_hedge,
                       m_track, m_gravel], np.int32)
    mat = lc_mat[lc]
    # fields: one material each
    f0 = len(mats.rows)
    for f in lay.fields:
        c0, c1, samp, tamp, relief = _LOOK[f['crop']]
        per = f['row_spacing_m'] / res
        # rows finer than ~2.5 px alias: fade them out rather than make moire
        samp *= float(np.clip((per - 2.0) / 1.5, 0.0, 1.0))
        kx, ky = _stripe_k(f['row_angle_rad'], per)
        tper = f['tramline_spacing_m'] / res
        tkx, tky = _stripe_k(f['row_angle_rad'], tper)
        tint = np.asarray(f['tint'])
        veg = f['crop'] in _VEG
        snow = 0.0
        if winter:
            # ploughed furrows and stubble stick out of thin snow; meadows are white
            snow = dict(ploughed=0.75, stubble=0.85, winter_cereal=0.9).get(f['crop'], 0.95)
        mats.add(tuple(np.clip(np.asarray(c0) * tint, 0, 1)), c1=tuple(np.asarray(c1) * tint),
                 samp=samp, kx=kx, ky=ky, ph=f['row_phase'], tamp=tamp, tkx=tkx, tky=tky,
                 tper=tper, relief=relief, am=0.04, ad=0.06, asm=0.08, af=0.07,
                 chroma=0.9 if veg else 0.3, snow=snow, dyn=1.0,
                 pamp=0.07 if f['crop'] == 'meadow' else 0.045, spot=0.17)
    fm = lay.field_id >= 0
    mat[fm] = f0 + lay.field_id[fm]
    # farm yards are concrete/gravel, house lots are gardens
    for lot in lay.lots:
        if lot['kind'] == 'farm':
            poly = _cvpts(lot['polygon_px'])
            tmp = np.zeros((h, w), np.uint8)
            cv2.fillPoly(tmp, [poly], 1, shift=4)
            mat[(tmp > 0) & (lc == _LOT)] = m_yard
    for d in lay.details:
        mid = dict(patio=m_patio, pool=m_pool, silage=m_silage)[d['kind']]
        cv2.fillPoly(mat, [_cvpts(d['polygon_px'])], int(mid), shift=4)
    # roads: minor then main on top; markings and wheel wear drawn separately
    for r in sorted(lay.roads, key=lambda r: r['kind'] == 'main'):
        _draw_path(mat, r['points_px'], m_main if r['kind'] == 'main' else m_minor,
                   r['width_m'] / res)
    b0 = len(mats.rows)
    for b in lay.buildings:
        rgb = np.asarray(b['roof_rgb'], np.float64) / 255.0
        metal = b['kind'] in ('barn', 'shed', 'hut', 'garage')
        ridge = b['angle_rad'] if b['w_px'] >= b['h_px'] else b['angle_rad'] + math.pi / 2
        # tiles: courses parallel to the ridge; metal: seams down the slope
        sa = ridge + (math.pi / 2 if metal else 0.0)
        per = max((0.9 if metal else 0.6) / res, 2.2)
        kx, ky = _stripe_k(sa, per)
        hsnow = _hash01(int(b['x_px'] * 16), int(b['y_px'] * 16), 11)[0]
        mats.add(tuple(rgb), c1=tuple(rgb * 0.8), samp=0.3 if metal else 0.25, kx=kx, ky=ky,
                 am=0.03, ad=0.05, asm=0.04, af=0.05,
                 snow=(0.95 if hsnow < 0.8 else 0.2) if winter else 0.0)
    for i, b in enumerate(lay.buildings):
        cv2.fillPoly(mat, [_cvpts(_rect_poly(b['x_px'], b['y_px'], b['w_px'], b['h_px'],
                                             b['angle_rad']))], b0 + i, shift=4)
    # vehicles: body colour with a dark windscreen band
    v0 = len(mats.rows)
    vh = np.zeros((h, w), np.float32)
    for v in lay.vehicles:
        mats.add(tuple(np.asarray(v['rgb']) / 255.0), am=0.0, ad=0.0, asm=0.0, af=0.03)
    for i, v in enumerate(lay.vehicles):
        ln, wd = v['length_m'] / res, v['width_m'] / res
        poly = _rect_poly(v['x_px'], v['y_px'], ln, wd, v['angle_rad'])
        cv2.fillPoly(mat, [_cvpts(poly)], v0 + i, shift=4)
        cv2.fillPoly(vh, [_cvpts(poly)], 3.2 if v['kind'] == 'truck' else 1.5, shift=4)
        if v['kind'] in ('car', 'van'):
            d = np.array([math.cos(v['angle_rad']), -math.sin(v['angle_rad'])])
            c = np.array([v['x_px'], v['y_px']]) + d * ln * 0.12
            cv2.fillPoly(mat, [_cvpts(_rect_poly(c[0], c[1], ln * 0.16, wd * 0.85,
                                                 v['angle_rad']))], m_glass, shift=4)
    # trees: crowns over everything else
    idx, dist, (tx, ty, tr, tht, tcon) = _crowns((h, w), lay.trees)
    t0 = len(mats.rows)
    if len(tx):
        ti = np.floor(tx).astype(np.int64)
        tj = np.floor(ty).astype(np.int64)
        u1, u2 = _hash01(ti, tj, 21), _hash01(ti, tj, 22)
        dec = pal['decid']
        for k in range(len(tx)):
            if tcon[k]:
                c = np.asarray(pal['conif']) * (0.85 + 0.3 * u2[k])
                mats.add(tuple(c), am=0.03, ad=0.05, asm=0.10, af=0.16,
                         snow=0.35 if winter else 0.0)
            else:
                c = np.asarray(dec[int(u1[k] * len(dec))]) * (0.85 + 0.3 * u2[k])
                if winter:
                    # bare twigs over snow: fine, grey, see-through
                    mats.add(tuple(c), am=0.03, ad=0.05, asm=0.08, af=0.3, snow=0.5)
                else:
                    mats.add(tuple(c), am=0.03, ad=0.05, asm=0.12, af=0.18, chroma=0.6)
        safe = np.maximum(idx, 0)
        rpx = np.asarray(tr, np.float32)[safe]
        # irregular crown outlines
        crown = (idx >= 0) & (dist < rpx * (1.0 + 0.18 * tex.small))
        mat[crown] = t0 + idx[crown]
    else:
        crown = np.zeros((h, w), bool)
        tr = tht = np.zeros(0)
        tcon = np.zeros(0, bool)
    a = mats.arrays()
    img = _shade(lay, p, mat, a, tex, (crown, idx, dist, tr, tht, tcon), vh, ice, m_glass)
    _draw_tall_tops(img, lay, p)
    return img


# random shade of each machine pass (band of half a tramline spacing) in a field
_PASS = np.random.default_rng(12345).uniform(-1.0, 1.0, 1024).astype(np.float32)


def _shade(lay, p, mat, a, tex, trees, vh, ice, m_glass):
    """Albedo from the material map, surface heights, snow, sunlight and shadows -> rgb."""
    h, w = mat.shape
    res = lay.resolution
    lc = lay.landcover
    winter = p['season'] == 'winter'
    crown, idx, dist, tr, tht, tcon = trees
    f32 = np.float32

    # ---- albedo: material colours, row stripes, tramlines, machine passes, multi-scale noise
    xs = np.arange(w, dtype=f32)[None, :] + f32(0.5)
    ys = np.arange(h, dtype=f32)[:, None] + f32(0.5)
    ph = a['ph'][mat]
    u = xs * a['kx'][mat]
    u += ys * a['ky'][mat]
    u += ph
    u += f32(0.15) * tex.warp                  # rows are never perfectly straight
    stripe = np.sin(f32(2 * np.pi) * u)
    stripe *= f32(0.5)
    stripe += f32(0.5)
    del u
    ut = xs * a['tkx'][mat]
    ut += ys * a['tky'][mat]
    ut += f32(0.015) * tex.warp
    passes = _PASS[(np.floor(2.0 * ut + 997.0 * ph).astype(np.int32)) & 1023]
    ft = np.abs(ut - np.round(ut))
    ft *= a['tper'][mat] * f32(res)            # metres to the nearest tramline
    tram = np.clip(1.0 - np.abs(ft - 0.9) * f32(1 / 0.45), 0.0, 1.0)   # twin wheel tracks
    del ut, ft
    dyn = a['dyn'][mat]
    mid = tex.mid + dyn * (tex.cmid - tex.mid)
    small = tex.small + dyn * (tex.csmall - tex.small)
    bright = a['am'][mat] * tex.macro
    bright += a['ad'][mat] * mid
    bright += a['asm'][mat] * small
    bright += a['af'][mat] * tex.fine
    bright -= a['tamp'][mat] * tram
    bright += a['pamp'][mat] * passes
    # sparse metre-scale blobs (weeds, gaps, stones, stains): what feature detectors lock onto
    spots = np.abs(small)
    spots -= f32(1.2)
    np.maximum(spots, 0.0, out=spots)
    spots *= np.sign(small)
    bright += a['spot'][mat] * spots
    del spots
    bright += f32(1.0)
    chroma = a['chroma'][mat] * (f32(0.6) * tex.macro + f32(0.4) * mid)
    chroma *= f32(0.035)
    t = a['samp'][mat] * stripe
    alb = np.empty((3, h, w), f32)
    axis = (1.0, 0.4, -0.6)       # dry/yellow <-> lush/green
    for c in range(3):
        c0 = a['c0'][:, c][mat]
        ch = (a['c1'][:, c][mat] - c0) * t
        ch += c0
        ch *= bright
        ch += f32(axis[c]) * chroma
        alb[c] = ch
    del bright, chroma, c0, ch, mid, small, passes, tram
    flat = alb.reshape(3, -1)
    # water: reedy, shallow shore
    water = lc == _WATER
    if water.any() and not ice:
        wm = water.astype(np.uint8)
        shore = np.flatnonzero((wm > 0) & (cv2.erode(wm, _disk(max(3, int(3.0 / res)))) == 0))
        k = (1 + 0.3 * tex.small.ravel()[shore]) * 0.6
        for c, v in enumerate((0.20, 0.24, 0.13)):
            flat[c, shore] = flat[c, shore] * 0.4 + v * k
    # road paint and tyre wear, only on road pixels
    paint = np.zeros((h, w), np.uint8)
    wear = np.zeros((h, w), np.uint8)
    pv = int(255 * min(1.0, 0.12 / res + 0.35))
    for r in lay.roads:
        pts = r['points_px'].astype(np.float64)
        nr = _normals(pts)
        hw = r['width_m'] / 2 / res
        for off in (-0.5 * hw - 0.9 / res, -0.5 * hw + 0.9 / res, 0.5 * hw - 0.9 / res,
                    0.5 * hw + 0.9 / res):
            cv2.polylines(wear, [_cvpts(pts + nr * off)], False, 255,
                          max(1, int(round(0.5 / res))), cv2.LINE_AA, 4)
        if r['kind'] != 'main':
            continue
        for off in (-hw + 0.45 / res, hw - 0.45 / res):
            cv2.polylines(paint, [_cvpts(pts + nr * off)], False, pv, 1, cv2.LINE_AA, 4)
        cum = _arc(pts) * res
        on = np.nonzero((cum % 9.0) < 3.0)[0]
        for run in np.split(on, np.nonzero(np.diff(on) > 1)[0] + 1):
            if len(run) > 1:
                cv2.polylines(paint, [_cvpts(pts[run])], False, pv, 1, cv2.LINE_AA, 4)
    ridx = np.flatnonzero(lc == _ROAD)
    wear = cv2.GaussianBlur(wear, (0, 0), 0.8).ravel()[ridx].astype(f32) * f32(
        (0.35 if winter else 0.10) / 255)
    pf = paint.ravel()[ridx].astype(f32) * f32(1 / 255) * (mat.ravel()[ridx] != m_glass)
    for c in range(3):
        v = flat[c, ridx] * (1.0 - wear)
        flat[c, ridx] = v + (f32(0.85) - v) * pf

    # ---- surface heights (shading and cast shadows)
    dsm = _building_heights((h, w), lay.buildings, res, chimneys=True)
    np.maximum(dsm, vh, out=dsm)
    cidx = np.flatnonzero(crown)
    bare = np.zeros(0, bool)
    if len(cidx):
        ti = idx.ravel()[cidx]
        dm = dist.ravel()[cidx] * f32(res)
        rm = np.asarray(tr, f32)[ti] * f32(res)
        top = np.asarray(tht, f32)[ti]
        con = np.asarray(tcon)[ti]
        q = np.clip(dm / np.maximum(rm, 1e-3), 0.0, 1.0)
        dome = top - rm + rm * np.sqrt(np.maximum(1.0 - q * q, 0.0))   # broadleaf: a cap
        cone = top - q * np.minimum(top * 0.5, 2.5 * rm)                 # conifer: a cone
        zt = np.where(con, cone, dome) + f32(0.25) * rm * (
            tex.small.ravel()[cidx] + 0.5 * tex.fine.ravel()[cidx])
        d = dsm.ravel()
        d[cidx] = np.maximum(d[cidx], zt)
        bare = ~con
    dsm += (lc == _HEDGE) * (1.4 + 0.6 * tex.small)
    # ridges and furrows catch low sun (snow fills them in)
    dsm += a['relief'][mat] * stripe * f32(0.4 if winter else 1.0)
    if winter:
        dsm += (lc == _FIELD) * (0.05 * tex.mid)

    # ---- snow
    if winter:
        cover = a['snow'][mat] + 0.12 * tex.cmid + 0.05 * tex.csmall
        cover -= 0.3 * t * (a['samp'][mat] > 0.3)         # rows/furrows poke through
        cover = np.clip((cover - 0.35) * f32(1 / 0.4), 0.0, 1.0)
        sn = 1.0 + 0.02 * tex.csmall
        for c, v in enumerate((0.90, 0.92, 0.95)):
            alb[c] += (v * sn - alb[c]) * cover
        del cover, sn
    del t, stripe

    # ---- light: Lambert on the surface normals, cast shadows, ambient occlusion
    az, el = math.radians(p['sun_az_deg']), math.radians(p['sun_el_deg'])
    sun = (math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el))
    shadow = np.clip((_shadow_excess(dsm, res, p['sun_az_deg'], p['sun_el_deg']) - 0.15)
                     * f32(2.0), 0.0, 1.0)
    if winter and len(cidx):
        # bare deciduous crowns: see-through twigs, no solid surface to shade, thin shadows
        dsm.ravel()[cidx[bare]] = 0.0
        sh2 = np.clip((_shadow_excess(dsm, res, p['sun_az_deg'], p['sun_el_deg']) - 0.15)
                      * f32(2.0), 0.0, 1.0)
        shadow = sh2 + f32(0.35) * (shadow - sh2)
    gx = np.clip(cv2.Sobel(dsm, cv2.CV_32F, 1, 0, ksize=3) * f32(1 / (8 * res)), -3, 3)
    gy = np.clip(cv2.Sobel(dsm, cv2.CV_32F, 0, 1, ksize=3) * f32(1 / (8 * res)), -3, 3)
    lam = (f32(sun[2]) - gx * f32(sun[0]) - gy * f32(sun[1])) / np.sqrt(1.0 + gx * gx + gy * gy)
    lam = np.clip(lam * f32(1 / sun[2]), 0.0, 2.2)
    del gx, gy
    np.maximum(shadow, _tall_shadows(lay, p, (h, w)), out=shadow)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.6)
    ao = np.clip(1.0 - 0.035 * (cv2.GaussianBlur(dsm, (0, 0), 3.0 / res) - dsm), 0.55, 1.0)
    direct = lam * (1.0 - shadow)
    del lam, shadow
    glint = None
    if water.any() and not ice:
        widx = np.flatnonzero(water)
        glint = f32(0.04 * math.sin(el)) * (1 + tex.small.ravel()[widx])
    out = np.empty((h, w, 3), f32)
    for c in range(3):
        light = f32(p['ambient'][c]) * ao
        light += f32(p['direct'][c]) * direct
        ch = alb[c] * light
        if glint is not None:
            ch.ravel()[widx] += glint          # sun glint on open water
        out[..., c] = ch
    return out


def _tall_shadows(lay, p, shape):
    """Shadows of tall structures, drawn as lines (the doubling pass only covers < ~40 m)."""
    h, w = shape
    res = lay.resolution
    out = np.zeros(shape, np.uint8)
    az, el = math.radians(p['sun_az_deg']), math.radians(p['sun_el_deg'])
    sd = np.array([-math.sin(az), math.cos(az)])     # image direction away from the sun
    cot = 1.0 / math.tan(el)
    for s in lay.tall_structures:
        c = np.array([s['x_px'], s['y_px']])
        top = c + sd * s['height_m'] * cot / res
        r = s['radius_m'] / res
        if s['kind'] == 'mast':
            cv2.line(out, tuple(_cvpts(c)[0, 0]), tuple(_cvpts(top)[0, 0]), 150,
                     max(1, int(round(1.6 * r))), cv2.LINE_AA, 4)
        elif s['kind'] == 'tower':
            cv2.line(out, tuple(_cvpts(c)[0, 0]), tuple(_cvpts(top)[0, 0]), 255,
                     max(1, int(round(2 * r))), cv2.LINE_AA, 4)
            cv2.circle(out, tuple(_cvpts(top)[0, 0]), int(round(1.2 * r * 16)), 255, -1,
                       cv2.LINE_AA, 4)
        else:
            cv2.line(out, tuple(_cvpts(c)[0, 0]), tuple(_cvpts(top)[0, 0]), 255,
                     max(1, int(round(1.6 * r))), cv2.LINE_AA, 4)
            hub3, blades = _turbine_geometry(s, res)
            hub_g = c + sd * s['height_m'] * cot / res
            for tip3 in blades:
                tip_g = c + (tip3[:2] - c) + sd * tip3[2] * cot / res
                cv2.line(out, tuple(_cvpts(hub_g)[0, 0]), tuple(_cvpts(tip_g)[0, 0]), 230,
                         max(1, int(round(1.4 / res))), cv2.LINE_AA, 4)
            cv2.circle(out, tuple(_cvpts(hub_g)[0, 0]), int(round(2.2 / res * 16)), 255, -1,
                       cv2.LINE_AA, 4)
    return out.astype(np.float32) * np.float32(1 / 255)


def _turbine_geometry(s, res):
    """Hub (x, y px) and blade tips (x px, y px, z m) of a turbine, rotor facing ``yaw_rad``."""
    c = np.array([s['x_px'], s['y_px']])
    ax = np.array([math.cos(s['yaw_rad']), -math.sin(s['yaw_rad'])])   # rotor axis
    pv = np.array([-ax[1], ax[0]])                                     # horizontal in rotor
    hub = c + ax * 4.0 / res
    tips = []
    for i in range(3):
        ph = s['rotor_phase_rad'] + 2 * math.pi * i / 3
        xy = hub + pv * s['rotor_radius_m'] * math.cos(ph) / res
        tips.append(np.array([xy[0], xy[1], s['height_m'] + s['rotor_radius_m'] * math.sin(ph)]))
    return hub, tips


def _blend_poly(img, poly, rgb, alpha=1.0):
    """Anti-aliased polygon of one colour blended into a float image (in a local crop)."""
    box = _bbox(poly, img.shape[:2], 2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, [_cvpts(poly - [x0, y0])], 255, cv2.LINE_AA, 4)
    a = (m.astype(np.float32) * np.float32(alpha / 255))[..., None]
    sub = img[y0:y1, x0:x1]
    sub += (np.asarray(rgb, np.float32) - sub) * a


def _draw_tall_tops(img, lay, p):
    """Tall structures as seen from straight above: mast heads, tower tops, turbine rotors."""
    res = lay.resolution
    az = math.radians(p['sun_az_deg'])
    light = np.asarray(p['ambient'], np.float32) + np.asarray(p['direct'], np.float32)
    tosun = np.array([math.sin(az), -math.cos(az)])
    for s in lay.tall_structures:
        c = np.array([s['x_px'], s['y_px']])
        r = max(s['radius_m'] / res, 0.8)
        if s['kind'] == 'mast':
            tri = np.array([c + r * np.array([math.cos(a), math.sin(a)])
                            for a in (0.3, 0.3 + 2.09, 0.3 + 4.19)])
            _blend_poly(img, tri, 0.55 * light, 0.8)
            for k in range(3):
                a = 0.3 + 2.09 * k
                q = c + 0.35 * s['height_m'] / res * np.array([math.cos(a), math.sin(a)])
                _blend_poly(img, _rect_poly(q[0], q[1], 1.6 / res, 1.6 / res, a),
                            0.6 * light, 0.9)
                _blend_poly(img, np.array([c, q, q + 0.3, c + 0.3]), 0.7 * light, 0.25)
        elif s['kind'] == 'tower':
            # a lit and a dark half make the cylinder/dome readable
            ring = _blob_poly(np.random.default_rng(0), c, r * 1.15, 40, 0.0)
            _blend_poly(img, ring, 0.45 * light, 1.0)
            half = np.array([c + r * np.array([math.cos(a), math.sin(a)])
                             for a in np.linspace(0, math.pi, 20)])
            rot = math.atan2(tosun[1], tosun[0]) - math.pi / 2
            rm = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
            _blend_poly(img, (half - c) @ rm.T + c, 0.68 * light, 1.0)
            _blend_poly(img, _blob_poly(np.random.default_rng(1), c, r * 0.3, 16, 0.0),
                        0.2 * light, 1.0)
        else:
            hub, tips = _turbine_geometry(s, res)
            ax = np.array([math.cos(s['yaw_rad']), -math.sin(s['yaw_rad'])])
            white = 0.88 * light
            for tip in tips:
                d = tip[:2] - hub
                ln = float(np.hypot(*d))
                if ln < 1e-3:
                    continue
                e = d / ln
                nrm = np.array([-e[1], e[0]])
                blade = np.array([hub + nrm * 1.2 / res, tip[:2] + nrm * 0.3 / res,
                                  tip[:2] - nrm * 0.3 / res, hub - nrm * 1.2 / res])
                _blend_poly(img, blade, white, 0.95)
            nc = hub - ax * 6.0 / res
            _blend_poly(img, _rect_poly(nc[0], nc[1], 12.0 / res, 4.2 / res, s['yaw_rad']),
                        0.85 * light, 1.0)
            _blend_poly(img, _blob_poly(np.random.default_rng(2), hub, 1.6 / res, 16, 0.0),
                        0.8 * light, 1.0)


def _finish(img, p, rng):
    """Camera: haze, white balance, exposure, optics blur, sensor noise, tone, 8 bit."""
    h, w = img.shape[:2]
    f32 = np.float32
    if p['haze'] > 0:
        veil = np.clip(p['haze'] * (1.0 + 0.3 * _fbm(rng, h, w, max(h, w) / 3.0, 3)), 0, 0.9)
        img *= (1.0 - veil)[..., None]
        img += veil[..., None] * np.float32([0.74, 0.77, 0.82])
    img *= np.asarray(p['wb'], f32) * f32(p['exposure'] * 255.0)
    if p['blur_px'] > 0:
        img = cv2.GaussianBlur(img, (0, 0), p['blur_px'])
    # sensor noise: full-resolution luminance plus half-resolution chroma, as after demosaicing
    img += (rng.standard_normal((h, w), dtype=f32) * f32(p['noise_dn']))[..., None]
    chroma = rng.standard_normal(((h + 1) // 2, (w + 1) // 2, 3), dtype=f32)
    img += cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR) * f32(0.6 * p['noise_dn'])
    img += f32(0.5)
    np.clip(img, 0, 255, out=img)
    out = img.astype(np.uint8)
    if abs(p['gamma'] - 1.0) > 1e-6:
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** p['gamma'] + 0.5, 0, 255)
        out = cv2.LUT(out, lut.astype(np.uint8))
    return out


def render_orthophoto(layout: Layout, condition: str = 'map', seed: int = 0) -> np.ndarray:
    """Render the world as a nadir orthophoto, H x W x 3 uint8 RGB, north up.

    ``condition`` (one of :data:`CONDITIONS`) picks season, sun, light and camera, and for a
    flight condition also the structural changes of :func:`condition_layout` (``seed`` draws
    them).  'map' is the reference summer satellite image and does not depend on ``seed``.
    Same arguments give identical images.
    """
    lay = condition_layout(layout, condition, seed)
    p = condition_params(condition, seed)
    cseed = 0 if condition == 'map' else int(seed) + 1
    img = _render(lay, p, _h(condition) ^ cseed)
    rng = _rng(layout.seed, _h('camera'), _h(condition), cseed)
    return _finish(img, p, rng)
