"""Drone -> satellite training pairs from any georeferenced orthophoto (GTA-UAV style JSON).

    python -m skyloc_training.pairs --map procedural --out data/pairs --count 400
    python -m skyloc_training.pairs --map real_satellite --out data/pairs_real --count 400 \\
        [--test-fraction 0.2] [--altitude-min 70 --altitude-max 150] \\
        [--conditions summer autumn] [--drone-view camera|normalized] [--seed 0]

``--map`` is 'procedural' (the simulator's default world, generated once and cached),
'real_satellite' (../shared/data/real_satellite, read in place, mosaic cached) or the path
of a map YAML (DESIGN.md).  Each drone view is rendered by the simulator's renderer
(``skyloc_sim.camera.OrthoRenderer``, sensor noise of ``skyloc_sim.sensors``) at a random
position, yaw, altitude and camera condition:

* ``camera`` (default): the camera image as the drone sees it, rotated by its yaw, at its
  altitude's ground sampling distance: the square centre of the simulator's camera
  (640 x 480, 90 deg HFOV -> a 73.7 deg square) at ``--image-size`` px.
* ``normalized``: what the embedder feeds the model at run time: the full camera frame
  warped by ``skyloc_perception.normalize.normalize_query`` to the north-up square of the
  altitude band's footprint, with the heading and altitude the drone believes in (true ones
  plus ``--yaw-noise-deg`` / ``--altitude-noise`` errors).

Satellite tiles are north-up squares cut from the map's orthophoto (condition 'map', the one
the database is built from) on a grid per altitude band (the bands and footprint rule of
``skyloc_localization.database``: footprint = ``--footprint-per-altitude`` x the band's
altitude, stride ``--tile-stride`` x footprint), each written once.  A tile's IoU with a view
is the exact area of overlap of the view's ground footprint (the image corners projected to
the ground, a rotated quadrilateral) with the tile square, by polygon clipping.  Tiles of the
view's band with IoU > 0.39 are its positives, 0.14 < IoU <= 0.39 its semi-positives; a view
without a positive is drawn again.

Writes ``OUT/drone/*.jpg``, ``OUT/satellite/*.png``, ``OUT/pairs_train.json``,
``OUT/pairs_test.json`` (Game4Loc fields plus dataset_source, altitude_meters, condition,
the footprint polygon; ``skyloc_training.data.load_pairs`` reads them) and
``OUT/generation.json`` (settings, counts, every tile with its centre and footprint).
"""

import argparse
from dataclasses import asdict, dataclass, field
import json
import math
import os
import sys
import time

import numpy as np

from skyloc_training.data import POSITIVE_IOU, SEMI_POSITIVE_IOU

SPLITS = ('random', 'east')
VIEWS = ('camera', 'normalized')
# the simulator's camera (skyloc_sim.simulation.SimConfig, config/sim.yaml)
SIM_CAMERA = (640, 480, 90.0)


# ----------------------------------------------------------------------------- geometry

def polygon_area(poly):
    """Area (m^2) of a simple polygon [N, 2] (either orientation)."""
    p = np.asarray(poly, dtype=float).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_to_rect(poly, xmin, ymin, xmax, ymax):
    """The part of a convex polygon [N, 2] inside an axis-aligned rectangle
    (Sutherland-Hodgman); [K, 2], K = 0 if they do not overlap."""
    pts = [tuple(p) for p in np.asarray(poly, dtype=float).reshape(-1, 2)]
    # (axis, bound, keep the side >= bound)
    for axis, bound, keep_above in ((0, xmin, True), (0, xmax, False), (1, ymin, True),
                                    (1, ymax, False)):
        if not pts:
            break
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cur_in = cur[axis] >= bound if keep_above else cur[axis] <= bound
            prev_in = prev[axis] >= bound if keep_above else prev[axis] <= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = [prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])]
                cross[axis] = bound
                out.append(tuple(cross))
            if cur_in:
                out.append(cur)
        pts = out
    return np.array(pts, dtype=float).reshape(-1, 2)


