"""The drawing layer's images: RGB conversion, colour maps and overlays."""

import numpy as np
import pytest

from odinlab.draw.images import COLORMAPS, colormap, image_rgb, overlay
from odinlab.errors import ImageFormatError, OptionError
from odinlab.store.pixels import to_rgb8


def test_image_rgb_keeps_uint8_colour_images_as_they_are():
    image = np.random.default_rng(0).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    out = image_rgb(image)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    assert (out == image.transpose(1, 2, 0)).all()


def test_image_rgb_makes_one_channel_grey_and_drops_alpha():
    grey = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    out = image_rgb(grey)
    assert (out == grey[0][..., None]).all()
    assert (image_rgb(grey[0]) == out).all()  # (H, W) is one channel
    rgba = np.random.default_rng(1).integers(0, 256, (4, 3, 3), dtype=np.uint8)
    assert (image_rgb(rgba) == rgba[:3].transpose(1, 2, 0)).all()


def test_image_rgb_scales_unit_floats_and_stretches_other_ranges():
    unit = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    assert image_rgb(unit)[0, :, 0].tolist() == [0, 128, 255]
    wide = np.array([[[-2.0, 0.0, 2.0]]], np.float32)
    assert image_rgb(wide)[0, :, 0].tolist() == [0, 128, 255]


def test_image_rgb_is_the_stores_conversion_for_one_image():
    images = np.random.default_rng(2).normal(size=(3, 1, 6, 6)).astype(np.float32)
    for i, image in enumerate(images):
        assert (image_rgb(image) == to_rgb8(images[i:i + 1])[0]).all()


def test_image_rgb_refuses_what_is_not_an_image():
    with pytest.raises(ImageFormatError):
        image_rgb(np.zeros((2, 8, 8)))  # two channels
    with pytest.raises(ImageFormatError):
        image_rgb(np.zeros(8))


def test_colormaps_interpolate_their_anchors():
    for name, anchors in COLORMAPS.items():
        ends = colormap(name, np.array([0.0, 1.0]))
        assert np.allclose(ends, [anchors[0], anchors[-1]])
    assert np.allclose(colormap("gray", np.array([0.25, 2.0])), [[63.75] * 3, [255.0] * 3])  # clipped to 1
    with pytest.raises(OptionError, match="colour map"):
        colormap("no-such-map", np.zeros(1))
    with pytest.raises(OptionError):
        colormap([(0, 0, 0)], np.zeros(1))


def test_overlay_blends_by_magnitude_and_keeps_the_image_where_the_map_is_zero():
    image = np.full((1, 8, 8), 100, np.uint8)
    heat = np.zeros((1, 8, 8), np.float32)
    heat[0, 2, 2], heat[0, 5, 5], heat[0, 6, 6] = 1.0, -1.0, 0.5
    out = overlay(image, heat, alpha=0.8, percentile=100)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[0, 0] == 100).all()
    assert out[2, 2, 0] > out[2, 2, 2] and out[5, 5, 2] > out[5, 5, 0]  # red for, blue against
    red = colormap("RdBu_r", np.array([1.0]))[0]
    assert np.allclose(out[2, 2], np.rint(100 * 0.2 + red * 0.8), atol=1)  # full weight alpha at the maximum
    half = colormap("RdBu_r", np.array([0.75]))[0]
    assert np.allclose(out[6, 6], np.rint(100 * 0.6 + half * 0.4), atol=1)  # half the weight at half the value
    assert (overlay(image, heat, alpha=0.0) == 100).all()


def test_overlay_signs_and_shapes():
    heat = np.zeros((3, 8, 8), np.float32)
    heat[:, 1, 1], heat[:, 2, 2] = 1.0, -1.0
    image = np.zeros((3, 8, 8), np.float32)
    positive = overlay(image, heat, sign="positive", cmap="hot")
    assert positive[1, 1].any() and not positive[2, 2].any()  # negative evidence is not shown
    negative = overlay(image, heat, sign="negative")
    assert negative[2, 2].any() and not negative[1, 1].any()
    assert (overlay(image, heat, sign="absolute")[2, 2] == overlay(image, heat, sign="absolute")[1, 1]).all()
    assert overlay(image[0], heat[0]).shape == (8, 8, 3)  # (H, W) image and map
    with pytest.raises(OptionError, match="sign"):
        overlay(image, heat, sign="both")
    with pytest.raises(OptionError, match="alpha"):
        overlay(image, heat, alpha=2)
    with pytest.raises(ImageFormatError, match="differs"):
        overlay(image, heat[:, :4])
