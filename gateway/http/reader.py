"""The HTTP side's view of fieldgate.db: `gateway.store.queries.Queries`, read-only, beside the bridge that
writes it (SQLite in WAL mode, or PostgreSQL).

One connection, one reader at a time: the reads behind a request take milliseconds, and the
HTTP side's threads (request handlers, the webhook sender, metrics) share it through `with
reader() as store:`. Nothing here writes; writes go through the bridge (`Bridge.request`,
`Bridge.call`), the one writer of fieldgate.db.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.store.database import Location
from gateway.store.queries import Queries


class Reader:
    def __init__(self, location: Location) -> None:
        self._queries = Queries(location)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[Queries]:
        with self._lock:
            yield self._queries

    def close(self) -> None:
        with self._lock:
            self._queries.close()
