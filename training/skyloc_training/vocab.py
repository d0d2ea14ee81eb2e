"""VLAD vocabulary and PCA-whitening fitted on a map's dense ViT features (the domain vocabulary).

    crops = map_crops('map.yaml', count=300, footprints=(80, 110, 140), input_size=224)
    features = dense_features(backbone, crops)        # [N, D] per crop, rows L2-normalised
    centres, pca = fit_vlad(features, k=32, pca_dim=256)

The crops are north-up squares of the map at random positions and the database's footprints
(``skyloc_perception.build_bundle.sample_tiles``); the backbone is any object with
``features(rgb) -> [N, D]`` (``skyloc_perception.vit_onnx.OnnxVitBackbone`` of the exported
model, ``vit_torch.TorchVitBackbone`` of a ``TruncatedVit``); the vocabulary is spherical
(cosine) k-means (``skyloc_perception.vlad.fit_vocabulary``), the VLAD vectors of the crops
are intra/power/L2-normalised (``vlad.Vlad``) and PCA-whitened (``vlad.Pca``), as the
database builder and the embedder compute them.
"""

import logging

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_FOOTPRINTS = (80.0, 110.0, 140.0)  # metres: the nominal altitudes of the default bands


def load_map(map_yaml):
    """(orthophoto RGB uint8 H x W x 3, MapGrid) of a map YAML; MapError naming the file."""
    from skyloc_sim.world import load_world
    world = load_world(map_yaml)
    return world.map_image, world.grid


def map_crops(map_yaml, count, footprints=DEFAULT_FOOTPRINTS, input_size=224, seed=0):
    """``count`` north-up crops (input_size x input_size x 3 uint8) of the map at random
    positions, cycling through ``footprints`` (metres of ground per crop side).

    Raises:
        ValueError: count < 1, a footprint larger than the map, a bad map YAML or image.
    """
    from skyloc_perception.build_bundle import sample_tiles
    count = int(count)
    if count < 1:
        raise ValueError(f'map_crops needs count >= 1, got {count}')
    footprints = [float(f) for f in footprints]
    if not footprints or min(footprints) <= 0:
        raise ValueError(f'footprints must be positive metres, got {footprints}')
    orthophoto, grid = load_map(map_yaml)
    try:
        return sample_tiles(orthophoto, grid, footprints, count, int(input_size), seed)
    except ValueError as exc:
        raise ValueError(f'{map_yaml}: {exc}') from exc


def dense_features(backbone, crops, progress=True, desc='dense features'):
    """Per-patch features of every crop: list of [N, D] float32 arrays, rows L2-normalised."""
    from tqdm import tqdm
    bar = tqdm(crops, desc=desc, unit='crop', disable=not progress)
    return [backbone.features(c) for c in bar]


def fit_vlad(features, k=32, pca_dim=256, seed=0, whiten=True):
    """Vocabulary and PCA-whitening from per-crop feature sets.

    Args:
        features: list of [N_i, D] per-patch features (one array per crop).
        k: VLAD centres (spherical k-means).
        pca_dim: output dimension of the PCA; 0 or None: no PCA. Capped at
            min(crops - 1, k * D) (PCA cannot have more components than the data's rank).
        seed: k-means seed (deterministic for a given seed and input).

    Returns:
        (centres [k, D] float32 unit rows, Pca or None, VLAD vectors [crops, k * D] float32).
    """
    from skyloc_perception.vlad import fit_vocabulary, Pca, Vlad
    if not features:
        raise ValueError('fit_vlad needs the features of at least one crop')
    stacked = np.concatenate([np.asarray(f, np.float32) for f in features])
    log.info('fitting %d VLAD centres on %d features of dim %d from %d crops', k,
             len(stacked), stacked.shape[1], len(features))
    centres = fit_vocabulary(stacked, k=int(k), seed=int(seed))
    vlad = Vlad(centres)
    vectors = np.stack([vlad.encode(f) for f in features])
    pca = None
    if pca_dim:
        dim = min(int(pca_dim), len(vectors) - 1, vectors.shape[1])
        if dim < 1:
            raise ValueError(f'PCA needs at least 2 crops, got {len(vectors)}')
        if dim < int(pca_dim):
            log.warning('PCA dimension capped at %d (requested %d, %d crops)', dim, pca_dim,
                        len(vectors))
        pca = Pca().fit(vectors, dim, whiten=whiten)
    return centres, pca, vectors


def describe(features, centres, pca=None):
    """The descriptors the embedder computes from per-crop features: [crops, dim] float32."""
    from skyloc_perception.vlad import Vlad
    vlad = Vlad(centres)
    vectors = np.stack([vlad.encode(f) for f in features])
    return pca.transform(vectors) if pca is not None else vectors
