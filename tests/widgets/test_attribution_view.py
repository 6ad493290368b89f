"""AttributionView: pages of images, one batched and cached attribution call per column, heat layers that
blend into overlay()'s picture, errors in their column, the view contract."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import odinlab
from odinlab.debug.attribution import Attributor
from odinlab.draw.images import overlay
from odinlab.nets import SmallCNN
from odinlab.draw.images import heat_rgba
from odinlab.widgets.attribution_view import NO_IMAGES, AttributionView
from odinlab.widgets.links import SelectionHub

MODELS = ["cnn@1", "second@1"]
METHODS = ["saliency", "integrated_gradients"]


@pytest.fixture(scope="module", autouse=True)
def second(digits):
    """A second version of this module's own: computing its attributions stores its predictions, and the
    session's "other" model must stay without any (other tests rely on that)."""
    if "second" not in digits.models["name"]:
        torch.manual_seed(1)
        digits.register_model(SmallCNN(1, 10, width=4), "second")
    return "second@1"


@pytest.fixture(scope="module")
def ids(digits):
    return digits.select("test").ids[:10]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def blend(image_rgb: np.ndarray, layer: np.ndarray, opacity: float) -> np.ndarray:
    """What the browser's canvas does: the layer drawn over the image with globalAlpha = opacity."""
    weight = opacity * layer[..., 3:4].astype(np.float64) / 255
    return image_rgb[..., :3] * (1 - weight) + layer[..., :3] * weight


def counting(attributor) -> list[int]:
    """Record the size of every batch the attributor computes (0 entries: everything was read)."""
    sizes, compute = [], attributor._attribute_batch

    def wrapped(batch, target, base):
        sizes.append(len(batch))
        return compute(batch, target, base)
    attributor._attribute_batch = wrapped
    return sizes


def test_a_page_sends_its_images_then_each_column_its_heat_layers(digits, ids):
    view = AttributionView(digits, MODELS, ids, methods=METHODS, page_size=4, size=32)
    assert [(c["model_id"], c["method"]) for c in view.columns] == [
        ("cnn@1", "saliency"), ("cnn@1", "integrated_gradients"),
        ("second@1", "saliency"), ("second@1", "integrated_gradients")]
    assert all(c["error"] == "" for c in view.columns) and view.message == "" and view.total == 10
    page, pngs = view.page(2)
    assert [r["image_id"] for r in page["rows"]] == ids[8:] and [r["index"] for r in page["rows"]] == [8, 9]
    assert pngs == digits.thumbnails(ids[8:], 32)
    cells, layers = view.cells(2, 3)
    assert cells["error"] == "" and len(layers) == 2
    assert cells["predicted"] == Attributor(digits, "second@1").predictions(ids[8:])["predicted_name"].to_list()
    assert decode(layers[0]).shape == (32, 32, 4)
    assert view.page(3)[0]["rows"] == [] and view.cells(3, 0)[1] == []  # past the last page: nothing


def test_the_heat_layer_over_the_image_is_the_overlay(digits, ids):
    view = AttributionView(digits, "cnn@1", ids[:3], methods=["integrated_gradients"], size=8)  # native size
    (_, images), (_, layers) = view.page(0), view.cells(0, 0)
    maps = Attributor(digits, "cnn@1", method="integrated_gradients").attribute(ids[:3], progress=False)
    pixels = digits.pixels(ids[:3])
    for image, layer, pixel, heat in zip(images, layers, pixels, maps.values):
        for opacity in (0.0, 0.35, 1.0):
            drawn = blend(decode(image).astype(np.float64), decode(layer), opacity)
            assert np.abs(drawn - overlay(pixel, heat, alpha=opacity)).max() <= 1.5


