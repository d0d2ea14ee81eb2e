"""Decoding of sensor_msgs/Image payloads (skyloc_perception.image)."""

import array
from types import SimpleNamespace

import numpy as np
import pytest

from skyloc_perception.image import decode_image, image_from_msg, ImageError


@pytest.fixture(scope='module')
def picture():
    """A 5 x 7 RGB picture with distinct values per pixel and channel."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _pack(pixels, pad):
    """Rows of ``pixels`` (H x W x C) followed by ``pad`` bytes of junk each; (step, bytes)."""
    h, w, c = pixels.shape
    rows = np.concatenate([pixels.reshape(h, w * c), np.full((h, pad), 77, np.uint8)], axis=1)
    return w * c + pad, rows.tobytes()


def _encodings(rgb):
    """Every supported encoding of the same picture: name -> H x W x C channel layout."""
    alpha = np.full(rgb.shape[:2] + (1,), 9, np.uint8)
    bgr = rgb[:, :, ::-1]
    return {
        'rgb8': rgb,
        'bgr8': bgr,
        '8UC3': bgr,
        'rgba8': np.concatenate([rgb, alpha], axis=2),
        'bgra8': np.concatenate([bgr, alpha], axis=2),
    }


@pytest.mark.parametrize('pad', [0, 3, 13])
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', '8UC3', 'rgba8', 'bgra8'])
def test_colour_encodings_decode_to_the_same_rgb(picture, encoding, pad):
    pixels = _encodings(picture)[encoding]
    step, data = _pack(pixels, pad)
    out = decode_image(encoding, 7, 5, step, data)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, picture)
    assert out.flags['C_CONTIGUOUS'] and out.flags['WRITEABLE']


@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
@pytest.mark.parametrize('pad', [0, 5])
def test_mono_is_replicated(picture, encoding, pad):
    grey = picture[:, :, 1:2]
    step, data = _pack(grey, pad)
    out = decode_image(encoding, 7, 5, step, data)
    assert out.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], picture[:, :, 1])


@pytest.mark.parametrize('container', [bytes, bytearray, lambda b: array.array('B', b),
                                       list, lambda b: np.frombuffer(b, np.uint8), memoryview])
def test_message_data_types(picture, container):
    step, data = _pack(picture[:, :, ::-1], 2)
    msg = SimpleNamespace(encoding='bgr8', width=7, height=5, step=step,
                          data=container(data))
    np.testing.assert_array_equal(image_from_msg(msg), picture)


def test_result_does_not_alias_the_message(picture):
    buf = bytearray(picture.tobytes())
    first = int(picture[0, 0, 0])
    out = decode_image('rgb8', 7, 5, 21, buf)
    buf[0] = (first + 1) % 256
    assert out[0, 0, 0] == first
    out[0, 0, 0] ^= 0xFF   # writable, and the message is unchanged
    assert buf[0] == (first + 1) % 256


def test_copy_false_is_a_view_of_an_unpadded_rgb8_payload(picture):
    buf = array.array('B', picture.tobytes())
    msg = SimpleNamespace(encoding='rgb8', width=7, height=5, step=21, data=buf)
    view = image_from_msg(msg, copy=False)
    np.testing.assert_array_equal(view, picture)
    buf[0] = (int(picture[0, 0, 0]) + 1) % 256
    assert view[0, 0, 0] == buf[0]   # no copy: the node's msg outlives its use
    # padded rows or another layout still give a new array
    step, data = _pack(picture, 3)
    padded = bytearray(data)
    out = decode_image('rgb8', 7, 5, step, padded, copy=False)
    padded[0] ^= 0xFF
    np.testing.assert_array_equal(out, picture)
    step, data = _pack(picture[:, :, ::-1], 0)
    np.testing.assert_array_equal(decode_image('bgr8', 7, 5, step, data, copy=False), picture)


@pytest.mark.parametrize('args, message', [
    (('yuv422', 7, 5, 14, bytes(70)), "unsupported image encoding 'yuv422'; supported: bgr8"),
    (('16UC1', 7, 5, 14, bytes(70)), "unsupported image encoding '16UC1'"),
    (('rgb8', 7, 5, 21, bytes(104)), 'image data has 104 bytes, rgb8 7x5 with step 21 needs 105'),
    (('rgb8', 7, 5, 20, bytes(200)), 'image step 20 bytes is shorter than one row of 7 rgb8 '
                                     'pixels (21 bytes)'),
    (('bgra8', 7, 5, 27, bytes(200)), 'shorter than one row of 7 bgra8 pixels (28 bytes)'),
    (('mono8', 0, 5, 0, b''), 'empty image: 0x5 pixels'),
    (('mono8', 4, 0, 4, b''), 'empty image: 4x0 pixels'),
    (('mono8', 2, 2, 2, [0, 1, 2, 300]), 'byte values 0..255'),
])
def test_bad_inputs_raise(args, message):
    with pytest.raises(ImageError) as info:
        decode_image(*args)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_supported_list_is_in_the_message():
    with pytest.raises(ImageError) as info:
        decode_image('bayer_rggb8', 2, 2, 2, bytes(4))
    for name in ('bgr8', 'bgra8', 'mono8', 'rgb8', 'rgba8', '8UC1', '8UC3'):
        assert name in str(info.value)


def test_not_a_message():
    with pytest.raises(ImageError, match='not an image message'):
        image_from_msg(SimpleNamespace(encoding='rgb8', width=1, height=1))
