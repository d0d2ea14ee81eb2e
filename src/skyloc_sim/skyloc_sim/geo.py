"""Georeferenced maps: the map YAML of DESIGN.md, pixel <-> map frame, map frame <-> WGS84.

The map YAML is Nav2 map_server style plus ``datum``::

    image: orthophoto.png     # relative to the YAML
    resolution: 0.5           # metres per pixel
    origin: [0.0, 0.0, 0.0]   # pose of the lower-left pixel corner in the map frame
    datum: [47.3769, 8.5417]  # WGS84 lat, lon of the map-frame point (0, 0)

The map frame is ENU (x east, y north), images are north-up. Continuous pixel coordinates
(u, v) have u along columns from the left edge and v along rows from the top edge, so the
centre of pixel (col, row) is (col + 0.5, row + 0.5).
"""

from dataclasses import dataclass, field
import math
import os

import yaml

# WGS84 ellipsoid
_A = 6378137.0
_F = 1.0 / 298.257223563
_E2 = _F * (2.0 - _F)


class MapError(ValueError):
    """A map YAML or its image is missing, unreadable or inconsistent (the message names it)."""


@dataclass
class MapMeta:
    """A georeferenced raster: where its pixels are in the map frame and on the Earth."""

    yaml_path: str
    image_path: str
    resolution: float
    origin: tuple = (0.0, 0.0, 0.0)
    datum: tuple = None
    negate: int = 0
    occupied_thresh: float = 0.65
    free_thresh: float = 0.25
    extra: dict = field(default_factory=dict)

    def resolve(self, relative_path):
        """Path of a file named in the YAML, relative to the YAML's folder."""
        if os.path.isabs(relative_path):
            return relative_path
        return os.path.join(os.path.dirname(os.path.abspath(self.yaml_path)), relative_path)


def _field(doc, name, path, required=True, default=None):
    if name not in doc or doc[name] is None:
        if required:
            raise MapError(f"{path}: required field '{name}' is missing")
        return default
    return doc[name]


def load_map_yaml(path, require_datum=False):
    """Read and validate a map YAML; raise MapError naming the file and the field."""
    if not os.path.isfile(path):
        raise MapError(f'{path}: map YAML not found')
    try:
        with open(path) as stream:
            doc = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as exc:
        raise MapError(f'{path}: cannot parse map YAML: {exc}') from exc
    if not isinstance(doc, dict):
        raise MapError(f'{path}: map YAML must be a mapping of fields')
    image = _field(doc, 'image', path)
    resolution = _field(doc, 'resolution', path)
    try:
        resolution = float(resolution)
    except (TypeError, ValueError) as exc:
        raise MapError(f"{path}: field 'resolution' must be a number") from exc
    if not math.isfinite(resolution) or resolution <= 0.0:
        raise MapError(f"{path}: field 'resolution' must be positive, got {resolution}")
    origin = _field(doc, 'origin', path, required=False, default=[0.0, 0.0, 0.0])
    if not isinstance(origin, (list, tuple)) or len(origin) < 2:
        raise MapError(f"{path}: field 'origin' must be [x, y, yaw]")
    origin = tuple(float(v) for v in (list(origin) + [0.0])[:3])
    datum = _field(doc, 'datum', path, required=require_datum)
    if datum is not None:
        if not isinstance(datum, (list, tuple)) or len(datum) != 2:
            raise MapError(f"{path}: field 'datum' must be [latitude, longitude]")
        datum = (float(datum[0]), float(datum[1]))
        if not (-90.0 <= datum[0] <= 90.0 and -180.0 <= datum[1] <= 180.0):
            raise MapError(f"{path}: field 'datum' out of range: {datum}")
    known = {'image', 'resolution', 'origin', 'datum', 'negate', 'occupied_thresh',
             'free_thresh'}
    meta = MapMeta(
        yaml_path=os.path.abspath(path), image_path='', resolution=resolution, origin=origin,
        datum=datum, negate=int(doc.get('negate', 0)),
        occupied_thresh=float(doc.get('occupied_thresh', 0.65)),
        free_thresh=float(doc.get('free_thresh', 0.25)),
        extra={k: v for k, v in doc.items() if k not in known})
    meta.image_path = meta.resolve(str(image))
    if not os.path.isfile(meta.image_path):
        raise MapError(f"{path}: field 'image' names a file that does not exist: "
                       f'{meta.image_path}')
    return meta


def write_map_yaml(path, image, resolution, origin=(0.0, 0.0, 0.0), datum=None, **extra):
    """Write a map YAML (image relative to the YAML's folder)."""
    doc = {'image': image, 'resolution': float(resolution),
           'origin': [float(v) for v in origin]}
    if datum is not None:
        doc['datum'] = [float(datum[0]), float(datum[1])]
    doc.update(extra)
    with open(path, 'w') as stream:
        yaml.safe_dump(doc, stream, sort_keys=False)
    return path


@dataclass
class MapGrid:
    """Pixel <-> map-frame conversion for a north-up raster of ``width`` x ``height`` pixels."""

    width: int
    height: int
    resolution: float
    origin_x: float = 0.0
    origin_y: float = 0.0

    @classmethod
    def from_meta(cls, meta, width, height):
        return cls(int(width), int(height), meta.resolution, meta.origin[0], meta.origin[1])

    @property
    def size_m(self):
        """(width, height) of the raster in metres."""
        return self.width * self.resolution, self.height * self.resolution

    def map_to_pixel(self, x, y):
        """Map-frame metres -> continuous pixel coordinates (u right, v down)."""
        u = (x - self.origin_x) / self.resolution
        v = self.height - (y - self.origin_y) / self.resolution
        return u, v

    def pixel_to_map(self, u, v):
        """Continuous pixel coordinates -> map-frame metres (x east, y north)."""
        x = self.origin_x + u * self.resolution
        y = self.origin_y + (self.height - v) * self.resolution
        return x, y

    def map_to_pixel_matrix(self):
        """3x3 affine taking homogeneous map-frame (x, y, 1) to pixel (u, v, 1)."""
        r = self.resolution
        return [[1.0 / r, 0.0, -self.origin_x / r],
                [0.0, -1.0 / r, self.height + self.origin_y / r],
                [0.0, 0.0, 1.0]]

    def contains(self, x, y, margin=0.0):
        x0, y0 = self.origin_x + margin, self.origin_y + margin
        w, h = self.size_m
        return x0 <= x <= self.origin_x + w - margin and y0 <= y <= self.origin_y + h - margin


def _radii(lat_deg):
    """Meridional (M) and prime-vertical (N) radii of curvature at a latitude, metres."""
    s = math.sin(math.radians(lat_deg))
    w = math.sqrt(1.0 - _E2 * s * s)
    return _A * (1.0 - _E2) / w ** 3, _A / w


def map_to_latlon(x, y, datum):
    """ENU metres from the datum -> (lat, lon) degrees (local tangent plane, < 1 m over 10 km)."""
    m, n = _radii(datum[0])
    lat = datum[0] + math.degrees(y / m)
    lon = datum[1] + math.degrees(x / (n * math.cos(math.radians(datum[0]))))
    return lat, lon


def latlon_to_map(lat, lon, datum):
    """(lat, lon) degrees -> ENU metres from the datum (inverse of map_to_latlon)."""
    m, n = _radii(datum[0])
    y = math.radians(lat - datum[0]) * m
    x = math.radians(lon - datum[1]) * n * math.cos(math.radians(datum[0]))
    return x, y
