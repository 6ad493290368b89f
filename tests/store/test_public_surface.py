"""The store's public surface that every consumer builds on: selections, model records,
modules held for the session, thumbnails, SQL errors and metrics as frames."""

import gc
import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

import odinlab
from odinlab.nets import SmallCNN


@pytest.fixture
def registered(tiny_store):
    net = SmallCNN(1, 3, width=4)
    v1 = tiny_store.register_model(net, "cnn", hyperparams={"lr": 0.1})
    v2 = tiny_store.register_model(net, "cnn", parent=v1)
    return tiny_store, net, v1, v2


def test_a_selection_is_resolved_once_and_passes_through_unchanged(tiny_store, monkeypatch):
    calls = []
    original = tiny_store.sql
    monkeypatch.setattr(tiny_store._images, "_sql", lambda q: calls.append(q) or original(q))
    selection = tiny_store.select("SELECT image_id FROM images WHERE label = 1")
    assert len(calls) == 1
    assert tiny_store.select(selection) is selection and len(calls) == 1
    assert tiny_store.pixels(selection).shape == (len(selection), 1, 8, 8) and len(calls) == 1
    assert set(selection.labels) == {1}


def test_every_form_of_selection_picks_the_same_images(tiny_store):
    wanted = tiny_store.images.filter((pl.col("split") == "val") & (pl.col("label") == 2))["image_id"].to_list()
    forms = [wanted, pl.Series(wanted), tiny_store.images.filter(pl.col("image_id").is_in(wanted)),
             "SELECT image_id FROM images WHERE split = 'val' AND label = 2",
             (pl.col("split") == "val") & (pl.col("label_name") == "c"),
             tiny_store.select(wanted)]
    for form in forms:
        assert tiny_store.select(form).ids == wanted


def test_selections_index_like_arrays_and_keep_their_store(tiny_store):
    val = tiny_store.select("val")
    assert val[:3].ids == val.ids[:3]
    assert val[np.array([2, 0])].ids == [val.ids[2], val.ids[0]]
    assert val[val.labels == 0].ids == [i for i, y in zip(val.ids, val.labels) if y == 0]
    assert val.where(pl.col("label") == 0).ids == val[val.labels == 0].ids
    assert [len(c) for c in val.chunks(8)] == [8, 8, 4]
    with pytest.raises(TypeError, match="chunks"):
        list(val)
    other = odinlab.open_store("memory://another-store-for-selection", create=True)
    other.ingest(np.zeros((1, 8, 8), np.uint8), labels=[0])
    with pytest.raises(odinlab.SelectionError, match="select again here"):
        other.pixels(val)
    with pytest.raises(odinlab.SelectionError, match="not an image selection"):
        tiny_store.select(42)


def test_an_expression_on_a_missing_column_names_the_columns(tiny_store):
    with pytest.raises(odinlab.UnknownColumnError, match="Columns: image_id, split, label, label_name"):
        tiny_store.select(pl.col("age") > 3)


def test_model_record_is_frozen_and_accepted_wherever_a_model_is(registered):
    store, net, v1, v2 = registered
    record = store.model(v2)
    assert (record.model_id, record.name, record.version, record.parent) == ("cnn@2", "cnn", 2, "cnn@1")
    assert record.classes == ("a", "b", "c") and record.input_shape == (1, 8, 8)
    assert record.lineage == ("cnn@1",) and dict(store.model(v1).hyperparams) == {"lr": 0.1}
    with pytest.raises(AttributeError):
        record.version = 3
    with pytest.raises(TypeError):
        record.hyperparams["lr"] = 1
    assert store.model("cnn") == record and store.model(record) is not None
    assert store.layers(record) == store.layers("cnn@2")
    assert store.model(net).model_id == "cnn@2"  # a module is found by its weights (latest version)


def test_a_module_given_to_the_store_stays_until_the_store_closes(tiny_store):
    model_id = tiny_store.register_model(SmallCNN(1, 3, width=4), "cnn")
    reopened = odinlab.open_store(tiny_store.url)
    with pytest.raises(odinlab.NotMaterializedError, match=r"store.load_weights\(MyNet\(\), 'cnn@1'\)"):
        reopened.module(model_id)
    reopened.load_weights(SmallCNN(1, 3, width=4), model_id)  # the advice, as a bare statement
    gc.collect()
    assert isinstance(reopened.module(model_id), SmallCNN)
    reopened.close()
    with pytest.raises(odinlab.NotMaterializedError):
        reopened.module(model_id)


def test_check_layers_names_the_closest_and_every_layer(registered):
    store, net, v1, _ = registered
    assert store.check_layers(v1, ["head.fc1", "head.fc1", "features.conv1"]) == ["head.fc1", "features.conv1"]
    with pytest.raises(odinlab.UnknownLayerError, match="Did you mean: .*head.fc1.*Layers: features"):
        store.check_layers(v1, "head.fc")


def test_thumbnails_are_png_or_webp_of_the_asked_size(tiny_store):
    pngs = tiny_store.thumbnails(["img-00", "img-01"], size=48)
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG") for p in pngs)
    picture = Image.open(io.BytesIO(pngs[0]))
    assert picture.size == (48, 48)
    grey = np.asarray(picture.convert("L"))
    assert grey[0, 0] == tiny_store.pixels(["img-00"])[0, 0, 0, 0]  # nearest neighbour keeps pixel values
    webp = tiny_store.thumbnails("img-00", size=16, format="webp")[0]
    assert webp[:4] == b"RIFF" and Image.open(io.BytesIO(webp)).size == (16, 16)
    with pytest.raises(odinlab.OptionError, match="png"):
        tiny_store.thumbnails("img-00", format="gif")


def test_sql_names_the_tables_when_one_is_unknown(tiny_store):
    with pytest.raises(odinlab.UnknownTableError, match=r"No table 'model'.*Did you mean: models\?.*predictions"):
        tiny_store.sql("SELECT * FROM model")
    assert tiny_store.sql("SELECT COUNT(*) AS n FROM predictions")["n"][0] == 0
    assert "predictions" in tiny_store.sql("SHOW TABLES")["name"].to_list()


def test_every_error_class_is_exported_from_odinlab():
    import odinlab.errors as errors

    for name in errors.ERRORS:
        assert getattr(odinlab, name) is getattr(errors, name)
    assert issubclass(odinlab.SelectionError, odinlab.OdinError)


def test_a_module_fine_tuned_in_place_is_no_longer_taken_for_its_old_version(tiny_store):
    import torch

    original = SmallCNN(1, 3, width=4)
    v1 = tiny_store.register_model(original, "cnn")
    tuned = tiny_store.load_weights(SmallCNN(1, 3, width=4), v1)
    assert tiny_store.module(v1) is tuned  # the newest module given for v1
    with torch.no_grad():
        tuned.head.fc2.bias.add_(1.0)  # fine-tuning changes the weights in place
    v2 = tiny_store.register_model(tuned, "cnn", parent=v1)
    assert tiny_store.module(v2) is tuned
    assert tiny_store.module(v1) is original  # not tuned: it would compute v1's results with v2's weights
    with torch.no_grad():
        original.head.fc2.bias.add_(1.0)
    with pytest.raises(odinlab.NotMaterializedError):
        tiny_store.module(v1)


def test_pixels_of_something_that_is_not_a_selection_is_refused_with_the_forms(tiny_store):
    with pytest.raises(odinlab.SelectionError, match="images=int is not an image selection.*polars expression"):
        tiny_store.pixels(123)
