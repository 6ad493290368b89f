"""The store's tables: polars DataFrames persisted as Parquet, one file per table.

A table is rewritten whole on every change (tables hold rows of metadata, not pixels, so
they stay small) and replaced atomically, which gives readers a consistent snapshot and a
crash-safe commit point: a change is in the store once its table file has been replaced.
"""

from __future__ import annotations

import io

import polars as pl

from odinlab.store.fs import StoreFS

# The columns every table starts with; user metadata extends `images` on ingest.
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "images": {
        "image_id": pl.String,
        "split": pl.String,
        "label": pl.Int64,
        "_row": pl.Int64,  # position in arrays/images/pixels; internal, hidden from users
    },
    "models": {
        "model_id": pl.String,
        "name": pl.String,
        "version": pl.Int64,
        "parent": pl.String,
        "created_at": pl.Datetime("us", "UTC"),
        "num_params": pl.Int64,
        "num_layers": pl.Int64,
        "input_shape": pl.List(pl.Int64),
        "classes": pl.List(pl.String),
        "weights_digest": pl.String,
        "new_weight_bytes": pl.Int64,
        "hyperparams": pl.String,
        "description": pl.String,
    },
    "experiments": {
        "experiment_id": pl.String,
        "model_id": pl.String,
        "kind": pl.String,
        "created_at": pl.Datetime("us", "UTC"),
        "train_set": pl.String,
        "test_set": pl.String,
        "n_train": pl.Int64,
        "n_test": pl.Int64,
        "test_splits": pl.List(pl.String),
        "hyperparams": pl.String,
        "accuracy": pl.Float64,
        "loss": pl.Float64,
        "precision": pl.List(pl.Float64),
        "recall": pl.List(pl.Float64),
        "f1": pl.List(pl.Float64),
        "confusion": pl.List(pl.List(pl.Int64)),
        "metrics": pl.String,
        "test_look": pl.Int64,
        "test_reuse": pl.Boolean,
        "notes": pl.String,
        "label_set": pl.String,  # the label set the run's labels came from; null: the original labels
    },
    # Image sets used by experiments, in long form so SQL can join them to images.
    "image_sets": {"set_id": pl.String, "image_id": pl.String},
    # Reviewers' label decisions and their undos, never deleted (see odinlab.store.labels).
    "label_corrections": {
        "correction_id": pl.String,
        "label_set": pl.String,
        "image_id": pl.String,
        "action": pl.String,
        "old_label": pl.Int64,
        "new_label": pl.Int64,
        "who": pl.String,
        "at": pl.Datetime("us", "UTC"),
        "model_id": pl.String,
        "score": pl.Float64,
        "method": pl.String,
        "note": pl.String,
        "undoes": pl.String,
    },
}

# Columns added to a table after stores were written without them: they read as nulls there.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"experiments": ("label_set",)}


class Tables:
    """Read and atomically replace the store's tables, with a read cache.

    >>> from odinlab.store.fs import StoreFS
    >>> t = Tables(StoreFS("memory://tables-doc"))
    >>> t.read("models").height
    0
    """

    def __init__(self, fs: StoreFS):
        self._fs = fs
        self._cache: dict[str, pl.DataFrame] = {}

    def read(self, name: str) -> pl.DataFrame:
        """The table, with the columns it gained since an older odinlab wrote it (as nulls).

        >>> t = Tables(StoreFS("memory://tables-read-doc"))
        >>> t.write("experiments", pl.DataFrame({"experiment_id": ["exp-00001"]}))  # an older table
        >>> t.forget(); t.read("experiments")["label_set"].to_list()
        [None]
        """
        if name not in self._cache:
            parts = ("tables", f"{name}.parquet")
            if self._fs.exists(parts):
                frame = _with_new_columns(name, pl.read_parquet(io.BytesIO(self._fs.read_bytes(parts))))
            else:
                frame = pl.DataFrame(schema=SCHEMAS[name])
            self._cache[name] = frame
        return self._cache[name]

    def write(self, name: str, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd")
        self._fs.write_bytes(("tables", f"{name}.parquet"), buffer.getvalue())
        self._cache[name] = frame

    def append(self, name: str, rows: pl.DataFrame) -> pl.DataFrame:
        """Write the table with ``rows`` added (new columns allowed) and return it."""
        frame = pl.concat([self.read(name), rows], how="diagonal_relaxed")
        self.write(name, frame)
        return frame

    def forget(self) -> None:
        """Drop cached frames so the next read sees changes made by other processes."""
        self._cache.clear()


def _with_new_columns(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Add the columns added since the table's format that ``frame`` lacks, as nulls (older stores).

    Only those: any other missing column is damage, and reads report it as before.
    """
    missing = {c: SCHEMAS[name][c] for c in ADDED_COLUMNS.get(name, ()) if c not in frame.columns}
    return frame.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in missing.items()) if missing else frame
