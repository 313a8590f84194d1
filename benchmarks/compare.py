"""headstart vs the seeds' reference loop (and fastai) on Animal-MNIST, same data, same machine.

    .venv/bin/python benchmarks/compare.py            # anchor: 50 train / 30 val per class, 224 px
    .venv/bin/python benchmarks/compare.py --quick    # minutes: tiny data, few epochs (CI smoke)

Each variant runs in its own subprocess so its wall time and peak RSS (VmHWM) are its own; the
driver writes benchmarks/results/compare.json and compare.md with wall time, images/s, peak
RSS, final val accuracy and the ratios headstart/reference and headstart/fastai. All timings
include data loading, model construction and evaluation, as a user would experience them.
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
from typing import Any

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.data)
    t0 = time.perf_counter()
    if name.startswith("reference"):
        sys.path.insert(0, str(HERE))
        from reference_loop import run

        mode = "feature-extract" if name == "reference-fe" else "fine-tune"
        out = run(
            data,
            args.epochs_fe if mode == "feature-extract" else args.epochs_ft,
            mode,
            size=args.size,
        )
    elif name == "fastai":
        sys.path.insert(0, str(HERE))
        from peers import run_fastai

        out = run_fastai(data, args.epochs_ft, size=args.size)
    else:
        import headstart
        from headstart.console import console

        console.quiet = True
        kw: dict[str, Any] = {
            "headstart-fe": {
                "strategy": "feature-extract",
                "epochs": args.epochs_fe,
                "early_stopping_patience": None,
            },
            "headstart-fe-warm": {
                "strategy": "feature-extract",
                "epochs": args.epochs_fe,
                "early_stopping_patience": None,
            },
            "headstart-auto": {"strategy": "auto"},
            "headstart-auto-size": {"strategy": "auto", "image_size": "auto"},
            "headstart-ft": {
                "strategy": "fine-tune",
                "epochs": args.epochs_ft,
                "early_stopping_patience": None,
                "backbone_lr_mult": 0.1,
            },
        }[name]
        if name != "headstart-auto-size":
            kw.setdefault("image_size", args.size)
        if name != "headstart-fe-warm":
            kw["disk_cache"] = False
        run_dir = Path(args.work) / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        if name == "headstart-fe-warm":  # populate a fresh disk cache first (not timed)
            os.environ["HEADSTART_CACHE"] = str(Path(args.work) / "cache")
            shutil.rmtree(Path(args.work) / "cache", ignore_errors=True)
            headstart.train(data=str(data), out=str(run_dir), **kw)
            shutil.rmtree(run_dir)
            t0 = time.perf_counter()
        r = headstart.train(data=str(data), out=str(run_dir), **kw)
        log = (run_dir / "log.csv").read_text().strip().splitlines()[1:]
        epoch_s = [float(row.split(",")[-1]) for row in log]
        out = {
            "val_accuracy": r.val_accuracy,
            "train_seconds": r.seconds,
            "epoch_seconds": sum(epoch_s) / max(1, len(epoch_s)),
            "strategy": r.metrics["run"]["strategy"],
            "input_px": r.metrics["run"]["preprocessing"]["crop"],
        }
    out["wall_seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny data and epochs: a smoke run")
    ap.add_argument("--train-per-class", type=int, default=50)
    ap.add_argument("--val-per-class", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs-fe", type=int, default=25)
    ap.add_argument("--epochs-ft", type=int, default=2)
    ap.add_argument(
        "--variants",
        default="reference-fe,headstart-fe,headstart-fe-warm,headstart-auto,headstart-auto-size,reference-ft,headstart-ft,fastai",
    )
    ap.add_argument("--work", default="/tmp/headstart-compare")
    ap.add_argument("--out", default=str(HERE / "results" / "compare"))
    ap.add_argument(
        "--merge", action="store_true", help="keep earlier results of variants not run now"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.train_per_class, args.val_per_class, args.size, args.epochs_fe, args.epochs_ft = (
            10,
            5,
            64,
            2,
            1,
        )
        if args.out == str(HERE / "results" / "compare"):
            args.out = str(HERE / "results" / "compare-quick")
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)))
        return

    sys.path.insert(0, str(HERE.parent / "src"))
    from headstart.data.catalog import materialise_animal_mnist

    data = materialise_animal_mnist(
        Path(args.work) / f"animal-{args.train_per_class}-{args.val_per_class}",
        args.train_per_class,
        args.val_per_class,
    )
    images_per_epoch = 10 * (args.train_per_class + args.val_per_class)
    results: dict[str, Any] = {}
    previous = Path(args.out + ".json")
    if args.merge and previous.is_file():
        results = json.loads(previous.read_text())["results"]
    for name in args.variants.split(","):
        if name == "fastai":
            try:
                import fastai  # noqa: F401
            except ImportError:
                results[name] = {"skipped": "fastai not installed (make bench-install)"}
                continue
        cmd = [sys.executable, __file__, "--child", name, "--data", str(data), "--work", args.work, "--size", str(args.size),
               "--epochs-fe", str(args.epochs_fe), "--epochs-ft", str(args.epochs_ft)]  # fmt: skip
        print(f"running {name} ...", flush=True)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            results[name] = {"failed": proc.stderr[-2000:]}
            print(proc.stderr[-2000:])
            continue
        r = json.loads(line[len("RESULT ") :])
        epochs = (
            args.epochs_ft
            if name in ("reference-ft", "headstart-ft")
            else (
                args.epochs_fe
                if name in ("reference-fe", "headstart-fe", "headstart-fe-warm")
                else None
            )
        )
        if name == "fastai":
            epochs = args.epochs_ft + 1
        if epochs:
            r["images_per_second"] = round(epochs * images_per_epoch / r["wall_seconds"], 1)
        results[name] = r
        print(f"  {name}: {r}", flush=True)

    def ratio(a: str, b: str, key: str = "wall_seconds") -> float | None:
        ra, rb = results.get(a, {}), results.get(b, {})
        return round(ra[key] / rb[key], 4) if key in ra and key in rb else None

    ratios = {
        "fe_time_headstart_over_reference": ratio("headstart-fe", "reference-fe"),
        "fe_peak_rss_headstart_over_reference": ratio(
            "headstart-fe", "reference-fe", "peak_rss_mb"
        ),
        "ft_epoch_time_headstart_over_reference": ratio(
            "headstart-ft", "reference-ft", "epoch_seconds"
        ),
        "auto_time_headstart_over_fastai": ratio("headstart-auto", "fastai"),
        "auto_time_headstart_over_reference_fe": ratio("headstart-auto", "reference-fe"),
    }
    import torch

    meta = {
        "data": f"Animal-MNIST {args.train_per_class} train / {args.val_per_class} val per class (10 classes)",
        "model": "torchvision:mobilenet_v2 IMAGENET1K_V1",
        "input_px": args.size,
        "epochs_feature_extract": args.epochs_fe,
        "epochs_fine_tune": args.epochs_ft,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/compare.py" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(
        json.dumps({"meta": meta, "results": results, "ratios": ratios}, indent=2)
    )
    md = [f"{meta['data']}, {meta['model']}, {args.size} px, {meta['machine']}, {meta['date']}", ""]
    md += [
        "| variant | what | val acc | wall s | epoch s | images/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    what = {
        "reference-fe": f"seed loop, feature extraction, {args.epochs_fe} epochs",
        "headstart-fe": f"feature-extract, {args.epochs_fe} epochs, cold (no disk cache)",
        "headstart-fe-warm": "same, features from the disk cache of a previous run",
        "headstart-auto": "--strategy auto (defaults)",
        "headstart-auto-size": "--strategy auto --image-size auto",
        "reference-ft": f"seed loop, full fine-tuning, {args.epochs_ft} epochs",
        "headstart-ft": f"fine-tune, {args.epochs_ft} epochs",
        "fastai": f"vision_learner(...).fine_tune({args.epochs_ft})",
    }
    for name, r in results.items():
        if "val_accuracy" not in r:
            md.append(
                f"| {name} | {what.get(name, '')} | {next(iter(r.values()))[:60]!s} | | | | |"
            )
            continue
        md.append(
            f"| {name} | {what.get(name, '')} | {100 * r['val_accuracy']:.1f} % | {r['wall_seconds']:.1f} | {r.get('epoch_seconds', float('nan')):.2f} | "
            f"{r.get('images_per_second', '')} | {r['peak_rss_mb']:.0f} |"
        )
    md += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in ratios.items()]
    md += ["", f"Command: `{meta['command']}`"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
