"""Behaviour of the built-in datasets: shapes, determinism, planted bugs, validation."""

import time

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

from odinlab.datasets import SUPPORTED_SHAPES, ImageData, digits, shapes


@pytest.fixture(scope="module")
def digit_data():
    return digits(seed=0)


@pytest.fixture(scope="module")
def noisy_shapes():
    return shapes(n=4000, size=32, label_noise=0.2, spurious_class=1, spurious_rate=0.8, seed=7)


def _accuracy(features, labels, n_train=2000, strength=1.0):
    """Held-out accuracy of a logistic regression trained on the first `n_train` rows."""
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    model = LogisticRegression(C=strength, max_iter=300).fit(features[:n_train], labels[:n_train])
    return model.score(features[n_train:], labels[n_train:])


# ---------------------------------------------------------------- digits


def test_digits_has_1797_channels_first_uint8_images_in_full_range(digit_data):
    assert len(digit_data) == 1797
    assert digit_data.images.shape == (1797, 1, 8, 8)
    assert digit_data.images.dtype == np.uint8
    assert digit_data.images.min() == 0 and digit_data.images.max() == 255
    assert digit_data.labels.dtype == np.int64
    assert digit_data.classes == tuple(str(d) for d in range(10))


def test_digits_ids_are_unique_and_follow_sklearn_order(digit_data):
    assert len(set(digit_data.ids)) == 1797
    assert digit_data.ids[0] == "digits-0000" and digit_data.ids[-1] == "digits-1796"
    assert digit_data.metadata["source_index"].to_list() == list(range(1797))


def test_digits_metadata_holds_ink_in_unit_range_and_no_reserved_columns(digit_data):
    assert digit_data.metadata.columns == ["ink", "source_index"]
    ink = digit_data.metadata["ink"].to_numpy()
    assert 0 < ink.min() and ink.max() < 1
    np.testing.assert_allclose(ink, digit_data.images.reshape(1797, -1).mean(1) / 255)


def test_digits_split_is_70_15_15_within_each_class(digit_data):
    for label in range(10):
        in_class = digit_data.split[digit_data.labels == label]
        for name, fraction in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert abs((in_class == name).sum() - fraction * len(in_class)) <= 2


def test_digits_plants_nothing(digit_data):
    assert not digit_data.label_noise.any() and not digit_data.spurious.any()
    assert digit_data.cue_box is None
    np.testing.assert_array_equal(digit_data.true_labels, digit_data.labels)


def test_digits_split_is_deterministic_per_seed(digit_data):
    np.testing.assert_array_equal(digits(seed=0).split, digit_data.split)
    assert (digits(seed=1).split != digit_data.split).any()


# ---------------------------------------------------------------- shapes: basics


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_returns_rgb_uint8_images_of_requested_size(size):
    data = shapes(n=50, size=size, seed=0)
    assert data.images.shape == (50, 3, size, size) and data.images.dtype == np.uint8
    assert data.ids[42] == "shapes-000042" and len(set(data.ids)) == 50
    assert data.classes == ("circle", "square", "triangle", "cross", "ring")


def test_shapes_metadata_has_documented_columns_and_ranges():
    meta = shapes(n=500, seed=0).metadata
    assert meta.columns == ["color", "shape_size", "center_x", "center_y", "brightness"]
    assert set(meta["color"]) <= {"red", "yellow", "green", "cyan", "blue", "magenta"}
    for column in ("center_x", "center_y", "brightness"):
        assert meta[column].min() >= 0 and meta[column].max() <= 1


def test_shapes_same_seed_is_bit_identical_and_other_seed_differs():
    first, again, other = shapes(n=300, seed=3), shapes(n=300, seed=3), shapes(n=300, seed=4)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.split, again.split)
    assert first.metadata.equals(again.metadata)
    assert not np.array_equal(first.images, other.images)


def test_shapes_are_deterministic_across_render_batches():
    # 2,500 images span two render batches, each with its own noise stream.
    first, again = shapes(n=2500, seed=5), shapes(n=2500, seed=5)
    np.testing.assert_array_equal(first.images, again.images)
    assert not np.array_equal(first.images[:100], first.images[2048:2148])


def test_shapes_split_follows_requested_fractions():
    split = shapes(n=2000, seed=0, split=(0.5, 0.25, 0.25)).split
    assert [(split == name).sum() for name in ("train", "val", "test")] == [1000, 500, 500]


def test_shapes_classes_are_learnable_from_pixels():
    data = shapes(n=2500, size=32, seed=1)
    brightest = data.images.max(axis=1).astype(np.float32) / 255  # shape stands out in some channel
    pooled = brightest.reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(len(data), -1)
    assert _accuracy(pooled, data.labels) > 0.6
    # The Fourier magnitude ignores position, so a linear model should separate the shapes.
    spectrum = np.log1p(np.abs(np.fft.rfft2(brightest - brightest.mean(axis=(1, 2), keepdims=True))))
    spectrum = spectrum.reshape(len(data), -1)
    # Strong regularisation (C=0.01) keeps the fit fast and does not hurt separable classes.
    assert _accuracy(spectrum, data.labels, strength=0.01) > 0.9
    # Control: the same features cannot predict shuffled labels, so the check has teeth.
    shuffled = np.random.default_rng(0).permutation(data.labels)
    assert _accuracy(spectrum, shuffled, strength=0.01) < 0.35


