"""The pieces of the ``synthetic`` source: what a clip is (spec), how its music is written (compose),
how it is described (captions) and how it becomes audio (render).

Kept apart from ``downloaders/synthetic.py`` so each step can be tested and reused on its own; being a
package, it is never mistaken for a source by the registry in ``downloaders/__init__.py``.

pyfluidsynth prints where it found the library on import whenever ``CI`` is set, and pretty_midi imports it;
it is imported here first with that line kept out of stdout, which the CLI keeps for results and messages.
"""

import contextlib
import io

with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(ImportError, OSError):
    import fluidsynth  # noqa: F401
