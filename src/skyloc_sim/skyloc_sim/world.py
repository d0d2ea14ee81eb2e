"""Simulator worlds: a georeferenced orthophoto + obstacle height map + map YAML.

A world folder holds ``world.yaml`` (the map YAML of DESIGN.md with extra fields), the
reference orthophoto the database is built from (``image``), one orthophoto per camera
condition (``conditions: {summer: orthophoto_summer.png}``), and the obstacle heights
(``heights: heights.npy``, metres above ground, same size as the image). Three sources:
the procedural generator (cached), a room for the ground robot, and any georeferenced
image (e.g. ../shared/data/real_satellite/ by its corner coordinates).
"""

from dataclasses import dataclass, field
import hashlib
import json
import math
import os

import cv2
import numpy as np

from skyloc_sim.geo import latlon_to_map, load_map_yaml, MapError, MapGrid, write_map_yaml

DEFAULT_DATUM = (47.3769, 8.5417)
PROCEDURAL_VERSION = 1


@dataclass
class World:
    """A loaded world. Images are RGB uint8, row 0 = north edge."""

    meta: object
    grid: MapGrid
    map_image: np.ndarray
    heights: np.ndarray
    kind: str = 'aerial'                 # aerial | room
    condition_images: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def camera_image(self, condition, seed=0):
        """The orthophoto the camera sees in a condition (the map image if 'map')."""
        if condition in (None, '', 'map'):
            return self.map_image
        if condition in self.condition_images:
            return self.condition_images[condition]
        path = self.meta.extra.get('conditions', {}).get(condition)
        if path:
            image = read_rgb(self.meta.resolve(path), self.meta.yaml_path)
        else:
            image = photometric_condition(self.map_image, condition, seed)
        self.condition_images[condition] = image
        return image

    def is_free(self, x, y, radius=0.0, below=0.3):
        """True when the disc of ``radius`` at (x, y) has no obstacle taller than ``below``."""
        u, v = self.grid.map_to_pixel(x, y)
        r = max(1, int(math.ceil(radius / self.grid.resolution)))
        c0, r0 = int(u) - r, int(v) - r
        if c0 < 0 or r0 < 0 or c0 + 2 * r >= self.grid.width or r0 + 2 * r >= self.grid.height:
            return False
        window = self.heights[r0:r0 + 2 * r + 1, c0:c0 + 2 * r + 1]
        d = np.arange(-r, r + 1)
        disc = d[:, None] ** 2 + d[None, :] ** 2 <= (radius / self.grid.resolution + 0.5) ** 2
        return bool((window[disc] < below).all())

    def add_obstacle(self, x, y, height, radius):
        """Put a cylinder (a mast) of height/radius (m) at (x, y) into the height map."""
        u, v = self.grid.map_to_pixel(x, y)
        r_px = max(1, int(round(radius / self.grid.resolution)))
        mask = np.zeros(self.heights.shape, np.uint8)
        cv2.circle(mask, (int(u), int(v)), r_px, 1, -1)
        self.heights[mask > 0] = np.maximum(self.heights[mask > 0], float(height))