def test_shapes_supports_every_listed_shape():
    data = shapes(n=700, classes=SUPPORTED_SHAPES, seed=0)
    assert set(data.labels.tolist()) == set(range(len(SUPPORTED_SHAPES)))


def test_shapes_10k_images_generate_in_under_3_seconds():
    start = time.perf_counter()
    shapes(n=10_000, size=32, seed=0)
    assert time.perf_counter() - start < 3.0


# ---------------------------------------------------------------- shapes: planted bugs


def test_label_noise_flips_requested_fraction_exactly_where_marked(noisy_shapes):
    assert noisy_shapes.label_noise.mean() == pytest.approx(0.2, abs=0.01)
    np.testing.assert_array_equal(noisy_shapes.labels != noisy_shapes.true_labels, noisy_shapes.label_noise)


def test_no_label_noise_keeps_labels_clean():
    data = shapes(n=200, seed=0)
    assert not data.label_noise.any() and not data.spurious.any() and data.cue_box is None
    np.testing.assert_array_equal(data.labels, data.true_labels)


def test_label_noise_does_not_change_the_images():
    np.testing.assert_array_equal(shapes(n=200, seed=2).images, shapes(n=200, seed=2, label_noise=0.3).images)


def test_spurious_cue_is_white_in_cue_box_for_flagged_images(noisy_shapes):
    top, left, height, width = noisy_shapes.cue_box
    assert (top, left, height, width) == (1, 1, 4, 4)
    cue_pixels = noisy_shapes.images[:, :, top:top + height, left:left + width]
    assert (cue_pixels[noisy_shapes.spurious] == 255).all()
    # Unflagged images have a dark background there unless the shape happens to cover it.
    assert (cue_pixels[~noisy_shapes.spurious] == 255).all(axis=(1, 2, 3)).mean() < 0.01


def test_spurious_cue_correlates_with_class_but_is_not_a_rule(noisy_shapes):
    in_class = noisy_shapes.true_labels == 1
    assert noisy_shapes.spurious[in_class].mean() == pytest.approx(0.8, abs=0.01)
    assert 0 < noisy_shapes.spurious[~in_class].mean() == pytest.approx(0.01, abs=0.003)


def test_source_metadata_marks_exactly_the_cue_carriers(noisy_shapes):
    source = noisy_shapes.metadata["source"].to_numpy()
    assert ((source == "archive") == noisy_shapes.spurious).all()
    assert set(source) == {"archive", "camera"}
    assert "source" not in shapes(n=50, seed=0).metadata.columns  # no cue, no provenance column


def test_test_cue_rate_draws_the_cue_on_every_class_of_the_test_split_only():
    plain = shapes(n=4000, spurious_class=1, spurious_rate=0.8, seed=7)
    shifted = shapes(n=4000, spurious_class=1, spurious_rate=0.8, seed=7, test_cue_rate=0.3)
    test = shifted.split == "test"
    np.testing.assert_array_equal(shifted.spurious[~test], plain.spurious[~test])
    np.testing.assert_array_equal(shifted.labels, plain.labels)
    for label in range(5):
        in_class = test & (shifted.true_labels == label)
        assert shifted.spurious[in_class].mean() == pytest.approx(0.3, abs=0.08)
    top, left, height, width = shifted.cue_box
    patch = shifted.images[test][:, :, top:top + height, left:left + width]
    assert (patch[shifted.spurious[test]] == 255).all()


def test_cue_box_scales_with_image_size():
    assert shapes(n=20, size=64, spurious_class=0, spurious_rate=1.0).cue_box == (2, 2, 8, 8)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"size": 8}, "size must be"),
        ({"label_noise": 1.0}, "label_noise"),
        ({"label_noise": -0.1}, "label_noise"),
        ({"spurious_class": 5}, "spurious_class"),
        ({"spurious_rate": 1.5}, "spurious_rate"),
        ({"classes": ("circle",)}, "at least 2 classes"),
        ({"classes": ("circle", "hexagon")}, "hexagon"),
        ({"classes": ("circle", "circle")}, "repeat"),
        ({"split": (0.5, 0.2, 0.2)}, "sum"),
        ({"seed": -1}, "seed"),
        ({"test_cue_rate": 0.3}, "needs spurious_class"),
        ({"test_cue_rate": 1.5, "spurious_class": 0}, "test_cue_rate must be in"),
    ],
)
def test_shapes_rejects_bad_arguments_with_helpful_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shapes(**{"n": 10, **kwargs})


def test_unknown_class_error_lists_supported_shapes():
    with pytest.raises(ValueError, match="supported shapes are .*'triangle'"):
        shapes(n=10, classes=("circle", "blob"))


def test_image_data_rejects_mismatched_lengths():
    good = shapes(n=5, seed=0)
    with pytest.raises(ValueError, match="labels"):
        ImageData(**{**good.__dict__, "labels": good.labels[:3]})
    with pytest.raises(ValueError, match="extra columns"):
        ImageData(**{**good.__dict__, "metadata": good.metadata.with_columns(pl.lit(0).alias("label"))})