def iou_with_squares(poly, centres, side):
    """IoU of a convex polygon [N, 2] with axis-aligned squares of ``side`` (m) centred at
    ``centres`` [M, 2] -> [M] float (0 where they do not overlap)."""
    poly = np.asarray(poly, dtype=float).reshape(-1, 2)
    centres = np.asarray(centres, dtype=float).reshape(-1, 2)
    out = np.zeros(len(centres))
    area = polygon_area(poly)
    half = side / 2.0
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    near = np.flatnonzero((centres[:, 0] + half > lo[0]) & (centres[:, 0] - half < hi[0])
                          & (centres[:, 1] + half > lo[1]) & (centres[:, 1] - half < hi[1]))
    for i in near:
        cx, cy = centres[i]
        inter = polygon_area(clip_to_rect(poly, cx - half, cy - half, cx + half, cy + half))
        out[i] = inter / (area + side * side - inter) if inter > 0.0 else 0.0
    return out


def image_corners(width, height):
    """The outer corners of a width x height image in OpenCV pixel indices (col, row, 1):
    pixel centres are at integers, so the edges are at -0.5 and size - 0.5."""
    return np.array([[-0.5, -0.5, 1.0], [width - 0.5, -0.5, 1.0],
                     [width - 0.5, height - 0.5, 1.0], [-0.5, height - 0.5, 1.0]])


def apply_homography(h, points_h):
    """[N, 3] homogeneous points through a 3x3 homography -> [N, 2]."""
    out = np.asarray(points_h, dtype=float) @ np.asarray(h, dtype=float).T
    return out[:, :2] / out[:, 2:3]


# ----------------------------------------------------------------------------- settings

@dataclass
class PairConfig:
    """Everything that decides the generated pairs (written to generation.json)."""

    count: int = 400
    test_fraction: float = 0.2
    split: str = 'random'                  # random | east (test views in the east strip)
    altitude_min: float = 70.0             # m above ground
    altitude_max: float = 150.0
    conditions: tuple = ('summer',)        # camera conditions of the views (map: the map)
    drone_view: str = 'camera'             # camera | normalized
    image_size: int = 224                  # px of the drone images (square)
    tile_size: int = None                  # px of the tiles (default: image_size)
    bands: tuple = None                    # ((lo, hi), ...) m; default: band_count bands
    band_count: int = 3
    footprint_per_altitude: float = None   # tile side / band altitude (default: the view's)
    tile_footprint_m: tuple = None         # explicit tile sides, one or one per band
    tile_stride: float = 0.5               # stride / tile side
    all_bands: bool = False                # IoU against the tiles of every band
    yaw_range_deg: float = 180.0           # yaw uniform in +-this around north-up
    yaw_noise_deg: float = 3.0             # normalized view: heading error (std)
    altitude_noise: float = 0.05           # normalized view: relative altitude error (std)
    camera: tuple = SIM_CAMERA             # width, height, HFOV deg of the drone camera
    noise_std: float = 3.0                 # sensor noise of the images (8-bit levels)
    jpeg_quality: int = 92
    seed: int = 0
    name: str = None                       # dataset_source (default: the map's name)
    extra: dict = field(default_factory=dict)

    def validate(self):
        """ValueError naming the first bad setting."""
        if int(self.count) < 1:
            raise ValueError(f'--count must be at least 1, got {self.count}')
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f'--test-fraction must be in [0, 1), got {self.test_fraction}')
        if self.split not in SPLITS:
            raise ValueError(f'--split must be one of {SPLITS}, got {self.split!r}')
        if not 0.5 < self.altitude_min <= self.altitude_max:
            raise ValueError(f'need 0.5 < --altitude-min <= --altitude-max, got '
                             f'{self.altitude_min}, {self.altitude_max}')
        if not self.conditions:
            raise ValueError('--conditions: give at least one condition')
        if self.drone_view not in VIEWS:
            raise ValueError(f'--drone-view must be one of {VIEWS}, got {self.drone_view!r}')
        if int(self.image_size) < 16 or (self.tile_size is not None and self.tile_size < 16):
            raise ValueError('--image-size / --tile-size must be at least 16 px')
        if not 0.05 <= self.tile_stride <= 1.0:
            raise ValueError(f'--tile-stride must be in [0.05, 1], got {self.tile_stride}')
        if self.band_count < 1:
            raise ValueError(f'--band-count must be at least 1, got {self.band_count}')


