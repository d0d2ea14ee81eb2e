"""Weights-free backbone: dense upright RootSIFT on a regular grid (OpenCV only).

The normalised query crop and the map tiles are north-up and at the same scale, so neither
keypoint detection nor orientation/scale invariance is needed: descriptors are computed at
fixed grid positions with angle 0 (upright) and one size, which keeps them comparable between
the query and the map and makes extraction deterministic and cheap (~2-3 ms for 224 px on
one core).  RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root; the Hellinger
kernel makes Euclidean/cosine comparisons of histograms far more robust than raw SIFT.
"""

import cv2
import numpy as np

# OpenCV's SIFT descriptor spans 4 x 4 bins of 3 * (KeyPoint.size / 2) pixels each, i.e.
# 6 * size; this turns the wanted patch side into a KeyPoint size.
_SIFT_SPAN_PER_SIZE = 6.0


class RootSiftBackbone:
    """Dense RootSIFT features of an RGB crop: ``features(rgb) -> [N, 128]`` float32.

    ``input_size``: the crop is resized to ``input_size`` x ``input_size`` px first (a no-op
    for crops made at that size).  ``step_px``: grid spacing (px of the resized crop);
    ``patch_px``: side (px) of the square each descriptor describes (4 x 4 cells of
    ``patch_px / 4``).  The grid is centred in the crop with every patch inside it.
    """

    name = 'rootsift'
    dim = 128

    # Defaults chosen by the retrieval benchmark (bench/bench_retrieval.py, 1764 tiles, 80
    # summer queries, yaw +-3 deg, altitude +-7%): Recall@1 0.09 at (8, 16), 0.54 at (16, 48),
    # 0.69 at (16, 80), 0.66 at (24, 96), 0.56 at (32, 128): large patches tolerate the
    # heading error and the seasonal change; fine ones only describe texture that changed.
    def __init__(self, step_px=16, patch_px=80, input_size=224):
        self.config = {'step_px': int(step_px), 'patch_px': float(patch_px)}
        self.step_px = int(step_px)
        self.patch_px = float(patch_px)
        self.input_size = int(input_size)
        if self.step_px < 1:
            raise ValueError(f'step_px must be >= 1, got {step_px}')
        if not 4.0 <= self.patch_px <= self.input_size:
            raise ValueError(f'patch_px must be in [4, input_size={self.input_size}], '
                             f'got {patch_px}')
        n = int((self.input_size - self.patch_px) // self.step_px) + 1
        start = (self.input_size - (n - 1) * self.step_px) // 2
        coords = start + self.step_px * np.arange(n)
        cols, rows = np.meshgrid(coords, coords)
        # (col, row) pixel indices of the descriptor centres, row-major
        self._points = np.column_stack((cols.ravel(), rows.ravel())).astype(np.float32)
        size = self.patch_px / _SIFT_SPAN_PER_SIZE
        self._keypoints = tuple(cv2.KeyPoint(float(c), float(r), size, 0.0)
                                for c, r in self._points)
        self._sift = cv2.SIFT_create()

    @property
    def grid_shape(self):
        """(rows, cols) of the descriptor grid."""
        n = int(round(np.sqrt(len(self._points))))
        return n, n

    def grid_points(self):
        """[N, 2] (col, row) pixel indices in the resized crop of the descriptor centres."""
        return self._points.copy()

    def _grey(self, rgb):
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f'RootSiftBackbone needs an H x W x 3 uint8 RGB image, got '
                             f'{rgb.dtype} {rgb.shape}')
        h, w = rgb.shape[:2]
        if (h, w) != (self.input_size, self.input_size):
            interp = cv2.INTER_AREA if min(h, w) > self.input_size else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (self.input_size, self.input_size), interpolation=interp)
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)

    def features(self, rgb):
        """[N, 128] float32 RootSIFT rows (unit L2 norm; all-zero for textureless patches)."""
        _, desc = self._sift.compute(self._grey(rgb), self._keypoints)
        if desc is None or len(desc) != len(self._keypoints):
            # OpenCV never drops provided keypoints today; a silent change would misalign
            # descriptors and grid points, so refuse it
            raise RuntimeError(f'SIFT returned {0 if desc is None else len(desc)} descriptors '
                               f'for {len(self._keypoints)} grid points')
        desc = desc.astype(np.float32)
        l1 = desc.sum(axis=1, keepdims=True)   # SIFT bins are non-negative
        root = np.sqrt(desc / np.maximum(l1, 1e-12))
        # sum of squares of sqrt(L1-normalised) is 1 already; this only fixes rounding
        norms = np.linalg.norm(root, axis=1, keepdims=True)
        return np.where(norms > 1e-12, root / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
