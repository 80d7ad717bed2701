"""The embedded broker's group commit: the open `Batch`, and one commit of it at a time.

While one batch is being committed the next one fills up; acknowledgements that promise durable
state wait in `when_durable` callbacks until what was written before them is committed. A batch is
committed by the embedded gateway while it is attached (`in_commit`: the bridge's worker writes
it with the gateway's handling of its inbound messages in one transaction, `gateway.bridge.local`),
otherwise by `BrokerStore.apply` on a writer thread of its own. A failed commit is retried every
second, the same batch, nothing acknowledged meanwhile.

Runs on the broker's event loop, like the engine that fills the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from gateway import metrics
from gateway.broker.store import Batch, BrokerStore, Snapshot
from gateway.core.lifecycle import Outgoing

log = logging.getLogger("fieldgate.broker")

#: Commits one batch with the embedded gateway's handling of its inbound messages; returns the outbox rows that
#: handling queued, for the engine to publish (`gateway.bridge.local`).
InCommit = Callable[[Batch], Awaitable[list[tuple[int, Outgoing]]]]


class GroupCommit:
    """The open batch (`batch`, filled by the engine) and the committer task (`run`)."""

    def __init__(self, store: BrokerStore, *, before_alone: Callable[[Batch], None],
                 after: Callable[[list[tuple[int, Outgoing]]], None]) -> None:
        self.store = store
        self.batch = Batch()
        #: How a batch is committed with the embedded gateway in it; None: by `store` alone.
        self.in_commit: InCommit | None = None
        self.applying = 0  # inbound messages for the gateway in the batch being committed
        self._before_alone = before_alone  # a batch about to be committed without the gateway
        self._after = after  # after each commit, with what the gateway published, before the callbacks
        self._callbacks: list[Callable[[], None]] = []
        self._committing = False
        self._wake = asyncio.Event()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fieldgate-broker-db")
        self._stats = {"count": 0, "seconds": 0.0, "callbacks": 0, "max_seconds": 0.0, "max_inbound": 0}

    async def load(self) -> Snapshot:
        """broker.db as it is, read on the writer thread (at start)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self.store.load)

    def changed(self) -> None:
        """The open batch has something to commit."""
        self._wake.set()

    def when_durable(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything written so far is committed (now, if nothing is pending)."""
        if not self.batch and not self._committing and not self._callbacks:
            callback()
            return
        self._callbacks.append(callback)
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything so far is committed."""
        done = asyncio.get_running_loop().create_future()
        self.when_durable(lambda: done.done() or done.set_result(None))
        await done

    async def run(self) -> None:
        """The committer: commit the open batch whenever there is one, one at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.batch or self._callbacks:
                batch, callbacks = self.batch, self._callbacks
                self.batch, self._callbacks = Batch(), []
                self._committing = True
                self.applying = len(batch.inbound)
                try:
                    published = await self._commit(batch, len(callbacks))
                finally:
                    self._committing = False
                    self.applying = 0
                self._after(published)
                for callback in callbacks:
                    try:
                        callback()
                    except Exception:
                        log.exception("acknowledgement after commit failed")
                # One turn of the loop: it writes what this commit released (PUBACKs, a fan-out's deliveries)
                # before the next commit's work takes the GIL from it.
                await asyncio.sleep(0)

    async def _commit(self, batch: Batch, acks: int) -> list[tuple[int, Outgoing]]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                started = time.perf_counter()
                published: list[tuple[int, Outgoing]] = []
                if self.in_commit is not None:
                    published = await self.in_commit(batch)
                else:
                    self._before_alone(batch)
                    await loop.run_in_executor(self._writer, self.store.apply, batch)
                took = time.perf_counter() - started
                metrics.BROKER_COMMIT.observe(took)
                self._stats["count"] += 1
                self._stats["seconds"] += took
                self._stats["callbacks"] += acks
                self._stats["max_seconds"] = max(self._stats["max_seconds"], took)
                self._stats["max_inbound"] = max(self._stats["max_inbound"], self.applying)
                return published
            except Exception:
                log.exception("broker commit failed; retrying in 1 s (nothing is acknowledged)")
                await asyncio.sleep(1.0)

    def log_statistics(self) -> None:
        n, stats = self._stats["count"], self._stats
        log.info("broker group commits", extra={"ctx": {
            "commits": n, "avg_ms": round(1000 * stats["seconds"] / n, 2) if n else 0,
            "avg_acks_per_commit": round(stats["callbacks"] / n, 1) if n else 0,
            "max_ms": round(1000 * stats["max_seconds"], 1), "most_applied": stats["max_inbound"]}})

    def close(self) -> None:
        self._writer.shutdown(wait=True)