def square_hfov_deg(width, height, hfov_deg):
    """HFOV (deg) of the centred square of side min(width, height) of a pinhole camera."""
    t = math.tan(math.radians(hfov_deg) / 2.0) * min(width, height) / width
    return math.degrees(2.0 * math.atan(t))


def default_bands(altitude_min, altitude_max, count):
    """``count`` altitude bands splitting [min, max] geometrically (equal altitude ratios)."""
    edges = np.geomspace(altitude_min, altitude_max, count + 1)
    return tuple((round(float(a), 1), round(float(b), 1)) for a, b in zip(edges, edges[1:]))


# ----------------------------------------------------------------------------- the map

def workspace_paths():
    """(workspace root or None, simulator parameters dict) from config/sim.yaml."""
    import yaml
    from skyloc_sim.graph import workspace_root
    try:
        root = workspace_root()
    except ValueError:  # not run from inside the workspace: the one this file is in
        try:
            root = workspace_root(os.path.dirname(os.path.abspath(__file__)))
        except ValueError:
            return None, {}
    try:
        with open(os.path.join(root, 'config', 'sim.yaml')) as stream:
            return root, yaml.safe_load(stream)['sim']['ros__parameters']
    except (OSError, KeyError, TypeError):
        return root, {}


def resolve_map(spec, conditions=('summer',), cache_dir=None, log=print):
    """(world/map YAML path, default dataset name) of 'procedural', 'real_satellite' or a
    map YAML path; the first two are made once into the cache (.cache/worlds)."""
    from skyloc_sim.world import (procedural_world, real_satellite_world,
                                  shared_real_satellite_dir)
    root, params = workspace_paths()
    cache = cache_dir or os.path.join(root or os.getcwd(),
                                      params.get('world_cache_dir', '.cache/worlds'))
    if spec == 'procedural':
        wanted = sorted(set(conditions) - {'map'}) or ['summer']
        path = procedural_world(cache, params.get('world_seed', 7),
                                params.get('world_size_m', 1200.0),
                                params.get('world_resolution', 0.5), conditions=wanted,
                                log=lambda m: log(m))
        return path, 'procedural'
    if spec == 'real_satellite':
        folder = shared_real_satellite_dir() or (shared_real_satellite_dir(root) if root
                                                 else None)
        return real_satellite_world(cache, folder), 'real_satellite'
    path = os.path.abspath(spec)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = os.path.basename(os.path.dirname(path)) if stem in ('world', 'map') else stem
    return path, name or 'map'


class TileGrid:
    """North-up tiles of one map, per altitude band: centres [N, 2] (m), band [N], side [N]
    (m), names [N]; band b's tiles are ``rows(b)``."""

    def __init__(self, grid, plan):
        from skyloc_localization.database import tile_centres
        centres, bands, sides, names = [], [], [], []
        for b, band in enumerate(plan):
            c = tile_centres(grid, band['footprint_m'], band['stride_m'])
            x0, y0 = c[:, 0].min(), c[:, 1].min()
            for x, y in c:
                ix = int(round((x - x0) / band['stride_m']))
                iy = int(round((y - y0) / band['stride_m']))
                names.append(f'{b}_{ix}_{iy}.png')
            centres.append(c)
            bands += [b] * len(c)
            sides += [band['footprint_m']] * len(c)
        self.plan = plan
        self.centres = np.concatenate(centres)
        self.band = np.array(bands, dtype=int)
        self.side = np.array(sides, dtype=float)
        self.names = names

    def rows(self, band):
        return np.flatnonzero(self.band == band)

    def __len__(self):
        return len(self.names)


