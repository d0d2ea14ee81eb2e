"""Import a GeoTIFF as a map YAML + north-up PNG (DESIGN.md map YAML with ``datum``).

    python -m skyloc_localization.import_geotiff GEOTIFF --out MAP.yaml [--resolution M]
        [--bands 1,2,3]

The raster (any CRS rasterio/PROJ knows) is reprojected to a local azimuthal-equidistant grid
centred on it -- x east, y north in metres from the datum, the map frame of DESIGN.md, north-up
-- and written as ``<MAP>.png`` beside the YAML.  The datum is the raster's centre (WGS84
lat/lon), the origin the lower-left corner.  Non-8-bit rasters are stretched between their
0.5 and 99.5 percentiles; one band is repeated to grey RGB.  Needs rasterio (an optional
dependency: ``pip install -r requirements-optional.txt``).  Exit codes: 0 done, 2 bad input
or rasterio missing (one-line message on stderr).
"""

import argparse
import os
import sys

import numpy as np


def _to_uint8(band, nodata_mask):
    if band.dtype == np.uint8:
        return band
    valid = band[~nodata_mask] if nodata_mask is not None else band.ravel()
    if valid.size == 0:
        return np.zeros(band.shape, np.uint8)
    lo, hi = np.percentile(valid, [0.5, 99.5])
    scaled = (band.astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def import_geotiff(path, out_yaml, resolution=None, bands=None):
    """Reproject ``path`` and write ``out_yaml`` + its PNG; returns the YAML path."""
    import cv2
    try:
        import rasterio
        from rasterio.crs import CRS
        from rasterio.warp import (calculate_default_transform, reproject, Resampling,
                                   transform_bounds)
    except ImportError as exc:
        raise RuntimeError('rasterio is not installed (optional dependency): pip install -r '
                           'requirements-optional.txt') from exc
    from skyloc_sim.geo import write_map_yaml
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError(f'{path}: no coordinate reference system (not georeferenced)')
        west, south, east, north = transform_bounds(src.crs, 'EPSG:4326', *src.bounds)
        lat, lon = (south + north) / 2.0, (west + east) / 2.0
        local = CRS.from_proj4(f'+proj=aeqd +lat_0={lat!r} +lon_0={lon!r} +x_0=0 +y_0=0 '
                               '+datum=WGS84 +units=m +no_defs')
        kwargs = {'resolution': resolution} if resolution else {}
        transform, width, height = calculate_default_transform(
            src.crs, local, src.width, src.height, *src.bounds, **kwargs)
        bands = bands or ([1, 2, 3] if src.count >= 3 else [1])
        if max(bands) > src.count:
            raise ValueError(f'{path}: has {src.count} bands, asked for {bands}')
        out = []
        for b in bands:
            dst = np.zeros((height, width), src.dtypes[b - 1])
            reproject(rasterio.band(src, b), dst, src_transform=src.transform,
                      src_crs=src.crs, dst_transform=transform, dst_crs=local,
                      resampling=Resampling.bilinear, dst_nodata=0)
            out.append(_to_uint8(dst, dst == 0))
    rgb = np.dstack(out if len(out) == 3 else out[:1] * 3)
    res_x, res_y = transform.a, -transform.e
    if abs(res_x - res_y) > 1e-6 * max(res_x, res_y):
        raise ValueError(f'{path}: non-square pixels after reprojection ({res_x}, {res_y})')
    image = os.path.splitext(os.path.basename(out_yaml))[0] + '.png'
    folder = os.path.dirname(os.path.abspath(out_yaml))
    os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(os.path.join(folder, image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {os.path.join(folder, image)}')
    origin = (transform.c, transform.f - height * res_y, 0.0)  # lower-left corner
    return write_map_yaml(out_yaml, image, res_x, origin, (lat, lon),
                          info={'source': 'geotiff', 'file': os.path.basename(path)})


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m skyloc_localization.import_geotiff',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('geotiff')
    p.add_argument('--out', required=True, help='map YAML to write (PNG beside it)')
    p.add_argument('--resolution', type=float, help='metres per pixel (default: native)')
    p.add_argument('--bands', help='raster bands for R,G,B (1-based), e.g. 1,2,3')
    args = p.parse_args(argv)
    try:
        bands = [int(b) for b in args.bands.split(',')] if args.bands else None
        if not os.path.isfile(args.geotiff):
            raise ValueError(f'{args.geotiff}: not found')
        out = import_geotiff(args.geotiff, args.out, args.resolution, bands)
    except Exception as exc:  # rasterio raises its own error types: report them in one line
        print(f'import_geotiff: error: {exc}'.replace('\n', ' '), file=sys.stderr)
        return 2
    print(f'[import_geotiff] {out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
