"""The CLI as a user runs it: real subprocesses, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headstart.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**__import__("os").environ, "COLUMNS": "200"},
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["train", "/nonexistent/data"], 2, "does not exist"),
        (["train", "{data}", "--model", "torchvision:resnet_18"], 3, "Did you mean"),
        (
            ["train", "{data}", "--model", "torchvision:resnet18", "--weights", "IMAGENET9K"],
            3,
            "valid:",
        ),
        (["train", "{data}", "--epochs", "0"], 2, "epochs"),
        (["evaluate", "/nonexistent/run", "--data", "{data}"], 4, "does not exist"),
    ],
)
def test_user_errors_exit_cleanly(
    image_folder: Path, args: list[str], code: int, needle: str
) -> None:
    r = run_cli(*[a.format(data=image_folder) for a in args])
    assert r.returncode == code, r.stdout + r.stderr
    assert needle in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_train_predict_evaluate_via_cli(split_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    r = run_cli("train", str(split_folder), *tiny, "--epochs", "2", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trainable parameters" in r.stdout and "blue" in r.stdout
    r = run_cli("predict", str(out), str(split_folder / "test" / "red"), "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4 and {"path", "label", "probability", "top"} <= set(rows[0])
    r = run_cli("evaluate", str(out), "--data", str(split_folder / "test"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["samples"] == 12
    # --config reproduces; an existing --out is refused with exit code 4
    r = run_cli("train", "--config", str(out / "config.yaml"))
    assert r.returncode == 4 and "already exists" in r.stdout


def test_models_lists_offline_weights() -> None:
    r = run_cli("models", "--filter", "resnet18")
    assert r.returncode == 0
    assert "torchvision:resnet18" in r.stdout and "IMAGENET1K_V1" in r.stdout
