"""The image detail: one image large, the top-k probabilities of each model, its metadata, and
buttons that ask the kernel for its attribution overlay or its nearest neighbours."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from odinlab.widgets.gallery import _Callbacks, materialize_hint

__all__ = ["DetailView"]

REQUESTS = ("attribution", "neighbours")


def _png(rgb: np.ndarray, size: int) -> bytes:
    """An (H, W, 3) uint8 picture as PNG, its longer side scaled to ``size`` (sharp pixels when enlarged)."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(rgb))
    scale = size / max(picture.size)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), resample)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def nearest(frame, image_id: str, n: int) -> list[dict]:
    """The ``n`` images nearest ``image_id`` in an embedding's frame (image_id, x, y[, z]), nearest first.

    >>> frame = pl.DataFrame({"image_id": ["a", "b", "c"], "x": [0.0, 1.0, 5.0], "y": [0.0, 0.0, 0.0]})
    >>> [found["image_id"] for found in nearest(frame, "a", 2)]
    ['b', 'c']
    """
    coords = frame.select([c for c in ("x", "y", "z") if c in frame.columns]).to_numpy()
    ids = frame["image_id"].to_list()
    if image_id not in ids:
        raise ValueError(f"{image_id} is not among the {len(ids)} images of the embedding")
    distance = np.linalg.norm(coords - coords[ids.index(image_id)], axis=1)
    order = [i for i in np.argsort(distance, kind="stable") if ids[i] != image_id][:n]
    return [{"image_id": ids[i], "distance": float(distance[i])} for i in order]


