"""``headstart`` command line: a thin layer over the Python API (:mod:`headstart`)."""

from __future__ import annotations

import csv
import json
import logging
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from headstart.cli_options import (
    GROUP_TITLES,
    GroupedCommand,
    config_from,
    given_options,
    with_config_options,
)
from headstart.console import console, err_console, setup_logging, stdout_reserved
from headstart.errors import DataError, HeadstartError, Interrupted
from headstart.version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Transfer learning for PyTorch: folder of labelled images -> fine-tuned, evaluated model.",
    pretty_exceptions_enable=False,
    # plain help text: the "[default]" at the end of each option's help is not rich markup
    rich_markup_mode=None,
)


def _quiet_third_party() -> None:
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")


Opt = typer.Option

#: the ``--json`` option of the commands that print tables
JsonFlag = Annotated[
    bool,
    Opt("--json", help="Print one JSON document on stdout; tables and messages go to stderr."),
]


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


def _version(value: bool) -> None:
    if value:
        print(f"headstart {__version__}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: Annotated[
        bool,
        Opt("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    del version  # handled by its eager callback


@app.command(cls=GroupedCommand)
@with_config_options
def train(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        Opt(
            "--config",
            help="YAML config (e.g. a run's config.yaml); options given here override it.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        Opt("--resume", help="Continue an interrupted run folder from its last checkpoint."),
    ] = None,
    no_early_stopping: Annotated[
        bool,
        Opt(
            "--no-early-stopping",
            help="Train all epochs (early stopping off).",
            rich_help_panel=GROUP_TITLES["optimisation"],
        ),
    ] = False,
    json_out: JsonFlag = False,
    **options: Any,
) -> None:
    """Train a model on a labelled image folder or CSV and evaluate it.

    Each grouped option is a TrainConfig field: its config.yaml key is the option's name with
    '_' for '-' (except --prompt: prompts, --cache: disk_cache, --fast-path: cache_features,
    --patience: early_stopping_patience)."""
    import headstart

    given = given_options(ctx, options)
    if no_early_stopping:
        given["early_stopping_patience"] = None
    missing = "give a data folder/CSV (headstart train data/) or --config run.yaml"
    with stdout_reserved() if json_out else nullcontext():
        if resume is not None:
            result = headstart.train(resume=resume, **given)
        else:
            result = headstart.train(config_from(config, given, missing_data=missing))
    if json_out:
        _print_json(
            {"run_dir": str(result.run_dir), "seconds": result.seconds, "metrics": result.metrics}
        )


@app.command("lr-find", cls=GroupedCommand)
@with_config_options
def lr_find(
    ctx: typer.Context,
    config: Annotated[
        Path | None, Opt("--config", help="YAML config; options here override it.")
    ] = None,
    min_lr: Annotated[float, Opt(help="Sweep start.")] = 1e-6,
    max_lr: Annotated[float, Opt(help="Sweep end.")] = 1.0,
    steps: Annotated[int, Opt(help="Sweep steps.")] = 100,
    plot: Annotated[Path, Opt(help="Where the loss-vs-LR plot is written.")] = Path("lr_find.png"),
    **options: Any,
) -> None:
    """Learning-rate range test (Lightning Tuner): prints and plots a suggested --lr.

    Takes the same options as train (the run's data, model, strategy, optimizer, ...)."""
    from headstart.api import lr_find as run_lr_find

    missing = "give a data folder/CSV or --config run.yaml"
    cfg = config_from(config, given_options(ctx, options), missing_data=missing)
    run_lr_find(cfg, plot=plot, min_lr=min_lr, max_lr=max_lr, num_training=steps)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    data: Annotated[str, Opt("--data", "-d", help="Labelled folder (class folders) or CSV.")],
    json_out: Annotated[bool, Opt("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Evaluate a trained run on labelled data: accuracy, per-class metrics, AUROC."""
    import headstart
    from headstart.tasks import task_for

    with stdout_reserved() if json_out else nullcontext():
        loaded = headstart.load_run(run)
        m = headstart.evaluate(loaded, data)
    if json_out:
        print(json.dumps(m, indent=2))
        return
    task = task_for(loaded.config)
    console.print(task.metrics_table(m, f"{data} ({m['samples']} {loaded.modality.unit})"))
    console.print(task.summary_line(m))


@app.command()
def predict(
    model: Annotated[
        Path, typer.Argument(help="Run folder, or an exported model.onnx / model.pt.")
    ],
    inputs: Annotated[
        list[str],
        typer.Argument(help="Image files or folders; for a text model, texts or .txt files."),
    ],
    top_k: Annotated[int, Opt("--top-k", "-k", help="Classes shown per image.")] = 1,
    masks: Annotated[
        Path | None,
        Opt(
            "--masks",
            help="Segmentation models: write one index-mask PNG per image (the image's size, "
            "pixel = class index) into this folder.",
        ),
    ] = None,
    boxes: Annotated[
        Path | None,
        Opt(
            "--boxes",
            help="Detection models: write the boxes of every image to this JSON file "
            '([{"path", "width", "height", "boxes": [{"label", "score", "x", "y", "w", "h"}]}], '
            "pixels of the image; --json prints one such object a line instead).",
        ),
    ] = None,
    min_score: Annotated[
        float, Opt("--min-score", help="Detection models: the score a box needs to be listed.")
    ] = 0.5,
    json_out: Annotated[
        bool,
        Opt(
            "--json",
            help='JSON Lines, one per input: {"path", "label", "probability", "top": '
            '[{"label", "probability"}, ...]} (the server\'s and Prediction.to_json\'s shape).',
        ),
    ] = False,
    csv_out: Annotated[
        bool,
        Opt(
            "--csv",
            help="Print CSV: path,label,probability (+ label_2,probability_2, ... up to --top-k).",
        ),
    ] = False,
    strict: Annotated[
        bool,
        Opt(
            "--strict/--skip-bad",
            help="--strict: an unreadable image stops the command (exit 2). Default: it is "
            'skipped with a message naming it (--json: an {"path", "error"} line in its '
            "place) and the rest are predicted; exit 2 only when none could be read.",
        ),
    ] = False,
) -> None:
    """Predict labels for images with a trained run or an exported model (ONNX needs only onnxruntime)."""
    from headstart.files import Unreadable, collect_images, predict_readable

    if _segmentation_model(model):
        _predict_masks(model, inputs, masks, json_out)
        return
    if _run_task(model) == "detection":
        _predict_boxes(model, inputs, boxes, min_score, json_out)
        return
    if model.is_file() and model.suffix in (".onnx", ".pt"):
        from headstart.export.predictor import open_export

        exported = open_export(model)
        items: list[Any] = exported.collect(inputs)

        def predict_items(xs: list[Any]) -> list[Any]:
            return list(exported.predict(xs, top_k=top_k))
    else:
        import headstart

        loaded = headstart.load_run(model)
        images = loaded.modality.unit == "images"
        items = list(collect_images(inputs)) if images else list(inputs)

        def predict_items(xs: list[Any]) -> list[Any]:
            return list(headstart.predict(loaded, xs, top_k=top_k))

    results = predict_items(items) if strict else predict_readable(predict_items, items)
    preds = [r for r in results if not isinstance(r, Unreadable)]
    skipped = [r for r in results if isinstance(r, Unreadable)]
    for bad in skipped:
        err_console.print(f"skipped: {escape(bad.error)}", highlight=False)
    if skipped and not preds:
        raise DataError(skipped[0].error)
    if skipped:
        err_console.print(
            f"{len(skipped)} of {len(results)} inputs could not be read and were skipped "
            "(--strict stops at the first instead)"
        )
    if json_out:
        for r in results:
            print(json.dumps(r.to_json("path")))
        return
    if csv_out:
        _print_csv(preds)
        return
    if preds and preds[0].tasks is not None:  # multi-task: one column per task
        console.print(_task_table(preds))
        return
    t = Table()
    t.add_column("image")
    t.add_column("label")
    t.add_column("probability", justify="right")
    if top_k > 1:
        t.add_column(f"top {top_k}")
    multi = any(p.labels is not None for p in preds)
    if multi:
        t.add_column("labels (above their thresholds)")
    for p in preds:
        row = [p.path, p.label, f"{p.probability:.3f}"]
        if top_k > 1:
            row.append(", ".join(f"{c} {v:.2f}" for c, v in p.top))
        if multi:
            row.append(", ".join(f"{c} {v:.2f}" for c, v in p.labels or []) or "-")
        t.add_row(*row)
    console.print(t)


def _segmentation_model(model: Path) -> bool:
    from headstart.export.predictor import is_segmentation_onnx

    if model.is_dir():
        from headstart.run import RunFolder

        return RunFolder.open(model).load_config().task == "segmentation"
    return is_segmentation_onnx(model)


def _run_task(model: Path) -> str | None:
    """The task of a run folder or of an exported .onnx file (``None``: not named)."""
    if not model.is_dir():
        from headstart.export.predictor import exported_task

        return exported_task(model) if model.is_file() else None
    from headstart.run import RunFolder

    return RunFolder.open(model).load_config().task


def _predict_boxes(
    model: Path, inputs: list[str], boxes: Path | None, min_score: float, json_out: bool
) -> None:
    """``predict`` for a detection run or its model.onnx: boxes JSON into ``--boxes`` (or
    JSON lines)."""
    from headstart.export.detection import predict_boxes, predict_boxes_onnx, write_boxes

    if boxes is None and not json_out:
        raise HeadstartError(f"{model} is a detection model: pass --boxes FILE.json to write "
                             "the boxes of every image there, or --json to print them")  # fmt: skip
    predict = predict_boxes_onnx if model.is_file() else predict_boxes
    results = predict(model, inputs, threshold=min_score)
    if json_out:
        for r in results:
            print(json.dumps(r))
    if boxes is not None:
        write_boxes(results, boxes)
        n = sum(len(r["boxes"]) for r in results)
        err_console.print(f"{n} box(es) in {len(results)} image(s) written to {boxes}")


def _predict_masks(model: Path, inputs: list[str], masks: Path | None, json_out: bool) -> None:
    """``predict`` for a segmentation run or model.onnx: index-mask PNGs into ``--masks``."""
    from headstart.export.segmentation import predict_masks, predict_masks_onnx

    if masks is None:
        raise HeadstartError(f"{model} is a segmentation model: pass --masks DIR to write one "
                             "index-mask PNG per image there")  # fmt: skip
    predict = predict_masks_onnx if model.is_file() else predict_masks
    written = predict(model, inputs, masks)
    if json_out:
        for w in written:
            print(json.dumps({"mask": str(w)}))
        return
    console.print(f"{len(written)} mask(s) written to {masks} (pixel = class index)")


def _task_table(preds: list[Any]) -> Table:
    """Multi-task predictions: per input, each task's top-k classes with probabilities."""
    t = Table()
    t.add_column("image")
    for task in preds[0].tasks:
        t.add_column(task)
    for p in preds:
        cells = [", ".join(f"{c} {v:.2f}" for c, v in top) for top in p.tasks.values()]
        t.add_row(p.path, *cells)
    return t


def _print_csv(preds: list[Any]) -> None:
    """One row per input: path, best label and probability, then the rest of its top-k
    (multi-label models: then ``labels``, the labels above their thresholds joined by ``|``;
    multi-task models: per task ``<task>,<task>_probability``, then its top-k rest as
    ``<task>_2,<task>_probability_2``, ...)."""
    if preds and preds[0].tasks is not None:
        _print_task_csv(preds)
        return
    k = max((len(p.top) for p in preds), default=1)
    multi = any(p.labels is not None for p in preds)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    header = ["path", "label", "probability"]
    for r in range(2, k + 1):
        header += [f"label_{r}", f"probability_{r}"]
    writer.writerow([*header, "labels"] if multi else header)
    for p in preds:
        row = [p.path]
        for c, v in p.top:
            row += [c, f"{v:.6f}"]
        row += [""] * (len(header) - len(row))
        writer.writerow([*row, "|".join(c for c, _ in p.labels or [])] if multi else row)


def _print_task_csv(preds: list[Any]) -> None:
    k = max(len(top) for p in preds for top in p.tasks.values())
    writer = csv.writer(sys.stdout, lineterminator="\n")
    header = ["path"]
    for task in preds[0].tasks:
        header += [task, f"{task}_probability"]
        for r in range(2, k + 1):
            header += [f"{task}_{r}", f"{task}_probability_{r}"]
    writer.writerow(header)
    for p in preds:
        row = [p.path]
        for top in p.tasks.values():
            cells = [x for c, v in top for x in (c, f"{v:.6f}")]
            row += cells + [""] * (2 * k - len(cells))
        writer.writerow(row)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    format: Annotated[str, Opt("--format", "-f", help="onnx or torchscript.")] = "onnx",
    out: Annotated[
        Path | None, Opt("--out", "-o", help="Output file [run/model.onnx or model.pt].")
    ] = None,
) -> None:
    """Export a run as one file with preprocessing, labels and metadata inside (+ MODEL_CARD.md)."""
    from headstart.export.exporter import export_model

    res = export_model(run, format, out)  # a segmentation run: ONNX only, masks out
    console.print(
        f"exported {res.path} ({res.path.stat().st_size / 1e6:.1f} MB); export check: max |export - eager| = {res.max_abs_diff:.1e}"
    )
    console.print(f"model card: {res.model_card}")


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="Exported model.onnx / model.pt, or a run folder.")],
    host: Annotated[str, Opt(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="Port.")] = 8000,
    max_mb: Annotated[float, Opt(help="Largest accepted image upload, MB.")] = 10.0,
    max_files: Annotated[int, Opt(help="Most images per request.")] = 32,
    max_batch: Annotated[
        int,
        Opt(min=1, help="Most items (images, texts) per model call, across concurrent requests."),
    ] = 32,
    max_wait_ms: Annotated[
        float,
        Opt(
            min=0, help="How long a request waits for concurrent ones to share its model call, ms."
        ),
    ] = 5.0,
) -> None:
    """HTTP API and web page: GET / (a page to try the model on photos or texts), POST /predict
    (multipart 'files'; text models: JSON {"texts": [...]}), GET /health, GET /metadata.
    Concurrent requests are combined into model calls of up to --max-batch items."""
    from headstart.export.serve import serve as run_server

    if _segmentation_model(model):
        raise HeadstartError(f"{model} is a segmentation model: serve does not answer with "
                             "masks yet; use headstart predict MODEL IMAGES --masks DIR")  # fmt: skip
    if _run_task(model) == "detection":
        raise HeadstartError(f"{model} is a detection model: serve does not answer with boxes "
                             "yet; use headstart predict MODEL IMAGES --boxes boxes.json")  # fmt: skip
    run_server(
        model,
        host=host,
        port=port,
        max_bytes=int(max_mb * 2**20),
        max_files=max_files,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )


