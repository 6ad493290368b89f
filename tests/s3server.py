"""A real S3 protocol server (moto's) on 127.0.0.1 for tests and benchmarks.

Nothing of odinlab is mocked: stores talk HTTP to the server through s3fs and Zarr. Use it
from a pytest fixture or from a script (``bench/scale.py`` does
``sys.path.insert(0, repo_root); from tests.s3server import moto_s3``; ``tests`` is a namespace
package, so no ``__init__.py`` is needed)::

    with moto_s3() as s3:
        store = odinlab.open_store(s3.url("store"), create=True)

The environment (``AWS_ENDPOINT_URL`` and dummy credentials) points boto at the server while
the context is open, and is restored after it. Processes started inside the context inherit it:
start a Dask ``LocalCluster`` (or a multiprocessing pool) *inside* the ``with`` block, or pass
``s3.env`` to the workers yourself (a LocalCluster's worker processes copy ``os.environ`` when
they start, so one started before the context never sees the server).

moto checks "is the key there?" and then stores it, in a server that runs requests in threads,
so two conditional puts (``If-None-Match: *``, the writer lease) arriving together could both pass
its check; S3 itself decides them atomically. The server therefore answers one request at a
time, which gives it S3's atomicity (and nothing more).
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Variables a developer's own AWS setup may hold that would send requests elsewhere.
_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3")


class _OneAtATime:
    """A WSGI app that answers one request at a time (see the module's docstring)."""

    def __init__(self, app):
        self.app, self.lock = app, threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))


@dataclass(frozen=True)
class S3Server:
    """A running server: its ``endpoint``, its ``bucket`` and the ``env`` that points boto at it."""

    endpoint: str
    bucket: str
    env: dict[str, str]

    def url(self, name: str = "store") -> str:
        """A fresh ``s3://bucket/<random>/name``: every call gives a place nobody used.

        >>> S3Server("http://127.0.0.1:1", "b", {}).url("s").startswith("s3://b/")
        True
        """
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}/{name}"

    def filesystem(self):
        """A new s3fs filesystem on the server (no instance cache, so no stale listings).

        >>> with moto_s3() as s3:
        ...     _ = s3.filesystem().pipe_file(f"{s3.bucket}/x", b"1")
        ...     s3.filesystem().cat_file(f"{s3.bucket}/x")
        b'1'
        """
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True)


@contextmanager
def moto_s3(bucket: str = "odinlab-test") -> Iterator[S3Server]:
    """Start a moto S3 server on 127.0.0.1 with ``bucket``, point the environment at it, yield it.

    On exit the server stops and the environment and s3fs's instance cache are as before.
    Credentials and endpoint live in the environment only, never in a store. moto keeps its
    buckets and objects per process, so a later server in the same process sees what an earlier
    one stored: :meth:`S3Server.url` gives every store a place of its own.

    >>> with moto_s3("doc-bucket") as s3:
    ...     os.environ["AWS_ENDPOINT_URL"] == s3.endpoint, s3.url("st").split("/")[2]
    (True, 'doc-bucket')
    >>> "AWS_ENDPOINT_URL" in os.environ and os.environ["AWS_ENDPOINT_URL"] == s3.endpoint
    False
    """
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="odinlab-aws-") as nowhere:
        try:
            server._server.app = _OneAtATime(server._server.app)
            host, port = server.get_host_and_port()
            missing = os.path.join(nowhere, "none")  # no config or credentials file of the developer's
            env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_CONFIG_FILE": missing, "AWS_SHARED_CREDENTIALS_FILE": missing,
                   "AWS_EC2_METADATA_DISABLED": "true"}
            saved = {name: os.environ.get(name) for name in (*env, *_CLEARED)}
            os.environ.update(env)
            for name in _CLEARED:
                os.environ.pop(name, None)
            # s3fs caches filesystems by their arguments: one made before would keep the old endpoint.
            s3fs.S3FileSystem.clear_instance_cache()
            try:
                s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
            except FileExistsError:  # moto keeps its buckets per process: an earlier server made it
                pass
            yield S3Server(env["AWS_ENDPOINT_URL"], bucket, dict(env))
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            server.stop()
