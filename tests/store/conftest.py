"""Shared steps of the store's tests that run other processes."""

import subprocess
import sys
import time

import numpy as np
import pytest

import odinlab


def _busy_then_free(url: str, holding, flag, what: str) -> None:
    """Another process holds ``url``'s writer lock (it writes its pid to ``flag``, then holds on):
    a writer with a short timeout is refused, naming it, and writes nothing; it succeeds once the
    holder (``holding``, an async result returning its pid) lets go."""
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.01)
    pid = flag.read_text()
    store = odinlab.open_store(url, lock_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(odinlab.StoreBusyError, match=rf"held by pid {pid} on host .* since .*{what}"):
        store.ingest(np.zeros((1, 8, 8), np.uint8), labels=[0])
    assert time.monotonic() - started < 2.5
    assert store.refresh().images.height == 0  # nothing written
    assert holding.get(timeout=30) == int(pid)
    store.lock_timeout = 30
    assert store.ingest(np.zeros((1, 8, 8), np.uint8), labels=[0]).height == 1


@pytest.fixture
def busy_then_free():
    return _busy_then_free


def _stall_then_kill(code: str, *args: str) -> None:
    """Run ``code`` in a child Python that prints "stalled" where it should die, then kill it there."""
    child = subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "stalled", child.stderr.read()
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def stall_then_kill():
    return _stall_then_kill
