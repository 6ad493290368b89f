"""Label-error ranking on the planted data set: in-sample vs 5-fold cross-validated probabilities.

Ranks the training images of the planted data set (5% of labels flipped, see
tests/debug/planted.py) by label quality and prints precision at k = the number of flipped
labels, for the model's own (in-sample) probabilities and for held-out ones from
``store.cross_validate``, per scoring method, and confident learning's flagged set.

    python bench/label_errors.py            # ~2 minutes on 2 cores
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "debug"))
import planted  # noqa: E402  (the shared recipe of the planted data set)

import odinlab  # noqa: E402
from odinlab.debug import error_analysis as ea  # noqa: E402
from odinlab.nets import SmallCNN  # noqa: E402
from odinlab.training import fit  # noqa: E402


def measure(seed: int) -> list[dict]:
    data = planted.planted_data()
    store = odinlab.open_store(f"memory://bench-label-errors-{seed}", create=True)
    store.ingest(data)
    model_id = planted.train(store, seed)
    store.materialize(model_id, images="train", progress=False)
    flipped = set(np.asarray(data.ids)[data.label_noise & (data.split == "train")])
    rows = []
    for source in ("in-sample", "5-fold held-out"):
        if source != "in-sample":
            started = time.perf_counter()
            store.cross_validate(lambda: SmallCNN(**planted.NET), "train", folds=5, model=model_id, seed=seed,
                                 fit=lambda m, s, i: fit(m, s, i, seed=seed, progress=False, **planted.FIT),
                                 progress=False)
            print(f"  seed {seed}: cross_validate took {time.perf_counter() - started:.0f} s", flush=True)
        for method in ("self_confidence", "normalized_margin"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", odinlab.InSampleWarning)
                ranked = ea.label_errors(store, model_id, "train", method=method)
            top = set(ranked.head(len(flipped))["image_id"])
            marked = set(ranked.filter(pl.col("flagged"))["image_id"])
            rows.append({"seed": seed, "probabilities": source, "method": method, "flipped": len(flipped),
                         "precision_at_k": len(top & flipped) / len(flipped),
                         "flagged": len(marked), "flagged_precision": len(marked & flipped) / max(len(marked), 1),
                         "flagged_recall": len(marked & flipped) / len(flipped)})
    return rows


def main() -> None:
    torch.set_num_threads(2)
    rows = [row for seed in (0, 1, 2) for row in measure(seed)]
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, float_precision=3):
        print(table)
        print(table.group_by("probabilities", "method", maintain_order=True).agg(
            pl.col("precision_at_k").mean(), pl.col("flagged_precision").mean(), pl.col("flagged_recall").mean()))


if __name__ == "__main__":
    main()
