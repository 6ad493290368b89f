"""The linking logic of the explorer, with tiny fake views that follow the views' contract."""

import numpy as np
import polars as pl
import pytest

from odinlab.errors import QueryError, SelectionError, UnknownImageError
from odinlab.nets import SmallCNN
from odinlab.widgets.links import SelectionHub

TEST_IDS = [f"img-{i:02d}" for i in range(40, 60)]  # tiny_store's test split


class FakeView:
    """A view as the contract describes it, with a record of what it was shown."""

    def __init__(self, ids):
        self.ids = list(ids)
        self.selected_ids: list[str] = []
        self.shown: list = []  # every show_selection argument, in order
        self._callbacks = []

    def show_selection(self, ids):
        self.shown.append(None if ids is None else list(ids))

    def on_select(self, callback):
        self._callbacks.append(callback)

    def user_selects(self, ids):
        """What the browser does: the view's selection changes and its callbacks run."""
        self.selected_ids = list(ids)
        for callback in self._callbacks:
            callback(list(ids))


class EchoView(FakeView):
    """A badly behaved view that fires its callbacks when shown a selection (ping-pong bait)."""

    def show_selection(self, ids):
        super().show_selection(ids)
        self.user_selects(ids or [])


@pytest.fixture
def hub(tiny_store):
    return SelectionHub(tiny_store, "test")


def test_a_selection_in_one_view_reaches_the_others_and_observers_not_the_origin(hub):
    a, b, c = (hub.add(FakeView(TEST_IDS)) for _ in range(3))
    seen = []
    hub.observe(seen.append)
    a.user_selects(["img-41", "img-45"])
    assert a.shown == []  # never sent back to where it came from
    assert b.shown == c.shown == [["img-41", "img-45"]]
    assert seen == [["img-41", "img-45"]]
    assert hub.ids == ["img-41", "img-45"] and hub.origin is a
    b.user_selects([])  # cleared in b: cleared everywhere else
    assert a.shown == [None] and c.shown[-1] is None and b.shown == [["img-41", "img-45"]]
    assert seen[-1] == [] and hub.selection is None


def test_no_ping_pong_with_a_view_that_echoes(hub):
    echo, plain = hub.add(EchoView(TEST_IDS)), hub.add(FakeView(TEST_IDS))
    seen = []
    hub.observe(seen.append)
    plain.user_selects(["img-50"])
    assert echo.shown == [["img-50"]] and plain.shown == []
    assert seen == [["img-50"]]  # the echo did not start a second round


def test_select_from_python_shows_everywhere(hub, tiny_store):
    a, b = hub.add(FakeView(TEST_IDS)), hub.add(FakeView(TEST_IDS))
    seen = []
    hub.observe(seen.append)

    chosen = hub.select(["img-42", "img-40", "img-42"])  # ids: in order, once each
    assert chosen.ids == ["img-42", "img-40"] and a.shown == b.shown == [["img-42", "img-40"]]

    threes = hub.select(pl.col("label") == 1)  # a polars expression over the images
    expected = tiny_store.select("test").where(pl.col("label") == 1).ids
    assert threes.ids == expected and seen[-1] == expected

    where = hub.select("label = 1 AND split = 'test'")  # SQL WHERE text
    assert where.ids == expected
    assert hub.select("WHERE label = 1").ids == expected
    # restricted to the hub's images: a WHERE that matches other splits brings only test images
    assert hub.select("label = 1").ids == expected
    assert hub.select("SELECT image_id FROM images WHERE label = 1").ids == expected
    assert hub.select("train").ids == []  # a split outside the hub's images: nothing of it here
    assert hub.select("img-44").ids == ["img-44"]  # one image id
    assert hub.select(tiny_store.select(["img-43"])).ids == ["img-43"]  # a Selection
    assert hub.select(pl.DataFrame({"image_id": ["img-47"]})).ids == ["img-47"]

    assert hub.select(None) is None
    assert a.shown[-1] is None and seen[-1] == [] and hub.ids == []
    assert len(seen) == 11


