"""Which Dask client runs odinlab's heavy steps: ``scheduler=client``, or ``with odinlab.parallel(client):``.

Nothing here schedules anything: Dask does. odinlab only decides *whether* a call runs on a
cluster (a ``distributed.Client`` given or set for the block) or in this process (``None``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from odinlab.errors import OptionError

_CLIENT: contextvars.ContextVar = contextvars.ContextVar("odinlab_dask_client", default=None)


@contextmanager
def parallel(client) -> Iterator:
    """Run the heavy steps of odinlab inside the block on ``client``'s Dask cluster.

    Materialize, attribution, gradient capture and the per-unit / per-class queries then split
    their work by image chunk across the cluster's workers, exactly as with ``scheduler=client``.

    >>> from distributed import Client, LocalCluster
    >>> with (LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
    ...       Client(cluster) as client, odinlab.parallel(client)):
    ...     store.materialize("cnn@1", ["head.fc1"], "val", progress=False)["computed"].to_list()
    [269, 269]
    """
    token = _CLIENT.set(check_client(client))
    try:
        yield client
    finally:
        _CLIENT.reset(token)


def current_client(scheduler=None):
    """The client a call runs on: ``scheduler`` when given, else the one set by :func:`parallel`, else None.

    ``scheduler="local"`` forces a run in this process inside a ``parallel`` block.

    >>> current_client() is None
    True
    """
    if isinstance(scheduler, str) and scheduler == "local":
        return None
    if scheduler is not None:
        return check_client(scheduler)
    return _CLIENT.get()


def check_client(client):
    """``client`` if it is a ``distributed.Client``, else :class:`OptionError` saying what to pass.

    >>> check_client("threads")
    Traceback (most recent call last):
    odinlab.errors.OptionError: scheduler must be a dask.distributed Client (Client(LocalCluster()) or ...
    """
    from distributed import Client

    if not isinstance(client, Client):
        raise OptionError(
            "scheduler must be a dask.distributed Client (Client(LocalCluster()) or Client('tcp://host:8786')), "
            f"'local', or None, not {client!r}."
        )
    return client
