"""headstart vs its peers on Animal-MNIST with a test split: each method configured as its own
users run it, several seeds, one run at one commit.

    .venv/bin/python benchmarks/compare.py                 # 50 train / 30 val / 100 test per class
    .venv/bin/python benchmarks/compare.py --quick         # minutes: tiny data (a smoke run)
    FASTAI_PYTHONPATH=/tmp/fastai-pkgs .venv/bin/python benchmarks/compare.py

Every (variant, seed) is a fresh process timed from outside; wall time includes imports, data
scan, model construction, training and the final test evaluation, as a user experiences them.
Rows that report time-to-accuracy also score the test split after every epoch; that scoring is
taken off the clock (its seconds are subtracted) and runs with the RNG state saved and restored,
so it changes neither the timing nor the training.

Recipe rows (what each tool's users get):
  fastai-ft3      fastai ``vision_learner(mobilenet_v2)`` + ``fine_tune(3)`` (1 frozen + 3 unfrozen
                  epochs, one-cycle, discriminative LRs), ImageNet statistics via ``model_meta``
                  (benchmarks/peers.py)
  hs-fe           ``headstart train --strategy feature-extract`` (defaults: 10 epochs on cached
                  features, early stopping)
  hs-ft4          ``--strategy fine-tune --epochs 4``
  hs-auto-tb      ``--strategy auto --time-budget T`` (``--time-budget``, default 45 s: about
                  0.25x fastai's time here, the target of issue 16)
  hs-auto-tb75    ``--strategy auto --time-budget 75``
One-seed rows (unless ``--seeds-all``): the costly default-budget auto, engineering and recipe
separation:
  hs-auto         ``--strategy auto --epochs 4`` (its default budget measures one partial,
                  fine-tune and gradual candidate each: several minutes here)
  seed-fe5        the seeds' tutorial loop (benchmarks/reference_loop.py), feature extraction,
                  5 epochs (its recipe is 25: 5 keep the row affordable; epoch time is the point)
  hs-fe-images5   headstart doing the same work: ``--strategy feature-extract --no-fast-path
                  --epochs 5 --no-early-stopping`` (every epoch through the frozen backbone)
  seed-ft4        the tutorial loop, full fine-tuning, 4 epochs
  hs-ft4-random   ``--strategy fine-tune --epochs 4 --head-init random`` (headstart's engine
                  without its probe-started head)

"best" is the test accuracy of the epoch the method's own validation choice keeps (headstart:
its best checkpoint by val loss, as ``metrics.json`` reports; peers without checkpointing: the
epoch with the highest val accuracy); "last" is the last epoch's. Writes
benchmarks/results/compare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.85, 0.90, 0.93)

#: variant -> (what, epochs the row reports per epoch for, per-epoch test scoring)
VARIANTS: dict[str, tuple[str, bool]] = {
    "fastai-ft3": ("fastai vision_learner + fine_tune(3), ImageNet-normalised", True),
    "hs-fe": ("headstart --strategy feature-extract (defaults)", False),
    "hs-ft4": ("headstart --strategy fine-tune --epochs 4", True),
    "hs-auto": ("headstart --strategy auto --epochs 4 (default budget)", False),
    "hs-auto-tb": ("headstart --strategy auto --time-budget T", False),
    "hs-auto-tb75": ("headstart --strategy auto --time-budget 75", False),
    "seed-fe5": ("seeds' tutorial loop, feature extraction, 5 epochs", True),
    "hs-fe-images5": ("headstart feature-extract --no-fast-path, 5 epochs (same work)", True),
    "seed-ft4": ("seeds' tutorial loop, full fine-tuning, 4 epochs", True),
    "hs-ft4-random": ("headstart fine-tune 4 epochs --head-init random", True),
}
MAIN_ROWS = ("fastai-ft3", "hs-fe", "hs-ft4", "hs-auto-tb", "hs-auto-tb75")


# --- the child process ------------------------------------------------------------------------
def process_seconds() -> float:
    """Seconds since this process started (imports included)."""
    with open("/proc/self/stat", encoding="ascii") as fh:
        start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as fh:
        uptime = float(fh.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


class Clock:
    """Process time with the per-epoch test scoring taken off."""

    def __init__(self) -> None:
        self.excluded = 0.0
        self.epochs: list[dict[str, Any]] = []

    def now(self) -> float:
        return process_seconds() - self.excluded

    def score(self, epoch: int, val: float | None, scorer: Any) -> None:
        """Record the epoch (its end on the clock) and its test accuracy from ``scorer()``,
        run off the clock with the RNG state restored afterwards."""
        import torch

        at = self.now()
        t0 = time.perf_counter()
        with torch.random.fork_rng():
            test = float(scorer())
        self.excluded += time.perf_counter() - t0
        self.epochs.append({"epoch": epoch, "seconds": round(at, 2), "val": val, "test": test})


def first_conv_checksum(model: Any) -> float:
    """Sum of the first conv's weights: the same pretrained file gives the same number."""
    import torch

    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return round(float(conv.weight.detach().double().sum()), 6)