def test_heat_rgba_carries_overlays_colours_and_weights():
    rng = np.random.default_rng(0)
    image, heat = rng.integers(0, 256, (3, 6, 6)).astype(np.uint8), rng.normal(size=(3, 6, 6))
    for sign in ("all", "absolute", "positive"):
        layer = heat_rgba(heat, sign=sign)
        expected = overlay(image, heat, alpha=0.5, sign=sign)
        assert np.abs(blend(image.transpose(1, 2, 0).astype(np.float64), layer, 0.5) - expected).max() <= 1.5
    with pytest.raises(odinlab.OptionError, match="Unknown sign"):
        heat_rgba(heat, sign="up")


def test_each_column_is_one_batch_per_page_and_then_a_read_from_the_store(digits):
    images = digits.select("test").ids[10:26]  # stored predictions: the session store stays as it was
    view = AttributionView(digits, MODELS, images, methods=METHODS, page_size=8)
    batches = {(c["model_id"], c["method"]): counting(view.attributor(c["model_id"], c["method"]))
               for c in view.columns}
    for column in range(4):
        assert view.cells(0, column)[0]["error"] == ""
    assert all(sizes == [8] for sizes in batches.values())  # the page's 8 images in one batch per column
    for column in range(4):
        view.cells(0, column)
    assert all(sizes == [8] for sizes in batches.values())  # asked again: read, nothing computed
    fresh = Attributor(digits, "second@1", method="saliency")  # a user's own attributor reads the same maps
    assert counting(fresh) == [] and fresh.attribute(images[:8], progress=False).shape == (8, 1, 8, 8)


def test_the_target_chooser_changes_the_maps_and_starts_again(digits, ids):
    view = AttributionView(digits, "cnn@1", ids, methods=["saliency"], target=3)
    assert view.target == "3" and "label" in view.target_choices and "9" in view.target_choices
    three = view.cells(0, 0)[1]
    version = view.version
    view.target = "label"  # what the browser's chooser does
    assert view.version == version + 1 and view.page_number == 0
    assert view.cells(0, 0)[1] != three
    view.target = "giraffe"
    assert "TargetError" in view.columns[0]["error"] and "giraffe" in view.columns[0]["error"]
    assert view.cells(0, 0)[1] == []


def test_choosing_models_and_methods_rebuilds_the_columns(digits, ids):
    view = AttributionView(digits, "cnn@1", ids)
    assert "second@1" in view.model_choices and "integrated_gradients" in view.method_choices
    view.models = ["cnn@1", "second@1"]
    view.methods = ["saliency", "input_x_gradient"]
    assert len(view.columns) == 4 and view.columns[3] == {"model_id": "second@1", "method": "input_x_gradient",
                                                          "error": ""}
    view.methods = []
    assert view.message == "Choose at least one model and one method." and view.columns == []


def test_errors_are_shown_in_their_column_and_the_others_still_draw(digits, ids):
    view = AttributionView(digits, ["cnn@1", "nope@1"], ids, methods=["saliency", "no_such_method"])
    errors = {(c["model_id"], c["method"]): c["error"] for c in view.columns}
    assert errors[("cnn@1", "saliency")] == ""
    assert errors[("cnn@1", "no_such_method")].startswith("UnknownMethodError: Unknown attribution method")
    assert errors[("nope@1", "saliency")].startswith("UnknownModelError: Unknown model 'nope@1'")
    assert view.cells(0, 0)[0]["error"] == "" and len(view.cells(0, 0)[1]) == 8
    assert view.cells(0, 1) == ({**view.cells(0, 1)[0], "error": errors[("cnn@1", "no_such_method")]}, [])


def test_a_model_without_a_module_names_the_load_weights_call(digits, ids):
    other_session = odinlab.open_store(digits.url)  # a new session: weights, but no module
    view = AttributionView(other_session, "cnn@1", ids)
    error = view.columns[0]["error"]
    assert error.startswith("NotMaterializedError") and "store.load_weights(MyNet(), 'cnn@1')" in error
    assert view.cells(0, 0) [1] == []
    other_session.load_weights(SmallCNN(1, 10, width=4), "cnn@1")
    view.refresh()
    assert view.columns[0]["error"] == "" and len(view.cells(0, 0)[1]) == 8


