"""Shared fixtures of the skyloc_sim tests."""

import os

import pytest

from skyloc_sim.world import read_corner_list, shared_real_satellite_dir

# 640x480 rgb8 frames (0.9 MB) exceed Fast DDS's default shared-memory segment and are lost
# over UDP fragments with best-effort QoS; the LARGE_DATA builtin transports deliver them.
os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')


@pytest.fixture(scope='session')
def real_satellite():
    """(image paths, corners) of ../shared/data/real_satellite (read in place, never copied)."""
    folder = shared_real_satellite_dir(os.path.dirname(__file__))
    if folder is None:
        pytest.skip('../shared/data/real_satellite not found beside the workspace')
    return read_corner_list(folder)
