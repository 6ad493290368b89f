"""The pieces a report section is made of, and how results become them.

A section is a title and a list of blocks; each block is a plain dict that the template
draws: ``table`` (columns and rows of text), ``figure`` (a plotly figure's HTML), ``cards``
(thumbnails with caption lines) and ``note`` (a sentence, e.g. why something is missing).
Every text from the store stays a ``str`` here so that the template's autoescaping escapes it;
only plotly's own HTML (its data is JSON with ``<`` and ``/`` escaped) is marked safe.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
from markupsafe import Markup


@dataclass
class Section:
    """One part of the report: an anchor id, a title, a sentence saying what it shows, blocks.

    >>> Section("models", "Models").add(note("nothing here")).blocks[0]["kind"]
    'note'
    """

    id: str
    title: str
    intro: str = ""
    blocks: list[dict] = field(default_factory=list)

    def add(self, *blocks: dict) -> Section:
        self.blocks.extend(blocks)
        return self


def note(text: str, level: str = "info") -> dict:
    """A sentence shown in a box: ``level`` "info", or "warn" for something that could not be made.

    >>> note("No module", "warn")["level"]
    'warn'
    """
    return {"kind": "note", "text": str(text), "level": level}


def cell(value) -> str:
    """A table cell's text: numbers rounded to 4 significant digits, lists joined, None empty.

    >>> cell(0.981481), cell(270), cell(None), cell([1, 2]), cell(True)
    ('0.9815', '270', '', '1, 2', 'yes')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, list | tuple | pl.Series):
        return ", ".join(cell(v) for v in value)
    return str(value)


def table(frame: pl.DataFrame, caption: str = "", *, max_rows: int = 60, name: str = "") -> dict:
    """A polars frame as a table block (at most ``max_rows`` rows, the rest counted in a note).

    >>> block = table(pl.DataFrame({"a": [1.23456], "b": ["<x>"]}), "demo")
    >>> block["columns"], block["rows"], block["more"]
    (['a', 'b'], [['1.235', '<x>']], 0)
    """
    rows = [[cell(v) for v in row] for row in frame.head(max_rows).iter_rows()]
    return {"kind": "table", "caption": caption, "columns": list(frame.columns), "rows": rows,
            "more": max(0, frame.height - max_rows), "name": name}


def figure(fig, name: str = "") -> dict:
    """A plotly figure as a block; plotly.js itself is inlined once for the page by the template.

    >>> import plotly.graph_objects as go
    >>> block = figure(go.Figure(go.Bar(x=["<b>"], y=[1])))
    >>> "\\\\u003cb\\\\u003e" in block["html"], block["kind"]
    (True, 'figure')
    """
    markup = fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                         config={"displaylogo": False, "responsive": True})
    return {"kind": "figure", "html": Markup(markup), "name": name}  # noqa: S704 - plotly escapes its JSON


def cards(items: list[dict], caption: str = "", name: str = "") -> dict:
    """Cards of images: each item is ``{"images": [image(...)...], "lines": [str...]}``.

    >>> cards([{"images": [], "lines": ["x"]}], "c")["kind"]
    'cards'
    """
    return {"kind": "cards", "caption": caption, "items": items, "name": name}


def image(png: bytes, alt: str, label: str = "") -> dict:
    """One picture of a card, as a ``data:`` URI (the report fetches nothing).

    >>> image(b"\\x89PNG", "digits-0001", "image")["src"][:22]
    'data:image/png;base64,'
    """
    return {"src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"), "alt": alt, "label": label}


def plotly_text(value) -> str:
    """A store text for plotly labels: escaped, so plotly shows ``<b>`` as text rather than as markup.

    >>> plotly_text("<script>x</script>")
    '&lt;script&gt;x&lt;/script&gt;'
    """
    return html.escape(str(value), quote=False)
