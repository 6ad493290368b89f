"""A store whose images table or pixel array metadata is gone says it is damaged, instead of
looking empty or new."""

import numpy as np
import pytest

import odinlab


@pytest.fixture
def on_disk(tmp_path):
    store = odinlab.open_store(tmp_path / "s", create=True)
    store.ingest(np.arange(3 * 64, dtype=np.uint8).reshape(3, 8, 8), labels=[0, 1, 0])
    return tmp_path / "s"


def test_a_deleted_images_table_is_damage_not_an_empty_store(on_disk):
    (on_disk / odinlab.open_store(on_disk)._backend.tables.object_of("images")).unlink()
    store = odinlab.open_store(on_disk)
    with pytest.raises(odinlab.CorruptStoreError, match="holds 3 images' pixels but its images table"):
        store.images
    with pytest.raises(odinlab.CorruptStoreError):
        store.select("train")


def test_a_deleted_pixel_array_is_damage_not_no_images_yet(on_disk):
    (on_disk / "arrays" / "images" / "pixels" / "zarr.json").unlink()
    store = odinlab.open_store(on_disk)
    with pytest.raises(odinlab.CorruptStoreError, match="lists 3 images but their pixel array"):
        store.pixels()


def test_an_empty_store_is_still_empty_not_damaged(tmp_path):
    store = odinlab.open_store(tmp_path / "new", create=True)
    assert store.images.height == 0
    with pytest.raises(odinlab.UnknownImageError, match="no images yet"):
        store.pixel_array
