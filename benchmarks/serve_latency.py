"""What ``musictext serve`` adds to a text embedder's own cost: requests/s and p50/p95 latency, next to ``encode``.

For each head it saves an untrained text embedder into ``muq``'s space (1536-d, or ``--model``'s) as a finished
run in a temporary data root (latency does not depend on the weight values), starts ``musictext serve`` as a
real process on a free loopback port, and measures in one run:

* ``encode, 1 text``: ``TextEmbedder.encode([text])`` in this process, one query at a time: the floor for a
  single user;
* ``encode, batch of C``: ``encode`` of C texts at once, per text: the floor for C users at once;
* ``service, 1 client``: one client posting one query after another (Navidrome's case: one user typing);
* ``service, C clients``: C clients at once (``--concurrency``), each posting its share of the requests.

The ratio column divides the service's time per request by the matching ``encode`` time: what HTTP, JSON and
the batching queue cost on top of the model. Queries are distinct texts, so the service's answer cache never
hits. ::

    python benchmarks/serve_latency.py --device cuda --requests 2000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from embedders import embedder_spec
from store.layout import DataRoot
from training.config import TrainConfig
from training.model import EmbedderConfig, TextEmbedder
from training.trainer import FINISHED_FILE, checkpoint_model_dir, resolve_device

WORDS = ("calm", "angry", "dreamy", "piano", "violin", "drums", "jazz", "techno", "reggae", "slow", "fast", "dark")


def queries(count: int, seed: int = 0) -> list[str]:
    """Distinct search-box texts of 2–6 words."""
    rng = np.random.default_rng(seed)
    return [f"{' '.join(rng.choice(WORDS, size=rng.integers(2, 7)))} {i}" for i in range(count)]


def save_run(root: DataRoot, model: str, head: str) -> str:
    """An untrained embedder saved as a finished run, as ``musictext train`` leaves one."""
    spec = embedder_spec(model)
    run_id = f"bench-{model}-{head}"
    run_dir = root.runs_dir() / run_id
    TextEmbedder(EmbedderConfig(spec.stored_dim, head, audio_model=model)).save(checkpoint_model_dir(run_dir))
    config = TrainConfig(model=model, space=spec.space, datasets=("benchmark",), run_id=run_id, head=head)
    (run_dir / "config.json").write_text(json.dumps(config.to_json()))
    (run_dir / FINISHED_FILE).write_text("{}")
    return run_id


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    return 1000 * float(np.percentile(seconds, 50)), 1000 * float(np.percentile(seconds, 95))


def time_encode(embedder: TextEmbedder, texts: list[str], batch: int) -> tuple[float, list[float]]:
    """Per-text seconds over all of ``texts`` in batches of ``batch``, and each batch's latency."""
    embedder.encode(texts[:batch])
    latencies = []
    for start in range(0, len(texts), batch):
        began = time.perf_counter()
        embedder.encode(texts[start:start + batch])
        latencies.append(time.perf_counter() - began)
    return sum(latencies) / len(texts), latencies


async def time_service(url: str, model: str, texts: list[str], clients: int) -> tuple[float, list[float]]:
    """Per-request seconds (wall time / requests) with ``clients`` concurrent clients, and each request's latency."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        await client.post("/embed_text", json={"text": "warm up", "model": model})

        async def one_client(share: list[str]) -> None:
            for text in share:
                began = time.perf_counter()
                response = await client.post("/embed_text", json={"text": text, "model": model})
                response.raise_for_status()
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(one_client(texts[i::clients]) for i in range(clients)))
        return (time.perf_counter() - began) / len(texts), latencies


def start_service(root: DataRoot, model: str, run_id: str, device: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    musictext = Path(sys.executable).with_name("musictext")
    process = subprocess.Popen([str(musictext), "serve", "--root", str(root.path), "--port", str(port),
                                "--device", device, "--run", f"{model}={run_id}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("musictext serve did not start within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="muq", help="audio model whose space the text embedders map into")
    parser.add_argument("--head", action="append", choices=("pooled", "frames"), help="default: both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    service_name = embedder_spec(args.model).served_as
    table = Table(title=f"text embedding for {service_name} ({embedder_spec(args.model).stored_dim}-d) on "
                        f"{args.device}, {args.requests} queries")
    for column in ("head", "path", "texts/s", "p50 ms", "p95 ms", "time per text vs encode"):
        table.add_column(column, justify="left" if column in ("head", "path") else "right")
    texts = queries(args.requests)
    with tempfile.TemporaryDirectory() as scratch:
        root = DataRoot(Path(scratch))
        for head in args.head or ["pooled", "frames"]:
            run_id = save_run(root, args.model, head)
            embedder = TextEmbedder(EmbedderConfig(embedder_spec(args.model).stored_dim, head))
            embedder.to(resolve_device(args.device))
            single, single_latency = time_encode(embedder, texts, 1)
            batched, batch_latency = time_encode(embedder, texts, args.concurrency)
            process, url = start_service(root, args.model, run_id, args.device)
            try:
                one, one_latency = asyncio.run(time_service(url, service_name, texts, 1))
                many, many_latency = asyncio.run(time_service(url, service_name, queries(args.requests, 1),
                                                              args.concurrency))
            finally:
                process.terminate()
                process.wait(timeout=30)
            rows = (("encode, 1 text", single, single_latency, single),
                    (f"encode, batch of {args.concurrency}", batched, batch_latency, batched),
                    ("service, 1 client", one, one_latency, single),
                    (f"service, {args.concurrency} clients", many, many_latency, batched))
            for path, per_text, latencies, reference in rows:
                p50, p95 = percentiles(latencies)
                table.add_row(head, path, f"{1 / per_text:,.0f}", f"{p50:.1f}", f"{p95:.1f}",
                              f"{per_text / reference:.2f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
