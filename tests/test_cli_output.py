"""What the CLI prints for people and for programs: ``--json`` documents, untruncated tables when
stdout is a pipe, one prediction JSON shape (CLI, server, Python API), in-memory inputs to
``headstart.predict``, and no warnings from headstart's own code."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headstart
from headstart.errors import DataError
from headstart.version import __version__
from tests.conftest import TINY, train_tiny
from tests.inprocess_cli import CliResult, run_main


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def invoke(*args: str) -> CliResult:
        return run_main(list(args), capsys, monkeypatch)

    return invoke


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import write_class_folders

    root = tmp_path_factory.mktemp("out")
    data = write_class_folders(root / "data", 8)
    return train_tiny(data, root / "run", epochs=1).run_dir


def test_version(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("--version")
    assert r.code == 0 and r.stdout.strip() == f"headstart {__version__}"


def test_models_json_parses_and_names_known_models(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("models", "--json")
    assert r.code == 0, r.text
    rows = json.loads(r.stdout)
    specs = {row["spec"] for row in rows}
    assert {"torchvision:mobilenet_v2", "efficientnet-lite:efficientnet-lite0"} <= specs
    mnv2 = next(row for row in rows if row["spec"] == "torchvision:mobilenet_v2")
    assert "IMAGENET1K_V1" in mnv2["weights"] and mnv2["input_size"] == 224


def test_piped_table_keeps_whole_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`headstart models | grep lite`: stdout is not a terminal, the console is 80 columns,
    yet every name comes out whole (rich used to cut them to "torchvision:ale…")."""
    from headstart.cli import main
    from headstart.console import console

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.argv", ["headstart", "models"])
    monkeypatch.setattr(console, "width", 80)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code in (0, None)
    out = capsys.readouterr().out
    assert "efficientnet-lite:efficientnet-lite0" in out
    assert "torchvision:mobilenet_v3_large" in out and "…" not in out
    assert console.width == 80  # only the table's print was widened


