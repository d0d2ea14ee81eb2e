"""sensor_msgs/Image payloads -> H x W x 3 uint8 RGB arrays (no ROS import).

Only the 8-bit encodings a camera driver or a simulator publishes are supported; anything else
is refused with :class:`ImageError` naming the encoding, rather than decoded into garbage.
Rows may be padded (``step`` > ``width * channels``), as sensor_msgs/Image allows.
"""

import numpy as np

# encoding -> (channels, index of R, G, B in a pixel; None = grey replicated)
_LAYOUTS = {
    'rgb8': (3, (0, 1, 2)),
    'bgr8': (3, (2, 1, 0)),
    'rgba8': (4, (0, 1, 2)),
    'bgra8': (4, (2, 1, 0)),
    'mono8': (1, None),
}
# OpenCV type names that sensor_msgs also uses (cv_bridge convention: 8UC3 is BGR order)
_ALIASES = {'8uc3': 'bgr8', '8uc1': 'mono8'}
SUPPORTED_ENCODINGS = tuple(sorted(_LAYOUTS)) + ('8UC1', '8UC3')
"""Encodings :func:`decode_image` accepts (case-insensitive)."""


class ImageError(ValueError):
    """An image message that cannot be decoded (the message says why)."""


def _as_uint8_buffer(data):
    """The payload as a flat uint8 array, without copying when it supports the buffer protocol."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageError(f'image data must be uint8 bytes, got a {data.dtype} array')
        return data.reshape(-1)
    try:
        view = memoryview(data)
    except TypeError:
        view = None
    if view is not None and view.itemsize == 1:
        # bytes, bytearray, array.array('B'), memoryview: zero-copy
        return np.frombuffer(view.cast('B'), dtype=np.uint8)
    # a list (or a wider array.array) of byte values, as some message wrappers hand over
    try:
        arr = np.asarray(data if view is None else view.tolist())
    except (TypeError, ValueError) as exc:
        raise ImageError(f'image data of type {type(data).__name__} is not a byte sequence') \
            from exc
    if arr.size and (arr.dtype.kind not in 'iub' or arr.min() < 0 or arr.max() > 255):
        raise ImageError('image data must hold byte values 0..255')
    return arr.astype(np.uint8).reshape(-1)


def decode_image(encoding: str, width: int, height: int, step: int, data,
                 copy: bool = True) -> np.ndarray:
    """Decode a raw image payload to a new H x W x 3 uint8 RGB array.

    ``encoding`` is one of rgb8, bgr8, rgba8, bgra8, mono8 (also 8UC3 = bgr8, 8UC1 = mono8);
    ``width``/``height`` in pixels, ``step`` the row length in bytes (>= width * channels; the
    bytes after ``width * channels`` in each row are padding and ignored); ``data`` anything
    byte-like (bytes, bytearray, array.array, memoryview, uint8 ndarray, list of ints) of at
    least ``step * height`` bytes.  Alpha is dropped, grey is replicated to three channels.
    The result never shares memory with ``data``, unless ``copy`` is False: then an rgb8
    payload without row padding is returned as a view of ``data`` (no 0.9 MB copy
    per VGA frame; the caller must not keep it beyond the message's life).
    """
    name = str(encoding).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in _LAYOUTS:
        raise ImageError(f"unsupported image encoding '{encoding}'; supported: "
                         f"{', '.join(SUPPORTED_ENCODINGS)}")
    channels, order = _LAYOUTS[name]
    try:
        width, height, step = int(width), int(height), int(step)
    except (TypeError, ValueError) as exc:
        raise ImageError(f'image width/height/step must be integers, got {width!r}, '
                         f'{height!r}, {step!r}') from exc
    if width <= 0 or height <= 0:
        raise ImageError(f'empty image: {width}x{height} pixels')
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageError(f'image step {step} bytes is shorter than one row of {width} '
                         f'{name} pixels ({row_bytes} bytes)')
    buf = _as_uint8_buffer(data)
    if buf.size < step * height:
        raise ImageError(f'image data has {buf.size} bytes, {name} {width}x{height} with step '
                         f'{step} needs {step * height}')
    rows = buf[:step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, channels)
    if order is None:
        return np.repeat(pixels, 3, axis=2)
    if order == (0, 1, 2):
        if not copy and channels == 3 and step == row_bytes:
            return pixels
        # a copy: the caller may keep the array after the message buffer is reused
        return np.array(pixels[:, :, :3], order='C', copy=True)
    return np.ascontiguousarray(pixels[:, :, list(order)])  # fancy indexing copies


def image_from_msg(msg, copy: bool = True) -> np.ndarray:
    """Decode a sensor_msgs/Image (or any object with the same attributes) to H x W x 3 RGB
    (``copy``: see :func:`decode_image`)."""
    try:
        fields = (msg.encoding, msg.width, msg.height, msg.step, msg.data)
    except AttributeError as exc:
        raise ImageError(f'{type(msg).__name__} is not an image message: {exc}') from exc
    return decode_image(*fields, copy=copy)
