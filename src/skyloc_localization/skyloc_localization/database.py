"""The map database (DESIGN.md "Files"): descriptors of north-up map tiles on a grid.

A database is a folder::

    db.json          {"format_version": 1, "model_id": "<the bundle's>",
                      "map_yaml": "<abs path>", "map_sha256": "<sha256 of the YAML>",
                      "map_image": "<abs path>", "map_image_sha256": "<sha256>",
                      "footprint_m": [80.0, 104.0, 134.0],     # one per band
                      "stride_m": [20.0, 26.0, 33.5],           # one per band
                      "bands": [{"alt_min": 70, "alt_max": 90, "altitude": 80,
                                 "footprint_m": 80.0, "stride_m": 20.0, "count": 196}, ...],
                      "input_size": 224, "dim": 256, "dtype": "float16" | "float32",
                      "count": 588, "margin_m": 0.0}
    descriptors.npy  [count, dim] float16/float32, L2-normalised rows (memory-mapped on load)
    centres.npy      [count, 3] float64: x, y (map frame, metres), band index

Fine matching reads the map image named in db.json (checked against its sha256 at load).

Altitude bands
--------------
A band is an altitude range ``[alt_min, alt_max]`` of the camera above ground.  Its tiles
have the footprint ``footprint_per_altitude * altitude`` at the band's nominal altitude (the
geometric mean of its range), unless footprints are given explicitly, so the footprint scales
with altitude as a fixed-HFOV camera's view does.  Why: the query is cropped to a *metric*
footprint (normalize_query), so any footprint can be compared with any altitude, but the crop
must lie inside the camera view at every yaw: a north-up square of side s needs s * sqrt(2)
inside the image's short side.  A 90 deg HFOV 4:3 camera at altitude h sees 2h x 1.5h, so a
square of side h (ratio 1.0, the default) is fully seen at any heading; at 150 m a 70 m
footprint would waste most of the view and at 70 m a 150 m footprint would be half black.
The localiser picks the band containing the query altitude (the nearest one outside all
bands) and searches only that band's tiles.  The stride defaults to a quarter of each band's
footprint (every point of the map is within stride / sqrt(2) of a tile centre).
"""

import json
import math
import os

import numpy as np

FORMAT_VERSION = 1
DB_JSON = 'db.json'
DESCRIPTORS = 'descriptors.npy'
CENTRES = 'centres.npy'
DEFAULT_BANDS = ((70.0, 90.0), (90.0, 120.0), (120.0, 150.0))
FOOTPRINT_PER_ALTITUDE = 1.0
STRIDE_PER_FOOTPRINT = 0.25


class DatabaseError(ValueError):
    """A database is missing, corrupt, or does not fit the bundle (the message says which)."""


def parse_bands(text):
    """'70-90,90-120,120-150' -> ((70, 90), (90, 120), (120, 150)); DatabaseError if bad."""
    bands = []
    for part in str(text).split(','):
        try:
            lo, hi = (float(v) for v in part.strip().split('-'))
        except ValueError as exc:
            raise DatabaseError(f"altitude band '{part}' is not LOW-HIGH in metres") from exc
        if not (0.0 < lo <= hi and math.isfinite(hi)):
            raise DatabaseError(f"altitude band '{part}': need 0 < LOW <= HIGH")
        bands.append((lo, hi))
    return tuple(bands)


def band_plan(bands=DEFAULT_BANDS, footprint_m=None, stride_m=None,
              footprint_per_altitude=FOOTPRINT_PER_ALTITUDE):
    """Per-band dicts {alt_min, alt_max, altitude, footprint_m, stride_m}.

    ``footprint_m`` / ``stride_m``: None (scale with altitude / a quarter of the footprint), a
    number (the same for every band) or one value per band.
    """
    bands = [tuple(float(v) for v in b) for b in bands]
    if not bands:
        raise DatabaseError('at least one altitude band is needed')

    def per_band(name, value, default):
        if value is None:
            return [default(i) for i in range(len(bands))]
        values = list(value) if isinstance(value, (list, tuple)) else [value] * len(bands)
        if len(values) != len(bands):
            raise DatabaseError(f'{name}: {len(values)} values for {len(bands)} bands')
        values = [float(v) for v in values]
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise DatabaseError(f'{name} must be positive, got {values}')
        return values

    altitudes = [math.sqrt(lo * hi) for lo, hi in bands]
    feet = per_band('footprint_m', footprint_m,
                    lambda i: round(footprint_per_altitude * altitudes[i], 1))
    strides = per_band('stride_m', stride_m, lambda i: round(STRIDE_PER_FOOTPRINT * feet[i], 1))
    return [{'alt_min': lo, 'alt_max': hi, 'altitude': round(alt, 1), 'footprint_m': f,
             'stride_m': s} for (lo, hi), alt, f, s in zip(bands, altitudes, feet, strides)]


