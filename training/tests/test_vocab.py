"""VLAD vocabulary on map crops (skyloc_training.vocab): crops, dense features, k-means + PCA."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from skyloc_training import vocab  # noqa: E402

ARCH = 'vit_small_patch14_dinov2'
SIZE = 56  # 4 x 4 patches of 14 px


def tiny_map(folder, size_px=240, resolution=1.0, seed=0):
    """A textured north-up map (size_px square at ``resolution`` m/px) and its YAML; path."""
    import cv2

    from skyloc_sim.geo import write_map_yaml
    rng = np.random.default_rng(seed)
    low = rng.random((12, 12, 3)).astype(np.float32)
    img = cv2.resize(low, (size_px, size_px), interpolation=cv2.INTER_CUBIC) * 200
    img += rng.normal(0, 25, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / 'map.png'), img)
    return write_map_yaml(str(folder / 'map.yaml'), 'map.png', resolution, datum=(47.0, 8.0))


def test_map_crops_shape_and_errors(tmp_path):
    yaml_path = tiny_map(tmp_path)
    crops = vocab.map_crops(yaml_path, 5, footprints=(40, 60), input_size=SIZE, seed=1)
    assert len(crops) == 5
    assert all(c.shape == (SIZE, SIZE, 3) and c.dtype == np.uint8 for c in crops)
    # random positions: different crops, the same for the same seed
    assert np.abs(crops[0].astype(int) - crops[2].astype(int)).mean() > 5
    again = vocab.map_crops(yaml_path, 5, footprints=(40, 60), input_size=SIZE, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(crops, again))
    with pytest.raises(ValueError, match='map.yaml.*smaller than the footprint 500'):
        vocab.map_crops(yaml_path, 2, footprints=(500,), input_size=SIZE)
    with pytest.raises(ValueError, match='count >= 1'):
        vocab.map_crops(yaml_path, 0, input_size=SIZE)
    with pytest.raises(ValueError, match='absent.yaml'):
        vocab.map_crops(str(tmp_path / 'absent.yaml'), 2, input_size=SIZE)


def test_fit_vlad_finds_the_clusters_and_caps_pca():
    rng = np.random.default_rng(0)
    directions = np.eye(6, dtype=np.float32)[:3]  # three well separated unit directions
    features = []
    for _ in range(10):  # 10 "crops" of 30 features around the three directions
        labels = rng.integers(0, 3, 30)
        f = directions[labels] + rng.normal(0, 0.05, (30, 6)).astype(np.float32)
        features.append(f / np.linalg.norm(f, axis=1, keepdims=True))
    centres, pca, vectors = vocab.fit_vlad(features, k=3, pca_dim=64, seed=0)
    assert centres.shape == (3, 6)
    # every true direction has a centre within cosine 0.99
    assert (directions @ centres.T).max(axis=1).min() > 0.99
    assert vectors.shape == (10, 18)
    assert pca.dim == 9  # capped at crops - 1
    out = vocab.describe(features, centres, pca)
    assert out.shape == (10, 9)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, pca.transform(vectors), atol=1e-6)
    centres2, none, _ = vocab.fit_vlad(features, k=3, pca_dim=0, seed=0)
    assert none is None and np.array_equal(centres, centres2)  # deterministic
    with pytest.raises(ValueError, match='at least one crop'):
        vocab.fit_vlad([], k=3)


def test_dense_features_of_a_truncated_vit(tmp_path):
    from skyloc_perception.vit_torch import build_vit, TorchVitBackbone, TruncatedVit
    yaml_path = tiny_map(tmp_path)
    crops = vocab.map_crops(yaml_path, 3, footprints=(50,), input_size=SIZE)
    trunc = TruncatedVit(build_vit(ARCH, SIZE, seed=0, depth=2), 1, 'value')
    feats = vocab.dense_features(TorchVitBackbone(trunc), crops, progress=False)
    assert [f.shape for f in feats] == [(16, 384)] * 3
    np.testing.assert_allclose(np.linalg.norm(feats[0], axis=1), 1.0, atol=1e-5)
