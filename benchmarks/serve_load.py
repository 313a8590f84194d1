"""Load test of ``headstart serve``: /predict latency and throughput, /health latency while
busy, 5xx count and server memory, for one or more ``--max-batch`` settings.

    .venv/bin/python benchmarks/serve_load.py [--model model.onnx] [--requests 10000]
        [--concurrency 16] [--max-batch 1 --max-batch 32] [--max-wait-ms 5] [--before SRC]

Without ``--model`` a MobileNetV2 (random init, 224 px, 3 classes) is trained for one epoch on
generated images and exported to ONNX in a temporary folder. For each ``--max-batch`` the script
starts ``headstart serve`` in a subprocess and fires ``--requests`` single-image requests from
``--concurrency`` client threads (urllib, one connection per request): ``--garbage`` of them
random bytes named .jpg (expected 415), ``--large`` of them 3000×2000 JPEGs, the rest 640×480
JPEGs, all made here. A monitor process calls /health every 20 ms during the load and samples the
server's RSS (/proc, Linux). ``--before SRC`` first loads a server run from another checkout's
``src`` folder (e.g. ``git archive <rev> src | tar -x -C /tmp/before``) without the batching
options, for a before/after comparison. Writes benchmarks/results/serve-load.json and .md (``--out``).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def photo(width: int, height: int, seed: int) -> bytes:
    """A JPEG (quality 90) with gradients, blobs and noise: photo-like to decode and compress."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(x / (37 + 11 * c) + y / (53 + 7 * c) + seed) for c in range(3)], -1
    )
    noise = rng.normal(0, 12, size=(height // 4, width // 4, 3)).repeat(4, 0).repeat(4, 1)
    arr = np.clip(base + noise[:height, :width], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_model(folder: Path) -> Path:
    """A one-epoch MobileNetV2 (no pretrained weights), exported to ONNX."""
    import headstart

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        d = folder / "data" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(8):
            arr = rng.integers(0, 80, (256, 256, 3)) + np.array(colour) // 2
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(d / f"{i}.png")
    run = headstart.train(
        data=str(folder / "data"),
        out=str(folder / "run"),
        model="torchvision:mobilenet_v2",
        weights="none",
        image_size=224,
        epochs=1,
        batch_size=8,
        num_workers=0,
        augment="none",
    ).run_dir
    return Path(headstart.export_model(run, "onnx").path)


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "headstartload"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def call(url: str, body: bytes | None = None, ctype: str = "") -> tuple[int, float]:
    """``(status, seconds)``; status 0 for a connection error."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype} if body else {})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    except OSError:
        status = 0
    return status, time.perf_counter() - t


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, options: list[str], src: Path | None) -> tuple[subprocess.Popen, str]:
    """``headstart serve model --port P *options`` (headstart imported from ``src`` if given)."""
    port = free_port()
    cmd = [sys.executable, "-m", "headstart.cli", "serve", str(model), "--port", str(port)]
    cmd += options
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if call(base + "/health")[0] == 200:
            return proc, base
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"the server did not start: {shlex.join(cmd)}")


def workload(n: int, garbage: float, large: float, seed: int) -> list[tuple[str, str, bytes]]:
    """``(kind, filename, bytes)`` per request, shuffled."""
    rng = random.Random(seed)
    normal = [photo(640, 480, s) for s in range(8)]
    big = [photo(3000, 2000, 100 + s) for s in range(2)]
    n_garbage, n_large = round(n * garbage), round(n * large)
    items = [
        ("garbage", f"junk{i}.jpg", rng.randbytes(rng.randint(10, 5000))) for i in range(n_garbage)
    ]
    items += [("large", f"big{i}.jpg", big[i % 2]) for i in range(n_large)]
    items += [("normal", f"img{i}.jpg", normal[i % 8]) for i in range(n - n_garbage - n_large)]
    rng.shuffle(items)
    return items


def monitor(base: str, pid: int, stop: Any, out: Any) -> None:
    """In its own process (the client threads' GIL must not delay it): /health every 20 ms and
    the server's RSS, until ``stop`` is set; sends ``{"health": [s...], "rss": [MB...]}``."""
    seen: dict[str, list[float]] = {"health": [], "rss": []}
    while not stop.is_set():
        status, seconds = call(base + "/health")
        seen["health"].append(seconds if status == 200 else float("inf"))
        seen["rss"].append(rss_mb(pid))
        stop.wait(0.02)
    out.send(seen)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def run_load(
    model: Path, server: tuple[str, list[str], Path | None], work: list[Any], concurrency: int
) -> dict:
    label, options, src = server
    proc, base = start_server(model, options, src)
    try:
        call(base + "/predict", *multipart("warm.jpg", work[-1][2]))  # first call: session warm-up
        rss_start = rss_mb(proc.pid)
        ctx = multiprocessing.get_context("spawn")
        stop, (receive, send) = ctx.Event(), ctx.Pipe(duplex=False)
        mon = ctx.Process(target=monitor, args=(base, proc.pid, stop, send))

        def one(item: tuple[str, str, bytes]) -> tuple[str, int, float]:
            status, seconds = call(base + "/predict?top_k=3", *multipart(item[1], item[2]))
            return item[0], status, seconds

        mon.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, work))
        wall = time.perf_counter() - t0
        stop.set()
        seen = receive.recv()
        mon.join()
        rss_end = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ok = [s for kind, status, s in results if status == 200]
    statuses = [status for _, status, _ in results]
    return {
        "server": label,
        "requests": len(work),
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(work) / wall, 1),
        "ok": len(ok),
        "415": statuses.count(415),
        "5xx": sum(1 for s in statuses if s >= 500),
        "other": sum(1 for s in statuses if s not in (200, 415) and s < 500),
        "wrong_status": sum(1 for k, s, _ in results if (s == 415) != (k == "garbage")),
        "predict_ms": {q: round(pct(ok, q), 1) for q in (50, 95, 99)},
        "large_predict_ms_p50": round(
            pct([s for k, st, s in results if k == "large" and st == 200], 50), 1
        ),
        "health_ms": {
            "max": round(max(seen["health"]) * 1000, 1),
            "p99": round(pct(seen["health"], 99), 1),
            "median": round(statistics.median(seen["health"]) * 1000, 1),
            "calls": len(seen["health"]),
        },
        "rss_mb": {
            "start": round(rss_start),
            "end": round(rss_end),
            "max": round(max(seen["rss"])),
        },
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# `headstart serve` under load\n\n{meta['model']}, {meta['requests']} requests "
        f"(one image each), {meta['concurrency']} concurrent clients, {meta['garbage']:.0%} "
        f"garbage, {meta['large']:.0%} 3000×2000 JPEGs, the rest 640×480 JPEGs; "
        f"{meta['cpus']} CPUs, 1-minute load average {meta['load_average'][0]} before and "
        f"{meta['load_average'][1]} after the runs.\n",
        "| server | req/s | /predict p50 / p95 / p99 ms | 3000×2000 p50 ms | /health max / p99 ms (calls) | 200 / 415 / other 4xx / 5xx | RSS start → end (max) MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, h, m = r["predict_ms"], r["health_ms"], r["rss_mb"]
        lines.append(
            f"| {r['server']} | {r['requests_per_s']} | {p[50]} / {p[95]} / {p[99]} | "
            f"{r['large_predict_ms_p50']} | {h['max']} / {h['p99']} ({h['calls']}) | "
            f"{r['ok']} / {r['415']} / {r['other']} / {r['5xx']} | "
            f"{m['start']} → {m['end']} ({m['max']}) |"
        )
    lines.append(f"\nCommand: `{meta['command']}`")
    return "\n".join(lines) + "\n"


def servers(args: argparse.Namespace) -> list[tuple[str, list[str], Path | None]]:
    """``(label, serve options, source folder)`` per server to load."""
    out: list[tuple[str, list[str], Path | None]] = []
    if args.before:
        out.append((f"before (`{args.before}`)", [], args.before.resolve()))
    wait = ["--max-wait-ms", str(args.max_wait_ms)]
    for mb in args.max_batch or [1, 32]:
        out.append(
            (
                f"`--max-batch {mb} --max-wait-ms {args.max_wait_ms:g}`",
                ["--max-batch", str(mb), *wait],
                None,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, help="an exported model (default: build a MobileNetV2)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--garbage", type=float, default=0.10, help="fraction of garbage uploads")
    ap.add_argument("--large", type=float, default=0.05, help="fraction of 3000×2000 JPEGs")
    ap.add_argument("--max-batch", type=int, action="append", help="repeatable (default 1, 32)")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--before",
        type=Path,
        help="also serve from this source folder (a checkout's src/ from before batching; run "
        "without the batching options) for a before/after comparison",
    )
    ap.add_argument("--out", default=str(HERE / "results" / "serve-load"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(Path(tmp))
        from headstart.export.predictor import open_export

        meta = open_export(model).metadata
        described = f"{meta['model']} ({meta['preprocessing']['crop']} px, ONNX)"
        work = workload(args.requests, args.garbage, args.large, args.seed)
        load_before, rows = os.getloadavg()[0], []
        for server in servers(args):
            rows.append(run_load(model, server, work, args.concurrency))
            print(json.dumps(rows[-1]), flush=True)
    info = {
        "model": described,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "garbage": args.garbage,
        "large": args.large,
        "max_wait_ms": args.max_wait_ms,
        "cpus": os.cpu_count(),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "command": shlex.join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({**info, "runs": rows}, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(rows, info))
    print(markdown(rows, info))


if __name__ == "__main__":
    main()
