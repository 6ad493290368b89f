"""DetailView: the image, top-k of each model, metadata, the two buttons, bad input."""


import numpy as np
import pytest

import odinlab
from odinlab.sampling import Embedding
from odinlab.widgets.detail import DetailView


@pytest.fixture(scope="module")
def image_id(digits):
    return digits.select("test").ids[0]


def test_shows_the_image_the_top_k_and_the_metadata(digits, image_id):
    detail = DetailView(digits, ["cnn@1", "other@1"], image_id, k=3, size=128)
    assert detail.message == "" and detail.ids == [image_id]
    assert detail.image[:4] == b"\x89PNG" and detail.image == digits.thumbnails([image_id], 128)[0]
    info = detail.info
    row = digits.select([image_id]).frame.row(0, named=True)
    assert info["label"] == row["label"] and info["metadata"]["split"] == "test"
    assert info["metadata"]["ink"] == pytest.approx(row["ink"])
    first, second = info["models"]
    probs = np.asarray(digits.predictions("cnn@1", [image_id])["probabilities"][0])
    assert [t["class"] for t in first["top"]] == list(np.argsort(-probs, kind="stable")[:3])
    assert [t["p"] for t in first["top"]] == pytest.approx(np.sort(probs)[::-1][:3])
    assert first["predicted"] == int(probs.argmax())
    assert second["model_id"] == "other@1" and "store.materialize('other@1'" in second["missing"]


def test_no_image_says_so_and_unknown_ids_are_refused(digits, image_id):
    detail = DetailView(digits, "cnn@1")
    assert detail.message.startswith("no image selected") and detail.ids == []
    detail.show_selection([image_id])
    assert detail.image_id == image_id and detail.message == ""
    detail.show_selection(None)
    assert detail.ids == []
    with pytest.raises(odinlab.UnknownImageError):
        detail.show("no-such-image")


def test_the_attribution_button_draws_an_overlay(digits, image_id):
    detail = DetailView(digits, "cnn@1", image_id, size=64)
    detail._on_message(detail, {"kind": "request", "request": "attribution"}, [])
    assert detail.status == "" and detail.overlay[:4] == b"\x89PNG"
    detail.show(digits.select("test").ids[1])
    assert detail.overlay == b""  # a new image drops the old overlay


def test_requests_go_to_hooks_first(digits, image_id):
    detail = DetailView(digits, "cnn@1", image_id)
    asked = []
    detail.on_request(lambda kind, i: asked.append((kind, i)))  # returns None: passes on
    detail.on_request(lambda kind, i: digits.select("test").ids[1:4] if kind == "neighbours" else None)
    detail.request("neighbours")
    assert asked == [("neighbours", image_id)]
    assert [n["image_id"] for n in detail.neighbours] == digits.select("test").ids[1:4]
    sent = []
    detail.send = lambda content, buffers=None: sent.append((content, buffers))
    detail._on_message(detail, {"kind": "neighbour_thumbs"}, [])
    assert sent[0][0]["ids"] == digits.select("test").ids[1:4] and len(sent[0][1]) == 3
    picked = []
    detail.on_select(picked.append)
    detail._on_message(detail, {"kind": "open_neighbour", "index": 2}, [])
    assert detail.image_id == digits.select("test").ids[3] and picked == [[detail.image_id]]


def test_neighbours_from_an_embedding(digits, image_id):
    embedding = Embedding(digits, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("test")
    detail = DetailView(digits, "cnn@1", image_id, embedding=embedding, n_neighbours=5)
    detail.request("neighbours")
    frame = embedding.frame()
    xy = frame.select("x", "y").to_numpy()
    here = xy[frame["image_id"].to_list().index(image_id)]
    distance = np.linalg.norm(xy - here, axis=1)
    got = [n["image_id"] for n in detail.neighbours]
    assert len(got) == 5 and image_id not in got
    assert [n["distance"] for n in detail.neighbours] == sorted(n["distance"] for n in detail.neighbours)
    assert detail.neighbours[-1]["distance"] <= np.sort(distance)[6] + 1e-9


def test_a_button_without_an_answer_says_why(digits, image_id):
    detail = DetailView(digits, "cnn@1", image_id)
    detail.request("neighbours")
    assert "has no embedding" in detail.status
    with pytest.raises(ValueError, match="Unknown request"):
        detail.request("everything")
