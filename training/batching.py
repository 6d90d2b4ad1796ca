"""Batching concurrent text requests into one encoder call, off the event loop.

A service that encodes each request on its own spends most of a burst waiting: one forward pass of a batch of
64 short texts costs little more than a pass of one. :class:`BatchEncoder` queues the texts of requests that
arrive while the device is busy and encodes them together as soon as it is free, so a single client waits no
longer than one pass and a burst costs a few passes. There is no fixed waiting window: batches form from what
queued up during the previous pass.

Every model's encoder shares one worker thread (:func:`device_worker`), so the device runs one batch at a time
and the event loop keeps answering (``/health`` stays fast while a large batch runs).

A recently answered text is answered again from an LRU cache: the same text then gives the very same vector,
which batching alone does not promise (a text padded in a larger batch can differ in its last bits).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Encode = Callable[[Sequence[str]], np.ndarray]


def device_worker() -> ThreadPoolExecutor:
    """The one thread that runs every encoder call of a service."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")


class BatchEncoder:
    """``await embed(text)`` → that text's vector, encoded with the other texts queued at the same time."""

    def __init__(self, encode: Encode, worker: ThreadPoolExecutor, *, max_batch: int = 64,
                 cache_size: int = 4096) -> None:
        self._encode = encode
        self._worker = worker
        self._max_batch = max_batch
        self._cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._queue: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._drain: asyncio.Task[None] | None = None
        self.batches: list[int] = []
        """Sizes of the batches encoded so far (what ``/health`` reports, and what shows batching works)."""

    async def embed(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append((text, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._encode_queued())
        return await future

    async def _encode_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            texts = list(dict.fromkeys(text for text, _ in batch))
            self.batches.append(len(texts))
            try:
                vectors = await loop.run_in_executor(self._worker, self._encode, texts)
            except Exception as error:  # every waiting request gets the failure, and the next batch still runs
                _settle(batch, lambda _text, err=error: err)
                continue
            rows = dict(zip(texts, vectors, strict=True))
            for text, vector in rows.items():
                self._remember(text, vector)
            _settle(batch, rows.__getitem__)

    def _remember(self, text: str, vector: np.ndarray) -> None:
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _settle(batch: list[tuple[str, asyncio.Future[np.ndarray]]],
            outcome: Callable[[str], np.ndarray | BaseException]) -> None:
    """Give each still-waiting request its vector or its error (a client that went away has cancelled its own)."""
    for text, future in batch:
        if future.done():
            continue
        result = outcome(text)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