def read_rgb(path, named_by):
    """An image file as RGB uint8; MapError naming the file that named it if unreadable."""
    if not os.path.isfile(path):
        raise MapError(f'{named_by}: image file not found: {path}')
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise MapError(f'{named_by}: cannot read image {path} (corrupt or not an image)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_world(yaml_path):
    """Load a world folder's YAML (any map YAML works: no heights -> flat, no obstacles)."""
    meta = load_map_yaml(yaml_path)
    image = read_rgb(meta.image_path, yaml_path)
    heights_file = meta.extra.get('heights')
    if heights_file:
        path = meta.resolve(heights_file)
        try:
            heights = np.load(path).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise MapError(f"{yaml_path}: field 'heights': cannot read {path}: {exc}") from exc
        if heights.shape != image.shape[:2]:
            raise MapError(f"{yaml_path}: field 'heights': shape {heights.shape} does not match "
                           f'the image {image.shape[:2]}')
    else:
        heights = np.zeros(image.shape[:2], np.float32)
    grid = MapGrid.from_meta(meta, image.shape[1], image.shape[0])
    return World(meta=meta, grid=grid, map_image=image, heights=heights,
                 kind=str(meta.extra.get('kind', 'aerial')), info=meta.extra.get('info', {}))


def _write_png(path, rgb):
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')


def save_world(out_dir, map_image, heights, resolution, origin, datum, kind='aerial',
               condition_images=None, info=None):
    """Write a world folder; returns the path of its world.yaml."""
    os.makedirs(out_dir, exist_ok=True)
    _write_png(os.path.join(out_dir, 'orthophoto_map.png'), map_image)
    np.save(os.path.join(out_dir, 'heights.npy'), heights.astype(np.float32))
    conditions = {}
    for name, image in (condition_images or {}).items():
        conditions[name] = f'orthophoto_{name}.png'
        _write_png(os.path.join(out_dir, conditions[name]), image)
    extra = {'heights': 'heights.npy', 'kind': kind}
    if conditions:
        extra['conditions'] = conditions
    if info:
        extra['info'] = info
    return write_map_yaml(os.path.join(out_dir, 'world.yaml'), 'orthophoto_map.png',
                          resolution, origin, datum, **extra)


def procedural_world(cache_dir, seed=7, size_m=1200.0, resolution=0.5,
                     conditions=('summer',), log=print):
    """The procedural world for these settings, generated once and cached; world.yaml path."""
    key = json.dumps([PROCEDURAL_VERSION, seed, size_m, resolution, sorted(conditions)])
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    out_dir = os.path.join(cache_dir, f'procedural_s{seed}_{int(size_m)}m_{tag}')
    yaml_path = os.path.join(out_dir, 'world.yaml')
    if os.path.isfile(yaml_path):
        return yaml_path
    from skyloc_sim import procedural
    log(f'generating procedural world seed={seed} {size_m:.0f} m at {resolution} m/px '
        f'into {out_dir} (once; cached)')
    layout = procedural.generate_layout(seed, size_m=size_m, resolution=resolution)
    map_image = procedural.render_orthophoto(layout, 'map', seed)
    heights = procedural.obstacle_heights(layout, 'map', seed)
    images = {c: procedural.render_orthophoto(layout, c, seed + 1000 + i)
              for i, c in enumerate(conditions) if c != 'map'}
    tall = [{k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
             for k, v in s.items()} for s in layout.tall_structures]
    half = size_m / 2.0
    grid = MapGrid(map_image.shape[1], map_image.shape[0], resolution, -half, -half)
    for s in tall:  # also in map-frame metres for the report and tests
        s['x_m'], s['y_m'] = (float(c) for c in grid.pixel_to_map(s['x_px'], s['y_px']))
    tmp_dir = out_dir + '.tmp'
    save_world(tmp_dir, map_image, heights, resolution, (-half, -half, 0.0), DEFAULT_DATUM,
               condition_images=images,
               info={'source': 'procedural', 'seed': seed, 'tall_structures': tall,
                     'condition_seeds': {c: seed + 1000 + i for i, c in enumerate(conditions)}})
    os.replace(tmp_dir, out_dir)
    return yaml_path


def room_world(cache_dir, seed=3, width_m=12.0, depth_m=9.0, resolution=0.05):
    """A furnished room for the ground robot (walls 2.5 m, furniture 0.4-2 m); world.yaml.

    Beside it, occupancy.yaml + occupancy.pgm: its walls and furniture as a Nav2 map_server
    map (the static layer of the coverage graph).
    """
    out_dir = os.path.join(cache_dir, f'room_s{seed}_{width_m:g}x{depth_m:g}')
    yaml_path = os.path.join(out_dir, 'world.yaml')
    if os.path.isfile(yaml_path) and os.path.isfile(os.path.join(out_dir, 'occupancy.yaml')):
        return yaml_path
    rng = np.random.default_rng(seed)
    w, h = int(round(width_m / resolution)), int(round(depth_m / resolution))
    heights = np.zeros((h, w), np.float32)
    wall = max(2, int(round(0.15 / resolution)))
    heights[:wall, :] = heights[-wall:, :] = 2.5
    heights[:, :wall] = heights[:, -wall:] = 2.5
    # wood-like floor texture: planks with grain
    planks = (np.arange(h)[:, None] // int(0.2 / resolution)) % 7
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
    base = 150 + planks * 6 + grain * 12
    floor = np.dstack([base, base * 0.78, base * 0.55]).clip(0, 255).astype(np.uint8)
    furniture = []
    centre = np.array([w / 2, h / 2])
    for _ in range(int(rng.integers(6, 10))):
        for _attempt in range(50):
            fw, fh = rng.uniform(0.5, 2.0, 2) / resolution
            cx, cy = rng.uniform(wall + fw / 2 + 10, w - wall - fw / 2 - 10), \
                rng.uniform(wall + fh / 2 + 10, h - wall - fh / 2 - 10)
            box = (int(cx - fw / 2), int(cy - fh / 2), int(cx + fw / 2), int(cy + fh / 2))
            if np.hypot(*(np.array([cx, cy]) - centre)) < 1.0 / resolution:
                continue  # keep the robot's start free
            pad = int(0.6 / resolution)  # keep passages of at least 0.6 m between pieces
            if (heights[max(0, box[1] - pad):box[3] + pad,
                        max(0, box[0] - pad):box[2] + pad] > 0).any():
                continue
            height = float(rng.choice([0.45, 0.75, 0.9, 2.0]))
            heights[box[1]:box[3], box[0]:box[2]] = height
            colour = tuple(int(c) for c in rng.integers(40, 200, 3))
            cv2.rectangle(floor, box[:2], box[2:], colour, -1)
            furniture.append({'box_px': list(box), 'height_m': height})
            break
    floor[heights >= 2.5] = (60, 60, 60)
    save_world(out_dir, floor, heights, resolution, (-width_m / 2, -depth_m / 2, 0.0),
               DEFAULT_DATUM, kind='room', info={'source': 'room', 'furniture': furniture})
    write_occupancy_map(os.path.join(out_dir, 'occupancy.yaml'), heights >= 0.1, resolution,
                        (-width_m / 2, -depth_m / 2, 0.0))
    return yaml_path


def write_occupancy_map(yaml_path, occupied, resolution, origin):
    """A Nav2 map_server map (trinary PGM + YAML) of `occupied` (rows north first)."""
    image = os.path.splitext(os.path.basename(yaml_path))[0] + '.pgm'
    pixels = np.where(occupied, 0, 254).astype(np.uint8)
    if not cv2.imwrite(os.path.join(os.path.dirname(yaml_path), image), pixels):
        raise MapError(f'{yaml_path}: cannot write {image}')
    write_map_yaml(yaml_path, image, resolution, origin, mode='trinary', negate=0,
                   occupied_thresh=0.65, free_thresh=0.25)
    return yaml_path


def real_satellite_world(cache_dir, folder=None):
    """World of ../shared/data/real_satellite (read in place, mosaic cached); world.yaml."""
    folder = folder or shared_real_satellite_dir()
    if folder is None:
        raise MapError('real_satellite: ../shared/data/real_satellite/README.md not found '
                       '(set SKYLOC_SHARED to the folder holding data/real_satellite)')
    out_dir = os.path.join(cache_dir, 'real_satellite')
    yaml_path = os.path.join(out_dir, 'world.yaml')
    if not os.path.isfile(yaml_path):
        images, corners = read_corner_list(folder)
        image_world_from_corners(images, corners, out_dir)
    return yaml_path


def image_world_from_corners(images, corners, out_dir):
    """A world from north-up images side by side, each with (top_lat, left_lon, bottom_lat,
    right_lon) corners (as ../shared/data/real_satellite/README.md gives them).

    The map frame is centred on the mosaic: the datum is its centre, the origin (lower-left
    corner) at minus half its size. Returns world.yaml.
    """
    tiles = [read_rgb(p, p) for p in images]
    top, left = max(c[0] for c in corners), min(c[1] for c in corners)
    bottom, right = min(c[2] for c in corners), max(c[3] for c in corners)
    datum = ((top + bottom) / 2.0, (left + right) / 2.0)
    x0, y0 = latlon_to_map(bottom, left, datum)
    x1, y1 = latlon_to_map(top, right, datum)
    width_m, height_m = x1 - x0, y1 - y0
    px_w = sum(t.shape[1] for t in tiles)
    resolution = width_m / px_w
    px_h = int(round(height_m / resolution))
    mosaic = np.concatenate([cv2.resize(t, (t.shape[1], px_h), interpolation=cv2.INTER_AREA)
                             for t in tiles], axis=1)
    return save_world(out_dir, mosaic, np.zeros(mosaic.shape[:2], np.float32), resolution,
                      (x0, y0, 0.0), datum,
                      info={'source': 'images', 'files': [os.path.basename(p) for p in images]})


PHOTOMETRIC = {
    # name: (gain, offset, saturation, (r, g, b) tint, haze, blur sigma px)
    'summer': (1.05, 5, 1.1, (1.0, 1.0, 0.95), 0.0, 0.6),
    'autumn': (0.95, 0, 0.9, (1.12, 0.95, 0.78), 0.05, 0.6),
    'winter': (1.2, 40, 0.4, (0.95, 0.98, 1.05), 0.1, 0.8),
    'evening': (0.65, -5, 0.9, (1.15, 0.95, 0.75), 0.0, 0.7),
    'haze': (0.85, 30, 0.7, (0.98, 1.0, 1.03), 0.35, 1.0),
}


def photometric_condition(image, condition, seed=0):
    """Appearance change of a real orthophoto (colour, exposure, haze, blur, noise).

    The procedural generator also changes structure; for a real image only appearance can be
    changed. Deterministic per seed.
    """
    if condition not in PHOTOMETRIC:
        raise ValueError(f"unknown condition '{condition}', known: map, "
                         f"{', '.join(PHOTOMETRIC)}")
    gain, offset, sat, tint, haze, blur = PHOTOMETRIC[condition]
    rng = np.random.default_rng(seed)
    img = image.astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * sat
    img = img * gain * rng.uniform(0.95, 1.05) + offset
    img = img * np.array(tint, np.float32)[None, None, :]
    img = img * (1.0 - haze) + 200.0 * haze
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img += rng.normal(0.0, 2.0, img.shape).astype(np.float32)
    return img.clip(0, 255).astype(np.uint8)


def shared_real_satellite_dir(root=None):
    """../shared/data/real_satellite beside the workspace (or $SKYLOC_SHARED/data/...)."""
    candidates = []
    if os.environ.get('SKYLOC_SHARED'):
        candidates.append(os.path.join(os.environ['SKYLOC_SHARED'], 'data', 'real_satellite'))
    here = os.path.abspath(root or os.getcwd())
    while True:
        candidates.append(os.path.join(here, 'shared', 'data', 'real_satellite'))
        candidates.append(os.path.join(here, '..', 'shared', 'data', 'real_satellite'))
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for path in candidates:
        if os.path.isfile(os.path.join(path, 'README.md')):
            return os.path.normpath(path)
    return None


def read_corner_list(folder):
    """(image paths, corners) from a README with 'file top_lat left_lon bottom_lat right_lon'."""
    images, corners = [], []
    with open(os.path.join(folder, 'README.md')) as stream:
        for line in stream:
            parts = line.split()
            if len(parts) == 5 and parts[0].lower().endswith(('.jpg', '.jpeg', '.png', '.tif')):
                try:
                    values = tuple(float(p) for p in parts[1:])
                except ValueError:
                    continue
                images.append(os.path.join(folder, parts[0]))
                corners.append(values)
    if not images:
        raise MapError(f'{folder}/README.md: no "file top_lat left_lon bottom_lat right_lon" '
                       'lines')
    return images, corners