def test_train_json_is_the_only_stdout(cli, split_folder: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "run"
    r = cli("train", str(split_folder), *tiny, "--epochs", "1", "--out", str(out), "--json")
    assert r.code == 0, r.text
    doc = json.loads(r.stdout)  # the tables and messages went to stderr
    assert doc["run_dir"] == str(out) and 0 <= doc["metrics"]["val"]["accuracy"] <= 1
    assert "trainable parameters" in r.stderr


def test_one_prediction_shape_across_cli_server_and_api(
    cli, run_dir: Path, split_folder: Path
) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from headstart.export.serve import create_app

    files = sorted((split_folder / "test" / "red").iterdir())[:2]
    r = cli("predict", str(run_dir), *map(str, files), "--json", "--top-k", "2")
    assert r.code == 0, r.text
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    api = [p.to_json("path") for p in headstart.predict(run_dir, files, top_k=2)]
    upload = [("files", (f.name, f.read_bytes())) for f in files]
    served = TestClient(create_app(run_dir)).post("/predict?top_k=2", files=upload).json()
    for shown in (lines, api, served["predictions"]):
        assert [set(p["top"][0]) for p in shown] == [{"label", "probability"}] * 2
        assert [len(p["top"]) for p in shown] == [2, 2]
    for a, b, c in zip(lines, api, served["predictions"], strict=True):
        assert a == b and a["top"][0]["label"] == c["top"][0]["label"]
        assert a["probability"] == pytest.approx(c["probability"], abs=1e-5)


def test_predict_csv_honours_top_k(cli, run_dir: Path, split_folder: Path) -> None:  # type: ignore[no-untyped-def]
    folder = split_folder / "test" / "blue"
    r = cli("predict", str(run_dir), str(folder), "--csv", "--top-k", "3")
    assert r.code == 0, r.text
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == [
        "path", "label", "probability", "label_2", "probability_2", "label_3", "probability_3",
    ]  # fmt: skip
    assert len(rows) == 1 + 4 and all(len(row) == 7 for row in rows)
    assert sorted(rows[1][1::2][:3]) == ["blue", "green", "red"]  # 3 classes: all of them
    probs = [float(v) for v in rows[1][2::2]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)


def test_predict_takes_images_in_memory(run_dir: Path, split_folder: Path) -> None:
    path = next((split_folder / "test" / "green").iterdir())
    pil = Image.open(path).convert("RGB")
    hwc = np.asarray(pil)
    chw_float = torch.from_numpy(hwc.copy()).permute(2, 0, 1).float() / 255
    preds = headstart.predict(run_dir, [path, pil, hwc, chw_float, str(path)], top_k=3)
    assert [p.path for p in preds[1:4]] == ["<image 1>", "<image 2>", "<image 3>"]
    want = dict(preds[0].top)
    for p in preds[1:]:
        assert dict(p.top) == pytest.approx(want, abs=1e-5), p.path
    with pytest.raises(DataError, match="shape"):
        headstart.predict(run_dir, [np.zeros((2, 8, 8, 3), np.uint8)])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        headstart.predict(run_dir, [np.full((8, 8, 3), 3.0)])


def test_train_predict_export_emit_no_headstart_warnings(
    split_folder: Path, tmp_path: Path
) -> None:
    """A warning raised from headstart's own modules is one a user cannot act on: none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", module=r"headstart(\.|$)")
        res = train_tiny(split_folder, tmp_path / "run", epochs=1)
        files = sorted((split_folder / "test" / "red").iterdir())[:2]
        headstart.predict(res.run_dir, files)
        from fastapi.testclient import TestClient

        from headstart.export.predictor import open_export
        from headstart.export.serve import create_app

        for fmt in ("onnx", "torchscript"):
            exported = open_export(headstart.export_model(res.run_dir, fmt).path)
            assert len(exported.predict(exported.collect(files))) == 2
        upload = [("files", (f.name, f.read_bytes())) for f in files]
        assert TestClient(create_app(res.run_dir)).post("/predict", files=upload).status_code == 200


def test_read_only_arrays_reach_torch_without_a_warning() -> None:
    """Arrays over decoded image buffers are read-only; ``torch.from_numpy`` warns on them
    ("The given NumPy array is not writable"). The predictors copy those, and only those."""
    from headstart.export.predictor import torch_ready

    frozen = np.arange(12, dtype=np.uint8).reshape(3, 4)
    frozen.flags.writeable = False
    ready = torch_ready(frozen)  # (torch warns once per process, so check the copy itself)
    assert ready.flags.writeable and not np.shares_memory(ready, frozen)
    assert torch.from_numpy(ready).tolist() == frozen.tolist()
    writable = np.zeros((3, 4), np.float32)
    assert np.shares_memory(torch_ready(writable), writable)


def test_feature_message_names_each_source_and_its_own_time(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cached-feature line says which split came from where; a second run reads both
    splits from the disk cache and says so (it once printed the probe fit's time as the cache's)."""
    train_tiny(image_folder, tmp_path / "a", epochs=1)
    first = " ".join(capsys.readouterr().out.split())
    assert "extracted (train) while planning; extracted (val) in" in first
    train_tiny(image_folder, tmp_path / "b", epochs=1)
    second = " ".join(capsys.readouterr().out.split())
    assert "from the disk cache (train) while planning; from the disk cache (val) in" in second
    assert "BatchNorm" not in first + second  # feature extraction: no BatchNorm trains
    train_tiny(image_folder, tmp_path / "c", epochs=1, strategy="partial", unfreeze_last=1)
    assert "BatchNorm statistics of trainable stages" in capsys.readouterr().out


def test_hf_path_to_a_missing_folder_says_so(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    r = cli("zero-shot", "--labels", "cat,dog", "-m", "hf:./clip")
    assert r.code == 3, r.text
    assert f"{tmp_path / 'clip'} does not exist" in r.text and "alphanumeric" not in r.text


def test_resume_of_a_finished_run_says_what_it_does(
    cli, image_folder: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    run = train_tiny(image_folder, tmp_path / "run", epochs=1).run_dir
    log = (run / "log.csv").read_text()
    r = cli("train", "--resume", str(run))
    assert r.code == 0, r.text
    assert "already finished" in r.text and "nothing is trained" in r.text
    assert (run / "log.csv").read_text() == log
    assert "exists and is not empty" not in r.text and "GPU available" not in r.text


def test_second_export_keeps_the_first_exports_card(run_dir: Path, tmp_path: Path) -> None:
    onnx = headstart.export_model(run_dir, "onnx", out=tmp_path / "model.onnx")
    script = headstart.export_model(run_dir, "torchscript", out=tmp_path / "model.pt")
    assert onnx.model_card == tmp_path / "MODEL_CARD.md"
    assert script.model_card == tmp_path / "model.pt.MODEL_CARD.md"
    assert "headstart predict model.onnx " in onnx.model_card.read_text()
    assert "headstart predict model.pt " in script.model_card.read_text()
    again = headstart.export_model(run_dir, "onnx", out=tmp_path / "model.onnx")
    assert again.model_card == onnx.model_card  # the same export's card is refreshed
    assert sorted(p.name for p in tmp_path.glob("*MODEL_CARD.md")) == [
        "MODEL_CARD.md", "model.pt.MODEL_CARD.md",
    ]  # fmt: skip


def test_zero_shot_json(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import write_class_folders
    from tests.test_zeroshot import make_tiny_clip

    clip = make_tiny_clip(tmp_path / "clip")
    data = write_class_folders(tmp_path / "d", 2)
    args = ["zero-shot", str(data / "blue"), "-m", f"hf:{clip}", "--labels", "red,blue"]
    r = cli(*args, "--top-k", "2", "--out", str(tmp_path / "zs"), "--json")
    assert r.code == 0, r.text
    doc = json.loads(r.stdout)
    assert doc["classes"] == ["red", "blue"] and doc["run_dir"] == str(tmp_path / "zs")
    assert len(doc["predictions"]) == 2 and len(doc["predictions"][0]["top"]) == 2
    assert set(doc["predictions"][0]["top"][0]) == {"label", "probability"}


def test_rank_and_fewshot_eval_json(cli, image_folder: Path) -> None:  # type: ignore[no-untyped-def]
    models = "torchvision:resnet18@none,torchvision:mobilenet_v2@none"
    r = cli("rank", str(image_folder), "--models", models, "--image-size", "32", "--json")
    assert r.code == 0, r.text
    rows = json.loads(r.stdout)
    assert [row["rank"] for row in rows] == [1, 2]
    assert {row["spec"] for row in rows} == set(models.replace("@none", "").split(","))
    assert rows[0]["logme"] >= rows[1]["logme"] and 0 <= rows[0]["probe_accuracy"] <= 1
    r = cli("fewshot-eval", str(image_folder), "-m", "torchvision:resnet18@none", "--ways", "3",
            "--shots", "1", "--queries", "2", "--episodes", "5", "--image-size", "32", "--json")  # fmt: skip
    assert r.code == 0, r.text
    doc = json.loads(r.stdout)
    assert (doc["ways"], doc["shots"], doc["episodes"]) == (3, 1, 5)
    assert 0 <= doc["mean_accuracy"] <= 1


@pytest.mark.parametrize(
    ("env", "secondary"),
    [({}, False), ({"LOCAL_RANK": "0", "RANK": "0"}, False), ({"LOCAL_RANK": "1"}, True),
     ({"RANK": "3"}, True), ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, True),
     ({"SLURM_PROCID": "2"}, True)],
)  # fmt: skip
def test_only_the_first_process_of_a_run_reports(
    env: dict[str, str], secondary: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.console import secondary_process

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert secondary_process() is secondary