def test_an_empty_result_is_shown_as_empty_not_cleared(hub):
    view = hub.add(FakeView(TEST_IDS))
    assert hub.select("label = 99").ids == []
    assert view.shown == [[]]  # the views say "empty selection", not "everything"


def test_bad_selections_are_refused_clearly(hub):
    hub.add(FakeView(TEST_IDS))
    with pytest.raises(UnknownImageError, match="img-01"):
        hub.select(["img-41", "img-01"])  # a train image: not linked here
    with pytest.raises(QueryError, match="nonexistent"):
        hub.select("nonexistent = 3")
    with pytest.raises(SelectionError, match="column"):
        hub.select(pl.col("nonexistent") == 3)
    with pytest.raises(SelectionError):
        hub.select(3.5)
    assert hub.ids == []  # a failed select changes nothing


def test_a_view_added_late_sees_the_current_selection(hub):
    hub.select(["img-48"])
    late = hub.add(FakeView(TEST_IDS))
    assert late.shown == [["img-48"]]


def test_send_and_receive_only_views(hub):
    source = hub.add(FakeView(TEST_IDS), receive=False)
    sink = hub.add(FakeView(TEST_IDS), send=False)
    sink.user_selects(["img-40"])  # not linked as a sender: ignored
    assert hub.ids == [] and source.shown == []
    source.user_selects(["img-41"])
    assert sink.shown == [["img-41"]] and hub.ids == ["img-41"]
    hub.select(["img-42"])
    assert source.shown == []


def test_a_broken_view_or_observer_does_not_stop_the_others(hub):
    class Broken(FakeView):
        def show_selection(self, ids):
            raise RuntimeError("boom")

    hub.add(Broken(TEST_IDS))
    good = hub.add(FakeView(TEST_IDS))
    seen = []
    hub.observe(lambda ids: 1 / 0)
    hub.observe(seen.append)
    with pytest.warns(UserWarning) as caught:
        hub.select(["img-49"])
    messages = " ".join(str(w.message) for w in caught)
    assert "boom" in messages and "ZeroDivisionError" in messages
    assert good.shown == [["img-49"]] and seen == [["img-49"]]


def test_unobserve_and_observe_as_decorator(hub):
    seen = []

    @hub.observe
    def record(ids):
        seen.append(ids)

    hub.select(["img-40"])
    hub.unobserve(record)
    hub.select(["img-41"])
    assert seen == [["img-40"]]
    with pytest.raises(TypeError):
        hub.observe("not callable")


def test_a_view_selecting_foreign_ids_is_ignored_with_a_warning(hub):
    a, b = hub.add(FakeView(TEST_IDS)), hub.add(FakeView(TEST_IDS))
    with pytest.warns(UserWarning, match="not linked here"):
        a.user_selects(["img-00"])
    assert b.shown == [] and hub.ids == []


def test_something_that_is_not_a_view_is_refused(hub):
    with pytest.raises(TypeError, match="show_selection"):
        hub.add(object())


def test_where_and_expressions_over_prediction_columns(tiny_store):
    net = SmallCNN(in_channels=1, num_classes=3)
    tiny_store.register_model(net, "tiny")
    tiny_store.materialize(net, images="test", progress=False)
    preds = tiny_store.predictions("tiny@1", "test")
    frame = tiny_store.select("test").frame.join(preds.select("image_id", "correct", "loss"), on="image_id",
                                                 how="left", maintain_order="left")
    hub = SelectionHub(tiny_store, "test", model="tiny@1", frame=frame)
    wrong = preds.filter(~pl.col("correct"))["image_id"].to_list()
    assert sorted(hub.select("NOT correct").ids) == sorted(wrong)
    assert sorted(hub.select("NOT correct AND split = 'test'").ids) == sorted(wrong)
    assert sorted(hub.select(~pl.col("correct")).ids) == sorted(wrong)
    worst = preds.sort("loss", descending=True)["image_id"].head(3).to_list()
    # a full query keeps its order (a gallery sorted by loss)
    ordered = hub.select("SELECT image_id FROM predictions WHERE model_id = 'tiny@1' ORDER BY loss DESC LIMIT 3")
    assert ordered.ids == worst
    assert np.isin(hub.select("label = 2").ids, TEST_IDS).all()
