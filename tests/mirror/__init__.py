"""The loopback mirror every download test runs against: no test touches the internet.

:class:`MirrorServer` serves files in each dataset's published layout, a Hugging Face Hub-compatible
endpoint, a YouTube stand-in (watch pages stating durations, media read in byte ranges, searches), and
injects :class:`Faults`. The ``mirror`` and ``mirror_settings`` fixtures in ``tests/conftest.py`` start one
per test and point settings at it.
"""

from mirror.faults import ALL_KINDS, KINDS, Faults
from mirror.hub import fast_library_sleeps
from mirror.server import MIRROR_KEYS, Logged, MirrorServer

__all__ = ["ALL_KINDS", "KINDS", "MIRROR_KEYS", "Faults", "Logged", "MirrorServer", "fast_library_sleeps"]