def test_a_label_target_on_unlabelled_images_is_an_error_in_place(digits, ids, monkeypatch):
    view = AttributionView(digits, "cnn@1", ids[:2], target="label")
    attributor = view.attributor("cnn@1", "saliency")

    def refuse(*args, **kwargs):
        raise odinlab.LabelError("target='label' but 2 of the selected images have no label")
    monkeypatch.setattr(attributor, "attribute", refuse)
    cells, layers = view.cells(0, 0)
    assert cells["error"].startswith("LabelError: target='label'") and layers == []


def test_the_view_contract(digits, ids):
    view = AttributionView(digits, "cnn@1")
    assert view.message == NO_IMAGES and view.ids == [] and view.total == 0
    picked = []
    view.on_select(picked.append)
    view.show_selection(ids[:5])
    assert view.ids == ids[:5] and view.message == "" and picked == []
    view._on_message(view, {"kind": "click", "index": 2}, [])  # a click in the browser
    assert view.selected_ids == [ids[2]] and picked == [[ids[2]]]
    view.click(2)
    assert view.selected_ids == [] and picked[-1] == []
    view.show_selection(None)
    assert view.ids == [] and view.message == NO_IMAGES
    with pytest.raises(odinlab.UnknownImageError):
        view.show_selection(["no-such-image"])


def test_a_hub_shows_its_selection_in_the_view(digits, ids):
    hub = SelectionHub(digits, "test")
    view = hub.add(AttributionView(digits, "cnn@1", ids[:2]))
    hub.select("label = 3")
    assert view.ids == hub.ids and view.total == len(hub.ids) > 8
    view.click(0)
    assert hub.ids == [view.ids[0]]  # a click in the view selects its image everywhere
    hub.select(None)
    assert view.ids == ids[:2]  # nothing selected: the images it was built with


def test_browser_requests_are_answered_with_their_version_and_kernel_time(digits, ids):
    view = AttributionView(digits, MODELS, ids, methods=METHODS)
    sent = []
    view.send = lambda content, buffers=None: sent.append((content, buffers or []))
    view._on_message(view, {"kind": "page", "page": 0, "version": view.version}, [])
    view._on_message(view, {"kind": "cells", "page": 0, "version": view.version, "column": 1}, [])
    (page, images), (cells, layers) = sent
    assert page["kind"] == "page" and len(images) == 8 and page["ms"] >= 0
    assert cells["column"] == 1 and cells["version"] == view.version and len(layers) == 8 and cells["ms"] > 0
    view._on_message(view, {"kind": "cells", "page": 0, "version": view.version - 1, "column": 0}, [])
    assert sent[-1] == ({"kind": "cells", "version": view.version, "stale": True}, [])


def test_bad_arguments_are_refused(digits, ids):
    for bad in ({"page_size": 0}, {"size": 4}, {"opacity": 1.5}, {"sign": "up"}):
        with pytest.raises(odinlab.OptionError):
            AttributionView(digits, "cnn@1", ids, **bad)


def test_the_same_selection_again_redraws_nothing(digits, ids):
    view = AttributionView(digits, "cnn@1", ids[:4])
    view.click(1)
    version = view.version
    view.show_selection(ids[:4])
    assert view.version == version and view.selected_ids == []
    view.show_selection([])
    assert view.message == NO_IMAGES and view.version == version + 1


def test_bad_images_and_unregistered_modules_are_messages_not_a_blank_view(digits):
    view = AttributionView(digits, SmallCNN(1, 10, width=4), "no-such-split", methods="saliency")
    assert view.message.startswith("UnknownImageError") and "no-such-split" in view.message
    assert view.models == ["<unregistered SmallCNN>"] and view.methods == ["saliency"]
    assert "register_model" in view.columns[0]["error"]
    view.show_selection(digits.select("test").ids[:2])
    assert view.message == ""