def cut_tile(image, grid, x, y, side_m, size_px):
    """The north-up ``side_m`` square centred at map (x, y) of an orthophoto (RGB) resampled
    to ``size_px`` (area averaging; the window snapped to whole map pixels, <= 0.5 px)."""
    import cv2
    u, v = grid.map_to_pixel(x, y)
    half = side_m / (2.0 * grid.resolution)
    c0, c1 = int(round(u - half)), int(round(u + half))
    r0, r1 = int(round(v - half)), int(round(v + half))
    h, w = image.shape[:2]
    if c0 < 0 or r0 < 0 or c1 > w or r1 > h or c1 <= c0 or r1 <= r0:
        raise ValueError(f'tile at ({x:.1f}, {y:.1f}) of {side_m:.1f} m is not inside the map')
    window = image[r0:r1, c0:c1]
    shrink = window.shape[0] > size_px
    return cv2.resize(window, (size_px, size_px),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------- views

class ViewMaker:
    """Renders drone views of one world and gives their ground footprints."""

    def __init__(self, world, cfg):
        from skyloc_sim.camera import PinholeCamera
        self.world = world
        self.cfg = cfg
        width, height, hfov = cfg.camera
        size = int(cfg.image_size)
        if cfg.drone_view == 'camera':
            self.camera = PinholeCamera(size, size, square_hfov_deg(width, height, hfov))
        else:
            # render at the output's scale: the crop's pixels come from the short side
            scale = min(1.0, 2.0 * size / min(width, height))
            self.camera = PinholeCamera(int(round(width * scale)), int(round(height * scale)),
                                        hfov)
        self.renderers = {}

    def footprint_per_altitude(self):
        """Side of the ground square a view covers per metre of altitude (camera view)."""
        return self.camera.width / self.camera.focal_px

    def _renderer(self, condition, seed):
        from skyloc_sim.camera import OrthoRenderer
        if condition not in self.renderers:
            image = self.world.camera_image(condition, seed)
            self.renderers[condition] = OrthoRenderer(image, self.world.grid)
        return self.renderers[condition]

    def pose_footprint(self, x, y, z, yaw, footprint_m=None, believed=None):
        """Ground polygon [4, 2] (map frame, m) of the view the drone stores at this pose.

        ``believed``: (altitude, yaw) the drone thinks it has (normalized view only).
        """
        g2i = self.camera.ground_to_image(x, y, z, yaw)
        i2g = np.linalg.inv(g2i)
        if self.cfg.drone_view == 'camera':
            return apply_homography(i2g, image_corners(self.camera.width, self.camera.height))
        return apply_homography(i2g @ self._crop_to_image(believed, footprint_m),
                                image_corners(self.cfg.image_size, self.cfg.image_size))

    def _intrinsics(self):
        from skyloc_perception.normalize import CameraIntrinsics
        k = self.camera.K
        return CameraIntrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], self.camera.width,
                                self.camera.height)

    def _crop_to_image(self, believed, footprint_m):
        """3x3: crop pixel index -> camera pixel index, for the believed altitude/yaw (the
        same warp normalize_query applies)."""
        from skyloc_perception.normalize import ground_of_crop_pixel, ground_to_image
        size = int(self.cfg.image_size)
        # crop pixel -> (dx east, dy north) from the nadir point: an affine map
        (ax, ay), (bx, by), (cx, cy) = (ground_of_crop_pixel(c, r, footprint_m, size)
                                        for c, r in ((0, 0), (1, 0), (0, 1)))
        crop_to_ground = np.array([[bx - ax, cx - ax, ax], [by - ay, cy - ay, ay],
                                   [0.0, 0.0, 1.0]])
        return ground_to_image(self._intrinsics(), believed[0], believed[1]) @ crop_to_ground

    def render(self, x, y, z, yaw, condition, seed, footprint_m=None, believed=None):
        """The stored drone image (RGB uint8, image_size square) at this pose."""
        from skyloc_sim.sensors import camera_noise
        world_seed = int(self.world.info.get('condition_seeds', {}).get(condition, 1))
        image = self._renderer(condition, world_seed).render(self.camera, x, y, z, yaw)
        image = camera_noise(image, seed, self.cfg.noise_std)
        if self.cfg.drone_view == 'camera':
            return image
        from skyloc_perception.normalize import normalize_query
        crop, _ = normalize_query(image, self._intrinsics(), believed[0], believed[1],
                                  footprint_m, int(self.cfg.image_size))
        return crop


