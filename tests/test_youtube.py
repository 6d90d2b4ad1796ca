"""YouTubeClient with real yt-dlp and ffmpeg against videos the mirror serves (under injected faults too),
the error classifier on the messages yt-dlp gives for real YouTube failures, searches, and the private
cookie copies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from audio_files import encode_with_ffmpeg
from mirror import Faults, MirrorServer
from yt_dlp.extractor.youtube import YoutubeSearchURLIE

from downloaders.transports import youtube
from downloaders.transports.errors import DownloadError
from downloaders.transports.youtube import PERMANENT, YouTubeClient, classify, output_template, search_url
from processors.decode import decode
from store.settings import Settings
from store.status import FailureClass

RATE = 48_000
SECONDS = 30
VIDEO = "-7pXq2_Zl0k"
"""Ids may start with '-', which a command line would take for an option."""


def step_hz(second: int) -> float:
    return 300.0 + 50.0 * second


def write_stepped_tone(path: Path, seconds: float) -> Path:
    """Opus in WebM whose pitch steps up 50 Hz every second, so any cut can be dated by ear."""
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(step_hz(np.floor(t))) / RATE
    encode_with_ffmpeg((0.5 * np.sin(phase)).astype(np.float32)[:, None], RATE, path,
                       ["-c:a", "libopus", "-b:a", "96k"])
    return path


@pytest.fixture(scope="module")
def stepped_tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of the stepped tone."""
    return write_stepped_tone(tmp_path_factory.mktemp("media") / "tone.webm", SECONDS)


def assert_whole_segment(path: Path, start: int, seconds: int) -> None:
    """``path`` holds exactly the seconds ``start`` .. ``start + seconds`` of the stepped tone."""
    audio = decode(path)
    assert audio.samples.shape[1] / audio.sample_rate == pytest.approx(seconds, abs=0.03)
    rate, margin = audio.sample_rate, audio.sample_rate // 10
    for second in range(seconds):
        window = audio.samples[0, second * rate + margin:(second + 1) * rate - margin]
        assert strongest_hz(window, audio.sample_rate) == pytest.approx(step_hz(start + second), abs=3)


def strongest_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_only_the_requested_seconds_are_downloaded(
    mirror: MirrorServer, mirror_settings: Settings, stepped_tone: Path, tmp_path: Path
) -> None:
    mirror.media(VIDEO, stepped_tone)

    segment = YouTubeClient(mirror_settings).download_segment(VIDEO, 10.0, 14.0, tmp_path / f"{VIDEO}@10")

    assert segment.path == tmp_path / f"{VIDEO}@10.webm"
    assert segment.duration_s == pytest.approx(4.0, abs=0.03)
    assert segment.video_s == pytest.approx(SECONDS, abs=0.05)
    assert_whole_segment(segment.path, 10, 4)
    assert {path for _, path, _ in mirror.requests} == {f"/watch?v={VIDEO}", f"/media/{VIDEO}.webm"}
    ranges = [entry.headers["Range"] for entry in mirror.log if "Range" in entry.headers]
    assert ranges and all(not r.startswith("bytes=0-") or r == "bytes=0-" for r in ranges)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{VIDEO}@10.webm"]


@pytest.fixture
def quick(mirror_settings: Settings) -> Settings:
    """A short read timeout, so a stall is one without a long wait."""
    return mirror_settings.model_copy(update={"http_timeout_s": 0.5})


