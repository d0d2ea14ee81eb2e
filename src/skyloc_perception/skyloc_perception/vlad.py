"""VLAD aggregation of local features, its vocabulary (spherical k-means) and PCA-whitening.

Local features (ViT patch tokens, dense RootSIFT) are compared by cosine, so everything here
works on L2-normalised rows: the vocabulary is fitted with spherical k-means and features are
assigned to centres by cosine similarity (AnyLoc-style VLAD).  The VLAD vector is
intra-normalised (per centre), power-normalised (signed sqrt) and L2-normalised; PCA with
whitening then shrinks it to a few hundred dimensions (DESIGN.md: a 12288-dim float32 VLAD is
48 KiB per tile).

Only :func:`fit_vocabulary` and :meth:`Pca.fit` (offline, database build) use scipy; encoding
and :meth:`Pca.transform` (on the Pi) need numpy only.  Computations are float32 (numpy has no
fast float16 matrix product); store float16 with ``.astype(np.float16)`` if memory demands.
"""

import io
import os

import numpy as np

_EPS = 1e-12


def _as_features(name, x, dim=None):
    """2-D float32 array, optionally checking the feature dimension."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f'{name} must be a 2-D [N, D] array, got shape {x.shape}')
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f'{name} have dimension {x.shape[1]} but the vocabulary centres have '
                         f'dimension {dim}')
    return x


def l2_normalize_rows(x, eps=_EPS):
    """Rows scaled to unit L2 norm (float32); rows with norm <= eps stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norms > eps, x / np.maximum(norms, eps), 0.0).astype(np.float32)


def _farthest(sims, labels, count):
    """Indices of the ``count`` points least similar to their own centre."""
    own = sims[np.arange(len(sims)), labels]
    return np.argsort(own, kind='stable')[:count]


def _kmeans_pp(x, k, rng):
    """k-means++ seeding with the cosine distance 1 - <x, c> on unit rows."""
    n = len(x)
    centres = np.empty((k, x.shape[1]), np.float32)
    first = int(rng.integers(n))
    centres[0] = x[first]
    # d(x) = 1 - max cos to any chosen centre; D^2 weighting as in Arthur & Vassilvitskii
    dist = np.maximum(1.0 - x @ centres[0], 0.0).astype(np.float64)
    chosen = {first}
    for j in range(1, k):
        weights = dist ** 2
        total = weights.sum()
        if total <= 0.0:
            # fewer distinct directions than k: take any unused points (empty-cluster logic
            # will keep them from collapsing)
            idx = next(i for i in range(n) if i not in chosen)
        else:
            idx = int(np.searchsorted(np.cumsum(weights), rng.random() * total, side='right'))
            idx = min(idx, n - 1)
        chosen.add(idx)
        centres[j] = x[idx]
        dist = np.minimum(dist, np.maximum(1.0 - x @ centres[j], 0.0))
    return centres


