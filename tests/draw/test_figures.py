"""The drawing layer's figures: they take results (frames, labelled maps) and draw them."""

import numpy as np
import polars as pl
import pytest

from odinlab.draw.attribution import attribution_grid
from odinlab.draw.confusion import confusion_figure
from odinlab.draw.images import image_rgb, overlay
from odinlab.errors import ImageFormatError, OptionError, UnknownColumnError
from odinlab.store.labelled import labelled


def _cells(counts: np.ndarray, names: list[str]) -> pl.DataFrame:
    """A confusion frame as error_analysis.confusion_matrix makes it."""
    n = len(names)
    label, predicted = np.repeat(np.arange(n), n), np.tile(np.arange(n), n)
    return pl.DataFrame({"label": label, "label_name": [names[i] for i in label], "predicted": predicted,
                         "predicted_name": [names[i] for i in predicted], "count": counts.ravel(),
                         "image_ids": [[f"img-{i}-{j}-{k}" for k in range(c)]
                                       for (i, j), c in np.ndenumerate(counts)]})


def test_confusion_figure_puts_each_count_in_its_cell():
    counts = np.array([[5, 1, 0], [2, 7, 1], [0, 3, 9]])
    figure = confusion_figure(_cells(counts, ["cat", "dog", "owl"]), title="mine")
    heat = figure.data[0]
    assert heat.type == "heatmap"
    assert (np.asarray(heat.z) == counts).all()  # rows are labels, columns predictions
    assert list(heat.y) == list(heat.x) == ["cat", "dog", "owl"]
    assert np.asarray(heat.customdata)[1, 2].tolist() == [1, 2]  # (label, predicted) for click handlers
    assert "%{z}" in heat.hovertemplate and figure.layout.title.text == "mine"


def test_confusion_figure_draws_missing_cells_as_zero():
    counts = np.array([[5, 1], [2, 7]])
    nonzero = _cells(counts, ["a", "b"]).filter(pl.col("label") != pl.col("predicted"))
    assert (np.asarray(confusion_figure(nonzero).data[0].z) == [[0, 1], [2, 0]]).all()
    with pytest.raises(UnknownColumnError, match="count"):
        confusion_figure(nonzero.drop("count"))


@pytest.fixture
def maps(tiny_store):
    ids = tiny_store.select("val").ids[:3]
    values = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32)
    return labelled(values, ids, dims=("channel", "y", "x"), model_id="cnn@1", method="saliency",
                    target="prediction")


def test_attribution_grid_shows_each_image_beside_its_overlay(tiny_store, maps):
    pixels = tiny_store.pixels(maps.image_id.values.tolist())
    figure = attribution_grid(maps, pixels, columns=2, alpha=0.5)
    assert len(figure.data) == 6 and all(trace.type == "image" for trace in figure.data)
    for i in range(3):
        assert (np.asarray(figure.data[2 * i].z) == image_rgb(pixels[i])).all()
        assert (np.asarray(figure.data[2 * i + 1].z) == overlay(pixels[i], maps.values[i], alpha=0.5)).all()
    assert figure.layout.title.text == "saliency of cnn@1, target: prediction"
    titles = [a.text for a in figure.layout.annotations]
    assert titles[0::2] == maps.image_id.values.tolist() and titles[1] == "overlay"


def test_attribution_grid_reads_pixels_and_labels_from_a_store(tiny_store, maps):
    ids = maps.image_id.values.tolist()
    from_store = attribution_grid(maps, store=tiny_store)
    given = attribution_grid(maps, tiny_store.pixels(ids))
    assert all((np.asarray(a.z) == np.asarray(b.z)).all() for a, b in zip(from_store.data, given.data))
    names = tiny_store.select(ids)["label_name"].to_list()
    titles = [a.text for a in from_store.layout.annotations][0::2]
    assert titles == [f"{i}<br>label {n}" for i, n in zip(ids, names)]


def test_attribution_grid_captions_from_a_frame_or_a_list(tiny_store, maps):
    ids = maps.image_id.values.tolist()
    frame = pl.DataFrame({"image_id": ids[::-1], "label_name": ["a", "b", "c"], "predicted_name": ["c", "b", "a"]})
    titles = [a.text for a in attribution_grid(maps, store=tiny_store, captions=frame).layout.annotations]
    assert titles[0] == f"{ids[0]}<br>label c, pred a"  # matched by image id, not by position
    assert titles[4] == f"{ids[2]}<br>label a, pred c"
    listed = attribution_grid(maps, store=tiny_store, captions=["x", "y", "z"])
    assert [a.text for a in listed.layout.annotations][0::2] == ["x", "y", "z"]


def test_attribution_grid_refuses_unlabelled_or_misaligned_input(tiny_store, maps):
    with pytest.raises(OptionError, match="DataArray"):
        attribution_grid(maps.values, store=tiny_store)
    with pytest.raises(OptionError, match="pixels"):
        attribution_grid(maps)
    with pytest.raises(ImageFormatError, match="align"):
        attribution_grid(maps, tiny_store.pixels("val")[:2])
    with pytest.raises(OptionError, match="1 to 2 images"):
        attribution_grid(maps, store=tiny_store, max_images=2)
    with pytest.raises(OptionError, match="captions"):
        attribution_grid(maps, store=tiny_store, captions=["x"])
