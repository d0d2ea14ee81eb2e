"""Retrieval, re-ranking and the fine fix on a map where the answer is known."""

import math

import numpy as np
import pytest

from localization_testdata import camera_image, tiny_bundle, tiny_database, tiny_world
from skyloc_localization.database import DatabaseError
from skyloc_localization.fine import CorrelationMatcher, orientation_field
from skyloc_localization.retrieval import Localizer, top_k, variant_crop


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from skyloc_perception.bundle import DescriptorPipeline
    root = str(tmp_path_factory.mktemp('locret'))
    world = tiny_world(root)
    bundle = tiny_bundle(root, world)
    return world, bundle, tiny_database(root, world, bundle), DescriptorPipeline(bundle)


def test_top_k_matches_brute_force_on_float16_memmap(tmp_path):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(500, 16)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    np.save(tmp_path / 'd.npy', db.astype(np.float16))
    mm = np.load(tmp_path / 'd.npy', mmap_mode='r')
    q = db[[42, 7]] + 0.01
    rows, scores, variant = top_k(mm, q, 3, rows=(0, 500), chunk=64)
    brute = (mm.astype(np.float32) @ q.T).max(axis=1)
    assert list(rows) == list(np.argsort(-brute)[:3])
    assert set(rows[:2]) == {42, 7} and np.allclose(scores, np.sort(brute)[::-1][:3])
    assert variant[list(rows).index(7)] == 1
    rows, _, _ = top_k(mm, q[0], 2, rows=(100, 200))
    assert all(100 <= r < 200 for r in rows)
    with pytest.raises(ValueError, match='dimension'):
        top_k(mm, np.ones(8), 3)


def test_variant_crop_equals_normalize_query(tiny):
    from skyloc_perception.normalize import normalize_query
    image, intr = camera_image(tiny[0], 10.0, -20.0, 100.0, 0.4)
    base, _ = normalize_query(image, intr, 100.0, 0.4, 155.0, 347)
    for dyaw, s in ((6.0, 1.0), (-6.0, 1.07), (0.0, 0.93)):
        want, _ = normalize_query(image, intr, 100.0 * s, 0.4 + math.radians(dyaw), 100.0, 224)
        got = variant_crop(base, 155.0, dyaw, s, 100.0, 224)
        assert np.abs(want.astype(int) - got.astype(int)).mean() < 3.0


@pytest.mark.parametrize('x, y, yaw_deg, yaw_err, alt_err', [
    (20.0, -30.0, 35.0, 3.0, 1.05), (-40.0, 25.0, -120.0, -4.0, 0.94)])
def test_localize_known_place(tiny, x, y, yaw_deg, yaw_err, alt_err):
    world, _, db, pipe = tiny
    image, intr = camera_image(world, x, y, 100.0, math.radians(yaw_deg))
    loc = Localizer(db, pipe)
    r = loc.localize(image, intr, 100.0 * alt_err, math.radians(yaw_deg + yaw_err))
    assert r.fix == 'fine', r.fine.reason if r.fine else ''
    # 1 m/px fine matching, yaw off by 3-4 deg and altitude by 5-6%
    assert math.hypot(r.x - x, r.y - y) < 4.0
    assert r.sigma_m < 10.0 and np.all(np.linalg.eigvalsh(r.covariance) > 0)
    top = r.candidates[0]
    assert math.hypot(top.x - x, top.y - y) <= db.bands[0]['stride_m'] * 1.5
    assert r.candidates == sorted(r.candidates, key=lambda c: -c.score)


def test_keypoint_method_on_the_map_condition(tiny):
    world, _, db, pipe = tiny
    image, intr = camera_image(world, 15.0, 10.0, 100.0, 1.0, condition='map')
    r = Localizer(db, pipe, method='keypoints').localize(image, intr, 100.0,
                                                         1.0 + math.radians(2.0))
    assert r.fix == 'fine' and math.hypot(r.x - 15.0, r.y - 10.0) < 3.0
    assert r.fine.inliers >= 12