# ----------------------------------------------------------------------------- generation

def _round_list(values, digits=3):
    return [round(float(v), digits) for v in values]


def _draw_views(cfg, world, maker, tiles, rng):
    """Poses with their footprint and tiles: list of dicts; raises if too many are refused."""
    from skyloc_perception.normalize import band_for_altitude
    grid = world.grid
    w_m, h_m = grid.size_m
    n_test = int(round(cfg.count * cfg.test_fraction))
    is_test = np.zeros(cfg.count, dtype=bool)
    is_test[rng.permutation(cfg.count)[:n_test]] = True
    x_split = grid.origin_x + w_m * (1.0 - cfg.test_fraction)
    views, refused = [], {'outside the map': 0, 'no positive tile': 0}
    per_alt = maker.footprint_per_altitude() if cfg.drone_view == 'camera' else \
        cfg.footprint_per_altitude
    attempts, max_attempts = 0, 50 * cfg.count + 100
    while len(views) < cfg.count:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f'only {len(views)} of {cfg.count} views after {max_attempts} draws '
                f'(refused: {refused}); the map ({w_m:.0f} x {h_m:.0f} m) may be too small for '
                f'{cfg.altitude_max:.0f} m altitude, or the tiles too coarse (--tile-stride)')
        test = bool(is_test[len(views)])
        z = float(rng.uniform(cfg.altitude_min, cfg.altitude_max))
        yaw = math.pi / 2.0 + math.radians(float(rng.uniform(-cfg.yaw_range_deg,
                                                             cfg.yaw_range_deg)))
        yaw = math.atan2(math.sin(yaw), math.cos(yaw))
        inset = 0.5 * math.sqrt(2.0) * per_alt * z * 1.05
        x_lo, x_hi = grid.origin_x + inset, grid.origin_x + w_m - inset
        y_lo, y_hi = grid.origin_y + inset, grid.origin_y + h_m - inset
        if cfg.split == 'east' and cfg.test_fraction > 0.0:
            x_lo, x_hi = (max(x_lo, x_split), x_hi) if test else (x_lo, min(x_hi, x_split))
        if x_lo >= x_hi or y_lo >= y_hi:
            raise ValueError(f'the map ({w_m:.0f} x {h_m:.0f} m) is too small for a drone view '
                             f'at {z:.0f} m ({per_alt * z:.0f} m footprint)')
        x, y = float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi))
        band = band_for_altitude(tiles.plan, z)
        side = tiles.plan[band]['footprint_m']
        believed = None
        if cfg.drone_view == 'normalized':
            believed = (z * (1.0 + cfg.altitude_noise * float(rng.standard_normal())),
                        yaw + math.radians(cfg.yaw_noise_deg) * float(rng.standard_normal()))
        poly = maker.pose_footprint(x, y, z, yaw, side, believed)
        if not all(grid.contains(px, py) for px, py in poly):
            refused['outside the map'] += 1
            continue
        rows = np.arange(len(tiles)) if cfg.all_bands else tiles.rows(band)
        ious = np.zeros(len(tiles))
        for s in np.unique(tiles.side[rows]):
            same = rows[tiles.side[rows] == s]
            ious[same] = iou_with_squares(poly, tiles.centres[same], s)
        order = rows[np.argsort(-ious[rows], kind='stable')]
        positives = [int(i) for i in order if ious[i] > POSITIVE_IOU]
        if not positives:
            refused['no positive tile'] += 1
            continue
        semis = [int(i) for i in order if ious[i] > SEMI_POSITIVE_IOU]
        views.append({'x': x, 'y': y, 'z': z, 'yaw': yaw, 'band': band, 'side': side,
                      'believed': believed, 'poly': poly, 'positives': positives,
                      'semis': semis, 'ious': {i: float(ious[i]) for i in semis},
                      'condition': str(cfg.conditions[int(rng.integers(len(cfg.conditions)))]),
                      'test': test})
    return views, refused, attempts