@pytest.mark.parametrize("kind", ["500", "503", "429", "drop", "stall"])
def test_a_fault_while_the_segment_is_read_never_yields_a_cut_or_wrong_segment(
    mirror: MirrorServer, quick: Settings, stepped_tone: Path, tmp_path: Path, kind: str
) -> None:
    """The fourth ranged read is the one that fetches the segment's own bytes: it breaks off a tenth of the
    way in (or answers an error), where ffmpeg alone would end the segment early and exit cleanly."""
    mirror.media(VIDEO, stepped_tone)
    mirror.faults = Faults(script=(None, None, None, kind), ranges_only=True, cut=0.1, stall_s=1.5)

    segment = YouTubeClient(quick).download_segment(VIDEO, 10.0, 16.0, tmp_path / "seg")

    assert [entry.fault for entry in mirror.log if entry.fault] == [kind]
    assert_whole_segment(segment.path, 10, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.webm"]


@pytest.mark.parametrize("script", [("503",), ("500", "drop"), ("stall", "503", "500")])
def test_server_errors_and_broken_pages_are_retried_at_once(
    mirror: MirrorServer, quick: Settings, stepped_tone: Path, tmp_path: Path, script: tuple[str, ...]
) -> None:
    mirror.media(VIDEO, stepped_tone)
    mirror.faults = Faults(script=script, paths=("/watch",), stall_s=1.0)

    segment = YouTubeClient(quick).download_segment(VIDEO, 3.0, 5.0, tmp_path / "seg")

    assert_whole_segment(segment.path, 3, 2)
    pages = [(entry.status, entry.fault) for entry in mirror.requests_for(f"/watch?v={VIDEO}")]
    assert [fault for _, fault in pages] == [*script, None]


def test_a_429_is_retried_after_its_retry_after(
    mirror: MirrorServer, mirror_settings: Settings, stepped_tone: Path, tmp_path: Path
) -> None:
    mirror.media(VIDEO, stepped_tone)
    mirror.faults = Faults(script=("429", "429"), paths=("/watch",), retry_after_s=0.6)

    segment = YouTubeClient(mirror_settings).download_segment(VIDEO, 0.0, 2.0, tmp_path / "seg")

    assert_whole_segment(segment.path, 0, 2)
    pages = mirror.requests_for(f"/watch?v={VIDEO}")
    assert [entry.status for entry in pages] == [429, 429, 200]
    assert pages[1].at - pages[0].at >= 0.6 and pages[2].at - pages[1].at >= 0.6  # backoff alone: 0.05 s


def test_a_cut_short_stream_is_never_accepted_and_leaves_nothing(
    mirror: MirrorServer, mirror_settings: Settings, stepped_tone: Path, tmp_path: Path
) -> None:
    """The host ends the stream early with a clean close (nothing ffmpeg can notice): the segment decodes
    short, is deleted and tried again; when every try is short it is a transient failure, and once the host
    serves the whole stream again the same call gets the whole segment."""
    mirror.media(VIDEO, stepped_tone)
    whole = stepped_tone.read_bytes()
    mirror.faults.corrupt[f"/media/{VIDEO}.webm"] = whole[:len(whole) * 2 // 5]
    client = YouTubeClient(mirror_settings)

    with pytest.raises(DownloadError) as failed:
        client.download_segment(VIDEO, 10.0, 16.0, tmp_path / "seg")

    assert (failed.value.reason, failed.value.failure_class) == ("short_segment", FailureClass.TRANSIENT)
    assert "not 6.00 s" in failed.value.detail
    assert len(mirror.requests_for(f"/watch?v={VIDEO}")) == mirror_settings.http_attempts
    assert list(tmp_path.iterdir()) == []
    mirror.faults.corrupt.clear()
    assert_whole_segment(client.download_segment(VIDEO, 10.0, 16.0, tmp_path / "seg").path, 10, 6)


def test_a_video_that_ends_inside_the_segment_gives_what_it_has_and_none_after_its_end(
    mirror: MirrorServer, mirror_settings: Settings, tmp_path: Path
) -> None:
    """AudioSet's end-of-video segments: the video, as the host states its length, ends before ``end_s``; the
    segment up to its end is whole. A segment that starts after the end is permanently missing."""
    mirror.media(VIDEO, write_stepped_tone(tmp_path / "short.webm", 16.5))
    client = YouTubeClient(mirror_settings)

    segment = client.download_segment(VIDEO, 10.0, 20.0, tmp_path / "out" / "end")

    assert segment.video_s == pytest.approx(16.5, abs=0.05)
    assert segment.duration_s == pytest.approx(6.5, abs=0.05)
    with pytest.raises(DownloadError) as beyond:
        client.download_segment(VIDEO, 17.0, 27.0, tmp_path / "out" / "after")
    assert (beyond.value.reason, beyond.value.failure_class) == ("video_shorter", FailureClass.PERMANENT)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["end.webm"]


@pytest.mark.parametrize(("message", "status", "reason"), [
    ("Private video. Sign in if you've been granted access to this video", 404, "video_private"),
    ("Video unavailable. This video has been removed by the uploader", 404, "video_removed"),
    ("Video unavailable", 410, "unavailable"),
    ("Too Many Requests", 429, "rate_limited"),
    ("Forbidden", 403, "network"),
    ("Service Unavailable", 503, "network"),
])
def test_an_unavailable_video_is_classified_from_what_yt_dlp_reports(
    mirror: MirrorServer, mirror_settings: Settings, tmp_path: Path, message: str, status: int, reason: str
) -> None:
    mirror.unavailable("gone", message, status=status)

    with pytest.raises(DownloadError) as failed:
        YouTubeClient(mirror_settings).download_segment("gone", 0.0, 10.0, tmp_path / "gone")

    assert failed.value.reason == reason
    expected = FailureClass.PERMANENT if reason in PERMANENT else FailureClass.TRANSIENT
    assert failed.value.failure_class == expected
    assert f"HTTP Error {status}" in failed.value.detail and "gone" in failed.value.detail
    assert not list(tmp_path.iterdir())
    retried = reason in ("network", "rate_limited")  # the host's own answers are final; faults are retried
    assert len(mirror.requests_for("/watch?v=gone")) == (mirror_settings.http_attempts if retried else 1)


def test_a_video_the_server_does_not_have_is_unavailable(
    mirror: MirrorServer, mirror_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError) as failed:
        YouTubeClient(mirror_settings).download_segment("nothing", 0.0, 10.0, tmp_path / "nothing")

    assert (failed.value.reason, failed.value.failure_class) == ("unavailable", FailureClass.PERMANENT)


def test_media_ffmpeg_cannot_read_is_a_transient_failure(
    mirror: MirrorServer, mirror_settings: Settings, tmp_path: Path
) -> None:
    mirror.media("noise", np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())

    with pytest.raises(DownloadError) as failed:
        YouTubeClient(mirror_settings).download_segment("noise", 0.0, 5.0, tmp_path / "noise")

    assert (failed.value.reason, failed.value.failure_class) == ("postprocessing", FailureClass.TRANSIENT)
    assert "ffmpeg" in failed.value.detail
    assert not (tmp_path / "noise.webm").exists()


def test_cookies_go_with_the_page_request_from_a_private_copy_and_requests_are_paced(
    mirror: MirrorServer, mirror_settings: Settings, stepped_tone: Path, tmp_path: Path
) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tCONSENT\tYES+cb\n")
    original = cookies.read_bytes()
    mirror.media("paced", stepped_tone)
    settings = mirror_settings.model_copy(update={"youtube_cookies": cookies, "youtube_sleep_s": 1.5})
    client = YouTubeClient(settings)

    started = time.monotonic()
    client.download_segment("paced", 0.0, 1.0, tmp_path / "out" / "first")
    client.download_segment("paced", 1.0, 2.0, tmp_path / "out" / "second")

    pages = mirror.requests_for("/watch?v=paced")
    assert [entry.headers.get("Cookie") for entry in pages] == ["CONSENT=YES+cb"] * 2
    assert pages[1].at - started >= 1.5
    assert cookies.read_bytes() == original
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first.webm", "second.webm"]


_WORKER = """
import sys, time
from pathlib import Path
from downloaders.transports.youtube import YouTubeClient
from store.settings import Settings
client = YouTubeClient(Settings(youtube_cookies=Path(sys.argv[1])))
print(client._cookies.parent, flush=True)
time.sleep(60)
"""


def test_a_cookie_copy_left_by_a_killed_worker_is_removed_by_the_next_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tsecret-sid\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "MUSICTEXT_CONFIG": os.devnull}
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, str(cookies)], env=env, stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parents[1])
    killed = Path(worker.stdout.readline().strip())
    live = subprocess.Popen([sys.executable, "-c", _WORKER, str(cookies)], env=env, stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[1])
    alive = Path(live.stdout.readline().strip())
    try:
        assert (killed / "cookies.txt").read_text() == cookies.read_text()
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert (killed / "cookies.txt").exists()  # a killed process runs no clean-up of its own
        monkeypatch.setattr(tempfile, "tempdir", str(temp))

        client = YouTubeClient(Settings(youtube_cookies=cookies))

        assert not killed.exists()
        assert (alive / "cookies.txt").exists()  # another worker's copy, still in use, is left alone
        own = client._cookies.parent
        del client
        assert not own.exists()  # and a client's own copy goes with it
    finally:
        live.kill()
        live.wait()
    assert youtube.sweep_cookie_copies(temp) == [alive]
    assert list(temp.iterdir()) == []