def accuracy_of(model: Any, loader: Any) -> float:
    import torch

    modes = {m: m.training for m in model.modules()}
    model.eval()
    correct = seen = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            seen += len(y)
    for m, training in modes.items():
        m.train(training)
    return correct / max(1, seen)


def child_fastai(data: Path, seed: int, epochs: int, size: int, clock: Clock) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from fastai.callback.core import Callback
    from fastai.learner import Recorder
    from fastai.vision.all import get_image_files
    from peers import run_fastai

    state: dict[str, Any] = {}

    class ScoreTest(Callback):
        order = Recorder.order + 1  # after the Recorder logged the epoch's val metrics

        def after_train(self) -> None:  # the training phase of a real epoch
            state["trained"] = True

        def after_epoch(self) -> None:
            # learn.validate() fires before_fit/after_epoch too (no training phase)
            if not state.pop("trained", False):
                return
            learn = self.learn
            if "tdl" not in state:
                state["tdl"] = learn.dls.test_dl(get_image_files(data / "test"), with_labels=True)
                state["weights"] = first_conv_checksum(learn.model)

            def scorer() -> float:
                import torch

                model, correct, seen = learn.model, 0, 0
                modes = {m: m.training for m in model.modules()}
                model.eval()
                with torch.inference_mode():
                    for xb, yb in state["tdl"]:
                        correct += int((model(xb).argmax(1) == yb).sum())
                        seen += len(yb)
                for m, training in modes.items():
                    m.train(training)
                return correct / seen

            val = float(learn.recorder.values[-1][2])
            clock.score(len(clock.epochs), val, scorer)

    out = run_fastai(data, epochs, size=size, seed=seed, callbacks=[ScoreTest()])
    best = max(clock.epochs, key=lambda e: (e["val"], e["epoch"]))  # ties: the later epoch
    return {
        "test_best": best["test"], "test_last": clock.epochs[-1]["test"],
        "val_last": out["val_accuracy"], "test_final": out.get("test_accuracy"),
        "weights": "torchvision mobilenet_v2 pretrained=True (IMAGENET1K_V1)",
        "first_conv_sum": state.get("weights"),
    }  # fmt: skip


def child_seed_loop(
    data: Path, seed: int, mode: str, epochs: int, size: int, clock: Clock
) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import torch
    from reference_loop import run
    from torchvision import datasets

    state: dict[str, Any] = {}

    def on_epoch_end(epoch: int, model: Any, val: float, transform: Any) -> None:
        if "loader" not in state:
            ds = datasets.ImageFolder(str(data / "test"), transform)
            state["loader"] = torch.utils.data.DataLoader(ds, batch_size=64)
            state["weights"] = first_conv_checksum(model)
        clock.score(epoch, val, lambda: accuracy_of(model, state["loader"]))

    out = run(data, epochs, mode, size=size, seed=seed, on_epoch_end=on_epoch_end)
    best = max(clock.epochs, key=lambda e: (e["val"], e["epoch"]))  # ties: the later epoch
    return {
        "test_best": best["test"], "test_last": clock.epochs[-1]["test"],
        "val_last": out["val_accuracy"], "epoch_seconds": out["epoch_seconds"],
        "weights": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1",
        "first_conv_sum": state.get("weights"),
    }  # fmt: skip