def fit_vocabulary(features, k=32, iterations=25, seed=0, max_samples=200000):
    """Spherical (cosine) k-means: [N, D] features -> [k, D] float32 unit-norm centres.

    Rows are L2-normalised (zero rows dropped); at most ``max_samples`` rows, drawn without
    replacement with ``seed``, are used.  k-means++ seeding, ``iterations`` Lloyd steps (fewer
    if the assignment stops changing); a centre that loses all its points is re-seeded with
    the point farthest from its own centre.  Deterministic for a given seed and input.
    """
    import scipy.sparse

    x = _as_features('features', features)
    k = int(k)
    if k < 1:
        raise ValueError(f'k must be >= 1, got {k}')
    rng = np.random.default_rng(seed)
    if len(x) > max_samples:
        x = x[np.sort(rng.choice(len(x), int(max_samples), replace=False))]
    x = l2_normalize_rows(x)
    x = x[np.any(x != 0.0, axis=1)]
    if len(x) < k:
        raise ValueError(f'fit_vocabulary needs at least k={k} non-zero features, got {len(x)}')
    n = len(x)
    centres = _kmeans_pp(x, k, rng)
    labels = None
    rows = np.arange(n)
    for _ in range(max(1, int(iterations))):
        sims = x @ centres.T
        new_labels = np.argmax(sims, axis=1)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        # cluster sums in O(N D) with a sparse one-hot (a dense one costs a k-fold matmul)
        onehot = scipy.sparse.csr_matrix((np.ones(n, np.float32), (labels, rows)), shape=(k, n))
        sums = np.asarray(onehot @ x, dtype=np.float32)
        counts = np.bincount(labels, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            far = _farthest(sims, labels, len(empty))
            sums[empty] = x[far]
            labels[far] = empty
        # spherical k-means: the centre is the normalised mean direction
        centres = l2_normalize_rows(sums)
    return centres.astype(np.float32)


class Vlad:
    """VLAD encoder over a fixed vocabulary of ``K`` centres of dimension ``D``.

    ``assignment``: ``'hard'`` (nearest centre by cosine) or ``'soft'`` (weights
    softmax(cos / ``soft_temperature``) over centres).  Output: a ``K * D`` float32 vector,
    centre-major (block k = residual sum of centre k), intra-, power- and L2-normalised.
    """

    def __init__(self, centers, assignment='hard', soft_temperature=0.1):
        centers = _as_features('centers', centers)
        if len(centers) == 0:
            raise ValueError('Vlad needs at least one centre')
        if assignment not in ('hard', 'soft'):
            raise ValueError(f"assignment must be 'hard' or 'soft', got {assignment!r}")
        if not soft_temperature > 0.0:
            raise ValueError(f'soft_temperature must be positive, got {soft_temperature}')
        self.centers = l2_normalize_rows(centers)
        self.assignment = assignment
        self.soft_temperature = float(soft_temperature)

    @property
    def k(self):
        return self.centers.shape[0]

    @property
    def feature_dim(self):
        return self.centers.shape[1]

    @property
    def dim(self):
        """Length of the VLAD vector, K * D."""
        return self.centers.size

    def weights(self, features):
        """[N, K] assignment weights of already L2-normalised features (rows sum to 1)."""
        sims = features @ self.centers.T
        if self.assignment == 'hard':
            w = np.zeros_like(sims)
            w[np.arange(len(sims)), np.argmax(sims, axis=1)] = 1.0
            return w
        z = sims / self.soft_temperature
        z -= z.max(axis=1, keepdims=True)
        w = np.exp(z)
        return w / w.sum(axis=1, keepdims=True)

    def encode(self, features):
        """[N, D] local features -> [K * D] float32 VLAD vector (unit L2 norm, or all zeros).

        Features are L2-normalised first; zero rows (e.g. textureless or black border
        patches) carry no direction and are ignored.  No usable feature -> zero vector.
        """
        f = l2_normalize_rows(_as_features('features', features, self.feature_dim))
        f = f[np.any(f != 0.0, axis=1)]
        if len(f) == 0:
            return np.zeros(self.dim, np.float32)
        w = self.weights(f)
        # sum_i w_ik (f_i - c_k) = (W^T F)_k - (sum_i w_ik) c_k
        v = w.T @ f - w.sum(axis=0)[:, None] * self.centers
        v = l2_normalize_rows(v)           # intra-normalisation; empty blocks stay zero
        v = np.sign(v) * np.sqrt(np.abs(v))  # power normalisation
        v = v.reshape(-1)
        norm = float(np.linalg.norm(v))
        return (v / norm if norm > _EPS else v).astype(np.float32)

    def encode_batch(self, feature_sets):
        """A list of [N_i, D] arrays -> [B, K * D] float32 VLAD vectors."""
        out = np.zeros((len(feature_sets), self.dim), np.float32)
        for i, f in enumerate(feature_sets):
            out[i] = self.encode(f)
        return out


_HALF_TABLE = []


def _half_table():
    """float32 value of every float16 bit pattern (256 KiB): a table look-up converts
    float16 to float32 2.6x faster than numpy's astype here (bench machine, numpy 2.4)."""
    if not _HALF_TABLE:
        _HALF_TABLE.append(np.arange(1 << 16, dtype=np.uint16).view(np.float16)
                           .astype(np.float32))
    return _HALF_TABLE[0]


class Pca:
    """PCA projection (optionally whitened) of descriptors, rows L2-normalised after.

    ``mean`` [dim_in], ``components`` [dim, dim_in] (orthonormal rows, by decreasing
    variance), ``whitening`` [dim] (per-component scale 1 / sqrt(variance + eps), or None).
    Build with ``Pca().fit(X, dim)`` or ``Pca.load(path)``.
    """

    def __init__(self, mean=None, components=None, whitening=None):
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1)
        # float16 components (a bundle saved with ``dtype='float16'``) stay float16: half the
        # memory of the largest array of a bundle; ``transform`` computes in float32
        if components is not None:
            components = np.asarray(components)
            if components.dtype != np.float16:
                components = components.astype(np.float32, copy=False)
        self.components = components
        self.whitening = None if whitening is None else \
            np.asarray(whitening, np.float32).reshape(-1)
        self.variance = None
        if self.components is not None:
            self._check()

    def _check(self):
        if self.mean is None or self.components is None:
            raise ValueError('Pca needs both mean and components')
        if self.components.ndim != 2 or self.components.shape[1] != self.mean.size:
            raise ValueError(f'Pca components {self.components.shape} do not match mean '
                             f'({self.mean.size})')
        if self.whitening is not None and self.whitening.size != self.components.shape[0]:
            raise ValueError(f'Pca whitening has {self.whitening.size} values for '
                             f'{self.components.shape[0]} components')
        # transform reads ``components`` through a transposed view: no second dim x dim_in
        # copy (256 x 12288 float32 = 12 MB, the largest array of a bundle); the mean is
        # folded into one offset vector
        self._offset = self._project(self.mean[None, :])[0]

    _CHUNK_ROWS = 8  # float16 components converted 8 rows (8 x 12288 x 4 = 384 KiB) at a time

    def _project(self, x2):
        """[N, dim_in] float32 -> [N, dim] float32: x2 @ components.T, in float32.

        Written components @ x2.T: for one descriptor that is a matrix-vector product on the
        C-ordered components (0.8 ms for 256 x 12288, where x @ components.T took 4.8 ms)."""
        if self.components.dtype == np.float32:
            return (self.components @ x2.T).T
        out = np.empty((len(self.components), len(x2)), np.float32)
        buf = np.empty((self._CHUNK_ROWS, self.components.shape[1]), np.float32)
        bits = self.components.view(np.uint16)
        for r0 in range(0, len(self.components), self._CHUNK_ROWS):
            n = len(bits[r0:r0 + self._CHUNK_ROWS])
            np.take(_half_table(), bits[r0:r0 + n], out=buf[:n])
            out[r0:r0 + n] = buf[:n] @ x2.T
        return out.T

    @property
    def dim_in(self):
        return None if self.mean is None else self.mean.size

    @property
    def dim(self):
        return None if self.components is None else self.components.shape[0]

    def fit(self, x, dim, whiten=True, eps=1e-9):
        """Fit on training rows ``x`` [M, dim_in]; keep ``dim`` <= min(M, dim_in) components.

        Variances are of the centred training data (ddof=0), so with ``whiten`` the projected
        training data has variance var / (var + eps) ~ 1 per component.  ``eps`` (absolute;
        VLAD rows are unit vectors, their variances are ~1e-5..1e-2) guards null directions.
        Uses the M x M Gram matrix when M < dim_in (components beyond the rank of the data
        are then zero rows), else the dim_in x dim_in covariance (both exact; only the top
        ``dim`` eigenpairs are computed).  Returns self.
        """
        import scipy.linalg

        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f'Pca.fit needs a 2-D [M, dim_in] array, got shape {x.shape}')
        m, dim_in = x.shape
        dim = int(dim)
        if not 1 <= dim <= min(m, dim_in):
            raise ValueError(f'Pca dim must be in [1, min(M={m}, dim_in={dim_in})], got {dim}')
        mean = x.mean(axis=0)
        xc = x - mean
        if m < dim_in:
            gram = xc @ xc.T
            evals, evecs = scipy.linalg.eigh(gram, subset_by_index=[m - dim, m - 1])
            evals, evecs = evals[::-1], evecs[:, ::-1]
            # v = Xc^T u / sqrt(lambda); directions of (numerically) zero variance are not
            # determined by the data: they become zero rows, which project everything to 0
            comps = (xc.T @ evecs).T
            null = evals <= 1e-10 * max(evals.max(), 1e-300)
            comps /= np.sqrt(np.where(null, 1.0, evals))[:, None]
            comps[null] = 0.0
        else:
            cov = xc.T @ xc
            evals, evecs = scipy.linalg.eigh(cov, subset_by_index=[dim_in - dim, dim_in - 1])
            evals, comps = evals[::-1], evecs[:, ::-1].T
        variance = np.maximum(evals, 0.0) / m
        # deterministic sign (eigen solvers may flip it): largest |entry| positive
        big = comps[np.arange(dim), np.argmax(np.abs(comps), axis=1)]
        comps = comps * np.where(big < 0.0, -1.0, 1.0)[:, None]
        self.mean = mean.astype(np.float32)
        self.components = comps.astype(np.float32)
        self.whitening = (1.0 / np.sqrt(variance + eps)).astype(np.float32) if whiten else None
        self._check()
        self.variance = variance.astype(np.float32)
        return self

    def transform(self, x, normalize=True):
        """[N, dim_in] or [dim_in] -> [N, dim] or [dim] float32, rows L2-normalised.

        ``normalize=False`` returns the raw (whitened) projection.
        """
        if self.components is None:
            raise ValueError('Pca is not fitted')
        x = np.asarray(x, dtype=np.float32)
        single = x.ndim == 1
        x2 = x.reshape(1, -1) if single else x
        if x2.ndim != 2 or x2.shape[1] != self.dim_in:
            raise ValueError(f'Pca input has dimension {x2.shape[-1]}, expected {self.dim_in}')
        y = self._project(x2) - self._offset
        if self.whitening is not None:
            y *= self.whitening
        if normalize:
            y = l2_normalize_rows(y)
        return y[0] if single else y

    def save(self, path, dtype=None):
        """Write an .npz with mean, components and (if whitened) whitening, float32.

        ``dtype='float16'`` stores the components in float16 (half the size on disk and in
        memory once loaded; descriptors change by ~1e-4 relative, cosine ~1 - 1e-7).
        Default: the components' own dtype.
        """
        if self.components is None:
            raise ValueError('Pca is not fitted')
        components = self.components if dtype is None else \
            np.asarray(self.components, np.dtype(dtype))
        if components.dtype not in (np.float16, np.float32):
            raise ValueError(f'Pca components can be stored as float16 or float32, not '
                             f'{components.dtype}')
        arrays = {'mean': self.mean, 'components': components}
        if self.whitening is not None:
            arrays['whitening'] = self.whitening
        # through a buffer so the file is exactly ``path`` (np.savez would append .npz)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        tmp = f'{path}.tmp'
        with open(tmp, 'wb') as stream:
            stream.write(buf.getvalue())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save` (ValueError naming the file if malformed)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f'{path}: cannot read PCA file: {exc}') from exc
        if 'mean' not in arrays or 'components' not in arrays:
            raise ValueError(f'{path}: PCA file needs arrays mean and components, has '
                             f'{sorted(arrays)}')
        try:
            return cls(arrays['mean'], arrays['components'], arrays.get('whitening'))
        except ValueError as exc:
            raise ValueError(f'{path}: {exc}') from exc


def similarities(database, query, chunk_rows=1024):
    """Dot products of one descriptor with every row of a database: [M, D] @ [D] -> [M] float32.

    ``database`` float32 or float16 (e.g. ``np.load(path, mmap_mode='r')``); ``query`` [D].
    For unit rows these are cosine similarities. A float16 database (half the memory and the
    mapped pages of float32) is converted to float32 ``chunk_rows`` rows at a time, since
    numpy has no fast float16 matrix product: the extra memory is one float32 chunk (and a
    256 KiB conversion table, ~3x faster than astype here).
    """
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if database.ndim != 2 or database.shape[1] != query.size:
        raise ValueError(f'database rows have dimension {database.shape[-1]}, the query '
                         f'{query.size}')
    if database.dtype == np.float32:
        return np.asarray(database @ query, dtype=np.float32)
    if database.dtype != np.float16:
        return np.asarray(np.asarray(database, np.float32) @ query, dtype=np.float32)
    out = np.empty(len(database), np.float32)
    step = max(1, int(chunk_rows))
    buf = np.empty((min(step, len(database)), database.shape[1]), np.float32)
    bits = database.view(np.uint16)
    for start in range(0, len(database), step):
        n = len(bits[start:start + step])
        np.take(_half_table(), bits[start:start + n], out=buf[:n])  # float16 -> float32
        np.matmul(buf[:n], query, out=out[start:start + n])
    return out