def test_the_output_name_is_ours_with_the_real_extension() -> None:
    assert output_template(Path("/raw/musiccaps/-abc@30.5")) == "/raw/musiccaps/-abc@30.5.%(ext)s"
    assert output_template(Path("/raw/musiccaps/abc.m4a")) == "/raw/musiccaps/abc.%(ext)s"
    assert output_template(Path("/raw/audioset/100%")) == "/raw/audioset/100%%.%(ext)s"


YT = "ERROR: [youtube] 2Zb1YZ9jQwE: "
REAL_MESSAGES = {
    YT + "Private video. Sign in if you've been granted access to this video": "video_private",
    YT + "Video unavailable. This video has been removed by the uploader": "video_removed",
    YT + "This video has been removed for violating YouTube's Terms of Service": "video_removed",
    YT + "Video unavailable. This video is no longer available because the YouTube account associated with "
         "this video has been terminated.": "account_terminated",
    YT + "Video unavailable. This video contains content from SME, who has blocked it on copyright "
         "grounds.": "copyright",
    YT + "This video is no longer available due to a copyright claim by Warner Music Group": "copyright",
    YT + "Sign in to confirm your age. This video may be inappropriate for some users.": "age_restricted",
    YT + "Join this channel to get access to members-only content like this video, and other exclusive "
         "perks.": "sign_in_required",
    YT + "Video unavailable": "unavailable",
    YT + "Video unavailable. The uploader has not made this video available in your country": "unavailable",
    YT + "Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the "
         "authentication.": "bot_check",
    YT + "Sign in to confirm you're not a bot. This helps protect our community.": "bot_check",
    "ERROR: unable to download video data: HTTP Error 429: Too Many Requests": "rate_limited",
    YT + "The current session has been rate-limited by YouTube for up to an hour.": "rate_limited",
    "ERROR: Postprocessing: Unable to obtain file audio codec with ffprobe": "postprocessing",
    "ERROR: Postprocessing: audio conversion failed: Error opening output files: Invalid argument":
        "postprocessing",
    YT + "Unable to download API page: <urlopen error [Errno -3] Temporary failure in name resolution>":
        "network",
    "ERROR: unable to download video data: <urlopen error [Errno 104] Connection reset by peer>": "network",
    "ERROR: [download] Got error: The read operation timed out": "network",
    "ERROR: unable to download video data: HTTP Error 403: Forbidden": "network",
    YT + "Unable to download API page: HTTP Error 503: Service Unavailable (caused by <HTTPError 503: Service "
         "Unavailable>)": "network",
    "ERROR: unable to download video data: HTTP Error 502: Bad Gateway": "network",
    "ERROR: [generic] watch?v=x: Unable to download webpage: HTTP Error 500: Internal Server Error": "network",
    YT + "Requested format is not available. Use --list-formats for a list of available formats":
        "youtube_error",
    "ERROR: something yt-dlp has never said before": "youtube_error",
}


