"""``musictext serve`` as Navidrome uses it: a real process on a loopback port, two trained runs, JSON over HTTP.

The client side follows Navidrome's (``server/nativeapi/recommendations.go``): POST JSON to ``/embed_text``, a
30 s timeout, anything but 200 is an error, and the answer's ``embedding``, ``model`` and ``dimension`` are read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from corpus import DATASETS, build_corpus
from fastapi.testclient import TestClient
from prefect_server import free_port, log_tail
from typer.testing import CliRunner

from embedders import embedder_spec
from flows.cli import app
from store.layout import DataRoot
from training.config import TrainConfig
from training.model import load_text_embedder
from training.runs import newest_run
from training.service import create_app, load_models
from training.trainer import FINISHED_FILE, checkpoint_model_dir, train

TIMEOUT = 30.0
"""Navidrome's client timeout."""
TEXTS = ["slow piano", "An angry metal song featuring drums.", "dreamy reggae with a banjo", "ü — 日本語 ♪"]
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Service:
    url: str
    root: DataRoot
    log: Path

    def embed(self, body: object) -> requests.Response:
        return requests.post(f"{self.url}/embed_text", json=body, timeout=TIMEOUT)


def _train(root: DataRoot, model: str, run_id: str, head: str) -> None:
    train(TrainConfig(model=model, space=embedder_spec(model).space, datasets=DATASETS, run_id=run_id, head=head,
                      freeze_encoder=True, batch_size=16, lr=3e-3, warmup_steps=2, max_steps=8, eval_every=4,
                      checkpoint_every=4, fractions=(0.6, 0.4, 0.0), max_length=32, device="cpu"),
          root, show_progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """``dsp-pooled`` (dsp's 312-d space, pooled head) and ``latent-frames`` (Music2Latent's 576-d space, frames
    head), both finished, plus ``dsp-newer``: a newer dsp run that has not finished (default serving skips it)."""
    path = tmp_path_factory.mktemp("served")
    for model in ("dsp", "music2latent"):
        build_corpus(path, tracks=12, official_splits=False, model=model)
    root = DataRoot(path)
    _train(root, "dsp", "dsp-pooled", "pooled")
    _train(root, "music2latent", "latent-frames", "frames")
    unfinished = shutil.copytree(root.runs_dir() / "dsp-pooled", root.runs_dir() / "dsp-newer")
    (unfinished / FINISHED_FILE).unlink()
    later = time.time() + 60
    os.utime(checkpoint_model_dir(unfinished), (later, later))
    return root


def _musictext() -> str:
    return str(Path(sys.executable).with_name("musictext"))


@pytest.fixture(scope="module")
def service(trained: DataRoot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with log.open("w") as handle:
        process = subprocess.Popen([_musictext(), "serve", "--root", str(trained.path), "--port", str(port),
                                    "--device", "cpu"], stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log)
        yield Service(url, trained, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"musictext serve exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"musictext serve did not answer within {timeout:.0f} s:\n{log_tail(log)}")


def _vector(response: requests.Response, model: str, dimension: int) -> np.ndarray:
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model"], answer["dimension"], answer["is_stub"]) == (model, dimension, False)
    vector = np.asarray(answer["embedding"], dtype=np.float32)
    assert vector.shape == (dimension,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    return vector


def test_models_lists_every_model_with_its_size_and_whether_a_run_serves_it(service: Service) -> None:
    listed = {entry["name"]: entry for entry in requests.get(f"{service.url}/models", timeout=TIMEOUT).json()}
    assert {name: (entry["dimension"], entry["status"]) for name, entry in listed.items()} == {
        "muq": (1536, "unavailable"), "mert": (76_800, "unavailable"), "latent": (576, "available"),
        "dsp": (312, "available"), "music2latent-stereo": (576, "unavailable")}
    assert listed["dsp"]["run"] == "dsp-pooled", "the newest *finished* run serves by default"
    assert listed["latent"]["run"] == "latent-frames" and listed["latent"]["audio_model"] == "music2latent"
    assert "no finished training run for muq" in listed["muq"]["description"]


def test_health_says_what_is_loaded_and_where(service: Service) -> None:
    health = requests.get(f"{service.url}/health", timeout=TIMEOUT).json()
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert {name: (entry["run"], entry["head"], entry["finished"]) for name, entry in health["loaded"].items()} == {
        "dsp": ("dsp-pooled", "pooled", True), "latent": ("latent-frames", "frames", True)}
    assert health["unavailable"] == ["mert", "muq", "music2latent-stereo"]


@pytest.mark.parametrize(("model", "run_id", "dimension"), [("dsp", "dsp-pooled", 312),
                                                              ("latent", "latent-frames", 576)])
def test_vectors_are_the_runs_own_unit_vectors(service: Service, model: str, run_id: str, dimension: int) -> None:
    served = np.stack([_vector(service.embed({"text": text, "model": model}), model, dimension) for text in TEXTS])
    expected = load_text_embedder(checkpoint_model_dir(service.root.runs_dir() / run_id)).encode(TEXTS)
    assert np.abs(served - expected).max() < 1e-5
    again = _vector(service.embed({"text": TEXTS[1], "model": model}), model, dimension)
    assert np.array_equal(again, served[1]), "the same text gives the same vector"


def test_curl_with_a_form_content_type_still_gets_the_vector(service: Service) -> None:
    """`curl -d '{...}'` labels its JSON body application/x-www-form-urlencoded, as the README's example does."""
    response = requests.post(f"{service.url}/embed_text", data='{"text":"slow piano","model":"dsp"}',
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=TIMEOUT)
    _vector(response, "dsp", 312)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"text": "", "model": "dsp"}, 400, "text is empty"),
    ({"text": "  \n", "model": "dsp"}, 400, "text is empty"),
    ({"text": "slow piano", "model": "clap"}, 400, "unknown model 'clap'; the models are"),
    ({"model": "dsp"}, 400, "the body must be JSON"),
    (["slow piano"], 400, "the body must be JSON"),
    ({"text": 7, "model": "dsp"}, 400, "the body must be JSON"),
    ({"text": "x" * 10_001, "model": "dsp"}, 400, "at most 10000"),
    ({"text": "slow piano", "model": "muq"}, 503, "`musictext train --model muq --dataset DATASET`"),
    ({"text": "slow piano"}, 503, "muq is unavailable"),
    ({"text": "slow piano", "model": "latent", "extra": 1}, 200, ""),
])
def test_refusals_are_json_messages(service: Service, body: object, status: int, says: str) -> None:
    response = service.embed(body)
    assert response.status_code == status, response.text
    if status != 200:
        assert says in response.json()["detail"] and "Traceback" not in response.text


