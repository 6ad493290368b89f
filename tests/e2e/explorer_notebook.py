"""The notebook the browser tests open, and the store it reads (plain helpers, no pytest).

``build_store(folder)`` writes the store the way tests/widgets/conftest.py builds its ``digits``
store, but on disk so that a notebook kernel can open it; ``serve_folder`` lays out a folder for a
Jupyter server: the notebook (:data:`CELLS`) and a copy of the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lab

NOTEBOOK = "explore.ipynb"
# The two cells a person would write; the explorer is the last expression, so the cell shows it.
CELLS = [
    "import json\nimport odinlab\nstore = odinlab.open_store('store')",
    'ex = odinlab.explore(store, "cnn", layer="head.fc1", images="test", color="correct")\nex',
]


def build_store(folder) -> tuple[Path, object]:
    """Digits, a tiny CNN trained briefly (plenty of mistakes), its test predictions and head.fc1 stored,
    in ``folder/store``; and the explorer of the notebook built over it in this process, which fits
    and caches the embedding in the store (so a kernel reads it instead of fitting it again).

    Returns (the store's folder, the Explorer). Example (about 25 s: it trains and fits UMAP, so it
    is not run as a doctest)::

        path, explorer = build_store(tempfile.mkdtemp())
        path.name, explorer.frame.height     # ('store', 270)
    """
    import torch

    import odinlab
    from odinlab.nets import SmallCNN
    from odinlab.training import fit

    torch.manual_seed(0)
    path = Path(folder) / "store"
    store = odinlab.open_store(str(path), create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=4)
    fit(net, store, "train", epochs=2, progress=False)
    store.register_model(net, "cnn")
    store.materialize(net, ["head.fc1"], images="test", progress=False)
    explorer = odinlab.explore(store, "cnn", layer="head.fc1", images="test", color="correct", progress=False)
    return path, explorer


def serve_folder(store_path, folder) -> Path:
    """``folder`` with the notebook and a copy of the store at ``store_path`` (a kernel may write caches
    into its store; each server gets its own copy). Returns ``folder``.

    >>> import tempfile
    >>> source = Path(tempfile.mkdtemp()); (source / "store").mkdir()
    >>> sorted(p.name for p in serve_folder(source / "store", tempfile.mkdtemp()).iterdir())
    ['explore.ipynb', 'store']
    """
    folder = Path(folder)
    shutil.copytree(store_path, folder / "store")
    lab.write_notebook(folder / NOTEBOOK, CELLS)
    return folder
