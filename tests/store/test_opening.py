"""Opening a store: a typo never creates one, a file is not a folder, creation is asked for."""

import numpy as np
import pytest

import odinlab


def test_a_mistyped_path_is_refused_leaves_nothing_behind_and_names_the_close_store(tmp_path):
    odinlab.open_store(tmp_path / "odinlab-demo-store", create=True)
    with pytest.raises(odinlab.StoreError) as error:
        odinlab.open_store(tmp_path / "odinlab-demo-stor")
    message = str(error.value)
    assert "No odinlab store at" in message and "Did you mean: odinlab-demo-store?" in message
    assert "create=True" in message
    assert not (tmp_path / "odinlab-demo-stor").exists()


def test_create_makes_a_store_and_then_opens_it(tmp_path):
    made = odinlab.open_store(tmp_path / "new", create=True)
    made.ingest(np.zeros((1, 8, 8), np.uint8), labels=[0])
    assert odinlab.open_store(tmp_path / "new").images.height == 1
    assert odinlab.open_store(tmp_path / "new", create=True).images.height == 1  # create=True opens too


def test_a_file_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(odinlab.StoreError, match="is a file"):
        odinlab.open_store(tmp_path / "notes.txt")


def test_memory_store_needs_create_too():
    with pytest.raises(odinlab.StoreError, match="create=True"):
        odinlab.open_store("memory://never-made")
