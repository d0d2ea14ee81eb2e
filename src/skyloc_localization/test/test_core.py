"""LocalizerCore (the localizer node's loop without ROS) on rendered camera images of a tiny
procedural world: it tracks a flight from IMU + fixes, recovers from a kidnap, and a query
without its crop is retrieval only."""

import math

import numpy as np
import pytest

from localization_testdata import ALTITUDE, camera_image, tiny_bundle, tiny_database, tiny_world
from skyloc_localization.core import CoreConfig, LocalizerCore
from skyloc_perception.bundle import DescriptorPipeline
from skyloc_perception.normalize import normalize_query
from skyloc_sim.sensors import isa_pressure

G = 9.80665


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('core'))
    world = tiny_world(root)
    bundle = tiny_bundle(root, world)
    db = tiny_database(root, world, bundle)
    return world, DescriptorPipeline(bundle), db


class Flight:
    """A level flight at ALTITUDE, heading east (yaw 0): IMU at 100 Hz consistent with the
    motion (specific force = acceleration + gravity), barometer at 20 Hz, 1 Hz queries."""

    def __init__(self, core, world, pipeline, x, y, rng):
        self.core, self.world, self.pipeline = core, world, pipeline
        self.p = np.array([x, y], float)
        self.v = np.zeros(2)
        self.t = 0.0
        self.rng = rng

    def fly(self, seconds, accel=(0.0, 0.0)):
        a = np.asarray(accel, float)
        for _ in range(int(round(seconds * 100))):
            self.t += 0.01
            self.p += self.v * 0.01 + 0.5 * a * 1e-4
            self.v += a * 0.01
            self.core.imu(self.t, (0.0, 0.0, 0.0, 1.0), (a[0], a[1], G))
            if round(self.t * 100) % 5 == 0:
                self.core.baro(self.t, isa_pressure(ALTITUDE, 101325.0))

    def query(self, with_crop=True):
        yaw = math.radians(self.rng.normal(0.0, 3.0))          # IMU heading error
        alt = ALTITUDE * (1.0 + self.rng.normal(0.0, 0.04))    # barometer error
        image, k = camera_image(self.world, self.p[0], self.p[1], ALTITUDE, 0.0)
        crop, _ = normalize_query(image, k, alt, yaw, 100.0, self.pipeline.input_size)
        return self.core.query(self.t, self.pipeline.describe(crop), crop if with_crop else None,
                               100.0, alt)

    def error(self):
        return float(np.hypot(*(self.core.kf.position[:2] - self.p)))


def start(core):
    """The barometer's reference on the ground, then a climb it does not see (z prior)."""
    core.baro(0.0, 101325.0)
    core.kf.set_prior(0.0, (0.0, 0.0, ALTITUDE), np.diag([1e6, 1e6, 1.0]))
    core.kf.initialized = False


def test_tracks_a_flight_from_imu_and_fixes(setup):
    world, pipeline, db = setup
    core = LocalizerCore(db)
    start(core)
    f = Flight(core, world, pipeline, -60.0, -10.0, np.random.default_rng(1))
    outcomes = [f.query()]
    f.fly(1.0)
    errors = []
    for k in range(20):
        f.fly(1.0, accel=(2.0, 0.5) if k < 3 else (0.0, 0.0))   # to 6 m/s east, 1.5 north
        outcomes.append(f.query())
        errors.append(f.error())
    assert core.kf.initialized
    valid = sum(o.valid for o in outcomes)
    assert valid >= 17, [o.reason for o in outcomes if not o.valid]
    assert sum(o.source == 'prior' for o in outcomes) >= 15   # tracking after the first
    assert np.median(errors[5:]) < 3.0 and max(errors[5:]) < 6.0, errors
    assert np.hypot(*(core.kf.velocity[:2] - f.v)) < 1.0
    assert core.state() == 'OK' and core.position_std() < 5.0
    assert abs(core.kf.position[2] - ALTITUDE) < 2.0


def test_kidnapped_vehicle_is_found_again(setup):
    world, pipeline, db = setup
    core = LocalizerCore(db)
    start(core)
    f = Flight(core, world, pipeline, -40.0, -40.0, np.random.default_rng(2))
    for _ in range(4):
        f.query()
        f.fly(1.0)
    assert f.error() < 5.0
    f.p += (90.0, 70.0)        # carried off: the IMU sees nothing, the filter is sure
    recovered = None
    reseeds = 0
    for k in range(10):
        out = f.query()
        reseeds += out.reseeded
        f.fly(1.0)
        if f.error() < 5.0:
            recovered = k + 1
            break
    assert recovered is not None and recovered <= 6, (f.error(), core.kf.stats)
    assert reseeds >= 1


def test_query_without_its_crop_is_retrieval_only(setup):
    world, pipeline, db = setup
    core = LocalizerCore(db)
    start(core)
    f = Flight(core, world, pipeline, 20.0, 30.0, np.random.default_rng(3))
    out = f.query(with_crop=False)
    assert out.localization.fix == 'tile' and not out.valid
    assert 'retrieval only' in out.reason
    assert out.fix_result is None and not core.kf.initialized
    # the probability map still learnt something from the similarities
    assert out.estimate.entropy < 0.999


def test_grey_or_colour_correlation_both_fix_the_flight(setup):
    """CoreConfig.correlation_chroma reaches the matcher (the node's correlation_chroma), and
    with colour edges or without, a query with its crop gives a valid fix on the place."""
    world, pipeline, db = setup
    for chroma in (0.0, 3.0):
        core = LocalizerCore(db, CoreConfig(correlation_chroma=chroma))
        assert core.retriever.matcher.chroma == chroma
        start(core)
        f = Flight(core, world, pipeline, 20.0, 30.0, np.random.default_rng(3))
        out = f.query()
        assert out.valid, (chroma, out.reason)
        fine = out.localization
        assert math.hypot(fine.x - 20.0, fine.y - 30.0) < 5.0, chroma
    with pytest.raises(ValueError, match='chroma'):
        LocalizerCore(db, CoreConfig(correlation_chroma=-1.0))


def test_map_reseed_needs_agreeing_confirmations(setup):
    """A kidnap re-seed of a filter that has a position waits for reseed_confirmations (2)
    verified fixes of the far mode that agree with each other, the odometer since taken into
    account, within reseed_window_s; a single one (a wrong place confirmed once) is not
    enough."""
    from types import SimpleNamespace as At
    world, pipeline, db = setup
    core = LocalizerCore(db)
    assert core._confirm(0.0, At(x=1.0, y=2.0), np.zeros(2))   # no position yet: at once
    start(core)
    f = Flight(core, world, pipeline, -40.0, -40.0, np.random.default_rng(4))
    f.query()
    assert core.kf.initialized
    assert not core._confirm(10.0, At(x=300.0, y=0.0), np.zeros(2))
    assert core._confirm(11.0, At(x=306.0, y=1.0), np.array([5.0, 0.0]))
    core.confirms = []
    assert not core._confirm(20.0, At(x=300.0, y=0.0), np.zeros(2))
    assert not core._confirm(21.0, At(x=400.0, y=0.0), np.zeros(2))    # disagrees: restart
    assert not core._confirm(40.0, At(x=400.0, y=0.0), np.zeros(2))    # the first is too old
    core.cfg.reseed_confirmations = 1
    assert core._confirm(41.0, At(x=-500.0, y=0.0), np.zeros(2))