@app.command()
def rank(
    data: Annotated[str, typer.Argument(help="Image folder or CSV (as for train).")],
    models: Annotated[
        str,
        Opt(
            "--models",
            help="Comma-separated specs, each optionally @weights (e.g. torchvision:resnet18@none).",
        ),
    ],
    image_size: Annotated[
        int | None, Opt(help="Input size for every model [each model's own].")
    ] = None,
    probe: Annotated[
        bool, Opt("--probe/--no-probe", help="Also fit a linear probe and report its val accuracy.")
    ] = True,
    seed: Annotated[int, Opt(help="Split seed.")] = 42,
    stages: Annotated[
        bool, Opt("--stages", help="Score every stage of each model (where to cut).")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Rank backbones for your data without training them (LogME, You et al. 2021)."""
    from dataclasses import asdict

    from headstart.ranking import print_ranking, rank_models, rank_stages

    candidates = [m.strip() for m in models.split(",") if m.strip()]
    with stdout_reserved() if json_out else nullcontext():
        if stages:
            tables = [
                rank_stages(data, m, image_size=image_size, probe=probe, seed=seed)
                for m in candidates
            ]
        else:
            rows = rank_models(data, candidates, image_size=image_size, probe=probe, seed=seed)
            tables = [sorted(rows, key=lambda r: r.logme, reverse=True)]
    if json_out:
        _print_json([{"rank" if not stages else "stage": i, **asdict(r)}
                     for t in tables for i, r in enumerate(t, 1)])  # fmt: skip
        return
    for t in tables:
        print_ranking(t, sort=not stages)


@app.command()
def pretrain(
    data: Annotated[
        str | None, typer.Argument(help="Folder of unlabeled images (searched recursively).")
    ] = None,
    task: Annotated[
        str, Opt(help="Pretext task: rotation (4-way, Gidaris et al. 2018).")
    ] = "rotation",
    out: Annotated[
        Path, Opt("--out", "-o", help="Output folder (backbone.pt, metrics.json, log.csv).")
    ] = Path("runs/pretrain-rotation"),
    resume: Annotated[
        Path | None, Opt("--resume", help="Continue an interrupted pretraining folder.")
    ] = None,
    model: Annotated[
        str | None, Opt("--model", "-m", help="Model spec [torchvision:mobilenet_v2].")
    ] = None,
    weights: Annotated[str | None, Opt(help="Starting weights [DEFAULT].")] = None,
    image_size: Annotated[str | None, Opt(help="Input crop size [the weights' own].")] = None,
    strategy: Annotated[
        str | None, Opt("--strategy", "-s", help="fine-tune, partial or gradual [fine-tune].")
    ] = None,
    unfreeze_last: Annotated[int | None, Opt(help="partial: stages to train [1].")] = None,
    epochs: Annotated[int | None, Opt("--epochs", "-e", help="Epochs [5].")] = None,
    batch_size: Annotated[
        int | None, Opt("--batch-size", "-b", help="Inputs per batch (4 rotations per image) [32].")
    ] = None,
    lr: Annotated[float | None, Opt("--lr", help="Learning rate [1e-3].")] = None,
    backbone_lr_mult: Annotated[float | None, Opt(help="Backbone LR = lr x this [1.0].")] = None,
    augment: Annotated[str | None, Opt(help="none, light, standard or strong [light].")] = None,
    num_workers: Annotated[int | None, Opt(help="DataLoader workers.")] = None,
    seed: Annotated[int | None, Opt(help="Random seed [42].")] = None,
) -> None:
    """Self-supervised pretraining on unlabeled images; writes weights for train --weights."""
    from headstart.adapt.pretext import pretrain as run_pretrain

    settings: dict[str, Any] = {
        k: v
        for k, v in {
            "model": model, "weights": weights, "image_size": image_size, "strategy": strategy,
            "unfreeze_last": unfreeze_last, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "backbone_lr_mult": backbone_lr_mult, "augment": augment, "num_workers": num_workers,
            "seed": seed,
        }.items()
        if v is not None
    }  # fmt: skip
    if resume is not None:
        run_pretrain(task=task, resume=resume)
        return
    run_pretrain(data, task=task, out=out, **settings)


@app.command("fewshot-eval")
def fewshot_eval_cmd(
    data: Annotated[str, typer.Argument(help="Labelled image folder or CSV.")],
    model: Annotated[
        str, Opt("--model", "-m", help="Spec, optionally @weights.")
    ] = "torchvision:mobilenet_v2",
    ways: Annotated[int, Opt(help="Classes per episode (N).")] = 5,
    shots: Annotated[int, Opt(help="Support images per class (K).")] = 5,
    queries: Annotated[int, Opt(help="Held-out query images per class.")] = 15,
    episodes: Annotated[int, Opt(help="Episodes to average.")] = 200,
    image_size: Annotated[int | None, Opt(help="Input size [the weights' own].")] = None,
    seed: Annotated[int, Opt(help="Episode seed.")] = 0,
    json_out: JsonFlag = False,
) -> None:
    """N-way K-shot episodic accuracy (95 % CI) of a prototype classifier on pretrained features."""
    from dataclasses import asdict

    from headstart.adapt.evaluate_episodes import fewshot_eval

    with stdout_reserved() if json_out else nullcontext():
        r = fewshot_eval(
            data, model, ways=ways, shots=shots, queries=queries, episodes=episodes,
            image_size=image_size, seed=seed,
        )  # fmt: skip
    if json_out:
        _print_json({"model": model, **asdict(r)})
        return
    console.print(
        f"{model}: {r.ways}-way {r.shots}-shot accuracy {100 * r.mean_accuracy:.1f} % "
        f"± {100 * r.ci95:.1f} (95 % CI, {r.episodes} episodes, {r.queries} queries per class)"
    )


@app.command("zero-shot")
def zero_shot_cmd(
    images: Annotated[
        list[str] | None, typer.Argument(help="Images or folders to classify (optional).")
    ] = None,
    labels: Annotated[
        str | None, Opt(help="Comma-separated class names [the --eval folder's classes].")
    ] = None,
    model: Annotated[
        str | None, Opt("--model", "-m", help="hf:<CLIP folder or cached repo> (text tower).")
    ] = None,
    run: Annotated[
        Path | None, Opt("--run", help="A run trained with --head semantic (any image model).")
    ] = None,
    prompts: Annotated[
        list[str] | None,
        Opt("--prompt", help="Template with {} (repeat to ensemble; 'ensemble' = CLIP's 7)."),
    ] = None,
    eval_data: Annotated[
        str | None, Opt("--eval", help="Labelled folder/CSV: report zero-shot accuracy on it.")
    ] = None,
    out: Annotated[
        str | None, Opt("--out", "-o", help="Run folder to save [runs/zero-shot-<model>-<time>].")
    ] = None,
    top_k: Annotated[int, Opt(help="Predictions per image.")] = 1,
    json_out: JsonFlag = False,
) -> None:
    """Classify by class names alone (CLIP text tower, or label embeddings of a semantic-head
    run); the classifier is saved as an ordinary run (predict, export, serve, fine-tune)."""
    from headstart.adapt.zeroshot import zero_shot
    from headstart.evaluation import metrics_table

    names = [n.strip() for n in labels.split(",")] if labels else None
    with stdout_reserved() if json_out else nullcontext():
        r = zero_shot(
            images or [], labels=names, model=model, prompts=prompts or ["a photo of a {}."],
            run=run, eval_data=eval_data, out=out, top_k=top_k,
        )  # fmt: skip
    if json_out:
        _print_json({
            "run_dir": str(r.run_dir), "classes": r.classes, "metrics": r.metrics,
            "predictions": [p.to_json("path") for p in r.predictions],
        })  # fmt: skip
        return
    if r.predictions:
        t = Table(title=f"zero-shot over {len(r.classes)} classes")
        t.add_column("file")
        t.add_column("prediction")
        t.add_column("p", justify="right")
        for pr in r.predictions:
            t.add_row(pr.path, pr.label, f"{pr.probability:.3f}")
        console.print(t)
    if r.metrics is not None:
        console.print(metrics_table(r.metrics, f"zero-shot on {eval_data}"))
    console.print(f"zero-shot model saved as run {r.run_dir} (export, predict, serve work on it)")


@app.command("report")
def report_cmd(run: Annotated[Path, typer.Argument(help="Run folder.")]) -> None:
    """Regenerate a run's report.html (curves, confusion matrix, per-class bars, worst errors,
    reliability diagram)."""
    import headstart

    path = headstart.report(run)
    console.print(f"report: {path}")


@app.command()
def models(
    filter: Annotated[
        str | None,
        Opt("--filter", "-f", help="Name pattern, e.g. resnet or 'vit_*'. Also searches timm."),
    ] = None,
    source: Annotated[str | None, Opt(help="torchvision, timm, text or efficientnet-lite.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List usable models with weights, input size, parameters and offline availability."""
    from rich.progress import Progress

    from headstart.models import list_models

    with Progress(console=err_console, transient=True) as bar:
        task = None

        def measured(done: int, total: int) -> None:  # timm models not measured before
            nonlocal task
            if task is None:
                task = bar.add_task(
                    f"measuring parameters of {total} timm models (once)", total=total
                )
            bar.update(task, completed=done)

        rows = list_models(filter, source, progress=measured)
    if json_out:
        _print_json(rows)
        return
    t = Table(title=f"{len(rows)} models")
    for col in ("model", "weights", "input", "params", "weights offline now"):
        t.add_column(col, justify="right" if col in ("input", "params") else "left")
    for r in rows:
        params = f"{r['params'] / 1e6:.1f}M" if r.get("params") else "-"
        t.add_row(
            r["spec"],
            ", ".join(r["weights"]),
            str(r["input_size"]),
            params,
            ", ".join(r["offline"]) or "-",
        )
    console.print(t)


@app.command()
def demo(
    out: Annotated[Path, Opt(help="Parent folder of the two runs.")] = Path("runs/demo"),
    data: Annotated[Path, Opt(help="Where Animal-MNIST is written.")] = Path("data/animal-mnist"),
    epochs: Annotated[int, Opt(help="Epochs for both runs.")] = 8,
    image_size: Annotated[int, Opt(help="Input size for both runs.")] = 128,
) -> None:
    """Pretrained feature extraction vs training from scratch on Animal-MNIST (offline)."""
    from headstart.demo import demo as run_demo

    run_demo(out, data, epochs=epochs, image_size=image_size)


#: the extra (pyproject's optional-dependencies) that installs each optional top-level package;
#: the base install is the CLI alone, so a command whose packages are missing says what to install
EXTRA_OF = {
    **dict.fromkeys(("torch", "torchvision", "lightning", "torchmetrics", "timm"), "train"),
    **dict.fromkeys(("transformers", "peft"), "text"),
    **dict.fromkeys(("optuna", "matplotlib", "safetensors", "onnx", "huggingface_hub"), "train"),
    **dict.fromkeys(("onnxruntime", "tokenizers"), "predict"),
    **dict.fromkeys(("fastapi", "starlette", "uvicorn", "multipart", "python_multipart"), "serve"),
    **dict.fromkeys(("tensorboard", "mlflow", "wandb"), "track"),
}
_EXTRA_WORDS = {
    "train": "training",
    "text": "Hugging Face (text, hf:, CLIP, LoRA)",
    "predict": "predictor",
    "serve": "serving",
    "track": "tracking",
}


def missing_extra_message(err: ModuleNotFoundError, argv: list[str]) -> str | None:
    """What to install when ``err`` is a package of one of headstart's extras (else None)."""
    extra = EXTRA_OF.get((err.name or "").split(".")[0])
    if extra is None:
        return None
    command = next((a for a in argv if not a.startswith("-")), "")
    return (
        f"`headstart {command}` needs the {_EXTRA_WORDS[extra]} extra ({err.name} is not "
        f"installed): pip install 'headstart[{extra}]'"
    )


def main() -> None:
    """Entry point: user errors print one clear message (no traceback) and exit non-zero; so
    does a command whose optional packages are not installed (exit 2: which extra to install)."""
    setup_logging()
    _quiet_third_party()
    try:
        app()
    except Interrupted as err:  # Ctrl-C during training: how to continue, no "error:"
        console.print(f"[yellow]{escape(str(err))}[/]")
        sys.exit(err.exit_code)
    except HeadstartError as err:
        # escape: file names may contain [brackets] that rich would read as markup
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except ModuleNotFoundError as err:
        message = missing_extra_message(err, sys.argv[1:])
        if message is None:
            raise
        console.print(f"[bold red]error:[/] {escape(message)}")
        sys.exit(2)


if __name__ == "__main__":
    logging.captureWarnings(False)
    main()