def test_a_body_that_is_not_json_is_refused_with_a_message(service: Service) -> None:
    response = requests.post(f"{service.url}/embed_text", data=b"\xff\xfe not json", timeout=TIMEOUT)
    assert response.status_code == 400 and "the body must be JSON" in response.json()["detail"]


def test_two_hundred_concurrent_requests_are_answered_in_batches(service: Service) -> None:
    requests_ = [{"text": f"{TEXTS[i % len(TEXTS)]} number {i}", "model": ("dsp", "latent")[i % 2]}
                 for i in range(200)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(service.embed, requests_))
    for body, response in zip(requests_, responses, strict=True):
        _vector(response, body["model"], 312 if body["model"] == "dsp" else 576)
    loaded = requests.get(f"{service.url}/health", timeout=TIMEOUT).json()["loaded"]
    assert max(loaded["dsp"]["largest_batch"], loaded["latent"]["largest_batch"]) > 1, \
        "concurrent requests share a forward pass"


def test_a_failure_inside_the_service_is_a_500_with_a_message_not_a_trace(trained: DataRoot) -> None:
    """A head that produces NaN (a diverged training, say) must not reach Navidrome as a vector."""
    model = load_models(trained, {"dsp": "dsp-pooled"}, CPU)
    dsp = next(served for served in model if served.name == "dsp")
    with torch.no_grad():
        dsp.embedder.head.project.weight.fill_(float("nan"))
    with TestClient(create_app([dsp], CPU), raise_server_exceptions=False) as client:
        response = client.post("/embed_text", json={"text": "slow piano", "model": "dsp"})
    assert response.status_code == 500
    assert "FloatingPointError" in response.json()["detail"] and "Traceback" not in response.text


def test_a_broken_newest_run_leaves_its_model_unavailable_and_the_rest_serving(trained: DataRoot,
                                                                               tmp_path: Path) -> None:
    root = DataRoot(tmp_path)
    shutil.copytree(trained.runs_dir(), root.runs_dir())
    head = checkpoint_model_dir(root.runs_dir() / "latent-frames") / "head.safetensors"
    head.write_bytes(head.read_bytes()[:100])
    models = {served.name: served for served in load_models(root, {}, CPU)}
    assert models["dsp"].available and not models["latent"].available
    assert models["latent"].reason.startswith("run latent-frames cannot serve:")


def test_newest_run_skips_unfinished_runs(trained: DataRoot) -> None:
    assert newest_run(trained, "dsp", embedder_spec("dsp").space) == "dsp-pooled"


def test_a_named_run_serves_even_unfinished(trained: DataRoot) -> None:
    models = {served.name: served for served in load_models(trained, {"dsp": "dsp-newer"}, CPU)}
    assert models["dsp"].run.run_id == "dsp-newer" and not models["dsp"].run.finished


@pytest.mark.parametrize(("arguments", "says"), [
    (["--run", "muq"], "--run takes MODEL=RUN_ID"),
    (["--run", "muq=nope"], "no training run 'nope'"),
    (["--run", "clap=dsp-pooled"], "no model is called 'clap'"),
    (["--run", "latent=dsp-pooled"], "run dsp-pooled embeds text into dsp's vectors"),
])
def test_serve_mistakes_are_one_message_and_exit_2(trained: DataRoot, arguments: list[str], says: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--root", str(trained.path), "--port", str(free_port()), *arguments])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_port_in_use_is_said_before_loading_anything(trained: DataRoot) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--root", str(trained.path), "--port", str(port)])
    assert result.exit_code == 2 and "is in use; choose another with --port" in " ".join(result.output.split())


def test_the_service_log_carries_no_request_text(service: Service) -> None:
    service.embed({"text": "a secret playlist name", "model": "dsp"})
    assert "a secret playlist name" not in service.log.read_text()
    assert "POST /embed_text" in service.log.read_text(), "the access log names the call, not its text"
