"""Source-specific augmentations of drone images (numpy + OpenCV, no albumentations).

* :class:`LowAltitudeSimulation` (the seed plan's on-the-fly altitude simulation): UAV-VisLoc
  and VPAIR are flown at about 400 m, the target is 70-150 m, so a random centre crop of
  0.15-0.30 of each side (altitude ratio 70/400 = 0.175 .. 150/400 = 0.375, a little more
  aggressive) whose centre is jittered by up to +-10 % of the side (GPS error), resized back.
* :class:`RandomCenterCropZoom`: a mild zoom (centre crop of 0.8-1.0 of each side) for
  synthetic sources (GTA-UAV, the procedural world, maps rendered by
  ``skyloc_training.pairs``), which are already at the target altitude.
* :func:`for_source`: the transform of one dataset source, HxWx3 uint8 RGB -> 3 x S x S
  float32 (ImageNet mean/std), what the model takes.

Every random draw comes from a ``numpy.random.Generator`` (``rng``), so a seed reproduces
the crops.  Data loader workers must not share one Generator (each worker would draw the
same crops): pass ``rng`` per call, e.g. ``np.random.default_rng((seed, epoch, index))``.
"""

import math

import cv2
import numpy as np

from skyloc_training.data import HIGH_ALTITUDE_SOURCES

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def as_rng(rng):
    """A numpy Generator from None (fresh entropy), an int/sequence seed, or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _round(value):
    """Round half up (Python's round() goes to even: 40.5 -> 40)."""
    return int(math.floor(value + 0.5))


def _check_image(image):
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8 or image.shape[0] == 0 or image.shape[1] == 0:
        desc = (f'{image.dtype} array of shape {image.shape}' if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise ValueError(f'expected an H x W x 3 uint8 RGB image, got {desc}')
    return image


class CentreCrop:
    """A crop of ``scale`` (lo, hi) of each side (one draw for both: the aspect is kept) whose
    centre is the image centre moved by up to +-``jitter`` of the side along each axis; the
    crop is kept inside the image.  Calling it resizes the crop back to the input size."""

    def __init__(self, scale, jitter=0.0):
        lo, hi = (float(v) for v in scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f'crop scale must satisfy 0 < low <= high <= 1, got {scale}')
        if not 0.0 <= float(jitter) < 0.5:
            raise ValueError(f'centre jitter must be in [0, 0.5), got {jitter}')
        self.scale = (lo, hi)
        self.jitter = float(jitter)

    def crop_box(self, height, width, rng=None):
        """(x0, y0, crop_width, crop_height) in pixels, drawn with ``rng``."""
        rng = as_rng(rng)
        s = rng.uniform(*self.scale) if self.scale[0] < self.scale[1] else self.scale[0]
        crop_w = min(width, max(1, _round(s * width)))
        crop_h = min(height, max(1, _round(s * height)))
        cx, cy = width / 2.0, height / 2.0
        if self.jitter > 0.0:
            cx += rng.uniform(-self.jitter, self.jitter) * width
            cy += rng.uniform(-self.jitter, self.jitter) * height
        x0 = min(max(_round(cx - crop_w / 2.0), 0), width - crop_w)
        y0 = min(max(_round(cy - crop_h / 2.0), 0), height - crop_h)
        return x0, y0, crop_w, crop_h

    def crop(self, image, rng=None):
        """The crop itself (a view of ``image``)."""
        image = _check_image(image)
        x0, y0, w, h = self.crop_box(image.shape[0], image.shape[1], rng)
        return image[y0:y0 + h, x0:x0 + w]

    def __call__(self, image, rng=None):
        """The crop resized back to the size of ``image`` (uint8 RGB in and out)."""
        crop = self.crop(image, rng)
        return cv2.resize(crop, (image.shape[1], image.shape[0]),
                          interpolation=cv2.INTER_LINEAR)

    def __repr__(self):
        return f'{type(self).__name__}(scale={self.scale}, jitter={self.jitter})'


class LowAltitudeSimulation(CentreCrop):
    """Simulates a 70-150 m view from a ~400 m one: crop 0.15-0.30 of each side around the
    centre jittered by +-10 % of the side (GPS noise), resized back."""

    def __init__(self, crop_scale=(0.15, 0.30), jitter=0.10):
        super().__init__(crop_scale, jitter)


class RandomCenterCropZoom(CentreCrop):
    """A centred crop of 0.8-1.0 of each side, resized back: a mild zoom for synthetic
    sources already at the target altitude."""

    def __init__(self, scale=(0.8, 1.0)):
        super().__init__(scale, 0.0)


def crop_for_source(source):
    """The training crop of a dataset source: low-altitude simulation for the high-altitude
    real sources ('visloc', 'vpair'), the mild zoom for everything else ('gta', 'procedural',
    map names of skyloc_training.pairs)."""
    if str(source).lower() in HIGH_ALTITUDE_SOURCES:
        return LowAltitudeSimulation()
    return RandomCenterCropZoom()


def to_input(image, img_size):
    """HxWx3 uint8 RGB -> 3 x img_size x img_size float32, ImageNet-normalised."""
    image = _check_image(image)
    size = int(img_size)
    if size < 1:
        raise ValueError(f'img_size must be a positive integer, got {img_size}')
    if image.shape[:2] != (size, size):
        shrink = image.shape[0] > size or image.shape[1] > size
        image = cv2.resize(image, (size, size),
                           interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class SourceTransform:
    """The transform :func:`for_source` returns: ``t(image, rng=None)`` -> 3 x S x S float32."""

    def __init__(self, source, img_size, train=True, rng=None):
        self.source = str(source)
        self.img_size = int(img_size)
        self.crop = crop_for_source(source) if train else None
        self.rng = as_rng(rng)

    def __call__(self, image, rng=None):
        if self.crop is not None:
            # crop straight to the input size: one resampling instead of two
            image = self.crop.crop(image, self.rng if rng is None else as_rng(rng))
        return to_input(image, self.img_size)

    def __repr__(self):
        return (f'SourceTransform({self.source!r}, img_size={self.img_size}, '
                f'crop={self.crop!r})')


def for_source(source, img_size, train=True, rng=None):
    """The drone-image transform of one dataset source: for training, the source's crop
    (:func:`crop_for_source`), then resize to ``img_size`` and ImageNet normalisation; for
    evaluation (``train=False``) the resize and normalisation only.  Satellite tiles take
    ``train=False``.  ``rng``: seed or Generator of the crops (also per call)."""
    return SourceTransform(source, img_size, train, rng)