def tile_centres(grid, footprint_m, stride_m, margin_m=0.0):
    """[N, 2] map-frame centres of a grid of tiles that lie inside the map (minus margin).

    The grid is centred on the map so that the unused border is the same on both sides; a
    map smaller than one footprint gets a single tile at its centre.
    """
    w, h = grid.size_m

    def axis(origin, length):
        usable = length - 2.0 * margin_m - footprint_m
        if usable < 0:
            return np.array([origin + length / 2.0])
        n = int(math.floor(usable / stride_m + 1e-9)) + 1
        start = origin + (length - (n - 1) * stride_m) / 2.0
        return start + stride_m * np.arange(n)

    xs, ys = axis(grid.origin_x, w), axis(grid.origin_y, h)
    xx, yy = np.meshgrid(xs, ys)  # rows south -> north, columns west -> east
    return np.column_stack((xx.ravel(), yy.ravel()))


def _read_map(map_yaml):
    import cv2

    from skyloc_sim.geo import load_map_yaml, MapGrid
    meta = load_map_yaml(map_yaml)
    image = cv2.imread(meta.image_path, cv2.IMREAD_COLOR)
    if image is None:
        raise DatabaseError(f'{map_yaml}: cannot read image {meta.image_path}')
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return meta, image, MapGrid.from_meta(meta, image.shape[1], image.shape[0])


def build_database(map_yaml, bundle, out_dir, footprint_m=None, stride_m=None,
                   bands=DEFAULT_BANDS, dtype='float16', margin_m=0.0, progress=True,
                   pipeline=None, chunk=256):
    """Describe the map's tiles band by band and write the database folder; returns it loaded.

    ``bundle``: a loaded skyloc_perception Bundle (``pipeline`` may pass a ready
    DescriptorPipeline of it).  Descriptors are computed in float32 and written ``chunk`` rows
    at a time into the memory-mapped output (stored as ``dtype``).
    """
    from tqdm import tqdm

    from skyloc_perception.bundle import DescriptorPipeline, file_sha256
    from skyloc_perception.normalize import map_tile
    if dtype not in ('float16', 'float32'):
        raise DatabaseError(f"dtype must be float16 or float32, got '{dtype}'")
    meta, image, grid = _read_map(map_yaml)
    pipeline = pipeline or DescriptorPipeline(bundle)
    plan = band_plan(bands, footprint_m, stride_m)
    centres = []
    for i, band in enumerate(plan):
        c = tile_centres(grid, band['footprint_m'], band['stride_m'], margin_m)
        band['count'] = int(len(c))
        centres.append(np.column_stack((c, np.full(len(c), float(i)))))
    centres = np.concatenate(centres)
    os.makedirs(out_dir, exist_ok=True)
    dim = int(pipeline.dim)
    path = os.path.join(out_dir, DESCRIPTORS)
    out = np.lib.format.open_memmap(path, mode='w+', dtype=np.dtype(dtype),
                                    shape=(len(centres), dim))
    size = pipeline.input_size
    buf = np.empty((chunk, dim), np.float32)
    bar = tqdm(total=len(centres), desc='database tiles', unit='tile', disable=not progress)
    for start in range(0, len(centres), chunk):
        rows = centres[start:start + chunk]
        for j, (x, y, b) in enumerate(rows):
            tile = map_tile(image, grid, x, y, plan[int(b)]['footprint_m'], size)
            buf[j] = pipeline.describe(tile)
            bar.update(1)
        out[start:start + len(rows)] = buf[:len(rows)]
    bar.close()
    out.flush()
    del out
    np.save(os.path.join(out_dir, CENTRES), centres)
    doc = {
        'format_version': FORMAT_VERSION, 'model_id': bundle.model_id,
        'bundle_backend': bundle.backend,
        'map_yaml': os.path.abspath(map_yaml), 'map_sha256': file_sha256(map_yaml),
        'map_image': os.path.abspath(meta.image_path),
        'map_image_sha256': file_sha256(meta.image_path),
        'map_image_bytes': os.path.getsize(meta.image_path),
        'map_size_px': [grid.width, grid.height], 'map_resolution': grid.resolution,
        'footprint_m': [b['footprint_m'] for b in plan],
        'stride_m': [b['stride_m'] for b in plan], 'bands': plan,
        'input_size': int(size), 'dim': dim, 'dtype': dtype, 'count': int(len(centres)),
        'margin_m': float(margin_m)}
    with open(os.path.join(out_dir, DB_JSON), 'w') as stream:
        json.dump(doc, stream, indent=2)
    return load_database(out_dir, bundle)


