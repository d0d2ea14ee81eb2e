"""Shared fixtures of the skyloc_sim tests."""

import os

import pytest

from skyloc_sim.dds import configure_dds
from skyloc_sim.world import read_corner_list, shared_real_satellite_dir

# 640x480 rgb8 frames (0.9 MB) need the larger shared-memory segment of config/fastdds.xml
configure_dds(start=__file__)


@pytest.fixture(scope='session')
def real_satellite():
    """(image paths, corners) of ../shared/data/real_satellite (read in place, never copied)."""
    folder = shared_real_satellite_dir(os.path.dirname(__file__))
    if folder is None:
        pytest.skip('../shared/data/real_satellite not found beside the workspace')
    return read_corner_list(folder)