def _record(view, index, name, tiles, cfg, world_yaml):
    def tile_lists(ids):
        return ([tiles.names[i] for i in ids], [round(view['ious'][i], 4) for i in ids],
                [_round_list(tiles.centres[i]) for i in ids])
    pos_names, pos_w, pos_loc = tile_lists(view['positives'])
    semi_names, semi_w, semi_loc = tile_lists(view['semis'])
    record = {
        'drone_img_dir': 'drone', 'drone_img_name': f'{index:06d}.jpg',
        'drone_loc_x_y': _round_list((view['x'], view['y'])),
        'sate_img_dir': 'satellite',
        'pair_pos_sate_img_list': pos_names, 'pair_pos_sate_weight_list': pos_w,
        'pair_pos_sate_loc_x_y_list': pos_loc,
        'pair_pos_semipos_sate_img_list': semi_names,
        'pair_pos_semipos_sate_weight_list': semi_w,
        'pair_pos_semipos_sate_loc_x_y_list': semi_loc,
        'drone_metadata': {'height': round(view['z'], 3), 'drone_roll': 0.0,
                           'drone_pitch': 0.0,
                           'drone_yaw': round(math.degrees(view['yaw']), 3)},
        'dataset_source': name, 'altitude_meters': round(view['z'], 3),
        'condition': view['condition'], 'drone_view': cfg.drone_view,
        'yaw_rad': round(view['yaw'], 6), 'band': int(view['band']),
        'tile_footprint_m': round(float(view['side']), 3),
        'drone_footprint_x_y': [_round_list(p) for p in view['poly']],
        'map_yaml': world_yaml}
    if view['believed'] is not None:
        record['believed_altitude_m'] = round(view['believed'][0], 3)
        record['believed_yaw_rad'] = round(view['believed'][1], 6)
    return record


def _write_json(path, doc):
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as stream:
        json.dump(doc, stream, indent=1)
    os.replace(tmp, path)


def prepare_out_dir(out_dir, log=print, check_only=False):
    """An empty output folder, or one this generator wrote before (its drone/, satellite/ and
    JSON files are removed, so that no stale tile outlives a run); ValueError for a folder
    holding anything else."""
    import shutil
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not os.path.isfile(os.path.join(out_dir, 'generation.json')):
        raise ValueError(f'{out_dir} is not empty and holds no generation.json: give an empty '
                         'or new folder (or one this command wrote)')
    if check_only:
        return
    log(f'replacing the pairs in {out_dir}')
    for sub in ('drone', 'satellite'):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    for name in ('pairs_train.json', 'pairs_test.json', 'generation.json'):
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))


