"""Tiny map, bundle and database shared by the localization core tests (seconds to build)."""

import math
import os

import numpy as np

SIZE_M = 300.0
ALTITUDE = 100.0
BANDS = ((90.0, 110.0),)


def tiny_world(root):
    """Procedural world 300 m at 1 m/px with a summer condition (cached under root)."""
    from skyloc_sim.world import procedural_world
    return procedural_world(os.path.join(root, 'worlds'), 7, SIZE_M, 1.0,
                            conditions=('summer',), log=lambda m: None)


def tiny_bundle(root, world_yaml):
    """A small RootSIFT bundle fitted on the tiny world."""
    from skyloc_perception.build_bundle import build, parser
    from skyloc_perception.bundle import load_bundle
    out = os.path.join(root, 'bundle')
    if not os.path.isfile(os.path.join(out, 'bundle.json')):
        build(parser().parse_args(['--map', world_yaml, '--out', out, '--tiles', '60',
                                   '--k', '8', '--pca-dim', '32', '--footprints', '100',
                                   '--quiet']), log=lambda m: None)
    return load_bundle(out)


def tiny_database(root, world_yaml, bundle, stride=25.0):
    from skyloc_localization.database import build_database, load_database
    out = os.path.join(root, 'db')
    if os.path.isfile(os.path.join(out, 'db.json')):
        return load_database(out, bundle)
    return build_database(world_yaml, bundle, out, footprint_m=100.0, stride_m=stride,
                          bands=BANDS, progress=False)


def camera_image(world_yaml, x, y, altitude, yaw_rad, condition='summer'):
    """(RGB 640x480 nadir image, intrinsics) of the world at a pose."""
    from skyloc_perception.normalize import CameraIntrinsics
    from skyloc_sim.camera import OrthoRenderer, PinholeCamera
    from skyloc_sim.world import load_world
    world = load_world(world_yaml)
    renderer = OrthoRenderer(world.camera_image(condition), world.grid)
    image = renderer.render(PinholeCamera(640, 480, 90.0), x, y, altitude, yaw_rad)
    return image, CameraIntrinsics.from_hfov(640, 480, 90.0)


def deg(v):
    return math.radians(v)


__all__ = ['tiny_world', 'tiny_bundle', 'tiny_database', 'camera_image', 'deg', 'np']
