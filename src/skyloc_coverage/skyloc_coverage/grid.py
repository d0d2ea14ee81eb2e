"""Occupancy grids: the GridMap array type, Nav2 map_server files, inflation, polygons.

Arrays follow nav_msgs/OccupancyGrid: ``data[row, col]`` with row 0 the *bottom* row (lowest
y), int8 values 0 free, 100 occupied, -1 unknown. The centre of cell (col, row) is at
``origin + (col + 0.5, row + 0.5) * resolution`` in the map frame. Map_server images are stored
top row first, so loading and saving flip them.

No ROS imports: the nodes convert messages, this module does the arithmetic.
"""

from dataclasses import dataclass
import math
import os

import cv2
import numpy as np

from skyloc_sim.geo import load_map_yaml, MapError

FREE, OCCUPIED, UNKNOWN = 0, 100, -1

__all__ = ['FREE', 'OCCUPIED', 'UNKNOWN', 'GridMap', 'MapError', 'load_map', 'save_map',
           'inflate', 'polygon_mask', 'blocked_mask']


@dataclass
class GridMap:
    """An occupancy grid in the map frame (see the module docstring for the convention)."""

    data: np.ndarray            # int8 H x W, row 0 = bottom
    resolution: float           # metres per cell
    origin: tuple = (0.0, 0.0)  # map-frame (x, y) of the lower-left corner of cell (0, 0)

    def __post_init__(self):
        self.data = np.asarray(self.data)
        if self.data.ndim != 2:
            raise MapError(f'occupancy grid must be 2-D, got shape {self.data.shape}')
        if not (math.isfinite(self.resolution) and self.resolution > 0):
            raise MapError(f'occupancy grid resolution must be positive, got {self.resolution}')
        self.origin = (float(self.origin[0]), float(self.origin[1]))

    @property
    def height(self):
        return self.data.shape[0]

    @property
    def width(self):
        return self.data.shape[1]

    @property
    def empty(self):
        return self.data.size == 0

    def cell_of(self, x, y):
        """Map-frame metres -> (col, row) integer cell (may be outside the grid)."""
        col = np.floor((np.asarray(x) - self.origin[0]) / self.resolution).astype(int)
        row = np.floor((np.asarray(y) - self.origin[1]) / self.resolution).astype(int)
        return col, row

    def centre_of(self, col, row):
        """(col, row) -> map-frame centre of the cell."""
        return (self.origin[0] + (np.asarray(col) + 0.5) * self.resolution,
                self.origin[1] + (np.asarray(row) + 0.5) * self.resolution)

    def inside(self, col, row):
        col, row = np.asarray(col), np.asarray(row)
        return (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)

    def same_frame(self, other):
        """True when `other` has the same shape, resolution and origin."""
        return (self.data.shape == other.data.shape
                and abs(self.resolution - other.resolution) < 1e-9
                and np.allclose(self.origin, other.origin, atol=1e-6))


