"""VLAD, its vocabulary and PCA-whitening (skyloc_perception.vlad)."""

import math

import numpy as np
import pytest

from skyloc_perception.vlad import fit_vocabulary, Pca, similarities, Vlad


def _unit(deg):
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


CENTRES = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
FEATURES = np.array([_unit(20), _unit(40), _unit(80)], np.float32)


def _finish(blocks):
    """Intra-normalise each block, signed sqrt, global L2: written out element by element."""
    out = []
    for b in blocks:
        n = math.sqrt(sum(v * v for v in b))
        out += [0.0 if n == 0 else v / n for v in b]
    out = [math.copysign(math.sqrt(abs(v)), v) for v in out]
    n = math.sqrt(sum(v * v for v in out))
    return np.array([v / n for v in out])


def test_hard_vlad_by_hand():
    # 20 and 40 deg are nearer to centre 0 (east), 80 deg to centre 1 (north)
    f0, f1, f2 = FEATURES.astype(float)
    block0 = (f0 - [1, 0]) + (f1 - [1, 0])
    block1 = f2 - [0, 1]
    expected = _finish([block0, block1])
    vlad = Vlad(CENTRES)
    assert vlad.dim == 4
    out = vlad.encode(FEATURES)
    assert out.dtype == np.float32 and out.shape == (4,)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-6)
    # features are L2-normalised first, zero rows ignored, centres too
    scaled = np.vstack([FEATURES * [[3.0], [0.5], [7.0]], np.zeros((2, 2))])
    np.testing.assert_allclose(Vlad(CENTRES * 4.0).encode(scaled), expected, atol=1e-6)


def test_empty_block_stays_zero():
    out = Vlad(CENTRES).encode(FEATURES[:2])
    np.testing.assert_array_equal(out[2:], 0.0)
    # one residual block, after the signed sqrt of its unit vector and a global L2
    block = (FEATURES[0] - [1, 0]) + (FEATURES[1] - [1, 0])
    np.testing.assert_allclose(out[:2], _finish([block, [0.0, 0.0]])[:2], atol=1e-6)
    assert not Vlad(CENTRES).encode(np.zeros((3, 2))).any()
    assert not Vlad(CENTRES).encode(np.zeros((0, 2))).any()


def test_soft_vlad_by_hand_and_its_hard_limit():
    t = 0.5
    blocks = [np.zeros(2), np.zeros(2)]
    for f in FEATURES.astype(float):
        sims = [f @ c for c in CENTRES.astype(float)]
        e = [math.exp(s / t) for s in sims]
        for k in range(2):
            blocks[k] += e[k] / sum(e) * (f - CENTRES[k])
    soft = Vlad(CENTRES, 'soft', soft_temperature=t).encode(FEATURES)
    np.testing.assert_allclose(soft, _finish(blocks), atol=1e-6)
    assert np.abs(soft - Vlad(CENTRES).encode(FEATURES)).max() > 0.05
    # T -> 0: softmax -> argmax
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, 16)).astype(np.float32)
    feats = rng.standard_normal((300, 16)).astype(np.float32)
    np.testing.assert_allclose(Vlad(centres, 'soft', soft_temperature=1e-5).encode(feats),
                               Vlad(centres, 'hard').encode(feats), atol=1e-6)


def test_encode_batch_and_errors():
    rng = np.random.default_rng(4)
    vlad = Vlad(rng.standard_normal((4, 8)))
    sets = [rng.standard_normal((n, 8)) for n in (5, 50, 1)]
    batch = vlad.encode_batch(sets)
    assert batch.shape == (3, 32) and batch.dtype == np.float32
    for row, f in zip(batch, sets):
        np.testing.assert_array_equal(row, vlad.encode(f))
    with pytest.raises(ValueError, match='dimension 6 but the vocabulary centres have '
                                         'dimension 8'):
        vlad.encode(np.ones((3, 6)))
    with pytest.raises(ValueError, match="'hard' or 'soft'"):
        Vlad(CENTRES, 'fuzzy')
    with pytest.raises(ValueError, match='soft_temperature'):
        Vlad(CENTRES, 'soft', soft_temperature=0.0)


def _clusters(seed, k=4, d=16, per=500, noise=0.05):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((k, d))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), per)
    pts = truth[labels] + noise * rng.standard_normal((k * per, d))
    pts *= rng.uniform(0.5, 3.0, (k * per, 1))   # norms do not matter to spherical k-means
    return truth, pts[rng.permutation(len(pts))].astype(np.float32)


def test_fit_vocabulary_recovers_clusters():
    truth, pts = _clusters(5)
    centres = fit_vocabulary(pts, k=4, seed=1)
    assert centres.shape == (4, 16) and centres.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    cos = centres @ truth.T
    # one-to-one: every true centre is matched by a distinct fitted one
    assert sorted(np.argmax(cos, axis=1)) == [0, 1, 2, 3]
    assert cos.max(axis=1).min() > 0.99
    np.testing.assert_array_equal(centres, fit_vocabulary(pts, k=4, seed=1))
    # subsampling keeps the result
    sub = fit_vocabulary(pts, k=4, seed=2, max_samples=400)
    assert (sub @ truth.T).max(axis=1).min() > 0.98


def test_fit_vocabulary_survives_empty_clusters():
    # 3 distinct directions, k = 6: k-means++ runs out of distinct points, clusters empty out
    base = np.eye(5, dtype=np.float32)[:3]
    pts = np.repeat(base, 50, axis=0)
    centres = fit_vocabulary(pts, k=6, seed=0)
    assert centres.shape == (6, 5) and np.isfinite(centres).all()
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    assert (centres @ base.T).max(axis=0).min() > 0.999   # every direction has a centre
    with pytest.raises(ValueError, match='at least k=6 non-zero features'):
        fit_vocabulary(np.ones((5, 5)), k=6)


