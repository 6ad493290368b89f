"""Scale-out: odinlab's heavy steps on a Dask cluster, over the same Zarr store.

``scheduler=client`` on a call, or ``with odinlab.parallel(client):`` around many, runs
materialize, attribution, gradient capture and the per-unit / per-class queries on the
cluster's workers, split by image chunk. Workers load the model version's weights from the
store (the network's class travels as code, as Dask sends any function), and each writes
whole Zarr chunks of its own images; the calling process commits them.
"""

from odinlab.parallel.context import current_client, parallel

__all__ = ["current_client", "parallel"]