@pytest.mark.parametrize(("message", "reason"), REAL_MESSAGES.items())
def test_real_youtube_messages_are_classified(message: str, reason: str) -> None:
    error = classify(message, "2Zb1YZ9jQwE")

    assert error.reason == reason
    assert error.permanent == (reason in PERMANENT)
    assert message.removeprefix("ERROR: ") in error.detail


def test_a_cookie_folder_without_an_owner_is_removed_once_it_is_no_longer_being_made(tmp_path: Path) -> None:
    """A worker killed between making its folder and locking it leaves no owner file; one that is making its
    folder right now has none yet either, so only a folder older than the grace period goes."""
    old, young = tmp_path / f"{youtube.COOKIE_FOLDER_PREFIX}old", tmp_path / f"{youtube.COOKIE_FOLDER_PREFIX}new"
    for folder in (old, young):
        folder.mkdir()
        (folder / "cookies.txt").write_text("secret")
    stale = time.time() - youtube.UNOWNED_GRACE_S - 5
    os.utime(old, (stale, stale))

    assert youtube.sweep_cookie_copies(tmp_path) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == [young.name]


def test_a_search_asks_the_configured_origin_and_takes_the_first_video(
    mirror: MirrorServer, mirror_settings: Settings
) -> None:
    mirror.search("Ann Example Into the Sun & co", ["-bcdefghijk", "Bbcdefghijk"])
    mirror.search("nothing at all", [])
    mirror.faults = Faults(script=("503", "drop"), paths=("/results",))
    client = YouTubeClient(mirror_settings)

    assert client.search("Ann Example Into the Sun & co") == "-bcdefghijk"
    assert client.search("nothing at all") is None
    assert [entry.status for entry in mirror.log] == [503, 200, 200, 200]


def test_the_default_search_origin_is_youtube_search_for_videos() -> None:
    url = search_url(Settings(), "Ann Example Into the Sun")
    assert url == "https://www.youtube.com/results?sp=EgIQAQ%253D%253D&search_query=Ann+Example+Into+the+Sun"
    assert YoutubeSearchURLIE.suitable(url)
