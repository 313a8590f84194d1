"""Beyond labels on a real shift built from offline Animal-MNIST: domain adaptation (source-only
vs MMD vs DANN on labelled target data) and rotation pretraining before a 10-image/class fine-tune.

    .venv/bin/python benchmarks/adapt.py                 # both parts (~30 min on a shared 2-core box)
    .venv/bin/python benchmarks/adapt.py --part domain   # one part; --part pretext [--pretext-start none]
    .venv/bin/python benchmarks/adapt.py --part domain-mnist-m --work /tmp/h19   # Animal-MNIST-M

Data (written under runs/adapt-bench/data, reused when present):

* source   = Animal-MNIST as it is (white silhouettes on black, 28 px -> resized by the model);
* target   = other Animal-MNIST images, colour-inverted, rotated by 25-45 degrees (random sign)
             and with Gaussian pixel noise (sigma 25 of 255): ``target-unlabeled`` (labels unused)
             and a disjoint labelled ``target-eval``.

``--part domain-mnist-m`` uses another target domain instead, built like Ganin et al.'s MNIST-M
(``headstart.data.catalog.materialise_animal_mnist_m``, under ``<work>/data-mnist-m``): other
Animal-MNIST silhouettes blended over random crops of scikit-image's colour photos as
``|crop - silhouette|``; it compares source-only, DANN and MMD with trainable upper stages.

Results: benchmarks/results/adapt.json and adapt.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "adapt-bench"


def shift(img: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Colour-inverted, rotated (25-45 degrees, either sign) and noised copy of a 28x28 image."""
    inv = Image.fromarray(255 - img, mode="L")
    angle = float(rng.uniform(25, 45) * rng.choice([-1, 1]))
    rot = np.asarray(inv.rotate(angle, resample=Image.BILINEAR, fillcolor=255), dtype=np.float32)
    noisy = rot + rng.normal(0, 25, size=rot.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8), mode="L")