def _plain(value):
    """A metadata value as JSON can carry it."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class DetailView(anywidget.AnyWidget):
    """One image large, with the top-``k`` classes of each of ``models`` and its metadata.

    ``models`` is one model reference or a list. The "attribution" button computes the first
    model's attribution (``Attributor(store, model, method=attribution_method)``, drawn with
    ``odinlab.draw.images.overlay``) unless an ``on_request`` callback answers it; the
    "neighbours" button lists the nearest images in ``embedding`` (a fitted
    ``odinlab.sampling.Embedding``) unless a callback answers it. A callback
    ``callback(kind, image_id)`` that returns something other than None has answered: a PNG
    (bytes) or an (H, W, 3) array for ``"attribution"``, a list of image ids for ``"neighbours"``.

    >>> _ = store.materialize(net, images="test", progress=False)
    >>> detail = DetailView(store, ["cnn@1"], "digits-0002")
    >>> detail.show("digits-0039")
    >>> detail.image_id
    'digits-0039'
    >>> detail.request("attribution")   # what the button does
    """

    _esm = Path(__file__).with_name("detail.js")
    _css = Path(__file__).with_name("detail.css")

    message = traitlets.Unicode("").tag(sync=True)
    image_id = traitlets.Unicode("").tag(sync=True)
    image = traitlets.Bytes(b"").tag(sync=True)       # PNG, ``size`` pixels on its longer side
    overlay = traitlets.Bytes(b"").tag(sync=True)     # PNG of the attribution overlay ("" = not asked)
    info = traitlets.Dict().tag(sync=True)            # label, split, metadata, per-model top-k
    neighbours = traitlets.List(traitlets.Dict()).tag(sync=True)  # [{image_id, label_name, distance}]
    status = traitlets.Unicode("").tag(sync=True)     # the answer to a button ("computing...", an error)
    size = traitlets.Int(256).tag(sync=True)

    def __init__(self, store, models, image_id: str | None = None, *, k: int = 5, size: int = 256,
                 embedding=None, attribution_method: str = "saliency", n_neighbours: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.store = store
        models = models if isinstance(models, (list, tuple)) else [models]
        self.records = [store.model(m) for m in models]
        self.model_ids = [r.model_id for r in self.records]
        self.k, self.size = int(k), int(size)
        self.embedding = embedding
        self.attribution_method = attribution_method
        self.n_neighbours = int(n_neighbours)
        self._request_callbacks: list[Callable] = []
        self._select_callbacks = _Callbacks()
        self._neighbour_thumbs: list[bytes] = []
        self.on_msg(self._on_message)
        self.show(image_id)

    # -- showing an image --------------------------------------------------------------------------

    def show(self, image_id: str | None) -> None:
        """Show ``image_id`` (None: nothing, with a message)."""
        with self.hold_trait_notifications():
            self.overlay, self.neighbours, self.status = b"", [], ""
            self._neighbour_thumbs = []
            if not image_id:
                self.image_id, self.image, self.info = "", b"", {}
                self.message = "no image selected: click a thumbnail to see it here"
                return
            image_id = str(image_id)
            selection = self.store.select([image_id])  # an unknown id raises UnknownImageError, naming close ones
            self.image_id = image_id
            self.image = self.store.thumbnails([image_id], self.size)[0]
            self.info = self._info(image_id, selection)
            self.message = ""

    def _info(self, image_id: str, selection) -> dict:
        row = selection.frame.row(0, named=True)
        metadata = {k: _plain(v) for k, v in row.items() if k not in ("image_id", "label", "label_name")}
        models = []
        for record in self.records:
            frame = self.store.predictions(record, selection)
            entry = {"model_id": record.model_id}
            if frame.height == 0:
                entry["missing"] = (f"no stored predictions of {record.model_id} for {image_id}: "
                                    f"{materialize_hint(record.model_id, repr(image_id))}")
            else:
                p = frame.row(0, named=True)
                probs = np.asarray(p["probabilities"], np.float64)
                top = np.argsort(-probs, kind="stable")[: self.k]
                classes = list(record.classes)
                entry.update(
                    predicted=int(p["predicted"]), predicted_name=classes[int(p["predicted"])],
                    correct=p["correct"], confidence=float(p["confidence"]), margin=float(p["margin"]),
                    loss=None if p["loss"] is None else float(p["loss"]),
                    top=[{"class": int(c), "name": classes[c], "p": float(probs[c])} for c in top])
            models.append(entry)
        return {"image_id": image_id, "label": _plain(row.get("label")), "label_name": row.get("label_name"),
                "metadata": metadata, "models": models}

    # -- the buttons --------------------------------------------------------------------------------

    def on_request(self, callback: Callable[[str, str], object]) -> Callable:
        """Call ``callback(kind, image_id)`` when a button asks for ``"attribution"`` or ``"neighbours"``.

        A callback that returns None lets the next one (or the built-in answer) reply."""
        if not callable(callback):
            raise TypeError(f"A callback must be callable, not {type(callback).__name__}.")
        self._request_callbacks.append(callback)
        return callback

    def request(self, kind: str) -> None:
        """What a button does: ask for the current image's ``"attribution"`` or ``"neighbours"``."""
        if kind not in REQUESTS:
            raise ValueError(f"Unknown request {kind!r}; use one of {', '.join(REQUESTS)}.")
        if not self.image_id:
            self.status = "no image selected"
            return
        self.status = f"computing the {kind}..."
        try:
            answer = None
            for callback in self._request_callbacks:
                answer = callback(kind, self.image_id)
                if answer is not None:
                    break
            if kind == "attribution":
                self._show_overlay(answer if answer is not None else self._attribution())
            else:
                self._show_neighbours(answer if answer is not None else self._nearest())
            self.status = ""
        except Exception as error:  # noqa: BLE001 - the message goes to the widget: a button never fails silently
            self.status = f"{kind} failed: {type(error).__name__}: {error}"

    def _attribution(self) -> np.ndarray:
        from odinlab.debug.attribution import Attributor
        from odinlab.draw.images import overlay

        attributor = Attributor(self.store, self.records[0], method=self.attribution_method)
        maps = attributor.attribute([self.image_id], progress=False)
        return overlay(self.store.pixels([self.image_id])[0], maps.values[0])

    def _show_overlay(self, answer) -> None:
        if isinstance(answer, bytes):
            self.overlay = answer
        else:
            self.overlay = _png(np.asarray(answer, np.uint8), self.size)

    def _nearest(self) -> list[dict]:
        if self.embedding is None:
            raise ValueError("this view has no embedding; give DetailView(..., embedding=Embedding(store, model, "
                             "layer).fit(images)) or hook on_request")
        return nearest(self.embedding.frame(), self.image_id, self.n_neighbours)

    def _show_neighbours(self, answer) -> None:
        found = [a if isinstance(a, dict) else {"image_id": str(a)} for a in answer]
        if found:
            names = self.store.select([f["image_id"] for f in found]).frame
            label_of = dict(zip(names["image_id"], names["label_name"], strict=True))
            for f in found:
                f["label_name"] = label_of.get(f["image_id"])
        self._neighbour_thumbs = self.store.thumbnails([f["image_id"] for f in found], 64) if found else []
        self.neighbours = found

    def _on_message(self, widget, content, buffers) -> None:
        if not isinstance(content, dict):
            return
        if content.get("kind") == "request" and content.get("request") in REQUESTS:
            self.request(content["request"])
        elif content.get("kind") == "neighbour_thumbs":
            self.send({"kind": "neighbour_thumbs", "image_id": self.image_id,
                       "ids": [f["image_id"] for f in self.neighbours]}, buffers=self._neighbour_thumbs)
        elif content.get("kind") == "open_neighbour":
            index = content.get("index")
            if isinstance(index, int) and 0 <= index < len(self.neighbours):
                image_id = self.neighbours[index]["image_id"]
                self.show(image_id)
                self._select_callbacks([image_id])

    # -- the contract ---------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return [self.image_id] if self.image_id else []

    @property
    def selected_ids(self) -> list[str]:
        return self.ids

    def show_selection(self, ids: list[str] | None) -> None:
        """Show the first of ``ids`` (None or empty: nothing). No callbacks."""
        self.show(ids[0] if ids else None)

    def on_select(self, callback: Callable[[list[str]], None]) -> Callable:
        """Call ``callback([image_id])`` when the user opens a neighbour from the detail."""
        return self._select_callbacks.add(callback)

    def __repr__(self) -> str:
        return f"<DetailView {', '.join(self.model_ids)}: {self.image_id or 'no image'}>"