def test_no_fix_on_an_unrelated_image(tiny):
    world, _, db, pipe = tiny
    rng = np.random.default_rng(3)
    noise = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    from skyloc_perception.normalize import CameraIntrinsics
    r = Localizer(db, pipe).localize(noise, CameraIntrinsics.from_hfov(640, 480, 90.0), 100.0,
                                     0.0)
    assert r.fix == 'tile' and r.fine is not None and r.fine.reason
    assert r.sigma_m >= 50.0 - 1e-6


def test_correlation_peak_and_covariance():
    rng = np.random.default_rng(1)
    import cv2
    window = cv2.GaussianBlur((rng.random((200, 200)) * 255).astype(np.uint8), (0, 0), 2)
    window = np.dstack([window] * 3)
    query = window[60:140, 30:110]          # centre at col 69.5, row 99.5
    m = CorrelationMatcher()
    peak = m.correlate(m.field(window), m.field(query), 1.0)
    assert peak.col == pytest.approx(69.5, abs=0.3) and peak.row == pytest.approx(99.5, abs=0.3)
    fix = m.fix(peak, lambda c, r: (c, -r), 1.0)
    assert fix.ok and fix.x == pytest.approx(69.5, abs=0.3)
    assert fix.covariance.shape == (2, 2) and fix.sigma_m < 3.0
    flat = np.full((80, 80, 3), 128, np.uint8)
    assert not np.any(orientation_field(flat))
    assert not m.fix(m.correlate(m.field(window), m.field(flat), 1.0), None, 1.0).ok


def test_whole_map_places_are_verified_on_every_query(tiny):
    """global_always: the whole-map correlation's places are verified beside the retrieved
    tiles on every query (off: only when no tile verifies); the reported candidates are one
    per place, each with a finite similarity; global_k must be >= 1."""
    world, _, db, pipe = tiny
    image, intr = camera_image(world, -10.0, 15.0, 100.0, math.radians(70.0))
    fp = db.bands[0]['footprint_m']
    for always in (True, False):
        loc = Localizer(db, pipe, global_always=always)
        r = loc.localize(image, intr, 100.0, math.radians(71.0))
        assert r.fix == 'fine' and math.hypot(r.x + 10.0, r.y - 15.0) < 3.0, always
        assert ('global_search' in r.timings_ms) == always
        assert all(math.isfinite(c.similarity) for c in r.candidates)
        where = [(c.fine.x, c.fine.y) if c.fine is not None and c.fine.ok else (c.x, c.y)
                 for c in r.candidates]
        assert all(math.hypot(a[0] - b[0], a[1] - b[1]) >= fp / 4
                   for i, a in enumerate(where) for b in where[:i])
    with pytest.raises(ValueError, match='global_k'):
        Localizer(db, pipe, global_k=0)


def test_colour_edges_join_the_orientation_field():
    """Fields of the same brightness but another colour: the grey field sees no edge at all,
    the field with chroma does, and the correlation finds the crop's place from them."""
    import cv2
    a, b = (200, 100, 100), (100, 145, 130)           # both grey 130
    rng = np.random.default_rng(5)
    cells = rng.random((10, 10)) < 0.5
    window = np.where(np.kron(cells, np.ones((20, 20)))[..., None] > 0,
                      np.array(a, np.uint8), np.array(b, np.uint8)).astype(np.uint8)
    assert np.ptp(cv2.cvtColor(window, cv2.COLOR_RGB2GRAY)) == 0
    assert np.abs(orientation_field(window)).max() < 1e-3
    assert np.abs(CorrelationMatcher(chroma=0.0).field(window)).max() < 1e-3
    m = CorrelationMatcher()
    assert m.chroma > 0 and np.any(m.field(window))
    query = window[60:140, 30:110]                     # centre at col 69.5, row 99.5
    peak = m.correlate(m.field(window), m.field(query), 1.0)
    assert peak.col == pytest.approx(69.5, abs=0.5) and peak.row == pytest.approx(99.5, abs=0.5)
    assert m.fix(peak, lambda c, r: (c, -r), 1.0).ok
    with pytest.raises(ValueError, match='chroma'):
        CorrelationMatcher(chroma=float('nan'))


