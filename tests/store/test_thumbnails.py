"""Thumbnails read their pixels chunk by chunk: the bytes must not depend on how the rows are spread."""

import io

import numpy as np
from PIL import Image

import odinlab
from odinlab.store.pixels import to_rgb8


def test_thumbnails_of_rows_spread_over_chunks_equal_those_read_one_by_one(store):
    store.ingest(odinlab.datasets.shapes(n=300, size=64, seed=0))
    assert store.pixel_array.chunks[0] <= 100  # 64×64 RGB: at least three chunks
    ids = store.images["image_id"].to_list()
    order = np.random.default_rng(0).permutation(len(ids))[:40]
    asked = [ids[i] for i in order] + [ids[order[0]]]  # scattered over every chunk, one repeated
    batch = store.thumbnails(asked, size=64)
    assert batch == [store.thumbnails([image_id], size=64)[0] for image_id in asked]
    # at the images' own size a PNG holds exactly their pixels, each in the place asked
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in batch])
    assert np.array_equal(decoded, to_rgb8(store.pixels(asked)))


def test_a_selection_gives_the_same_thumbnails_as_its_ids(store):
    store.ingest(odinlab.datasets.shapes(n=200, size=64, seed=1))
    chosen = store.select("SELECT image_id FROM images WHERE label = 1 ORDER BY image_id DESC")
    assert len(chosen) > 10
    assert store.thumbnails(chosen, size=24) == store.thumbnails(chosen.ids, size=24)
