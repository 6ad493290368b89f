"""odinlab: debug PyTorch image classifiers in JupyterLab, with a store that remembers.

>>> import odinlab
>>> store = odinlab.open_store("memory://quick", create=True)
>>> store.ingest(odinlab.datasets.digits()).height
1797
"""

from importlib.metadata import PackageNotFoundError, version

from odinlab import datasets, errors
from odinlab.errors import *  # noqa: F403  (every error class, one name per idea)
from odinlab.parallel import parallel
from odinlab.store import ModelRecord, Selection, Store, open_store

try:
    __version__ = version("odinlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [*errors.ERRORS, "ModelRecord", "Selection", "Store", "datasets", "explore", "open_store", "parallel", "report"]


def __getattr__(name: str):
    # The explorer pulls in ipywidgets and anywidget: import them only when it is asked for.
    if name == "explore":
        from odinlab.widgets import explore

        return explore
    if name == "report":  # jinja2 and plotly: only for a report
        from odinlab.reports import report

        return report
    raise AttributeError(f"module 'odinlab' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """``%load_ext odinlab``: register the ``%%odin`` cell magic and ``%odin`` line magic."""
    from odinlab.lang.magic import load_ipython_extension as load

    load(ipython)
