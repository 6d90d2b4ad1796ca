"""Where model weights come from: a local directory or the Hugging Face cache, never the network.

A run must not start a multi-gigabyte download on its own (on a GPU worker, maybe without network,
maybe many workers at once), so lookup is strictly local: an explicit directory (``--weights PATH``)
or the Hugging Face cache at the *pinned* revision. Anything missing raises
:class:`MissingWeightsError` before any work, with the command that fetches the weights.

The pinned revision and the weights file's sha256 identify what produced a vector; both go into
every shard's attributes. Each model module declares its own :class:`WeightsSpec` (in its ``SPEC``).
Nothing here imports torch, so the CLI can check weights in the default install.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from huggingface_hub import constants, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

from store.errors import UserError
from store.secrets import causes, scrub, scrubbed_logs

try:
    import httpx2 as hub_http  # huggingface_hub >= 1 talks through httpx2
except ModuleNotFoundError:  # huggingface_hub 0.x (the models extra's transformers 4.57) uses requests: OSErrors
    import httpx as hub_http

_COMMIT = re.compile(r"[0-9a-f]{40}")
LOCAL_REVISION = "local"
"""Revision recorded for weights from a directory that is not a Hugging Face snapshot; the checksum
still identifies them."""


@dataclass(frozen=True)
class WeightsSpec:
    name: str
    """The embedder name, also the argument of the fetch command."""
    title: str
    repo_id: str
    revision: str
    """The Hub commit this code was written and checked against."""
    files: tuple[str, ...]
    """Files the loader reads besides the weights."""
    weight_files: tuple[str, ...]
    """Accepted weight files, preferred first (the order ``from_pretrained`` tries them)."""
    download_size: str
    sha256: str = ""
    """sha256 of the weights file when it is known: checked before a pickled checkpoint is unpickled."""
    requires: tuple[WeightsSpec, ...] = ()
    """Further repositories the model is built from, fetched and located together with this one. With
    ``--weights PATH``, PATH then holds one subdirectory per repository, named as its :attr:`folder`."""

    @property
    def fetch_command(self) -> str:
        return f"musictext models fetch {self.name}"

    @property
    def folder(self) -> str:
        """The repository's name without its owner: its subdirectory in a multi-repository ``--weights``."""
        return self.repo_id.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class LocatedWeights:
    directory: Path
    """Holds the spec's files and ``weights_file``; what ``from_pretrained`` is given."""
    revision: str
    weights_file: Path
    sha256: str
    requires: dict[str, LocatedWeights] = field(default_factory=dict)
    """The located :attr:`WeightsSpec.requires`, by repository id."""


class MissingWeightsError(UserError, RuntimeError):
    """Weights are not on this machine; the message names the command that fetches them."""


class WeightsFetchError(MissingWeightsError):
    """The Hub did not hand the weights over; the message says why and what to do, with no credential in it."""


def locate_weights(
    spec: WeightsSpec, weights: Path | None = None, *, cache_dir: Path | None = None
) -> LocatedWeights:
    """The weights in ``weights`` if given, otherwise in the Hugging Face cache at ``spec.revision``; the
    same for every repository in ``spec.requires``.

    ``cache_dir`` defaults to huggingface_hub's cache (``HF_HUB_CACHE`` / ``HF_HOME``). Raises
    :class:`MissingWeightsError` naming what is missing and what to run.
    """
    parts = (spec, *spec.requires)
    if weights is None:
        cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
        located = [_from_cache(part, cache, _layout(spec)) for part in parts]
    elif spec.requires:
        located = [_from_directory(part, _subdirectory(spec, Path(weights), part)) for part in parts]
    else:
        located = [_from_directory(spec, Path(weights))]
    main, *required = located
    return replace(main, requires={part.repo_id: found for part, found in zip(spec.requires, required, strict=True)})


def fetch_weights(spec: WeightsSpec, *, endpoint: str, cache_dir: Path | None = None) -> LocatedWeights:
    """Download the spec's files at its pinned revision into the Hugging Face cache, then locate them.

    The one place weights are downloaded: ``musictext models fetch`` calls it where the internet is
    reachable; runs only ever :func:`locate_weights`. huggingface_hub resumes interrupted files and skips
    complete ones, so fetching again is cheap. The token (``HF_TOKEN`` or the one ``hf auth login`` saved) is
    never shown: Hub errors echo request headers, so every failure becomes a :class:`WeightsFetchError` whose
    message is scrubbed and whose chain is dropped, and the library's log records are scrubbed as they are made.
    """
    for part in (spec, *spec.requires):
        try:
            with scrubbed_logs():
                snapshot_download(
                    part.repo_id, revision=part.revision, allow_patterns=[*part.files, *part.weight_files],
                    endpoint=endpoint, cache_dir=cache_dir,
                )
        except (OSError, hub_http.HTTPError) as error:  # the Hub's errors are OSErrors; the client's are not
            where = f"{part.repo_id} at revision {part.revision[:12]} from {endpoint}"
            raise WeightsFetchError(
                f"could not fetch the {spec.title} weights ({where}): {_fetch_failure(error, endpoint)}"
            ) from None
    return locate_weights(spec, cache_dir=cache_dir)