def load_map(yaml_path):
    """Load a Nav2 map_server map (YAML + PGM/PNG); raise MapError naming what is wrong.

    Fields: image, resolution, origin [x, y, yaw] (yaw must be 0: grids are axis-aligned),
    occupied_thresh, free_thresh, negate; mode trinary (scale and raw are read as trinary).
    """
    meta = load_map_yaml(yaml_path)
    for name in ('occupied_thresh', 'free_thresh'):
        value = getattr(meta, name)
        if not 0.0 <= value <= 1.0:
            raise MapError(f"{yaml_path}: field '{name}' must be in [0, 1], got {value}")
    if meta.free_thresh >= meta.occupied_thresh:
        raise MapError(f'{yaml_path}: free_thresh ({meta.free_thresh}) must be below '
                       f'occupied_thresh ({meta.occupied_thresh})')
    if abs(meta.origin[2]) > 1e-9:
        raise MapError(f'{yaml_path}: a rotated origin (yaw {meta.origin[2]}) is not supported')
    image = cv2.imread(meta.image_path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise MapError(f"{yaml_path}: field 'image': cannot read {meta.image_path}")
    if image.ndim == 3:
        alpha = image[..., 3] if image.shape[2] == 4 else None
        image = image[..., :3].mean(axis=2)
        if alpha is not None:
            image = np.where(alpha == 0, np.nan, image)
    scale = 255.0 if image.dtype != np.uint16 else 65535.0
    value = image.astype(np.float64) / scale
    occ = value if meta.negate else 1.0 - value   # map_server: dark = occupied
    data = np.full(occ.shape, UNKNOWN, np.int8)
    data[occ > meta.occupied_thresh] = OCCUPIED
    data[occ < meta.free_thresh] = FREE
    return GridMap(np.flipud(data).copy(), meta.resolution, meta.origin[:2])


def save_map(grid, yaml_path, image_name=None):
    """Write `grid` as map_server YAML + PGM (trinary: 0 black, 254 white, 205 unknown).

    free_thresh 0.196 (as ROS 1's map_saver): 205 reads back as unknown, not free.
    """
    out_dir = os.path.dirname(os.path.abspath(yaml_path))
    os.makedirs(out_dir, exist_ok=True)
    image_name = image_name or os.path.splitext(os.path.basename(yaml_path))[0] + '.pgm'
    pixels = np.full(grid.data.shape, 205, np.uint8)
    pixels[grid.data == FREE] = 254
    pixels[grid.data >= 50] = 0
    if not cv2.imwrite(os.path.join(out_dir, image_name), np.flipud(pixels)):
        raise MapError(f'{yaml_path}: cannot write {image_name}')
    doc = (f'image: {image_name}\nmode: trinary\nresolution: {grid.resolution!r}\n'
           f'origin: [{grid.origin[0]!r}, {grid.origin[1]!r}, 0.0]\n'
           f'negate: 0\noccupied_thresh: 0.65\nfree_thresh: 0.196\n')
    with open(yaml_path, 'w') as stream:
        stream.write(doc)
    return yaml_path


def inflate(occupied, resolution, radius):
    """Cells whose centre lies within `radius` m of an occupied cell's centre (incl. them)."""
    occupied = np.asarray(occupied, bool)
    if radius <= 0 or not occupied.any():
        return occupied.copy()
    src = np.where(occupied, 0, 255).astype(np.uint8)
    dist = cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist * resolution <= radius + 1e-9


def blocked_mask(grid, radius, unknown_is_free=True, area=None, margin=None):
    """Where the vehicle centre must not go: obstacles (and unknown, unless free) inflated.

    `area` (bool mask, optional) limits where it may go; outside it counts as blocked but is
    not inflated (an area edge is a boundary to stay within, not an obstacle). `margin` adds
    to the radius (default half a cell, so that straight segments between free cell centres
    keep the full radius from every obstacle cell).
    """
    margin = 0.5 * grid.resolution if margin is None else margin
    obstacles = grid.data >= 50
    if not unknown_is_free:
        obstacles |= grid.data < 0
    blocked = inflate(obstacles, grid.resolution, radius + margin)
    if area is not None:
        blocked |= ~np.asarray(area, bool)
    return blocked


def polygon_mask(grid, polygon_xy):
    """Bool mask of the cells whose centre lies inside a map-frame polygon [(x, y), ...].

    OpenCV's polygon fill: cells the boundary passes through are included (an area edge gives
    or takes at most one cell).
    """
    poly = np.asarray(polygon_xy, float).reshape(-1, 2)
    if len(poly) < 3:
        raise ValueError(f'a polygon needs at least 3 points, got {len(poly)}')
    px = (poly - np.asarray(grid.origin)) / grid.resolution - 0.5   # cell-centre coordinates
    mask = np.zeros(grid.data.shape, np.uint8)
    shift = 4
    pts = np.round(px * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)