class Database:
    """A loaded database: ``descriptors`` (memory-mapped), ``centres`` [N, 3], ``meta``."""

    def __init__(self, path, meta, descriptors, centres):
        self.path = path
        self.meta = meta
        self.descriptors = descriptors
        self.centres = centres
        self.bands = meta['bands']
        self._map = None

    @property
    def model_id(self):
        return self.meta['model_id']

    @property
    def dim(self):
        return int(self.meta['dim'])

    @property
    def input_size(self):
        return int(self.meta['input_size'])

    def __len__(self):
        return len(self.centres)

    def band_for_altitude(self, altitude_m):
        """Index of the band containing the altitude (the nearest band outside all)."""
        from skyloc_perception.normalize import band_for_altitude
        return band_for_altitude(self.bands, altitude_m)

    def band_rows(self, band):
        """Row indices of one band's tiles (contiguous: tiles are written band by band)."""
        counts = [b['count'] for b in self.bands]
        start = int(sum(counts[:band]))
        return start, start + int(counts[band])

    def map_image(self):
        """(RGB orthophoto, MapGrid, MapMeta) of the map the database was built from, cached."""
        if self._map is None:
            from skyloc_sim.geo import MapError
            try:
                meta, image, grid = _read_map(self.meta['map_yaml'])
            except MapError as exc:
                raise DatabaseError(f'{self.path}: map of the database: {exc}') from exc
            self._map = (image, grid, meta)
        return self._map


def _fail(path, message):
    raise DatabaseError(f'{path}: {message}')


def load_database(path, bundle=None, check_map=True):
    """Open a database folder (descriptors memory-mapped); DatabaseError naming the problem.

    With ``bundle`` the database must have been built with the same model (the message names
    both model_ids) and its descriptor dimension must be the bundle's.  ``check_map``: the map
    YAML and image must exist with the sha256 recorded at build time.
    """
    manifest = os.path.join(path, DB_JSON)
    if not os.path.isdir(path):
        _fail(path, 'database folder not found')
    if not os.path.isfile(manifest):
        _fail(manifest, 'missing (not a map database)')
    try:
        with open(manifest) as stream:
            meta = json.load(stream)
    except (OSError, ValueError) as exc:
        _fail(manifest, f'cannot parse: {exc}')
    if not isinstance(meta, dict):
        _fail(manifest, 'not a JSON object')
    for key in ('format_version', 'model_id', 'map_yaml', 'bands', 'dim', 'dtype', 'count',
                'input_size'):
        if key not in meta:
            _fail(manifest, f"required field '{key}' is missing")
    if meta['format_version'] != FORMAT_VERSION:
        _fail(manifest, f"format_version {meta['format_version']} is not the supported "
                        f'{FORMAT_VERSION} (rebuild it with skyloc_localization.build_db)')
    if bundle is not None:
        if bundle.model_id != meta['model_id']:
            _fail(manifest, f"built with model_id {meta['model_id']} but the bundle "
                            f'{bundle.path} has model_id {bundle.model_id}: rebuild the '
                            'database with this bundle or pass the bundle it was built with')
        if bundle.descriptor_dim and int(bundle.descriptor_dim) != int(meta['dim']):
            _fail(manifest, f"descriptor dim {meta['dim']} does not match the bundle's "
                            f'{bundle.descriptor_dim}')
    try:
        descriptors = np.load(os.path.join(path, DESCRIPTORS), mmap_mode='r')
        centres = np.load(os.path.join(path, CENTRES))
    except FileNotFoundError as exc:
        _fail(path, f'missing file {os.path.basename(exc.filename or "")} '
                    f'(incomplete database)')
    except (OSError, ValueError) as exc:
        _fail(path, f'corrupt descriptors.npy or centres.npy: {exc}')
    count, dim = int(meta['count']), int(meta['dim'])
    if descriptors.shape != (count, dim) or str(descriptors.dtype) != meta['dtype']:
        _fail(os.path.join(path, DESCRIPTORS),
              f'shape {descriptors.shape} {descriptors.dtype}, db.json says ({count}, {dim}) '
              f"{meta['dtype']} (corrupt or replaced)")
    if centres.shape != (count, 3):
        _fail(os.path.join(path, CENTRES), f'shape {centres.shape}, expected ({count}, 3)')
    if sum(int(b.get('count', -1)) for b in meta['bands']) != count:
        _fail(manifest, 'band counts do not add up to count')
    if check_map:  # the YAML is hashed; the (large) image only checked by size: load <= 1 s
        from skyloc_perception.bundle import file_sha256
        yaml_path, image_path = meta['map_yaml'], meta.get('map_image')
        if not os.path.isfile(yaml_path):
            _fail(manifest, f'map_yaml {yaml_path} not found (the map the database was built '
                            'from)')
        if meta.get('map_sha256') and file_sha256(yaml_path) != meta['map_sha256']:
            _fail(manifest, f'map_yaml {yaml_path} changed since the database was built '
                            '(sha256 differs): rebuild the database')
        if image_path and not os.path.isfile(image_path):
            _fail(manifest, f'map_image {image_path} not found')
        if image_path and meta.get('map_image_bytes') not in (None,
                                                              os.path.getsize(image_path)):
            _fail(manifest, f'map_image {image_path} changed since the database was built '
                            '(size differs): rebuild the database')
    return Database(path, meta, descriptors, centres)
