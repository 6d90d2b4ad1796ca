"""Faults the mirror injects, drawn from a seeded generator so a failing test fails the same way again."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

KINDS = ("500", "429", "drop", "stall")
"""What a fault rate draws from unless ``kinds`` says otherwise."""
ALL_KINDS = (*KINDS, "503")
"""Every fault the mirror can inject (``503`` is opt-in, so seeded draws of older tests stay as they were)."""


@dataclass
class Faults:
    """What goes wrong, how often. Mutable: a test may change it between requests.

    ``500`` and ``503`` answer with that status; ``429`` answers "Too Many Requests" with ``Retry-After``.
    ``drop`` sends the headers and part of the body (``cut``), then closes the connection; ``stall`` sends
    that part, pauses ``stall_s`` (past the client's read timeout when that is longer), then sends the rest.
    A HEAD request or an empty body drops before the status line. ``corrupt`` serves other bytes at a path
    (a wrong checksum, a truncated archive) on every request, fault rate or not.
    """

    rate: float = 0.0
    """Share of requests that fail."""
    kinds: tuple[str, ...] = KINDS
    retry_after_s: float = 0.1
    """Sent as ``Retry-After`` with every 429."""
    stall_s: float = 0.5
    seed: int = 0
    corrupt: dict[str, bytes] = field(default_factory=dict)
    count: int | None = None
    """At most this many faults in all (``None``: no limit); ``rate=1, count=1`` fails the first request."""
    paths: tuple[str, ...] = ()
    """Path prefixes faults apply to; empty: every path."""
    ranges_only: bool = False
    """Faults hit only requests for a byte range (a ``Range`` header): the reads ffmpeg makes of a media file
    while it cuts a segment, or a resumed download."""
    cut: float | None = 0.5
    """Share of the body sent before a ``drop`` or ``stall``; ``None``: drawn anew for each fault, so a body
    may break off anywhere (inside the part of a media file a segment needs, too)."""
    script: tuple[str | None, ...] = ()
    """Faults for the next requests, in order, before any drawn at ``rate`` (e.g. ``("drop", "500")``;
    ``None`` lets that request through)."""
    injected: int = field(default=0, init=False)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = (set(self.kinds) | set(self.script)) - {*ALL_KINDS, None}
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(ALL_KINDS)}")
        if self.cut is not None and not 0 <= self.cut < 1:
            raise ValueError(f"cut is a share of the body, from 0 to below 1, not {self.cut}")
        self._rng = random.Random(self.seed)

    def draw(self, path: str, *, ranged: bool = False) -> str | None:
        """The fault for this request (``ranged``: it asks for a byte range), if any."""
        if self.paths and not path.startswith(self.paths):
            return None
        if self.ranges_only and not ranged:
            return None
        with self._lock:
            if self.injected < len(self.script):
                self.injected += 1
                return self.script[self.injected - 1]
            if self.count is not None and self.injected >= self.count:
                return None
            if self._rng.random() >= self.rate:
                return None
            self.injected += 1
            return self._rng.choice(self.kinds)

    def cut_point(self, start: int, stop: int) -> int:
        """Where a ``drop`` or ``stall`` breaks the body ``[start, stop)``: at least one byte in."""
        with self._lock:
            share = self._rng.random() if self.cut is None else self.cut
        return start + max(int((stop - start) * share), 1)