def headstart_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "hs-fe": {"strategy": "feature-extract"},
        "hs-ft4": {"strategy": "fine-tune", "epochs": 4},
        "hs-auto": {"strategy": "auto", "epochs": 4},
        "hs-auto-tb": {"strategy": "auto", "time_budget": args.time_budget},
        "hs-auto-tb75": {"strategy": "auto", "time_budget": 75.0},
        "hs-fe-images5": {"strategy": "feature-extract", "cache_features": False, "epochs": 5,
                          "early_stopping_patience": None},
        "hs-ft4-random": {"strategy": "fine-tune", "epochs": 4, "head_init": "random"},
    }[name]  # fmt: skip
    if args.model:  # headstart rows only; without it auto compares the offline backbones
        kw["model"] = args.model
    return kw


def child_headstart(
    name: str, data: Path, seed: int, args: argparse.Namespace, clock: Clock
) -> dict[str, Any]:
    import lightning as L

    import headstart
    from headstart.console import console
    from headstart.evaluation.predict import predict_logits
    from headstart.modalities import modality_for, splits_for

    console.quiet = True
    per_epoch = VARIANTS[name][1]
    state: dict[str, Any] = {}

    class ScoreTest(L.Callback):
        def scorer(self, pl_module: Any) -> Any:
            def score() -> float:
                if "test" not in state:
                    cfg = pl_module.config
                    splits = splits_for(cfg)
                    state["test"] = modality_for(cfg).dataset(
                        pl_module.backbone, splits.test, splits.class_to_idx
                    )
                modes = {m: m.training for m in pl_module.modules()}
                logits, y = predict_logits(pl_module.backbone, state["test"])
                for m, training in modes.items():
                    m.train(training)
                return float((logits.argmax(1) == y).float().mean())

            return score

        def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
            state.setdefault("weights", first_conv_checksum(pl_module.backbone))

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
            if per_epoch:
                val = trainer.callback_metrics.get("val_acc")
                clock.score(trainer.current_epoch, val and float(val), self.scorer(pl_module))

        def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
            if not per_epoch:  # the last epoch's model, for "last"
                val = trainer.callback_metrics.get("val_acc")
                clock.score(trainer.current_epoch - 1, val and float(val), self.scorer(pl_module))

    run_dir = Path(args.work) / "runs" / f"{name}-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    kw = headstart_kwargs(name, args)
    r = headstart.train(
        data=str(data), out=str(run_dir), seed=seed, image_size=args.size, disk_cache=False,
        extra_callbacks=[ScoreTest()], **kw,
    )  # fmt: skip
    m = r.metrics
    out: dict[str, Any] = {
        "test_best": m["test"]["accuracy"], "val_best": m["val"]["accuracy"],
        "test_last": clock.epochs[-1]["test"] if clock.epochs else None,
        "val_last": clock.epochs[-1]["val"] if clock.epochs else None,
        "strategy": m["run"]["strategy"], "weights": m["run"].get("weights"),
        "first_conv_sum": state.get("weights"),
    }  # fmt: skip
    auto = m["run"].get("auto")
    if auto:
        out["auto"] = {
            "chosen": next(c["name"] for c in auto["candidates"] if c["chosen"]),
            "model": m["run"].get("model"),  # without a model given, auto compares backbones
            "budget_seconds": auto.get("budget_seconds"),
            "candidates": [
                {k: c[k] for k in ("name", "score", "seconds", "epochs_run", "status")}
                for c in auto["candidates"]
            ],
        }
    return out


