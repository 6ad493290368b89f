import numpy as np
import polars as pl
import pytest

import odinlab
from odinlab.store.fs import StoreFS, check_name


def test_directory_store_is_created_and_reopened(tmp_path):
    store = odinlab.open_store(tmp_path / "s", create=True)
    store.ingest(np.arange(64, dtype=np.uint8).reshape(1, 8, 8), labels=[0], ids=["one"])
    assert (tmp_path / "s" / "odinlab.json").is_file()
    assert (tmp_path / "s" / "tables" / "manifest.json").is_file()  # names each table's Parquet file
    assert (tmp_path / "s" / store._backend.tables.object_of("images")).is_file()
    assert (tmp_path / "s" / "arrays" / "images" / "pixels" / "zarr.json").is_file()
    again = odinlab.open_store(tmp_path / "s", mode="r")
    assert again.images["image_id"].to_list() == ["one"]
    assert again.pixels(["one"]).ravel().tolist() == list(range(64))


def test_memory_store_is_shared_within_the_process():
    name = "memory://shared-test-store"
    odinlab.open_store(name, mode="w-").ingest(np.zeros((2, 4, 4), np.uint8) + [[[0]], [[1]]])
    assert odinlab.open_store(name, mode="r").images.height == 2


def test_opening_something_that_is_not_a_store_is_refused(tmp_path):
    with pytest.raises(odinlab.StoreError, match="No odinlab store at"):
        odinlab.open_store(tmp_path / "missing", mode="r")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    with pytest.raises(odinlab.StoreError, match="non-empty folder that is not an odinlab store"):
        odinlab.open_store(tmp_path / "docs", create=True)
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "odinlab.json").write_text('{"format": "something-else"}')
    with pytest.raises(OSError, match="not an odinlab store"):
        odinlab.open_store(tmp_path / "fake", create=True)
    odinlab.open_store(tmp_path / "new", create=True)
    with pytest.raises(odinlab.StoreError, match="already exists"):
        odinlab.open_store(tmp_path / "new", mode="w-")
    with pytest.raises(odinlab.StoreError, match="Unknown mode 'x'"):
        odinlab.open_store(tmp_path / "new", mode="x")


def test_store_from_a_newer_odinlab_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "odinlab.json").write_text('{"format": "odinlab-store", "format_version": 99}')
    with pytest.raises(odinlab.StoreError, match="newer odinlab"):
        odinlab.open_store(tmp_path / "s", create=True)


def test_read_only_store_refuses_every_write(tmp_path):
    odinlab.open_store(tmp_path / "s", create=True).ingest(np.zeros((1, 8, 8), np.uint8), labels=[0])
    store = odinlab.open_store(tmp_path / "s", mode="r")
    from odinlab.nets import SmallCNN
    with pytest.raises(odinlab.ReadOnlyStoreError, match="read-only"):
        store.register_model(SmallCNN(1, 1, width=2), "cnn")
    with pytest.raises(PermissionError):
        store.ingest(np.ones((1, 8, 8), np.uint8), labels=[0])


def test_sql_joins_tables_and_metadata(tiny_store):
    tiny_store.ingest(np.full((3, 8, 8), 7, np.uint8) + np.arange(3)[:, None, None].astype(np.uint8),
                      labels=["a", "b", "b"], split="val",
                      metadata={"patient_id": ["p1", "p2", "p2"], "age": [30, 50, 70]})
    per_patient = tiny_store.sql(
        "SELECT patient_id, AVG(age) AS mean_age, COUNT(*) AS n FROM images "
        "WHERE patient_id IS NOT NULL GROUP BY patient_id ORDER BY patient_id")
    assert per_patient.rows() == [("p1", 30.0, 1), ("p2", 60.0, 2)]
    from odinlab.nets import SmallCNN
    tiny_store.register_model(SmallCNN(1, 3, width=2), "cnn", hyperparams={"lr": 1})
    joined = tiny_store.sql("SELECT m.model_id, COUNT(i.image_id) AS n FROM models m "
                            "CROSS JOIN images i WHERE i.label_name = 'b' GROUP BY m.model_id")
    assert joined["n"][0] == tiny_store.images.filter(pl.col("label_name") == "b").height
    assert isinstance(tiny_store.sql("SELECT * FROM experiments"), pl.DataFrame)


def test_refresh_sees_writes_from_another_handle(tmp_path):
    reader = odinlab.open_store(tmp_path / "s", create=True)
    assert reader.images.height == 0  # read (and cached) before the other handle writes
    odinlab.open_store(tmp_path / "s", create=True).ingest(np.zeros((1, 8, 8), np.uint8), labels=[0])
    assert reader.images.height == 0
    assert reader.refresh().images.height == 1 and reader.classes == ["0"]


def test_summary_reports_counts_and_bytes(tiny_store):
    summary = tiny_store.summary()
    assert summary["images"] == 60 and summary["splits"] == {"test": 20, "train": 20, "val": 20}
    assert summary["classes"] == ["a", "b", "c"] and summary["bytes_on_disk"] > 60 * 64 // 4
    assert "60 images" in repr(tiny_store)


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/abs", ".tmp", "a..b", "", None, "ok name"])
def test_path_components_that_could_escape_are_refused(name):
    with pytest.raises(odinlab.InvalidNameError):
        check_name(name)


def test_store_paths_stay_under_the_root(tmp_path):
    fs = StoreFS(tmp_path / "root")
    assert fs.path(("tables", "images.parquet")).startswith(str(tmp_path / "root") + "/")
    with pytest.raises(odinlab.InvalidNameError):
        fs.path(("tables", "..", "..", "etc"))


def test_a_path_with_fsspec_chaining_is_refused(tmp_path):
    """'a::b' is an fsspec chain (a inside b): it would write somewhere else than the path says."""
    for where in (f"simplecache::{tmp_path / 's'}", "memory://a::memory://b", str(tmp_path / "x::y")):
        for mode in ("a", "r", "w-"):
            with pytest.raises(odinlab.StoreError, match="contains '::'.*chain of filesystems"):
                odinlab.open_store(where, mode=mode, create=True)
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
    with pytest.raises(odinlab.StoreError, match="'::'"):
        StoreFS("zip://inner::memory://outer.zip")
