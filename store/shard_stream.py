"""Streaming a runtime's results into a shard, with the HDF5 writes off the embedding thread.

Both runtimes yield ``(item_id, Embedded or failed record)`` per clip. Appending to HDF5 (compression,
fsync at publication) would otherwise sit between two forward passes of a GPU; a writer thread takes
it off that path, so disk and device work overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

import numpy as np

from store.shards import Embedded, ShardWriter
from store.status import StatusRecord

WRITER_QUEUE_CHUNKS = 8
"""Chunks of ``chunk_rows`` vectors that may wait for the writer before the producer blocks."""


class BackgroundWriter:
    """Appends ``(item_id, Embedded)`` pairs to a :class:`ShardWriter` from a thread, ``chunk_rows`` at a time.

    The queue is bounded, so a slow disk slows the producer instead of filling memory. An error in the
    thread is raised again by :meth:`close` (and so by the ``with`` block), which keeps the shard unpublished.
    """

    def __init__(self, writer: ShardWriter, chunk_rows: int) -> None:
        self.writer = writer
        self.chunk_rows = chunk_rows
        self.written: list[str] = []
        self._queue: queue.Queue[tuple[str, Embedded] | None] = queue.Queue(WRITER_QUEUE_CHUNKS * chunk_rows)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self._thread.start()

    def put(self, item_id: str, embedded: Embedded) -> None:
        if self._error is not None:
            raise RuntimeError("the shard writer thread failed") from self._error
        self._queue.put((item_id, embedded))

    def close(self) -> list[str]:
        """Flush and stop; returns the ids written, in order."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("the shard writer thread failed") from self._error
        return self.written

    def _run(self) -> None:
        """Consumes until the end marker even after a failure, so ``put`` never blocks on a full queue."""
        pending: list[tuple[str, Embedded]] = []
        while (entry := self._queue.get()) is not None:
            pending.append(entry)
            if len(pending) == self.chunk_rows:
                self._append(pending)
                pending = []
        self._append(pending)

    def _append(self, entries: list[tuple[str, Embedded]]) -> None:
        if not entries or self._error is not None:
            return
        ids = [item_id for item_id, _ in entries]
        try:
            self.writer.append(ids, np.stack([embedded.vector for _, embedded in entries]),
                               [embedded.frames for _, embedded in entries])
        except BaseException as error:  # handed to the producer by put() and close()
            self._error = error
            return
        self.written.extend(ids)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._queue.put(None)
            self._thread.join()


def write_results(
    results: Iterable[tuple[str, Embedded | StatusRecord]], writer: ShardWriter, *, chunk_rows: int
) -> tuple[list[str], list[StatusRecord]]:
    """Vectors into ``writer`` (the caller closes it); returns the ids written and the failed records."""
    failures: list[StatusRecord] = []
    with BackgroundWriter(writer, chunk_rows) as background:
        for item_id, result in results:
            if isinstance(result, StatusRecord):
                failures.append(result)
            else:
                background.put(item_id, result)
    return background.written, failures