def child(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock()
    data = Path(args.data)
    if name == "fastai-ft3":
        out = child_fastai(data, seed, 3, args.size, clock)
    elif name in ("seed-fe5", "seed-ft4"):
        mode, epochs = ("feature-extract", 5) if name == "seed-fe5" else ("fine-tune", 4)
        out = child_seed_loop(data, seed, mode, epochs, args.size, clock)
    else:
        out = child_headstart(name, data, seed, args, clock)
    out["epochs"] = clock.epochs
    out["excluded_seconds"] = round(clock.excluded, 2)
    return out


# --- the driver -------------------------------------------------------------------------------
def run_child(name: str, seed: int, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    env = {**os.environ, "COLUMNS": "120"}
    if name == "fastai-ft3" and os.environ.get("FASTAI_PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.environ["FASTAI_PYTHONPATH"], env.get("PYTHONPATH", "")) if p
        )
    cmd = [sys.executable, __file__, "--child", name, "--seed", str(seed), "--data", str(data),
           "--work", args.work, "--size", str(args.size), "--time-budget", str(args.time_budget),
           *(["--model", args.model] if args.model else [])]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    outer = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        return {"failed": (proc.stderr or proc.stdout)[-3000:]}
    r: dict[str, Any] = json.loads(line[len("RESULT ") :])
    r["wall_seconds"] = round(outer - r["excluded_seconds"], 2)
    return r


def time_to(r: dict[str, Any], threshold: float) -> float | None:
    """Seconds (clock, imports included) at the end of the first epoch whose test accuracy
    reaches ``threshold``; rows without per-epoch scoring: the wall time if the final model
    reaches it."""
    if r.get("per_epoch"):
        return next((e["seconds"] for e in r["epochs"] if e["test"] >= threshold), None)
    return r["wall_seconds"] if r["test_best"] >= threshold else None


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    vs = [v * scale for v in values]
    if not vs:
        return ""
    if len(vs) == 1:
        return f"{vs[0]:.{digits}f}"
    return f"{statistics.mean(vs):.{digits}f} ± {statistics.stdev(vs):.{digits}f}"


def table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    lines = [
        "| variant | what | seeds | test, best epoch % | test, last epoch % | wall s | "
        + " | ".join(f"s to {t:.2f}" for t in THRESHOLDS) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(THRESHOLDS),
    ]  # fmt: skip
    for name, runs in results.items():
        ok = [r for r in runs if "failed" not in r]
        what = VARIANTS[name][0].replace("T", f"{args.time_budget:g}", 1) if name == "hs-auto-tb" else VARIANTS[name][0]  # fmt: skip
        if not ok:
            lines.append(f"| {name} | {what} | 0 | failed | | | " + "| " * len(THRESHOLDS))
            continue
        lasts = [r["test_last"] for r in ok if r.get("test_last") is not None]
        ttas = []
        for t in THRESHOLDS:
            hits = [time_to(r, t) for r in ok]
            reached = [h for h in hits if h is not None]
            cell = mean_sd(reached, digits=0) if reached else "—"
            if reached and len(reached) < len(hits):
                cell += f" ({len(reached)}/{len(hits)} seeds)"
            ttas.append(cell)
        lines.append(
            f"| {name} | {what} | {len(ok)} | {mean_sd([r['test_best'] for r in ok], 100)} | "
            f"{mean_sd(lasts, 100)} | {mean_sd([r['wall_seconds'] for r in ok])} | "
            + " | ".join(ttas) + " |"
        )  # fmt: skip
    return lines


def ratios(results: dict[str, list[dict[str, Any]]]) -> dict[str, float | None]:
    def mean(name: str, key: str) -> float | None:
        vs = [r[key] for r in results.get(name, []) if key in r and "failed" not in r]
        return statistics.mean(vs) if vs else None

    def per_epoch(name: str) -> float | None:
        runs = [r for r in results.get(name, []) if "failed" not in r and r["epochs"]]
        spans = []
        for r in runs:
            s = [e["seconds"] for e in r["epochs"]]
            if len(s) > 1:
                spans.append((s[-1] - s[0]) / (len(s) - 1))
        return statistics.mean(spans) if spans else None

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "auto_wall_over_fastai": div(mean("hs-auto", "wall_seconds"), mean("fastai-ft3", "wall_seconds")),
        "auto_tb_wall_over_fastai": div(mean("hs-auto-tb", "wall_seconds"), mean("fastai-ft3", "wall_seconds")),
        "auto_tb75_wall_over_fastai": div(mean("hs-auto-tb75", "wall_seconds"), mean("fastai-ft3", "wall_seconds")),
        "ft4_wall_over_fastai": div(mean("hs-ft4", "wall_seconds"), mean("fastai-ft3", "wall_seconds")),
        "fe_images_epoch_over_seed_fe_epoch": div(per_epoch("hs-fe-images5"), per_epoch("seed-fe5")),
        "ft_epoch_over_seed_ft_epoch": div(per_epoch("hs-ft4"), per_epoch("seed-ft4")),
        "ft_epoch_over_fastai_unfrozen_epoch": div(per_epoch("hs-ft4"), per_epoch("fastai-ft3")),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny data, 64 px, one seed: a smoke run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--seeds-all", action="store_true", help="every row over all seeds")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--time-budget", type=float, default=45.0)
    ap.add_argument("--model", help="headstart rows: this --model (default: headstart's own)")
    ap.add_argument("--work", default="/tmp/headstart-compare")
    ap.add_argument("--out", default=str(HERE / "results" / "compare"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.seed, args)))
        return
    sizes = (50, 30, 100)
    if args.quick:
        sizes, args.size, args.seeds = (6, 4, 4), 64, "0"
        if args.out == str(HERE / "results" / "compare"):
            args.out = str(HERE / "results" / "compare-quick")
    sys.path.insert(0, str(HERE.parent / "src"))
    from headstart.data.catalog import materialise_animal_mnist

    data = materialise_animal_mnist(Path(args.work) / "am-{}-{}-{}".format(*sizes), *sizes)
    seeds = [int(s) for s in args.seeds.split(",")]
    import torch

    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    meta = {
        "data": "Animal-MNIST {} train / {} val / {} test per class (10 classes)".format(*sizes),
        "model": (
            f"headstart rows: --model {args.model}; peers: MobileNetV2 IMAGENET1K_V1" if args.model
            else "MobileNetV2 IMAGENET1K_V1 (torchvision) in every method except auto, which is "
            "given no model and compares MobileNetV2 and EfficientNet-Lite0 (ImageNet, offline) "
            "by LogME (its choices are listed under the table)"
        ),
        "input_px": args.size, "seeds": seeds, "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "command": " ".join(["python benchmarks/compare.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    variants = args.variants.split(",")
    # the recipe rows over every seed first, seeds outermost (every method sees a seed before
    # any sees the next: drift in machine speed spreads over all rows), then the one-seed rows
    order = [(seed, n) for seed in seeds for n in variants if n in MAIN_ROWS or args.seeds_all]
    order += [(seeds[0], n) for n in variants if n not in MAIN_ROWS and not args.seeds_all]
    results: dict[str, list[dict[str, Any]]] = {}
    for seed, name in order:
        print(f"{name} seed {seed} ...", flush=True)
        r = run_child(name, seed, args, data)
        r["seed"], r["per_epoch"] = seed, VARIANTS[name][1]
        results.setdefault(name, []).append(r)
        brief = {k: r.get(k) for k in ("test_best", "test_last", "wall_seconds")}
        print(r.get("failed", f"  {brief}"), flush=True)
        write(Path(args.out), meta, results, args)  # after every row: a cut-short run keeps them


def write(
    out: Path, meta: dict[str, Any], results: dict[str, list[dict[str, Any]]], args: Any
) -> None:
    rs = ratios(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": results, "ratios": rs}, indent=2)
    )
    md = [
        f"# headstart vs peers — {meta['data']}, {args.size} px",
        "",
        f"`{meta['command']}` at commit {meta['commit']}, {meta['date']}, {meta['machine']}; "
        f"seeds {args.seeds} (mean ± sd over seeds); {meta['model']}.",
        "",
        *table(results, args),
        "",
        *[
            f"- {name} seed {r['seed']}: kept {r['auto']['chosen']} on {r['auto']['model']}"
            for name, runs in results.items()
            for r in runs
            if r.get("auto")
        ],
        "",
        "| ratio (means) | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rs.items()],
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md[4:]), flush=True)


if __name__ == "__main__":
    main()
