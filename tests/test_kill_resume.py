"""Kill ``headstart train`` with SIGKILL at several points, resume it, and get the weights of an
uninterrupted run; a NaN loss stops training without overwriting the last good checkpoint.

The killed runs are real ``headstart train`` processes (tests/kill_script.py arms a deterministic
self-SIGKILL at the chosen point); the resumes and reference runs go through the same CLI entry
point in this process (no second torch import).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from headstart.run import load_checkpoint_file
from headstart.training.module import HeadstartModule
from tests.conftest import TINY, write_class_folders
from tests.inprocess_cli import run_main

ROOT = Path(__file__).parents[1]
COMMON = {**TINY, "model": "timm:test_resnet", "epochs": 2, "no-early-stopping": True}
IMAGE_PATH = {"strategy": "partial", "unfreeze-last": 2, "augment": "light"}
CACHED_PATH = {"strategy": "feature-extract", "head-init": "probe"}


def _args(settings: dict[str, Any]) -> list[str]:
    out = []
    for k, v in settings.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        else:
            out.append(f"{flag}={v}")
    return out


def _state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(run / "checkpoints" / "last.ckpt")["state_dict"]


def _assert_no_corrupt_checkpoint(run: Path) -> list[int]:
    """Every *.ckpt in the run loads; returns their epochs."""
    epochs = []
    for ckpt in sorted((run / "checkpoints").glob("*.ckpt")):
        epochs.append(load_checkpoint_file(ckpt)["epoch"])  # RunError if torn/corrupt
    return epochs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("kill") / "data", 8)


POINTS = {"epoch": "image", "checkpoint": "image", "features": "cached"}


@pytest.fixture(scope="module")
def killed(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The three killed ``headstart train`` processes, started at once (they overlap their
    imports with the reference runs): point -> (process, run folder, feature cache folder)."""
    root = tmp_path_factory.mktemp("killed")
    out: dict[str, Any] = {}
    for point, path in POINTS.items():
        run, cache = root / point / "run", root / point / "cache"
        settings = {**COMMON, **(IMAGE_PATH if path == "image" else CACHED_PATH), "out": run}
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",
            "HEADSTART_CACHE": str(cache),
        }
        cmd = [sys.executable, str(ROOT / "tests" / "kill_script.py"), point, str(data)]
        proc = subprocess.Popen(
            [*cmd, *_args(settings)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env,
        )  # fmt: skip
        out[point] = (proc, run, cache)
    yield out
    for proc, _, _ in out.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def references(
    data: Path, killed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Uninterrupted seeded runs (Python API, same settings) to compare resumed runs against."""
    import headstart

    root = tmp_path_factory.mktemp("ref")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        for name, extra in (("image", IMAGE_PATH), ("cached", CACHED_PATH)):
            kw = {k.replace("-", "_"): v for k, v in {**COMMON, **extra}.items()}
            kw.pop("no_early_stopping")
            out[name] = headstart.train(
                data=str(data), out=str(root / name), early_stopping_patience=None, **kw
            ).run_dir
    return out


@pytest.mark.parametrize(
    ("point", "epochs_on_disk", "temp_left"),
    [
        ("epoch", [0, 0], False),  # killed in epoch 1: best+last of epoch 0
        ("checkpoint", None, True),  # torn .last.ckpt.*.tmp beside an intact last.ckpt
        ("features", [], False),  # killed before any checkpoint
    ],
)
def test_sigkill_then_resume_equals_uninterrupted_run(
    point: str,
    epochs_on_disk: list[int] | None,
    temp_left: bool,
    killed: dict[str, Any],
    references: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc, run, cache = killed[point]
    path = POINTS[point]
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, output[-3000:]

    # what the kill left: only loadable checkpoints (atomic writes), at most a stray temp file
    on_disk = _assert_no_corrupt_checkpoint(run)
    temps = list((run / "checkpoints").glob(".*.tmp")) if (run / "checkpoints").is_dir() else []
    if epochs_on_disk is not None:
        assert on_disk == epochs_on_disk
    else:  # killed while writing epoch 1's last.ckpt: last.ckpt is still epoch 0's
        assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert bool(temps) == temp_left
    if temp_left:
        assert 0 < temps[0].stat().st_size < (run / "checkpoints" / "last.ckpt").stat().st_size

    monkeypatch.setenv("HEADSTART_CACHE", str(cache))  # the killed run's feature cache
    r = run_main(["train", "--resume", str(run)], capsys, monkeypatch)
    assert r.code == 0, r.text[-3000:]
    assert not list((run / "checkpoints").glob(".*.tmp"))  # stray temp files cleaned up
    assert (
        _assert_no_corrupt_checkpoint(run) and _state(run).keys() == _state(references[path]).keys()
    )
    expected = _state(references[path])
    for k, v in _state(run).items():
        torch.testing.assert_close(v, expected[k], atol=0, rtol=0, msg=k)
    log = (run / "log.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1"]
    if path == "cached":  # train features came from the cache the killed run wrote
        assert "from the disk cache (train)" in r.text


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A NaN batch in epoch 1 -> exit code 5, checkpoints still epoch 0's and finite; --resume
    then continues from them."""
    run = tmp_path / "run"

    def poison(self: HeadstartModule, batch: Any, batch_idx: int) -> None:
        if self.current_epoch == 1 and batch_idx == 1:
            batch[0].fill_(float("nan"))

    monkeypatch.setattr(HeadstartModule, "on_train_batch_start", poison, raising=False)
    settings = {**COMMON, **IMAGE_PATH, "epochs": 2, "out": run}
    r = run_main(["train", str(data), *_args(settings)], capsys, monkeypatch)
    assert r.code == 5, r.text[-3000:]
    assert "NaN/inf in epoch 1" in r.text and str(run / "checkpoints") in r.text
    assert "Traceback" not in r.text
    assert _assert_no_corrupt_checkpoint(run) == [0, 0]
    for ckpt in ("best.ckpt", "last.ckpt"):
        state = load_checkpoint_file(run / "checkpoints" / ckpt)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (run / "metrics.json").exists()

    monkeypatch.setattr(HeadstartModule, "on_train_batch_start", lambda *a: None, raising=False)
    r = run_main(["train", "--resume", str(run)], capsys, monkeypatch)
    assert r.code == 0, r.text[-3000:]
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def poison(self: HeadstartModule, batch: Any, batch_idx: int) -> None:
        batch[0].fill_(float("inf"))

    monkeypatch.setattr(HeadstartModule, "on_train_batch_start", poison, raising=False)
    settings = {**COMMON, **IMAGE_PATH, "epochs": 1, "out": tmp_path / "run"}
    r = run_main(["train", str(data), *_args(settings)], capsys, monkeypatch)
    assert r.code == 5 and "no epoch finished, so there is no checkpoint" in r.text, r.text[-2000:]


def test_ctrl_c_exits_130_with_the_resume_command_and_resume_completes(
    data: Path,
    references: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real SIGINT sent from outside to ``headstart train`` in epoch 1: exit code 130 (not
    Lightning's 1), the resume command printed, no traceback; --resume reaches the weights of
    the uninterrupted run."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    settings = {**COMMON, **IMAGE_PATH, "out": run}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "HEADSTART_CACHE": str(cache)}
    cmd = [sys.executable, str(ROOT / "tests" / "kill_script.py"), "interrupt", str(data)]
    proc = subprocess.Popen(
        [*cmd, *_args(settings)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env,
    )  # fmt: skip
    marker = run.with_suffix(".waiting")
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), proc.communicate(timeout=60)[0][-3000:]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert f"interrupted; continue with: headstart train --resume {run}" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert _assert_no_corrupt_checkpoint(run) == [0, 0]  # epoch 0's best + last, intact

    monkeypatch.setenv("HEADSTART_CACHE", str(cache))
    r = run_main(["train", "--resume", str(run)], capsys, monkeypatch)
    assert r.code == 0, r.text[-3000:]
    expected = _state(references["image"])
    for k, v in _state(run).items():
        torch.testing.assert_close(v, expected[k], atol=0, rtol=0, msg=k)
