"""musictext on a real Prefect server: ``musictext deploy``, process workers on the cpu and gpu pools,
``musictext reprocess``, the ingestion schedules, one run per stage and dataset at a time, and the UI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml
from corpus import DATASETS, MODEL, build_corpus
from prefect_server import PrefectServer, Worker, free_port
from test_pipeline_flows import embeddings
from ui_screenshot import capture, chromium, flow_run_url, png_colours

from flows.deploy import PREFECT_FILE, REPO
from flows.watch import family
from store.atomic import locked
from store.layout import DataRoot

pytestmark = pytest.mark.integration

ITEMS = 8
MUSICTEXT = str(Path(sys.executable).with_name("musictext"))


@contextmanager
def api(server: PrefectServer) -> Iterator:
    """A Prefect client of ``server`` (the test process may also have the session's test harness)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        yield client


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.5)


@dataclass
class Site:
    """A server with the deployments, the data root its workers use, and the environment of its clients."""

    server: PrefectServer
    root: DataRoot
    env: dict[str, str]
    deploy_output: list[str]

    def musictext(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MUSICTEXT, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def start_worker(self, pool: str) -> Worker:
        return self.server.start_worker(pool, f"{pool}-1", env=self.env, cwd=self.root.path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``musictext deploy``, twice (it must be idempotent), on a fresh server."""
    root = DataRoot(tmp_path_factory.mktemp("server-data"))
    with PrefectServer(tmp_path_factory.mktemp("prefect-server")) as server:
        env = server.env(MUSICTEXT_ROOT=str(root.path), MUSICTEXT_CONFIG=os.devnull, MUSICTEXT_UNIT_SIZE="4",
                         MUSICTEXT_REPO=str(REPO))
        site = Site(server, root, env, [])
        for _ in range(2):
            result = site.musictext("deploy")
            assert result.returncode == 0, result.stdout + result.stderr
            site.deploy_output.append(result.stdout)
        yield site
    assert server.survivors() == []


def test_deploy_creates_the_pools_and_every_deployment_idempotently(site: Site) -> None:
    assert "work pool cpu: created" in site.deploy_output[0] and "work pool gpu: created" in site.deploy_output[0]
    assert "work pool cpu: kept" in site.deploy_output[1]
    assert "kept the server's default result storage" in site.deploy_output[1]
    with api(site.server) as client:
        pools = {pool.name: pool.type for pool in client.read_work_pools()}
        deployments = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
    assert pools["cpu"] == "process" and pools["gpu"] == "process"
    assert {name: d.work_pool_name for name, d in deployments.items()} == {
        "ingest/cpu": "cpu", "preprocess/cpu": "cpu", "embed/gpu": "gpu", "verify/cpu": "cpu", "train/gpu": "gpu",
        "evaluate/cpu": "cpu", "pipeline/cpu": "cpu"}
    assert deployments["embed/gpu"].parameters == {"dataset": "synthetic", "model": "dsp"}
    assert deployments["pipeline/cpu"].pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $MUSICTEXT_REPO }}"}}]


def test_every_dataset_has_a_paused_ingestion_schedule_with_the_declared_cron(site: Site) -> None:
    declared = yaml.safe_load(PREFECT_FILE.read_text())
    ingest = next(d for d in declared["deployments"] if d["entrypoint"].endswith(":ingest"))
    expected = {s["parameters"]["dataset"]: s["cron"] for s in ingest["schedules"]}
    assert set(expected) == {"musiccaps", "audioset", "musicbench", "mtg_jamendo", "fma", "magnatagatune", "msd"}
    with api(site.server) as client:
        schedules = client.read_deployment_by_name("ingest/cpu").schedules
    assert len(schedules) == len(expected)  # deploying twice did not add a second set
    assert {s.parameters["dataset"]: s.schedule.cron for s in schedules} == expected
    assert not any(s.active for s in schedules)


@pytest.fixture(scope="module")
def reprocessed(site: Site) -> dict:
    """``musictext reprocess synthetic`` with only a cpu worker at first: the pipeline runs on it and hands
    embedding to the gpu pool, where the run waits until a gpu worker starts."""
    cpu = site.start_worker("cpu")
    process = subprocess.Popen([MUSICTEXT, "reprocess", "synthetic", "--limit", str(ITEMS)], env=site.env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        with api(site.server) as client:
            embed_deployment = client.read_deployment_by_name("embed/gpu").id

            def embed_runs() -> list:
                from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

                return client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[embed_deployment])))

            wait_until(lambda: bool(embed_runs()), "the pipeline hands embedding to embed/gpu", timeout=180)
            time.sleep(5)  # five polls of the cpu worker
            waiting = embed_runs()[0]
            gpu = site.start_worker("gpu")
            output, _ = process.communicate(timeout=240)
            embed_run = client.read_flow_run(waiting.id)
            pipeline_run = client.read_flow_run(client.read_task_run(embed_run.parent_task_run_id).flow_run_id)
            runs = family(client, pipeline_run.id)
            artifacts = client.read_artifacts()
    finally:
        if process.poll() is None:
            process.kill()
    return {"returncode": process.returncode, "output": output, "waiting": waiting, "embed": embed_run,
            "pipeline": pipeline_run, "runs": runs, "cpu": cpu, "gpu": gpu,
            "artifacts": [a for a in artifacts if a.flow_run_id in {r.id for r in runs}]}


def test_reprocess_runs_the_pipeline_deployment_with_embedding_on_the_gpu_pool(reprocessed: dict) -> None:
    assert reprocessed["returncode"] == 0, reprocessed["output"]
    assert "pipeline-synthetic-dsp: Completed" in reprocessed["output"]
    assert f"/runs/flow-run/{reprocessed['pipeline'].id}" in reprocessed["output"]
    assert reprocessed["waiting"].state.is_scheduled()  # the cpu worker left it alone
    embed_run = reprocessed["embed"]
    assert embed_run.state.is_completed() and embed_run.work_pool_name == "gpu"
    assert embed_run.name == "embed-synthetic-dsp"
    assert str(embed_run.id) in reprocessed["gpu"].log.read_text()
    assert str(embed_run.id) not in reprocessed["cpu"].log.read_text()
    names = {run.name for run in reprocessed["runs"]}
    assert {"pipeline-synthetic-dsp", "ingest-synthetic", "catalog-synthetic", "acquire-synthetic",
            "preprocess-synthetic", "embed-synthetic-dsp", "verify-synthetic"} <= names
    assert all(run.state.is_completed() for run in reprocessed["runs"])


def test_the_runs_carry_progress_table_and_report_artifacts(reprocessed: dict) -> None:
    by_key = {a.key: a for a in reprocessed["artifacts"]}
    for stage in ("acquire", "preprocess", "embed-dsp", "verify"):
        assert by_key[f"synthetic-{stage}-progress"].data == 100.0
        assert json.loads(by_key[f"synthetic-{stage}-counts"].data)[0]["ok"] == ITEMS
    assert "# " in by_key["synthetic-verification-report"].data
    summary = json.loads(by_key["pipeline-synthetic-dsp-summary"].data)
    assert [row["stage"] for row in summary] == ["catalog", "acquire", "preprocess", "embed:dsp", "verify"]


def test_the_pipeline_in_process_gives_what_the_pools_gave(site: Site, reprocessed: dict, tmp_path: Path) -> None:
    result = site.musictext("pipeline", "--limit", str(ITEMS), "--root", str(tmp_path), "--in-process")
    assert result.returncode == 0, result.stdout + result.stderr
    local, pooled = embeddings(DataRoot(tmp_path)), embeddings(site.root)
    assert local.keys() == pooled.keys() and len(local) == ITEMS
    for item_id, vector in local.items():
        assert (vector == pooled[item_id]).all()
    with api(site.server) as client:  # --in-process: no second run of embed/gpu
        embed_id = client.read_deployment_by_name("embed/gpu").id
        assert [r.id for r in client.read_flow_runs() if r.deployment_id == embed_id] == [reprocessed["embed"].id]


def test_the_pipeline_hands_training_to_the_gpu_pool(site: Site, reprocessed: dict) -> None:
    """A pipeline run of the train stage only, on a small corpus of shards: the cpu worker runs the pipeline,
    the gpu worker the training; its result comes back through the result storage as the pipeline's row."""
    from prefect.deployments import run_deployment

    build_corpus(site.root.path, tracks=16)
    options = {"max_steps": 4, "batch_size": 8, "eval_every": 4, "checkpoint_every": 4, "freeze_encoder": True,
               "device": "cpu"}
    with api(site.server) as client:
        run = run_deployment("pipeline/cpu", as_subflow=False, parameters={
            "datasets": list(DATASETS), "models": [MODEL], "stages": ["train"], "train_options": options})
        runs = family(client, run.id)
        artifacts = [a for a in client.read_artifacts() if a.flow_run_id == run.id]
    assert run.state.is_completed(), run.state.message
    train_run = next(r for r in runs if r.name.startswith("train-"))
    assert train_run.work_pool_name == "gpu" and train_run.state.is_completed()
    assert str(train_run.id) in reprocessed["gpu"].log.read_text()
    summary = json.loads(next(a for a in artifacts if (a.key or "").endswith("-summary")).data)
    run_id = f"{MODEL}-{'-'.join(DATASETS)}"
    assert [(row["stage"], row["worked"]) for row in summary] == [(f"train:{MODEL}", 2)]
    assert f"{run_id}-frames" in summary[0]["extra"] and f"{run_id}-pooled" in summary[0]["extra"]
    for head in ("frames", "pooled"):
        assert (site.root.runs_dir() / f"{run_id}-{head}" / "metrics.jsonl").exists()


def test_two_runs_of_one_stage_on_one_dataset_take_turns(site: Site, reprocessed: dict, tmp_path: Path) -> None:
    """Both runs start while a third holds the lock: both wait and say so; then one works every item and the
    other, finding them done, none."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment

    root = DataRoot(tmp_path)
    result = site.musictext("ingest", "synthetic", "--limit", str(ITEMS), "--root", str(root.path))
    assert result.returncode == 0, result.stdout + result.stderr
    holder = root.lock("preprocess", "synthetic")
    with api(site.server) as client:
        with locked(holder):
            holder.with_name("synthetic.json").write_text(json.dumps(
                {"flow_run": "held-by-the-test", "pid": os.getpid(), "host": "here", "since": "now"}))
            runs = [run_deployment("preprocess/cpu", parameters={"dataset": "synthetic", "root": str(root.path)},
                                   timeout=0, as_subflow=False) for _ in range(2)]

            def said_waiting(run_id: UUID) -> bool:
                logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
                return any("already running in flow run 'held-by-the-test'" in log.message for log in logs)

            wait_until(lambda: all(said_waiting(run.id) for run in runs), "both runs wait for the lock")
            assert all(client.read_flow_run(run.id).state.is_running() for run in runs)
            assert not root.clip_dir("synthetic").exists() or not any(root.clip_dir("synthetic").iterdir())
        wait_until(lambda: all(client.read_flow_run(run.id).state.is_final() for run in runs), "both runs end")
        assert all(client.read_flow_run(run.id).state.is_completed() for run in runs)
        worked = []
        for run in runs:
            artifacts = [a for a in client.read_artifacts() if a.flow_run_id == run.id and a.type == "table"]
            worked.append(json.loads(artifacts[0].data)[0]["worked"])
    assert sorted(worked) == [0, ITEMS]
    assert len(list(root.clip_dir("synthetic").glob("*.flac"))) == ITEMS


def test_the_flow_run_page_shows_the_run_and_its_artifacts(site: Site, reprocessed: dict, tmp_path: Path) -> None:
    try:
        chromium()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    url = flow_run_url(site.server.ui_url, str(reprocessed["pipeline"].id))
    png = tmp_path / "pipeline-run.png"
    text = capture(url, png)
    assert "pipeline-synthetic-dsp" in text and "Completed" in text
    assert "pipeline-synthetic-dsp-summary" in text  # the Artifacts tab lists the run's summary table
    width, height, colours = png_colours(png)
    assert (width, height) == (1600, 1000) and colours > 20  # a rendered page, not a blank one


def test_a_failed_pipeline_run_fails_reprocess_with_its_reason(site: Site, reprocessed: dict) -> None:
    result = site.musictext("reprocess", "no_such_dataset", "--stage", "ingest")
    assert result.returncode == 1
    assert "pipeline-no_such_dataset-dsp: Failed" in result.stdout
    assert "no_such_dataset" in result.stdout and "synthetic" in result.stdout  # the error names the sources


def test_musictext_worker_stops_on_one_sigterm_even_when_started_with_sigint_ignored(site: Site) -> None:
    """As from `nohup musictext worker &`: the worker restores SIGINT, so the SIGTERM that Prefect turns into a
    SIGINT stops it at once instead of waiting for a second SIGTERM."""
    process = subprocess.Popen([MUSICTEXT, "worker", "--pool", "gpu", "--name", "nohup-gpu"], env=site.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_until(lambda: "nohup-gpu" in site.server.workers_online("gpu"), "the worker is online", timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) is not None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_server_commands_without_a_server_say_how_to_get_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "MUSICTEXT_"))}
    for command in (["reprocess", "synthetic"], ["deploy"], ["worker"]):
        result = subprocess.run([MUSICTEXT, *command], env=env | {"PREFECT_HOME": str(tmp_path)},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, command
        assert "no Prefect server configured" in result.stderr and "musictext server" in result.stderr, command


def test_musictext_server_serves_the_ui_pointed_at_its_own_api(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MUSICTEXT_"))}
    env |= {"PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    process = subprocess.Popen([MUSICTEXT, "server", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/api/health", timeout=2).json() is True
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, "musictext server answers", timeout=120)
        assert httpx.get(f"{base}/ui-settings", timeout=10).json()["api_url"] == f"{base}/api"
        assert (tmp_path / "prefect.db").exists()  # SQLite under PREFECT_HOME
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert f"export PREFECT_API_URL={base}/api" in stderr