def generate(world_yaml, out_dir, cfg, name=None, progress=True, log=print):
    """Generate ``cfg.count`` pairs of the map ``world_yaml`` into ``out_dir``; returns the
    summary written to generation.json.  ValueError for bad settings or a map too small."""
    import cv2
    from tqdm import tqdm

    from skyloc_localization.database import band_plan
    from skyloc_sim.world import load_world
    cfg.validate()
    prepare_out_dir(out_dir, check_only=True)   # refuse a foreign folder before any work
    t0 = time.monotonic()
    world = load_world(world_yaml)
    name = cfg.name or name or 'map'
    maker = ViewMaker(world, cfg)
    bands = cfg.bands or default_bands(cfg.altitude_min, cfg.altitude_max, cfg.band_count)
    per_alt = cfg.footprint_per_altitude
    if per_alt is None:
        per_alt = maker.footprint_per_altitude() if cfg.drone_view == 'camera' else 1.0
        cfg.footprint_per_altitude = per_alt
    feet = cfg.tile_footprint_m
    if feet is not None:
        feet = list(feet) if len(feet) > 1 else float(feet[0])
    plan = band_plan(bands, feet, None, per_alt)
    for band in plan:
        band['stride_m'] = round(cfg.tile_stride * band['footprint_m'], 3)
    tiles = TileGrid(world.grid, plan)
    rng = np.random.default_rng(cfg.seed)
    views, refused, attempts = _draw_views(cfg, world, maker, tiles, rng)
    sides = ', '.join(f"{b['footprint_m']:.0f} m" for b in plan)
    log(f'{len(views)} views of {name} drawn in {attempts} tries (refused: '
        + ', '.join(f'{k} {v}' for k, v in refused.items()) + f'); {len(tiles)} tiles in '
        f'{len(plan)} bands ({sides})')

    drone_dir = os.path.join(out_dir, 'drone')
    sate_dir = os.path.join(out_dir, 'satellite')
    prepare_out_dir(out_dir, log)
    os.makedirs(drone_dir, exist_ok=True)
    os.makedirs(sate_dir, exist_ok=True)
    tile_px = int(cfg.tile_size or cfg.image_size)
    written = set()
    train, test = [], []
    for index, view in enumerate(tqdm(views, desc=f'pairs {name}', unit='view',
                                      disable=not progress)):
        image = maker.render(view['x'], view['y'], view['z'], view['yaw'], view['condition'],
                             cfg.seed * 1000003 + index, view['side'], view['believed'])
        path = os.path.join(drone_dir, f'{index:06d}.jpg')
        if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)]):
            raise OSError(f'cannot write {path}')
        for i in view['semis']:  # the positives are among them
            if i in written:
                continue
            tile = cut_tile(world.map_image, world.grid, tiles.centres[i, 0],
                            tiles.centres[i, 1], tiles.side[i], tile_px)
            tile_path = os.path.join(sate_dir, tiles.names[i])
            if not cv2.imwrite(tile_path, cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)):
                raise OSError(f'cannot write {tile_path}')
            written.add(i)
        (test if view['test'] else train).append(
            _record(view, index, name, tiles, cfg, os.path.abspath(world_yaml)))
    _write_json(os.path.join(out_dir, 'pairs_train.json'), train)
    _write_json(os.path.join(out_dir, 'pairs_test.json'), test)
    elapsed = time.monotonic() - t0
    summary = {
        'map_yaml': os.path.abspath(world_yaml), 'dataset_source': name,
        'config': {k: v for k, v in asdict(cfg).items() if k != 'extra'},
        'bands': plan, 'train': len(train), 'test': len(test), 'draws': attempts,
        'refused': refused, 'tiles_written': len(written), 'seconds': round(elapsed, 2),
        'positives_per_view': round(float(np.mean([len(v['positives']) for v in views])), 2),
        'best_iou_mean': round(float(np.mean([v['ious'][v['positives'][0]] for v in views])),
                               4),
        'tiles': [{'name': tiles.names[i], 'x': round(float(tiles.centres[i, 0]), 3),
                   'y': round(float(tiles.centres[i, 1]), 3), 'band': int(tiles.band[i]),
                   'footprint_m': float(tiles.side[i])} for i in sorted(written)]}
    _write_json(os.path.join(out_dir, 'generation.json'), summary)
    log(f'wrote {len(train)} train + {len(test)} test pairs and {len(written)} tiles to '
        f'{out_dir} in {elapsed:.1f} s ({summary["positives_per_view"]} positives per view, '
        f'best IoU {summary["best_iou_mean"]:.2f} on average)')
    return summary