def build_data(
    root: Path, source_train: int, source_val: int, target_unlabeled: int, target_eval: int
) -> dict[str, Path]:
    """Disjoint per-class picks: source train/val (original), target unlabeled/eval (shifted)."""
    from headstart.data.catalog import ANIMAL_CLASSES, load_animal_mnist

    params = [source_train, source_val, target_unlabeled, target_eval]
    marker = root / "params.json"
    paths = {
        "source": root / "source",
        "target_unlabeled": root / "target-unlabeled",
        "target_eval": root / "target-eval",
    }
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return paths
    if root.exists():
        shutil.rmtree(root)
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(0)
    for c, name in enumerate(ANIMAL_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a, b, d = (
            source_train,
            source_train + source_val,
            source_train + source_val + target_unlabeled,
        )
        picks = {
            ("source", "train"): idx[:a],
            ("source", "val"): idx[a:b],
            ("target-unlabeled", None): idx[b:d],
            ("target-eval", None): idx[d : d + target_eval],
        }
        for (top, split), chosen in picks.items():
            folder = root / top / split / name if split else root / top / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                im = (
                    Image.fromarray(images[i], mode="L")
                    if top == "source"
                    else shift(images[i], rng)
                )
                im.save(folder / f"{int(i):05d}.png")
    marker.write_text(json.dumps(params))
    return paths


def run_domain(args: argparse.Namespace, data: dict[str, Path]) -> list[dict[str, Any]]:
    """Source-only vs MMD vs DANN, each setting a fresh run; the adapted runs' own source-only
    twin is skipped (adapt_baseline off) because the source-only row is trained here once."""
    import headstart

    common: dict[str, Any] = {
        "data": str(data["source"]),
        "model": "torchvision:mobilenet_v2",
        "image_size": args.size,
        "head": "mlp",
        "head_hidden": 256,
        "epochs": args.epochs,
        "batch_size": 64,
        "lr": 1e-3,
        "augment": "none",
        "early_stopping_patience": None,
        "target_eval": str(data["target_eval"]),
        "adapt_baseline": False,
        "num_workers": 0,
        "seed": args.seed,
    }
    settings: list[tuple[str, dict[str, Any]]] = [("source-only", {})]
    for w in args.mmd_weights:
        settings.append((f"mmd w={w:g}", {"adapt": "mmd", "adapt_weight": w}))
    for w in args.dann_weights:
        settings.append((f"dann w={w:g}", {"adapt": "dann", "adapt_weight": w}))
    rows = []
    for name, extra in settings:
        if extra:
            extra = {**extra, "target_unlabeled": str(data["target_unlabeled"])}
        out = WORK / "runs" / f"domain-{name.replace(' ', '-').replace('=', '')}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        r = headstart.train(out=str(out), **common, **extra)
        rows.append(
            {
                "setting": name,
                "target_eval_accuracy": r.metrics["target_eval"]["accuracy"],
                "source_val_accuracy": r.metrics["val"]["accuracy"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(rows[-1], flush=True)
    base = rows[0]["target_eval_accuracy"]
    for row in rows:
        row["gain_points"] = round(100 * (row["target_eval_accuracy"] - base), 2)
    return rows


def run_domain_partial(
    args: argparse.Namespace,
    data: dict[str, Path],
    before: dict[str, Any] | None = None,
    prefix: str = "partial",
    mmd: bool = False,
) -> dict[str, Any]:
    """Source-only vs DANN (and MMD with ``mmd``: one row per ``--mmd-weights``) with the last
    ``--partial-stages`` backbone stages trained (cached
    activations: the frozen prefix runs once for source, target and eval images), the same
    settings and budget for both, over ``--seeds``. The settings are fixed before measuring: the
    benchmark has no labelled held-out target split to select on, and the target-eval labels are
    only reported. Runs already in ``before`` (the previous result of this part) with the same
    settings and seed are kept, not trained again (adding a setting trains only that one)."""
    import headstart

    common: dict[str, Any] = {
        "data": str(data["source"]),
        "model": "torchvision:mobilenet_v2",
        "image_size": args.size,
        "strategy": "partial",
        "unfreeze_last": args.partial_stages,
        "head": "mlp",
        "head_hidden": 256,
        "epochs": args.epochs,
        "batch_size": 64,
        "lr": args.lr,
        **({"optimizer": args.optimizer} if args.optimizer != "adamw" else {}),
        "backbone_lr_mult": args.backbone_lr_mult,
        "bn": args.bn,
        "augment": "none",
        "early_stopping_patience": None,
        "target_eval": str(data["target_eval"]),
        "adapt_baseline": False,
        "num_workers": 0,
    }
    settings: list[tuple[str, dict[str, Any]]] = [("source-only", {})]
    for w in args.dann_weights:
        settings.append((f"dann w={w:g}", {"adapt": "dann", "adapt_weight": w}))
    for w in args.mmd_weights if mmd else []:
        settings.append((f"mmd w={w:g}", {"adapt": "mmd", "adapt_weight": w}))
    kept = {}
    if before and before.get("settings") == {
        k: v for k, v in common.items() if k not in ("data", "target_eval")
    }:
        kept = {(r["setting"], r["seed"]): r for r in before["rows"]}
    rows = []
    for seed in args.seeds:
        for name, extra in settings:
            if (name, seed) in kept:
                rows.append(kept[(name, seed)])
                continue
            if extra:
                extra = {**extra, "target_unlabeled": str(data["target_unlabeled"])}
            tag = name.replace(" ", "-").replace("=", "")
            out = args.work / "runs" / f"{prefix}{args.partial_stages}-{tag}-seed{seed}"
            shutil.rmtree(out, ignore_errors=True)
            r = headstart.train(out=str(out), seed=seed, **common, **extra)
            assert r.metrics["run"]["cached_activations"] is not None, "expected cached activations"
            rows.append(
                {
                    "setting": name,
                    "seed": seed,
                    "target_eval_accuracy": r.metrics["target_eval"]["accuracy"],
                    "source_val_accuracy": r.metrics["val"]["accuracy"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return {
        "settings": {k: v for k, v in common.items() if k not in ("data", "target_eval")},
        "seeds": list(args.seeds),
        "rows": rows,
        "summary": summarise_seeds(rows),
    }


def summarise_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting: target accuracy mean and sample std over seeds, and the gain over the
    same seed's source-only run (mean, std, min, max) in points."""
    base = {r["seed"]: r["target_eval_accuracy"] for r in rows if r["setting"] == "source-only"}
    out = []
    for name in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == name]
        acc = np.array([r["target_eval_accuracy"] for r in mine]) * 100
        gain = np.array([100 * (r["target_eval_accuracy"] - base[r["seed"]]) for r in mine])
        src = np.array([r["source_val_accuracy"] for r in mine]) * 100
        ddof = 1 if len(mine) > 1 else 0
        out.append(
            {
                "setting": name,
                "target_mean": round(float(acc.mean()), 2),
                "target_std": round(float(acc.std(ddof=ddof)), 2),
                "gain_mean": round(float(gain.mean()), 2),
                "gain_std": round(float(gain.std(ddof=ddof)), 2),
                "gain_min": round(float(gain.min()), 2),
                "gain_max": round(float(gain.max()), 2),
                "source_val_mean": round(float(src.mean()), 2),
                "per_seed_target": [round(float(a), 1) for a in acc],
            }
        )
    return out


def build_few(root: Path, used_from: Path, train: int, val: int, test: int) -> Path:
    """A 10-image/class labelled set (+ val, test) from Animal-MNIST images that the unlabeled
    pretraining set (``used_from``, files named by index) does not contain."""
    from headstart.data.catalog import ANIMAL_CLASSES, load_animal_mnist

    marker = root / "params.json"
    if marker.is_file() and json.loads(marker.read_text()) == [train, val, test]:
        return root
    if root.exists():
        shutil.rmtree(root)
    used = {int(f.stem) for f in used_from.rglob("*.png")}
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(1)
    for c, name in enumerate(ANIMAL_CLASSES):
        idx = [i for i in rng.permutation(np.flatnonzero(labels == c)) if int(i) not in used]
        bounds = {"train": idx[:train], "val": idx[train : train + val],
                  "test": idx[train + val : train + val + test]}  # fmt: skip
        for split, chosen in bounds.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                Image.fromarray(images[i], mode="L").save(d / f"{int(i):05d}.png")
    marker.write_text(json.dumps([train, val, test]))
    return root


def run_pretext(args: argparse.Namespace, data: dict[str, Path]) -> dict[str, Any]:
    """Rotation pretraining on the unlabeled Animal-MNIST images (the source train folder,
    labels ignored) vs ImageNet weights alone, then the same 10-image/class training."""
    import headstart
    from headstart.adapt.pretext import pretrain

    unlabeled = data["source"] / "train"
    few = build_few(WORK / "data-few", data["source"].parent, 10, 20, 50)
    scratch = args.pretext_start.lower() == "none"
    out = WORK / "runs" / ("pretext-rotation-scratch" if scratch else "pretext-rotation")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    pre = pretrain(
        unlabeled, out=out, model="torchvision:mobilenet_v2", image_size=args.size,
        weights=args.pretext_start, strategy="fine-tune" if scratch else "partial",
        unfreeze_last=args.pretext_stages, epochs=args.pretext_epochs,
        batch_size=64, lr=1e-3, augment="light", num_workers=0, seed=args.seed,
    )  # fmt: skip
    pre_seconds = round(time.perf_counter() - t0, 1)
    rows = []
    start = "random init" if scratch else "ImageNet"
    for name, weights in (
        (f"{start} only", args.pretext_start),
        (f"{start} + rotation", str(pre.weights)),
    ):
        for strategy in ("feature-extract", "partial"):
            tag = ("rot" if weights == str(pre.weights) else "base") + (
                "-scratch" if scratch else ""
            )
            run_out = WORK / "runs" / f"few-{tag}-{strategy}"
            shutil.rmtree(run_out, ignore_errors=True)
            t1 = time.perf_counter()
            r = headstart.train(
                data=str(few), out=str(run_out), model="torchvision:mobilenet_v2",
                weights=weights, image_size=args.size, strategy=strategy, unfreeze_last=2,
                epochs=15, batch_size=16, lr=1e-3, augment="light", early_stopping_patience=None,
                num_workers=0, seed=args.seed,
            )  # fmt: skip
            rows.append(
                {
                    "weights": name,
                    "strategy": strategy,
                    "test_accuracy": r.metrics["test"]["accuracy"],
                    "val_accuracy": r.metrics["val"]["accuracy"],
                    "seconds": round(time.perf_counter() - t1, 1),
                }
            )
            print(rows[-1], flush=True)
    return {
        "pretrain": {
            **pre.metrics,
            "seconds": pre_seconds,
            "unlabeled_images": 1000,
            "stages_trained": "all" if scratch else args.pretext_stages,
            "start_weights": start,
        },
        "fine_tune": "10 train + 20 val images per class; test 50 per class (disjoint, original)",
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--part", choices=["domain", "domain-partial", "domain-mnist-m", "pretext", "all"],
        default="all", help="all = domain + pretext; domain-partial (DANN with trainable stages) "
        "and domain-mnist-m (source-only/DANN/MMD on Animal-MNIST-M) run alone",
    )  # fmt: skip
    ap.add_argument("--work", type=Path, default=WORK, help="domain-partial, domain-mnist-m: "
                    "where the data (data-mnist-m) and the runs go")  # fmt: skip
    ap.add_argument("--partial-stages", type=int, default=3, help="domain-partial: stages trained")
    ap.add_argument("--backbone-lr-mult", type=float, default=0.1, help="domain-partial")
    ap.add_argument("--bn", default="train", help="domain-partial: BatchNorm of trained stages")
    ap.add_argument("--optimizer", default="adamw", help="domain-partial, domain-mnist-m")
    ap.add_argument("--lr", type=float, default=1e-3, help="domain-partial, domain-mnist-m")
    ap.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44], help="domain-partial")
    ap.add_argument("--pretext-epochs", type=int, default=3)
    ap.add_argument("--pretext-stages", type=int, default=4, help="stages rotation trains")
    ap.add_argument("--pretext-start", default="DEFAULT", help="DEFAULT (ImageNet) or none")
    ap.add_argument("--size", type=int, default=64, help="input size (px)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--mmd-weights", type=float, nargs="*", default=[1.0, 3.0, 10.0, 30.0])
    ap.add_argument("--dann-weights", type=float, nargs="*", default=[0.1, 0.3, 1.0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--source-train", type=int, default=100, help="source train images/class")
    ap.add_argument("--target-unlabeled", type=int, default=100, help="target images/class")
    ap.add_argument("--target-eval", type=int, default=50, help="labelled target images/class")
    args = ap.parse_args()

    from headstart.console import console

    console.quiet = True
    if args.part == "domain-mnist-m":
        data = mnist_m_data(args)
    else:
        data = build_data(
            WORK / "data", args.source_train, 30, args.target_unlabeled, args.target_eval
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "adapt.json"
    result: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    result["machine"] = {"platform": platform.platform(), "processor": platform.processor()}
    if args.part in ("domain", "all"):
        result["domain"] = {
            "settings": vars(args),
            "data": {
                "source": f"Animal-MNIST original, {args.source_train} train + 30 val per class",
                "target_unlabeled": f"{args.target_unlabeled} per class, inverted+rotated+noised",
                "target_eval": f"{args.target_eval} per class (labelled, disjoint)",
            },
            "rows": run_domain(args, data),
        }
    if args.part == "domain-partial":
        key = f"domain_partial{args.partial_stages}"
        result[key] = run_domain_partial(args, data, result.get(key))
        result[key]["command"] = "benchmarks/adapt.py " + " ".join(sys.argv[1:])
        result[key]["commit"] = git_commit()
    if args.part == "domain-mnist-m":
        opt = "" if args.optimizer == "adamw" else f"-{args.optimizer}"
        key = f"mnist_m_partial{args.partial_stages}{opt}"
        result[key] = run_domain_partial(
            args, data, result.get(key), prefix=f"mnistm{opt}-", mmd=True
        )
        result[key]["command"] = "benchmarks/adapt.py " + " ".join(sys.argv[1:])
        result[key]["commit"] = git_commit()
        result[key]["data"] = MNIST_M_NOTE.format(a=args)
    if args.part in ("pretext", "all"):
        key = "pretext_scratch" if args.pretext_start.lower() == "none" else "pretext"
        result[key] = run_pretext(args, data)
    out_json.write_text(json.dumps(result, indent=2))
    write_markdown(result)


MNIST_M_NOTE = (
    "source: Animal-MNIST as it is, {a.source_train} train + 30 val per class; target "
    "(Animal-MNIST-M): other silhouettes blended over random 28 px crops of scikit-image's colour "
    "photos as |crop - silhouette| (Ganin et al.'s MNIST-M recipe), {a.target_unlabeled} "
    "unlabeled + {a.target_eval} labelled per class (disjoint silhouettes)"
)


def mnist_m_data(args: argparse.Namespace) -> dict[str, Path]:
    """The Animal-MNIST-M folders under ``<work>/data-mnist-m`` (written once, seed 0)."""
    from headstart.data.catalog import materialise_animal_mnist_m

    root = materialise_animal_mnist_m(
        args.work / "data-mnist-m", source_train=args.source_train, source_val=30,
        target_unlabeled=args.target_unlabeled, target_eval=args.target_eval, seed=0,
    )  # fmt: skip
    return {
        "source": root / "source",
        "target_unlabeled": root / "target-unlabeled",
        "target_eval": root / "target-eval",
    }


def git_commit() -> str:
    """The checkout's commit (short hash; ``+dirty`` with uncommitted changes under src/)."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "src").strip() else "")


def write_markdown(result: dict[str, Any]) -> None:
    lines = ["# Beyond labels on Animal-MNIST (benchmarks/adapt.py)", ""]
    if "domain" in result:
        d = result["domain"]
        s = d["settings"]
        lines += [
            "## Domain adaptation: source-only vs MMD vs DANN",
            "",
            f"MobileNetV2 (ImageNet weights, frozen, cached features) at {s['size']} px + mlp head "
            f"(256 hidden, adapted), {s['epochs']} epochs, batch 64, lr 1e-3, seed {s['seed']}. "
            f"Source: {d['data']['source']}; target: {d['data']['target_unlabeled']}; "
            f"evaluated on {d['data']['target_eval']}. Checkpoint chosen by source val loss.",
            "",
            "| setting | target-eval accuracy | gain (points) | source val accuracy | s |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in d["rows"]:
            lines.append(
                f"| {r['setting']} | {100 * r['target_eval_accuracy']:.1f} % | "
                f"{r['gain_points']:+.1f} | {100 * r['source_val_accuracy']:.1f} % | {r['seconds']} |"
            )
        lines.append("")
    for key in sorted(k for k in result if k.startswith("domain_partial")):
        lines += partial_markdown(result[key])
    for key in sorted(k for k in result if k.startswith("mnist_m_partial")):
        lines += partial_markdown(result[key], mnist_m=True)
    for key in ("pretext", "pretext_scratch"):
        if key not in result:
            continue
        pt = result[key]
        pre = pt["pretrain"]
        lines += [
            f"## Rotation pretraining before a 10-image/class training ({key})",
            "",
            f"Rotation pretext (4-way) on {pre['unlabeled_images']} unlabeled Animal-MNIST images "
            f"(labels ignored), MobileNetV2 from {pre.get('start_weights', 'ImageNet')} weights, "
            f"{pre['stages_trained']} stages trained, {pre['epochs']} epochs: held-out rotation accuracy "
            f"{100 * pre['rotation_val_accuracy']:.1f} % (chance 25 %), {pre['seconds']} s. "
            f"Then {pt['fine_tune']}, 15 epochs, same settings for both weights.",
            "",
            "| weights | strategy | test accuracy | val accuracy | s |",
            "|---|---|---:|---:|---:|",
        ]
        for r in pt["rows"]:
            lines.append(
                f"| {r['weights']} | {r['strategy']} | {100 * r['test_accuracy']:.1f} % | "
                f"{100 * r['val_accuracy']:.1f} % | {r['seconds']} |"
            )
        lines.append("")
    (RESULTS / "adapt.md").write_text("\n".join(lines) + "\n")


def partial_markdown(d: dict[str, Any], mnist_m: bool = False) -> list[str]:
    """The domain-partial (or domain-mnist-m) section: per setting mean +- std over seeds."""
    s = d["settings"]
    title = (
        "## Animal-MNIST -> Animal-MNIST-M (Ganin et al.'s MNIST-M recipe): source-only vs DANN "
        "vs MMD"
        if mnist_m
        else "## Domain adaptation with trainable upper stages: source-only vs DANN"
    )
    lines = [
        f"{title} (last {s['unfreeze_last']} stages)",
        "",
        *([f"Data: {d['data']}.", ""] if mnist_m else []),
        f"MobileNetV2 (ImageNet weights) at {s['image_size']} px, `--strategy partial "
        f"--unfreeze-last {s['unfreeze_last']}` (frozen prefix on cached activations, source and "
        f"target), mlp head ({s['head_hidden']} hidden), {s['epochs']} epochs, batch "
        f"{s['batch_size']} source + {s['batch_size']} target, {s.get('optimizer', 'adamw')} "
        f"(cosine annealing) lr {s['lr']:g} (head, "
        f"discriminator), backbone x{s['backbone_lr_mult']:g}, `--bn {s['bn']}` (mixed "
        f"source+target batches), augment {s['augment']}"
        f"{'' if mnist_m else '; same data as above'}. Settings fixed "
        f"before measuring (no labelled held-out target split to select on); checkpoint chosen "
        f"by source val loss. Seeds {', '.join(map(str, d['seeds']))}; gain = the adapted run "
        f"minus the same seed's source-only run.",
        "",
        f"Command: `.venv/bin/python {d.get('command', 'benchmarks/adapt.py --part domain-partial')}`"
        + (f" at commit {d['commit']}" if d.get("commit") else ""),
        "",
        "| setting | target-eval accuracy (mean ± std) | per seed | gain, points (mean ± std) "
        "| gain min..max | source val accuracy |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in d["summary"]:
        lines.append(
            f"| {r['setting']} | {r['target_mean']:.1f} ± {r['target_std']:.1f} % | "
            f"{' / '.join(f'{a:.1f}' for a in r['per_seed_target'])} | "
            f"{r['gain_mean']:+.1f} ± {r['gain_std']:.1f} | {r['gain_min']:+.1f}..{r['gain_max']:+.1f} "
            f"| {r['source_val_mean']:.1f} % |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    main()