@pytest.mark.parametrize('m', [40, 300])   # Gram path (M < dim_in) and covariance path
def test_pca_recovers_known_rank(m):
    rng = np.random.default_rng(m)
    d, r = 60, 3
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].T      # r orthonormal rows
    scales = np.array([5.0, 2.0, 0.5])
    x = (rng.standard_normal((m, r)) * scales) @ basis + rng.standard_normal(d)
    pca = Pca().fit(x, 5, whiten=False)
    assert (pca.dim_in, pca.dim) == (d, 5)
    # the first three components span the data's subspace, the rest carry no variance
    np.testing.assert_allclose(np.linalg.norm(pca.components[:3] @ basis.T, axis=1), 1.0,
                               atol=1e-4)
    assert pca.variance[3:].max() < 1e-8 * pca.variance[0]
    assert list(np.argsort(-pca.variance[:3])) == [0, 1, 2]
    np.testing.assert_allclose(pca.components[:3] @ pca.components[:3].T, np.eye(3), atol=1e-5)
    # beyond the rank: zero rows (Gram path) or directions orthogonal to the data (covariance)
    assert np.abs(pca.components[3:] @ basis.T).max() < 1e-4
    # projection then back-projection reproduces the data (rank 3)
    proj = pca.transform(x, normalize=False)
    back = proj @ pca.components + pca.mean
    np.testing.assert_allclose(back, x, atol=1e-3)


def test_pca_whitening_and_normalisation():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((120, 200)) * np.linspace(3.0, 0.1, 200)
    pca = Pca().fit(x, 20)
    y = pca.transform(x, normalize=False)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(20), atol=1e-3)
    z = pca.transform(x)
    assert z.shape == (120, 20) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    single = pca.transform(x[7])
    assert single.shape == (20,)
    np.testing.assert_allclose(single, z[7], atol=1e-6)
    with pytest.raises(ValueError, match='dimension 199, expected 200'):
        pca.transform(x[:, :199])
    with pytest.raises(ValueError, match=r'min\(M=120, dim_in=200\)'):
        Pca().fit(x, 121)


@pytest.mark.parametrize('whiten', [True, False])
def test_pca_save_load_round_trip(tmp_path, whiten):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 96)).astype(np.float32)
    pca = Pca().fit(x, 16, whiten=whiten)
    path = str(tmp_path / 'pca.npz')
    assert pca.save(path) == path
    with np.load(path) as data:
        assert sorted(data.files) == sorted(['mean', 'components']
                                            + (['whitening'] if whiten else []))
        assert data['components'].shape == (16, 96)
    loaded = Pca.load(path)
    np.testing.assert_array_equal(loaded.mean, pca.mean)
    np.testing.assert_array_equal(loaded.components, pca.components)
    if whiten:
        np.testing.assert_array_equal(loaded.whitening, pca.whitening)
    else:
        assert loaded.whitening is None
    np.testing.assert_array_equal(loaded.transform(x), pca.transform(x))
    (tmp_path / 'bad.npz').write_bytes(b'not a zip')
    with pytest.raises(ValueError, match='bad.npz: cannot read PCA file'):
        Pca.load(str(tmp_path / 'bad.npz'))
    np.savez(tmp_path / 'partial.npz', mean=np.zeros(3))
    with pytest.raises(ValueError, match='needs arrays mean and components'):
        Pca.load(str(tmp_path / 'partial.npz'))


def test_vlad_pca_float16_storage():
    """The storage path: VLAD -> PCA -> float16 keeps cosine similarities."""
    rng = np.random.default_rng(11)
    vlad = Vlad(rng.standard_normal((8, 32)))
    vecs = vlad.encode_batch([rng.standard_normal((64, 32)) for _ in range(80)])
    pca = Pca().fit(vecs, 40)
    reduced = pca.transform(vecs)
    half = reduced.astype(np.float16)
    sims = reduced @ reduced.T
    np.testing.assert_allclose(half.astype(np.float32) @ half.astype(np.float32).T, sims,
                               atol=2e-3)


def test_pca_float16_components(tmp_path):
    """Components stored as float16 stay float16 in memory; transform computes in float32
    and matches the float32 PCA of the same (rounded) matrix."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 300)).astype(np.float32)
    pca = Pca().fit(x, 20)
    path = str(tmp_path / 'pca16.npz')
    pca.save(path, dtype='float16')
    with np.load(path) as data:
        assert data['components'].dtype == np.float16 and data['mean'].dtype == np.float32
    half = Pca.load(path)
    assert half.components.dtype == np.float16 and half.dim == 20 and half.dim_in == 300
    same = Pca(half.mean, half.components.astype(np.float32), half.whitening)
    np.testing.assert_allclose(half.transform(x), same.transform(x), atol=1e-6)
    np.testing.assert_allclose(half.transform(x[3]), same.transform(x)[3], atol=1e-6)
    assert np.sum(half.transform(x) * pca.transform(x), axis=1).min() > 0.9999
    with pytest.raises(ValueError, match='float16 or float32'):
        pca.save(path, dtype='int8')


def test_similarities_float16_database():
    rng = np.random.default_rng(6)
    db = rng.standard_normal((2500, 24)).astype(np.float32)
    q = rng.standard_normal(24).astype(np.float32)
    np.testing.assert_allclose(similarities(db, q), db @ q, rtol=1e-6)
    half = db.astype(np.float16)
    got = similarities(half, q, chunk_rows=700)
    assert got.dtype == np.float32 and got.shape == (2500,)
    np.testing.assert_allclose(got, half.astype(np.float32) @ q, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='dimension'):
        similarities(db, q[:5])
