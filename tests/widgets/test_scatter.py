"""The embedding scatter widget, without a browser: its traits, its selection and its bad input."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from odinlab.errors import DuplicateImageError, OdinError, OptionError, UnknownColumnError
from odinlab.widgets.scatter import ScatterView, class_color, encode_colors, normalize_points, palette


def _view(n=10, **kwargs):
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}" for i in range(n)]
    return ScatterView(rng.normal(size=n), rng.normal(size=n) * 3, ids, **kwargs), ids


def _browser_selects(view, indices):
    """What a lasso in the browser does: a packed little-endian mask arrives as a memoryview."""
    bits = np.zeros(len(view.ids), dtype=bool)
    bits[list(indices)] = True
    view.set_state({"selection_mask": memoryview(np.packbits(bits, bitorder="little").tobytes())})


def _decoded(view):
    """What the browser draws: uint16 x, y back in [-1, 1]."""
    return np.frombuffer(view.points, dtype=np.uint16).reshape(-1, 2) * (2 / 65535) - 1


def _sent(view):
    """Messages the widget sends to the browser: (content, buffers)."""
    sent = []
    view.send = lambda content, buffers=None: sent.append((content, buffers or []))
    return sent


def _changes(view, *names):
    seen = []
    view.observe(lambda change: seen.append(change["name"]), names=list(names))
    return seen


def test_points_are_uint16_4_bytes_and_colors_1_byte_a_point():
    view, ids = _view(1001, color=np.arange(1001) % 7)
    assert isinstance(view.points, bytes) and len(view.points) == 4 * 1001
    assert isinstance(view.colors, bytes) and len(view.colors) == 1001
    assert view.sizes == b"" and view.selection_mask == b"" and view.message == ""
    xy = _decoded(view)
    assert np.abs(xy).max() <= 1.0 and np.isclose(np.abs(xy).max(), 0.95, atol=1e-3)
    assert list(np.frombuffer(view.colors, np.uint8)[:8]) == [0, 1, 2, 3, 4, 5, 6, 0]
    assert [item["label"] for item in view.legend["items"]] == [str(i) for i in range(7)]
    assert view.ids == ids


def test_both_axes_share_one_scale_so_the_embedding_keeps_its_shape():
    view = ScatterView([0, 10, 5], [0, 1, 0.5], ["a", "b", "c"])
    xy = _decoded(view)
    assert np.allclose(xy[:, 0], [-0.95, 0.95, 0.0], atol=1e-4)
    assert np.allclose(xy[:, 1], [-0.095, 0.095, 0.0], atol=1e-4)


def test_no_geometry_or_numbers_travel_as_json():
    view, _ = _view(50, color=["a", "b"] * 25, size=np.arange(50))
    state = view.get_state()
    json_traits = {name: value for name, value in state.items() if not isinstance(value, (bytes, memoryview))}
    assert "points" not in json_traits and "colors" not in json_traits and "sizes" not in json_traits
    assert len(repr(json_traits["legend"])) < 1000


def test_the_geometry_is_never_in_the_widget_state_but_answers_each_ready_message():
    view, _ = _view(300, color=["a", "b", "c"] * 100)
    state = view.get_state()
    assert "points" not in state and sum(len(v) for v in state.values() if isinstance(v, bytes)) == 300
    sent = _sent(view)
    for _ in range(2):  # a second view of the same widget asks again
        view._handle_custom_msg({"type": "ready"}, [])
    assert [content for content, _ in sent] == [{"type": "points", "n": 300}] * 2
    assert all(buffers == [view.points] and len(buffers[0]) == 4 * 300 for _, buffers in sent)
    view._handle_custom_msg({"type": "something else"}, [])
    assert len(sent) == 2


def test_uint16_geometry_is_finer_than_a_pixel_of_a_zoomed_canvas():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=5000), rng.uniform(-7, 3, size=5000)
    view = ScatterView(x, y, [str(i) for i in range(5000)])
    exact = np.frombuffer(normalize_points(x, y), np.float32).reshape(-1, 2)
    # 1000 px across [-1, 1] zoomed 50x: 25,000 px for 2 units; the error stays under a pixel
    assert np.abs(_decoded(view) - exact).max() * 25_000 / 2 < 1


def test_recolor_sends_colors_and_legend_but_never_the_points():
    view, _ = _view(200, color=["x", "y"] * 100)
    seen = _changes(view, "points", "colors", "legend", "selection_mask")
    sent = _sent(view)
    view.recolor(np.linspace(0, 1, 200))
    assert sent == [] and "points" not in seen and seen.count("colors") == 1 and seen.count("legend") == 1
    assert view.legend["kind"] == "continuous" and len(view.colors) == 200
    assert np.frombuffer(view.colors, np.uint8)[[0, -1]].tolist() == [0, 255]


def test_recolor_by_a_column_of_the_frame():
    frame = pl.DataFrame({"image_id": ["a", "b", "c"], "x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 1.0],
                          "label_name": ["cat", "dog", "cat"], "correct": [True, False, True]})
    view = ScatterView.from_frame(frame, color="label_name")
    assert view.ids == ["a", "b", "c"] and view.legend["title"] == "label_name"
    assert [i["label"] for i in view.legend["items"]] == ["cat", "dog"]
    seen = _changes(view, "points")
    view.recolor("correct")
    assert seen == [] and view.legend["title"] == "correct"
    assert np.frombuffer(view.colors, np.uint8).tolist() == [1, 0, 1]


def test_a_browser_selection_arrives_as_a_bitmask_and_becomes_ids():
    view, ids = _view(21)
    got = []
    view.on_select(got.append)
    _browser_selects(view, [0, 7, 8, 20])
    assert got == [[ids[0], ids[7], ids[8], ids[20]]]
    assert view.selected_ids == [ids[0], ids[7], ids[8], ids[20]]
    assert len(view.selection_mask) == 3  # ceil(21 / 8)
    view.set_state({"selection_mask": memoryview(b"")})  # cleared in the browser
    assert got[-1] == [] and view.selected_ids == []


def test_show_selection_round_trips_through_the_mask_without_calling_callbacks():
    view, ids = _view(100)
    got = []
    view.on_select(got.append)
    view.show_selection([ids[3], ids[99], "not-a-point"])
    assert got == [] and view.selected_ids == [ids[3], ids[99]]
    bits = np.unpackbits(np.frombuffer(view.selection_mask, np.uint8), bitorder="little", count=100)
    assert np.flatnonzero(bits).tolist() == [3, 99]
    view.show_selection(None)
    assert got == [] and view.selected_ids == [] and view.selection_mask == b""


def test_a_selection_of_a_million_points_stays_small():
    n = 1_000_000
    view = ScatterView(np.arange(n, dtype=float), np.zeros(n), [str(i) for i in range(n)])
    view.show_selection([str(i) for i in range(0, n, 2)])
    assert len(view.selection_mask) == n // 8 and len(view.selected_ids) == n // 2


def test_on_select_callbacks_can_be_removed():
    view, ids = _view(8)
    got = []
    view.on_select(got.append)
    view.on_select(got.append, remove=True)
    _browser_selects(view, [1])
    assert got == [] and view.selected_ids == [ids[1]]


def test_nothing_to_show_gives_a_message_in_the_widget():
    assert ScatterView([], [], []).message == "No points to show: the selection is empty."
    assert "No points" in ScatterView().message
    empty = pl.DataFrame({"image_id": [], "x": [], "y": []}, schema={"image_id": pl.String, "x": pl.Float64,
                                                                  "y": pl.Float64})
    view = ScatterView.from_frame(empty)
    assert view.message and view.ids == [] and view.selected_ids == [] and view.points == b""
    view.show_selection(["a"])
    view.recolor([])
    assert view.selected_ids == []


def test_inconsistent_input_is_a_clear_error_at_construction():
    with pytest.raises(OptionError, match="x has 3 values and y has 2"):
        ScatterView([1, 2, 3], [1, 2], ["a", "b", "c"])
    with pytest.raises(OptionError, match="ids has 2 values but there are 3 points"):
        ScatterView([1, 2, 3], [1, 2, 3], ["a", "b"])
    with pytest.raises(OptionError, match="color has 2 values but the scatter has 3 points"):
        ScatterView([1, 2, 3], [1, 2, 3], ["a", "b", "c"], color=[1, 2])
    with pytest.raises(OptionError, match="1 points have a NaN"):
        ScatterView([1, np.nan, 3], [1, 2, 3], ["a", "b", "c"])
    with pytest.raises(DuplicateImageError, match="'a' appears more than once"):
        ScatterView([1, 2], [1, 2], ["a", "a"])
    with pytest.raises(OptionError, match="must hold numbers"):
        ScatterView(["p", "q"], [1, 2], ["a", "b"])
    frame = pl.DataFrame({"image_id": ["a"], "x": [0.0], "y": [0.0], "label_name": ["cat"]})
    with pytest.raises(UnknownColumnError, match="Did you mean: label_name"):
        ScatterView.from_frame(frame, color="label_nam")
    with pytest.raises(UnknownColumnError, match="no column 'y'"):
        ScatterView.from_frame(frame.drop("y"))
    with pytest.raises(OdinError, match="not built from a frame"):
        ScatterView([0], [0], ["a"]).recolor("label")


def test_categorical_colors_name_classes_and_cap_the_number_of_categories():
    codes, legend = encode_colors([2, 0, 2, None], 4, legend=["zero", "one", "two"], title="label")
    assert list(codes) == [1, 0, 1, 2]
    assert [i["label"] for i in legend["items"]] == ["zero", "two", "(missing)"]
    assert [i["count"] for i in legend["items"]] == [1, 2, 1]
    values = [f"c{i}" for i in range(300)] + ["c0"] * 5
    codes, legend = encode_colors(values, len(values))
    assert len(legend["items"]) == 256 and legend["items"][-1]["label"] == "other"
    assert len(set(legend["colors"][:-1])) == 255 and max(codes) == 255


def test_sizes_travel_as_one_byte_a_point():
    view, _ = _view(5, size=[0.0, 0.25, 0.5, 1.0, np.nan])
    assert np.frombuffer(view.sizes, np.uint8).tolist() == [0, 64, 128, 255, 0]


def test_the_widget_files_sit_beside_the_module_and_have_the_dom_hooks():
    view, _ = _view(3)
    js = Path(view._esm).read_text() if isinstance(view._esm, Path) else str(view._esm)
    css = Path(view._css).read_text() if isinstance(view._css, Path) else str(view._css)
    for hook in ("odinlab-scatter", "odinlab-legend", "odinlab-message", "selection_mask", "odinlab-overlay",
                 "odinlab-overlay-canvas", "odinlab-tooltip-image", "overlay_data", "hover_images"):
        assert hook in js
    assert ".odinlab-scatter" in css and ".odinlab-legend" in css
    assert "import(" not in js and "from\"http" not in js.replace(" ", "")  # no network imports


# -- class colors ----------------------------------------------------------------------------------------

CLASSES = ["zero", "one", "two", "three", "four"]


def _legend_colors(values, classes=CLASSES):
    _, legend = encode_colors(values, len(values), legend=classes, title="label")
    return {item["label"]: item["color"] for item in legend["items"]}


def test_a_class_gets_the_same_color_by_label_and_by_prediction_whatever_classes_are_present():
    by_label = _legend_colors([0, 1, 2, 3, 4, 2])
    by_predicted = _legend_colors([3, 3, 2, 4])  # classes 0 and 1 never predicted
    assert list(by_predicted) == ["two", "three", "four"]  # the legend lists the classes present
    for name, color in by_predicted.items():
        k = CLASSES.index(name)
        assert by_label[name] == color == class_color(k, len(CLASSES)) == palette(5)[k]


def test_class_codes_index_the_legend_colors_and_counts_are_kept():
    codes, legend = encode_colors([4, 4, 1, None], 4, legend=CLASSES, title="predicted")
    colors = [legend["colors"][c] for c in codes]
    assert colors == [class_color(4, 5), class_color(4, 5), class_color(1, 5), "#bbbbbb"]
    assert [(i["label"], i["count"]) for i in legend["items"]] == [("one", 1), ("four", 2), ("(missing)", 1)]


def test_many_classes_stay_categories_with_their_own_colors():
    classes = [f"c{i}" for i in range(100)]  # more than the 64 integer values colored as categories by default
    values = [99, 0, 50] * 30 + list(range(70))
    _, legend = encode_colors(values, len(values), legend=classes)
    assert legend["kind"] == "categorical"
    colors = {item["label"]: item["color"] for item in legend["items"]}
    assert colors["c99"] == class_color(99, 100) and colors["c50"] == palette(100)[50]
    _, plain = encode_colors(values, len(values))  # without class names: a scale, as before
    assert plain["kind"] == "continuous"


def test_class_color_refuses_an_index_outside_the_classes():
    with pytest.raises(OptionError, match=r"from 0 to 9"):
        class_color(10, 10)
    with pytest.raises(OptionError, match="must be an integer"):
        class_color("3", 10)


# -- hover ---------------------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_a_hover_message_is_answered_with_the_providers_png_and_caption():
    view, ids = _view(5)
    asked = []
    view.set_hover(lambda image_id: (asked.append(image_id) or PNG, f"label of {image_id}"))
    assert view.hover_images is True
    sent = _sent(view)
    view._handle_custom_msg({"type": "hover", "index": 3}, [])
    assert asked == [ids[3]]
    assert sent == [({"type": "hover", "index": 3, "id": ids[3], "caption": f"label of {ids[3]}",
                      "mime": "image/png"}, [PNG])]


def test_a_provider_that_raises_answers_with_the_id_and_the_errors_first_line():
    view, ids = _view(3)

    def broken(image_id):
        raise KeyError(f"no thumbnail for {image_id}\nmore detail")

    view.set_hover(broken)
    sent = _sent(view)
    view._handle_custom_msg({"type": "hover", "index": 1}, [])
    content, buffers = sent[0]
    assert buffers == [] and content["error"] is True and content["index"] == 1
    assert content["caption"] == f"{ids[1]}: KeyError: no thumbnail for {ids[1]}"


def test_hover_requests_outside_the_points_or_without_a_provider_get_no_answer():
    view, _ = _view(3)
    sent = _sent(view)
    view._handle_custom_msg({"type": "hover", "index": 0}, [])  # no provider
    view.set_hover(lambda image_id: (PNG, image_id))
    for index in (-1, 3, "1", None, True):
        view._handle_custom_msg({"type": "hover", "index": index}, [])
    assert sent == []
    view.set_hover(None)
    view._handle_custom_msg({"type": "hover", "index": 0}, [])
    assert sent == [] and view.hover_images is False
    with pytest.raises(OptionError, match="set_hover needs a function"):
        view.set_hover("thumbnails")


# -- overlays ------------------------------------------------------------------------------------------

def _overlay_xy(view, name):
    entry = next(e for e in view.overlay_data if e["name"] == name)
    return np.frombuffer(entry["xy"], np.float32).reshape(-1, 2)


def test_an_overlay_point_at_a_points_coordinates_is_drawn_where_that_point_is():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=400) * 5 + 2, rng.normal(size=400)
    view = ScatterView(x, y, [str(i) for i in range(400)])
    chosen = [0, 17, 399]
    view.set_overlay("twins", x[chosen], y[chosen])
    assert np.abs(_overlay_xy(view, "twins") - _decoded(view)[chosen]).max() <= 1 / 65535 + 1e-6
    view.set_overlay("outside", [x.max() + 10 * x.std()], [0.0])  # beyond the points: beyond [-1, 1], kept
    assert _overlay_xy(view, "outside")[0, 0] > 1.5


def test_overlays_travel_as_bytes_and_a_saved_state_grows_by_their_size_only():
    view, _ = _view(50)
    before = view.get_state()
    view.set_overlay("sample", np.arange(1000.0), np.arange(1000.0), color=["#111111", "#ff0000"] * 500,
                     size=np.linspace(0, 1, 1000))
    from ipywidgets.widgets.widget import _remove_buffers

    state, _, buffers = _remove_buffers(view.get_state())
    points_bytes = sum(len(v) for v in before.values() if isinstance(v, bytes))
    assert sum(len(bytes(b)) for b in buffers) - points_bytes == 10 * 1000  # xy 8, color 1, size 1 a mark
    assert len(json.dumps(state["overlay_data"])) < 300  # names, colors: no numbers as JSON
    entry = view.overlay_data[0]
    assert entry["colors"] == ["#111111", "#ff0000"]
    assert np.frombuffer(entry["codes"], np.uint8)[:3].tolist() == [0, 1, 0]
    assert np.frombuffer(entry["sizes"], np.uint8)[[0, -1]].tolist() == [0, 255]


def test_overlays_are_listed_replaced_on_top_and_cleared():
    view, _ = _view(10)
    view.set_overlay("a", [0.0], [0.0], labels=["the origin"])
    view.set_overlay("b", [1.0, 2.0], [1.0, 2.0], color="#0F0")
    view.set_overlay("a", [0.0, 1.0, 2.0], [0.0, 0.0, 0.0])  # replaced: drawn last, on top
    assert view.overlays == {"b": 2, "a": 3} and [e["name"] for e in view.overlay_data] == ["b", "a"]
    assert view.overlay_data[0]["colors"] == ["#0f0"] and view.overlay_data[0]["codes"] == b""
    view.clear_overlay("b")
    assert view.overlays == {"a": 3}
    with pytest.raises(OptionError, match="No overlay 'sample'.*Overlays: a"):
        view.clear_overlay("sample")
    view.clear_overlay()
    assert view.overlays == {} and view.overlay_data == []


@pytest.mark.parametrize(("options", "message"), [
    ({"x": [0.0, 1.0]}, "has 2 x and 1 y"),
    ({"x": [np.nan]}, "1 points with a NaN"),
    ({"color": "red"}, "'red', not a color; give a hex color"),
    ({"color": ["#111111", "#222222"]}, "color has 2 values but the overlay has 1 point"),
    ({"color": ["#111111"] * 0 + ["blue"]}, r"color\[0\] is 'blue'"),
    ({"size": [1.0, 2.0]}, "size has 2 values but the overlay 'o' has 1 points"),
    ({"size": 3.0}, "size is one number"),
    ({"labels": ["a", "b"]}, "labels has 2 texts but the overlay has 1 points"),
    ({"labels": "a"}, "labels is one string"),
    ({"name": ""}, "needs a name"),
])
def test_bad_overlays_are_refused_with_the_value_and_the_fix(options, message):
    view, _ = _view(4)
    arguments = {"name": "o", "x": [0.0], "y": [0.0], **options}
    with pytest.raises(OptionError, match=message):
        view.set_overlay(arguments.pop("name"), arguments.pop("x"), arguments.pop("y"), **arguments)
    assert view.overlays == {}


def test_an_empty_scatter_cannot_place_an_overlay():
    with pytest.raises(OptionError, match="no points to place it against"):
        ScatterView([], [], []).set_overlay("o", [0.0], [0.0])


def test_the_css_scopes_its_message_rules_to_the_scatter():
    view, _ = _view(3)
    css = Path(view._css).read_text() if isinstance(view._css, Path) else str(view._css)
    selectors = [line for line in css.splitlines() if ".odinlab-message" in line]
    assert selectors and all(line.lstrip().startswith(".odinlab-scatter") for line in selectors)
    assert "min-width: 0" in css
