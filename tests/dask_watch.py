"""What tests of out-of-core code watch: the largest result any task of a local Dask run produced."""

from dask.callbacks import Callback
from dask.sizeof import sizeof


class LargestResult(Callback):
    """Records the largest result of any task the local scheduler ran (use as a context manager)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.largest = max(self.largest, sizeof(result))