def parser():
    p = argparse.ArgumentParser(
        prog='python -m skyloc_training.pairs',
        description='Generate drone -> satellite training pairs (GTA-UAV style JSON) from a '
                    'georeferenced orthophoto with the simulator\'s renderer.')
    p.add_argument('--map', required=True,
                   help="'procedural', 'real_satellite' or the path of a map YAML")
    p.add_argument('--out', required=True, help='output folder (drone/, satellite/, '
                   'pairs_train.json, pairs_test.json, generation.json)')
    p.add_argument('--count', type=int, default=400, help='drone views in all (default 400)')
    p.add_argument('--test-fraction', type=float, default=0.2,
                   help='share of the views in pairs_test.json (default 0.2)')
    p.add_argument('--split', choices=SPLITS, default='random',
                   help='random: test views anywhere (same area); east: test views in the '
                        'eastern strip of the map (cross area; footprints at the border may '
                        'overlap). Default random')
    p.add_argument('--altitude-min', type=float, default=70.0, help='m (default 70)')
    p.add_argument('--altitude-max', type=float, default=150.0, help='m (default 150)')
    p.add_argument('--conditions', nargs='+', default=['summer'],
                   help="camera conditions drawn per view: map, summer, autumn, winter, "
                        "evening, haze (procedural worlds are generated with them; real "
                        "maps get a photometric change). Default summer")
    p.add_argument('--drone-view', choices=VIEWS, default='camera',
                   help='camera: the camera image as seen (rotated by yaw); normalized: the '
                        'north-up crop the embedder makes at run time. Default camera')
    p.add_argument('--image-size', type=int, default=224, help='drone image px (default 224)')
    p.add_argument('--tile-size', type=int, help='tile px (default: --image-size)')
    p.add_argument('--bands', help="altitude bands of the tiles, e.g. '70-90,90-120,120-150' "
                   '(default: --band-count geometric bands of the altitude range)')
    p.add_argument('--band-count', type=int, default=3, help='default 3')
    p.add_argument('--footprint-per-altitude', type=float,
                   help='tile side / band altitude (default: the drone view\'s: 1.5 for the '
                        'camera view, 1.0 for normalized as the map database)')
    p.add_argument('--tile-footprint-m', type=float, nargs='+',
                   help='tile side in metres, one value or one per band (overrides '
                        '--footprint-per-altitude)')
    p.add_argument('--tile-stride', type=float, default=0.5,
                   help='tile grid stride as a fraction of the tile side (default 0.5)')
    p.add_argument('--all-bands', action='store_true',
                   help='pair views with the tiles of every band (default: their own band)')
    p.add_argument('--yaw-range-deg', type=float, default=180.0,
                   help='yaw uniform in +-this around north-up (default 180: any heading)')
    p.add_argument('--yaw-noise-deg', type=float, default=3.0,
                   help='normalized view: heading error std, deg (default 3)')
    p.add_argument('--altitude-noise', type=float, default=0.05,
                   help='normalized view: altitude error std, relative (default 0.05)')
    p.add_argument('--noise-std', type=float, default=3.0,
                   help='sensor noise of the drone images, 8-bit levels (default 3)')
    p.add_argument('--name', help="dataset_source of the records (default: 'procedural', "
                   "'real_satellite' or the map's name)")
    p.add_argument('--cache-dir', help='where procedural/real_satellite worlds are cached '
                   '(default: .cache/worlds of the workspace)')
    p.add_argument('--seed', type=int, default=0, help='default 0')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def config_from_args(args):
    """A PairConfig from parsed arguments (ValueError for bad bands)."""
    bands = None
    if args.bands:
        from skyloc_localization.database import parse_bands
        bands = parse_bands(args.bands)
    return PairConfig(
        count=args.count, test_fraction=args.test_fraction, split=args.split,
        altitude_min=args.altitude_min, altitude_max=args.altitude_max,
        conditions=tuple(args.conditions), drone_view=args.drone_view,
        image_size=args.image_size, tile_size=args.tile_size, bands=bands,
        band_count=args.band_count, footprint_per_altitude=args.footprint_per_altitude,
        tile_footprint_m=tuple(args.tile_footprint_m) if args.tile_footprint_m else None,
        tile_stride=args.tile_stride, all_bands=args.all_bands,
        yaw_range_deg=args.yaw_range_deg, yaw_noise_deg=args.yaw_noise_deg,
        altitude_noise=args.altitude_noise, noise_std=args.noise_std, seed=args.seed,
        name=args.name)


def main(argv=None):
    args = parser().parse_args(argv)
    say = lambda m: print(f'[pairs] {m}', flush=True)  # noqa: E731
    try:
        cfg = config_from_args(args)
        cfg.validate()
        world_yaml, name = resolve_map(args.map, cfg.conditions, args.cache_dir, log=say)
        generate(world_yaml, args.out, cfg, name=name, progress=not args.quiet, log=say)
    except ValueError as exc:  # MapError, DatabaseError and bad settings are ValueErrors
        print(f'[pairs] error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
