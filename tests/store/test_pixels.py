"""Normalizing image arrays to the store's (N, C, H, W) uint8/float32 layout, and content ids."""

import numpy as np
import pytest
import torch

import odinlab
from odinlab.store.pixels import content_ids, to_model_input, to_nchw


@pytest.fixture
def rgb():
    """Four 5x7 RGB images, channels-last, with distinct values per channel."""
    return np.random.default_rng(0).integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)


def test_nhw_gets_one_channel_axis():
    gray = np.random.default_rng(1).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    out = to_nchw(gray)
    assert out.shape == (3, 1, 5, 7) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0], gray)


def test_nhwc_is_moved_channels_first(rgb):
    out = to_nchw(rgb)
    assert out.shape == (4, 3, 5, 7)
    np.testing.assert_array_equal(out, rgb.transpose(0, 3, 1, 2))
    assert out.flags.c_contiguous


def test_nchw_is_kept(rgb):
    nchw = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(to_nchw(nchw), nchw)


@pytest.mark.parametrize("shape", [(2, 3, 5, 3), (2, 3, 3, 3), (2, 1, 8, 1), (2, 3, 4, 4), (2, 4, 5, 3)])
def test_ambiguous_4d_layout_is_refused_in_auto(shape):
    images = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    with pytest.raises(odinlab.ImageFormatError, match=r"Cannot tell channels.*layout='NCHW'.*'NHWC'"):
        to_nchw(images)


def test_ambiguous_4d_layout_is_resolved_by_explicit_layout():
    images = np.random.default_rng(3).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    assert to_nchw(images, layout="NCHW").shape == (2, 3, 5, 3)
    as_nhwc = to_nchw(images, layout="NHWC")
    assert as_nhwc.shape == (2, 3, 3, 5)
    np.testing.assert_array_equal(as_nhwc, images.transpose(0, 3, 1, 2))


def test_layout_nhw_refuses_4d_arrays(rgb):
    with pytest.raises(odinlab.ImageFormatError, match=r"got shape \(4, 5, 7, 3\) with layout='NHW'"):
        to_nchw(rgb, layout="NHW")


def test_explicit_4d_layout_refuses_3d_arrays():
    with pytest.raises(odinlab.ImageFormatError, match=r"got shape \(2, 5, 5\) with layout='NCHW'"):
        to_nchw(np.zeros((2, 5, 5), np.uint8), layout="NCHW")


def test_unknown_layout_is_refused():
    with pytest.raises(odinlab.ImageFormatError, match="Unknown layout 'CHW'"):
        to_nchw(np.zeros((2, 5, 5), np.uint8), layout="CHW")


def test_4d_array_without_channel_axis_is_refused():
    with pytest.raises(odinlab.ImageFormatError, match=r"No channel axis in shape \(2, 5, 6, 7\)"):
        to_nchw(np.zeros((2, 5, 6, 7), np.uint8))


@pytest.mark.parametrize("shape", [(8, 8), (8,), (1, 2, 3, 4, 5)])
def test_wrong_ndim_is_refused_with_the_shape(shape):
    with pytest.raises(odinlab.ImageFormatError, match=r"must be \(N, H, W\), \(N, H, W, C\) or \(N, C, H, W\)"):
        to_nchw(np.zeros(shape, np.uint8))


def test_single_2d_image_error_suggests_a_leading_axis():
    with pytest.raises(odinlab.ImageFormatError, match=r"images\[None\]"):
        to_nchw(np.zeros((8, 8), np.uint8))


def test_float_images_become_float32_with_the_same_values():
    images = np.random.default_rng(4).random((3, 4, 4))
    out = to_nchw(images)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], images.astype(np.float32))
    assert to_nchw(images.astype(np.float16)).dtype == np.float32


def test_integer_images_in_byte_range_become_uint8():
    images = np.arange(2 * 4 * 4, dtype=np.int64).reshape(2, 4, 4) * 8
    out = to_nchw(images)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0], images)


def test_integer_images_outside_byte_range_are_refused_with_the_range():
    images = np.full((2, 4, 4), 300, np.int32)
    images[0, 0, 0] = -1
    with pytest.raises(odinlab.ImageFormatError, match=r"0\.\.255.*from -1 to 300"):
        to_nchw(images)


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_])
def test_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(odinlab.ImageFormatError, match="Unsupported pixel dtype"):
        to_nchw(np.zeros((2, 4, 4), dtype))


def test_object_arrays_are_refused():
    images = np.empty((2, 4, 4), dtype=object)
    with pytest.raises(odinlab.ImageFormatError, match="object array"):
        to_nchw(images)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_are_refused_naming_the_image(bad):
    images = np.zeros((4, 3, 3), np.float32)
    images[2, 1, 1] = bad
    with pytest.raises(odinlab.ImageFormatError, match=r"NaN or infinite pixels \(first at image 2\)"):
        to_nchw(images)
    # In a batched ingest the index counts from the start of the call, not of the batch.
    with pytest.raises(odinlab.ImageFormatError, match=r"first at image 12\)"):
        to_nchw(images, offset=10)


def test_torch_tensors_are_accepted():
    tensor = torch.rand(2, 3, 5, 6)
    out = to_nchw(tensor)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, tensor.numpy())


def test_content_ids_are_stable_and_depend_on_pixels_shape_and_dtype():
    images = np.random.default_rng(5).integers(0, 256, (3, 1, 4, 4), dtype=np.uint8)
    ids = content_ids(images)
    assert ids == content_ids(images.copy())
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == 3
    changed = images.copy()
    changed[1, 0, 0, 0] ^= 1
    changed_ids = content_ids(changed)
    assert changed_ids[0] == ids[0] and changed_ids[2] == ids[2] and changed_ids[1] != ids[1]
    # Same bytes, other shape or dtype: another id.
    assert content_ids(images.reshape(3, 1, 2, 8)) != ids
    assert content_ids(images.view(np.int8)) != ids


def test_model_input_scales_uint8_to_unit_range_and_passes_floats():
    pixels = np.array([[[[0, 128, 255]]]], np.uint8)
    x = to_model_input(pixels)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[[[0.0, 128 / 255, 1.0]]]])
    floats = np.array([[[[-0.5, 2.0]]]], np.float32)
    np.testing.assert_array_equal(to_model_input(floats), floats)