def _fetch_failure(error: Exception, endpoint: str) -> str:
    """Why a download failed and what to do, from the first error in the chain that says; scrubbed."""
    chain = causes(error)
    for cause in chain:
        said = scrub(" ".join(str(cause).split())[:300])
        if isinstance(cause, GatedRepoError):
            return f"the repository is gated ({said}); accept its conditions on the Hub, then set HF_TOKEN."
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            return _refusal(cause.response.status_code, scrub(cause.server_message or ""))
        if isinstance(cause, hub_http.TransportError):
            return (f"could not reach {endpoint} ({said}); check the network, or settings.hf_endpoint "
                    "(MUSICTEXT_HF_ENDPOINT) for a mirror.")
        if isinstance(cause, OSError) and cause.errno is not None:
            return f"writing to the Hugging Face cache failed ({said}); check free space and permissions."
    return scrub(" ".join(str(chain[-1]).split())[:300]) or type(chain[-1]).__name__


def _refusal(status: int, server_message: str) -> str:
    said = f": {' '.join(server_message.split())[:300]}" if server_message else ""
    if status in (401, 403):
        advice = "set HF_TOKEN to a token with access (a private or gated repository needs one)."
    elif status in (404, 410):
        advice = "check settings.hf_endpoint: a mirror must hold this repository at this revision."
    elif status == 429 or status >= 500:
        advice = "a fault on the Hub's side; run the command again later."
    else:
        advice = "see the Hub's answer above."
    return f"the Hub answered {status}{said}; {advice}"


def _from_directory(spec: WeightsSpec, directory: Path) -> LocatedWeights:
    if not directory.is_dir():
        raise MissingWeightsError(
            f"--weights {directory} is not a directory. Point it at a directory holding the {spec.title} "
            f"files ({_file_list(spec)}), or leave it out and run `{spec.fetch_command}` to put the weights "
            "into the Hugging Face cache."
        )
    def present(name: str) -> Path | None:
        return directory / name if (directory / name).is_file() else None

    missing, weights_file = _look_up(spec, present)
    if weights_file is None:
        raise MissingWeightsError(
            f"{directory} does not hold the {spec.title} weights: missing {missing}. It needs "
            f"{_file_list(spec)}; `{spec.fetch_command}` downloads them ({spec.download_size})."
        )
    return LocatedWeights(directory, _directory_revision(directory), weights_file, _sha256(weights_file))


def _subdirectory(spec: WeightsSpec, root: Path, part: WeightsSpec) -> Path:
    """``part``'s subdirectory of a multi-repository ``--weights`` directory, refused unless it is one."""
    directory = root / part.folder
    if not directory.is_dir():
        raise MissingWeightsError(
            f"--weights {root} has no directory {part.folder}/ ({part.repo_id}). The {spec.title} weights come "
            f"from {len(spec.requires) + 1} repositories, so --weights must be {_layout(spec)}; or leave it "
            f"out and run `{spec.fetch_command}` to put them into the Hugging Face cache."
        )
    return directory


def _from_cache(spec: WeightsSpec, cache_dir: Path, layout: str) -> LocatedWeights:
    def cached(name: str) -> Path | None:
        found = try_to_load_from_cache(spec.repo_id, name, cache_dir=cache_dir, revision=spec.revision)
        return Path(found) if isinstance(found, str) else None

    missing, weights_file = _look_up(spec, cached)
    if weights_file is None:
        raise MissingWeightsError(
            f"the {spec.title} weights ({spec.repo_id} at revision {spec.revision[:12]}) are not in the "
            f"Hugging Face cache {cache_dir}: missing {missing}. Run `{spec.fetch_command}` to download them "
            f"({spec.download_size}), or pass --weights PATH to {layout}."
        )
    revision = spec.revision if _COMMIT.fullmatch(spec.revision) else _directory_revision(weights_file.parent)
    return LocatedWeights(weights_file.parent, revision, weights_file, _sha256(weights_file))


def _look_up(spec: WeightsSpec, find: Callable[[str], Path | None]) -> tuple[str, Path | None]:
    """What is missing, as a readable list, and the weights file; ``None`` instead of it when anything is."""
    missing = [name for name in spec.files if find(name) is None]
    weights_file = next((path for path in map(find, spec.weight_files) if path is not None), None)
    if weights_file is None:
        missing.append(" or ".join(spec.weight_files))
    return ", ".join(missing), weights_file if not missing else None


def _directory_revision(directory: Path) -> str:
    """The commit of a Hugging Face cache snapshot directory (``…/snapshots/<commit>``) given by path."""
    resolved = directory.resolve()
    if resolved.parent.name == "snapshots" and _COMMIT.fullmatch(resolved.name):
        return resolved.name
    return LOCAL_REVISION


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _layout(spec: WeightsSpec) -> str:
    """What a ``--weights`` directory for ``spec`` must hold."""
    if not spec.requires:
        return f"a directory holding {_file_list(spec)}"
    folders = "; ".join(f"{part.folder}/ with {_file_list(part)}" for part in (spec, *spec.requires))
    return f"a directory with one subdirectory per repository ({folders})"


def _file_list(spec: WeightsSpec) -> str:
    weights = " or ".join(spec.weight_files)
    return f"{', '.join(spec.files)} and {weights}" if spec.files else weights