def test_no_edge_along_the_border_of_the_view():
    """The black outside the camera's view leaves no edge just inside the view's border (the
    blur is normalised by the seen pixels); a real edge inside the view is kept."""
    img = np.full((100, 100, 3), (120, 160, 80), np.uint8)
    img[:, 60:] = 0                                   # outside the view
    img[40:, :30] = (160, 120, 80)                    # a real edge, inside the view
    for chroma in (0.0, 3.0):
        f = np.hypot(*np.moveaxis(orientation_field(img, 1.0, chroma), 2, 0))
        assert f[:, 45:60].max() < 0.02 * f[35:45, :25].max(), chroma


def test_masked_correlation_ignores_the_black_outside_of_the_view():
    """A query crop reaching past the camera's view is black there: with the mask that part
    leaves the window's norm too, so the true place scores ~1 and stands out more."""
    import cv2
    rng = np.random.default_rng(4)
    window = cv2.GaussianBlur((rng.random((220, 220)) * 254 + 1).astype(np.uint8), (0, 0), 2)
    window = np.dstack([window] * 3)
    query = window[50:170, 40:160].copy()   # centre at col 99.5, row 109.5
    corner = np.zeros(query.shape[:2], np.uint8)
    cv2.fillConvexPoly(corner, np.array([[0, 0], [70, 0], [0, 70]]), 1)
    query[corner > 0] = 0                   # a triangle outside the view
    m = CorrelationMatcher()
    got = {}
    for name, mask in (('masked', True), ('plain', False)):
        peak = m.correlate(m.field(window), m.field(query), 1.0, mask=mask)
        assert peak.col == pytest.approx(99.5, abs=0.3), name
        assert peak.row == pytest.approx(109.5, abs=0.3), name
        got[name] = peak
    assert got['masked'].score > 0.97 > got['plain'].score
    assert got['masked'].ratio > got['plain'].ratio


def test_larger_verification_crop_where_the_camera_sees_more(tiny):
    """At 100 m the 90 deg camera sees 200 x 150 m: the correlation crop is then 1.5 (or 2)
    footprints (150 m) and the fix still lands on the place; verify_factor 1 keeps the
    footprint."""
    world, _, db, pipe = tiny
    image, intr = camera_image(world, -10.0, 15.0, 100.0, math.radians(70.0))
    seen = {}
    for factor in (1.0, 1.5, 2.0):
        loc = Localizer(db, pipe, verify_factor=factor)
        real = loc.matcher.correlate

        def spy(window, query, res, *mask, real=real):
            seen.setdefault(factor, set()).add(query.shape[0] * res)
            return real(window, query, res, *mask)
        loc.matcher.correlate = spy
        r = loc.localize(image, intr, 100.0, math.radians(71.0))
        assert r.fix == 'fine' and math.hypot(r.x + 10.0, r.y - 15.0) < 3.0
    fp = db.bands[0]['footprint_m']
    assert max(seen[1.0]) == pytest.approx(fp, abs=2.0)
    assert max(seen[1.5]) == pytest.approx(1.5 * fp, abs=2.0)
    assert max(seen[2.0]) == pytest.approx(2.0 * fp, abs=2.0)
    # a candidate 14 m off: the place is beyond its +-12 m window; the best peak there (on
    # the window's edge, 2 m short of the place, score above min_peak) is no fix; 6 m off,
    # the place is found
    from skyloc_localization.retrieval import Candidate
    loc = Localizer(db, pipe)
    base, base_fp = loc.base_crop(image, intr, 100.0, math.radians(71.0), 0)
    centre = loc.variants().index((0.0, 1.0))
    far, near = (loc.verify([Candidate(-1, -10.0 + dx, 15.0, 0, 0.5, centre)], base, base_fp,
                            0, 1)[0] for dx in (14.0, 6.0))
    assert not far.fine.ok and 'edge' in far.fine.reason
    assert near.fine.ok and math.hypot(near.fine.x + 10.0, near.fine.y - 15.0) < 3.0
    with pytest.raises(ValueError, match='verify_factor'):
        Localizer(db, pipe, verify_factor=0.5)


def test_localizer_refuses_other_model(tiny):
    _, _, db, pipe = tiny

    class Other:
        model_id = 'e' * 64
    with pytest.raises(DatabaseError, match='e' * 64):
        Localizer(db, Other())
