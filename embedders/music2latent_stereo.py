"""``music2latent-stereo``: Music2Latent as Navidrome's *library job* stores it (→ 576).

The library job encodes each file at its own channels and rate, each channel on its own, and interleaves
the two: rows ``[L0, R0, L1, R1, …, L63, R63]``, then ``sqrt(L² + R² + 1e-12)`` (shared/navidrome.md). Use it
when the vectors a Navidrome server holds came from that job rather than the plan's mono path
(``music2latent``). A mono clip fails here, as it does there; a canonical clip is 44.1 kHz, so this matches
the library job for 44.1 kHz stereo sources (a 48 kHz file, which the job encodes at 48 kHz, does not).
"""

from embedders.music2latent import spec_for

SPEC = spec_for(
    "stereo", "music2latent-stereo",
    "Music2Latent as Navidrome's library job stores it: stereo latents interleaved L/R plus magnitudes",
    audio_bytes_per_second=460_000_000,
)
