"""Few-shot as a training strategy, zero-shot (tiny CLIP, MiniLM label embeddings), and the heads
behind them: checked against their definitions and through train/load/export/predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import headstart
from headstart.adapt.zeroshot import PROMPT_ENSEMBLE, clip_text_embeddings, expand_prompts
from headstart.errors import HeadstartError, ModelError
from headstart.inference import load_run
from headstart.models.heads import CosineClassifier, SemanticHead, make_head
from headstart.training.head_init import prototypes
from tests.conftest import train_tiny, write_class_folders


def make_tiny_clip(out: Path) -> Path:
    """A randomly initialised CLIP with 32 px images, saved as a CLIP repo would be (model,
    tokenizer, image processor): the real loading code runs on it, nothing is downloaded."""
    from transformers import BertTokenizerFast, CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", "."]
    words += [chr(c) for c in range(97, 123)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    cfg = CLIPConfig(
        text_config={**layers, "vocab_size": len(words), "num_attention_heads": 2,
                     "max_position_embeddings": 32, "bos_token_id": 2, "eos_token_id": 3,
                     "pad_token_id": 0},
        vision_config={**layers, "image_size": 32, "patch_size": 8, "num_attention_heads": 2},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(cfg).save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


# --- heads ------------------------------------------------------------------------------------
def test_cosine_head_is_scaled_cosine_to_centred_prototypes() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 8, generator=g), torch.arange(3).repeat(4)
    protos, centre = prototypes(x, y, 3)
    assert torch.allclose(centre, x.mean(0))
    z = F.normalize(x - centre, dim=1)
    assert torch.allclose(protos[1], z[y == 1].mean(0), atol=1e-6)
    head = make_head("cosine", 8, 3)
    assert isinstance(head, CosineClassifier)
    head.set_classes(protos, centre, scale=7.0)
    expected = 7.0 * z @ F.normalize(protos, dim=1).T
    assert torch.allclose(head(x), expected, atol=1e-5)
    # the scale changes confidence, never the decision (nearest prototype by cosine)
    head.set_classes(protos, centre, scale=1.0)
    assert torch.equal(head(x).argmax(1), expected.argmax(1))


def test_semantic_head_scores_new_classes_by_their_embeddings() -> None:
    emb = torch.eye(4)[:3]
    head = make_head("semantic", 6, 3, label_embeddings=emb)
    assert isinstance(head, SemanticHead) and head(torch.randn(2, 6)).shape == (2, 3)
    head.set_label_embeddings(torch.eye(4))  # a fourth, unseen class by its name's vector
    assert head(torch.randn(5, 6)).shape == (5, 4) and head.out_features == 4
    with pytest.raises(ValueError, match=r"\(C, 4\)"):
        head.set_label_embeddings(torch.eye(3))


def test_prompt_templates_are_checked_and_ensembled() -> None:
    assert expand_prompts(["ensemble"]) == list(PROMPT_ENSEMBLE)
    with pytest.raises(ModelError, match=r"no '\{\}'"):
        expand_prompts(["a photo"])


# --- few-shot strategy ----------------------------------------------------------------------
def test_auto_chooses_few_shot_and_the_model_works_everywhere(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "d", 6)  # 6 per class -> ~5 train images per class
    r = train_tiny(data, tmp_path / "run", strategy="auto", epochs=3)
    run = r.metrics["run"]
    assert run["strategy"] == "few-shot" and run["head"] == "cosine"
    assert run["auto_decision"]["strategy"] == "few-shot"
    assert "<= 10" in run["auto_decision"]["reasons"][0]
    assert run["head_init"].startswith("prototypes") and run["cached_features"] is True
    loaded = load_run(r.run_dir)  # the cosine head is rebuilt although config says auto/linear
    assert isinstance(loaded.model.head, CosineClassifier)
    again = headstart.evaluate(r.run_dir, data)
    assert again["samples"] == 18
    exported = headstart.export_model(r.run_dir, "onnx")
    assert exported.max_abs_diff < 1e-4
    from headstart.adapt.zeroshot import zero_shot

    with pytest.raises(ModelError, match="--head semantic"):  # no label space to rename into
        zero_shot([], labels=["a", "b"], run=r.run_dir, out=tmp_path / "zs")


def test_few_shot_without_refinement_is_exactly_the_prototype_classifier(
    tmp_path: Path,
) -> None:
    data = write_class_folders(tmp_path / "d", 6)
    r = train_tiny(data, tmp_path / "run", strategy="few-shot", few_shot_refine=False)
    assert r.metrics["run"]["epochs_run"] == 0
    loaded = load_run(r.run_dir)
    head = loaded.model.head
    assert isinstance(head, CosineClassifier)
    # recompute the prototypes from the training images' features
    from headstart.data import build_eval_transform
    from headstart.data.datasets import ImageDataset
    from headstart.evaluation import predict_logits
    from headstart.modalities import splits_for

    splits = splits_for(loaded.config)
    ds = ImageDataset(
        splits.train, splits.class_to_idx, build_eval_transform(loaded.preprocessing),
        loaded.preprocessing.resize,
    )  # fmt: skip
    feats, ys = [], []
    with torch.inference_mode():
        for img, t in torch.utils.data.DataLoader(ds, batch_size=64):
            feats.append(loaded.model.features(img))
            ys.append(t)
    protos, centre = prototypes(torch.cat(feats), torch.cat(ys), 3)
    assert torch.allclose(head.centre, centre, atol=1e-4)
    assert torch.allclose(head.weight, F.normalize(protos, dim=1), atol=1e-4)
    logits, _ = predict_logits(loaded.model, ds)
    assert torch.isfinite(logits).all()


def test_few_shot_logistic_alternative_trains_a_linear_head(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "d", 6)
    r = train_tiny(data, tmp_path / "run", strategy="few-shot", few_shot_head="logistic")
    assert r.metrics["run"]["head"] == "linear" and r.metrics["run"]["head_init"].startswith(
        "probe"
    )


def test_head_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(HeadstartError, match="head=cosine"):
        headstart.TrainConfig.create(data="d", head_init="zero-shot")
    with pytest.raises(HeadstartError, match="label-embeddings minilm"):
        headstart.TrainConfig.create(data="d", head="semantic")


# --- zero-shot: CLIP ---------------------------------------------------------------------------
def test_clip_text_embeddings_ensemble_prompts(tiny_clip: Path) -> None:
    names = ["red", "green"]
    one, scale = clip_text_embeddings(str(tiny_clip), names, ["a photo of a {}."])
    two, _ = clip_text_embeddings(str(tiny_clip), names, ["the {}"])
    both, _ = clip_text_embeddings(str(tiny_clip), names, ["a photo of a {}.", "the {}"])
    assert one.shape == (2, 16) and scale == pytest.approx(float(torch.tensor(2.6592).exp()), 1e-3)
    assert torch.allclose(both, F.normalize(one + two, dim=1), atol=1e-5)


def test_zero_shot_clip_end_to_end(tiny_clip: Path, tmp_path: Path) -> None:
    from headstart.adapt.zeroshot import zero_shot
    from headstart.export.predictor import open_export

    data = write_class_folders(tmp_path / "d", 3)
    r = zero_shot(
        [str(data / "red")], model=f"hf:{tiny_clip}", eval_data=str(data),
        prompts=["a photo of a {}.", "the {}"], out=tmp_path / "zs",
    )  # fmt: skip
    assert r.classes == ["blue", "green", "red"] and len(r.predictions) == 3
    assert r.metrics is not None and r.metrics["samples"] == 9
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    assert metrics["run"]["strategy"] == "zero-shot" and len(metrics["run"]["prompts"]) == 2
    loaded = load_run(r.run_dir)
    head = loaded.model.head
    assert isinstance(head, CosineClassifier)
    expected, scale = clip_text_embeddings(
        str(tiny_clip), r.classes, ["a photo of a {}.", "the {}"]
    )
    assert torch.allclose(head.weight, expected, atol=1e-5)
    assert float(head.log_scale.detach().exp()) == pytest.approx(scale, rel=1e-5)
    exported = headstart.export_model(r.run_dir, "onnx")
    assert exported.max_abs_diff < 1e-4
    preds = open_export(exported.path).predict([data / "red" / "red_000.png"])
    assert preds[0].label in r.classes and 0 < preds[0].probability <= 1


def test_zero_shot_initialisation_then_fine_tuning(tiny_clip: Path, tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "d", 8)
    r = headstart.train(
        data=str(data), out=str(tmp_path / "run"), model=f"hf:{tiny_clip}", head="cosine",
        head_init="zero-shot", strategy="fine-tune", epochs=1, batch_size=8, num_workers=0,
        augment="none",
    )  # fmt: skip
    assert r.metrics["run"]["head_init"].startswith("zero-shot")
    assert r.metrics["run"]["head"] == "cosine"
    assert isinstance(load_run(r.run_dir).model.head, CosineClassifier)


def test_zero_shot_needs_a_text_tower(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "d", 3)
    with pytest.raises(ModelError, match="--head semantic"):
        train_tiny(data, tmp_path / "run", head="cosine", head_init="zero-shot")


# --- zero-shot: MiniLM label embeddings (real offline weights) ----------------------------------
def test_minilm_label_embeddings_are_semantic() -> None:
    from headstart.adapt.zeroshot import label_embeddings

    e = label_embeddings(["cat", "kitten", "truck"])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_semantic_head_run_scores_unseen_class_names(tmp_path: Path) -> None:
    from headstart.adapt.zeroshot import zero_shot

    data = write_class_folders(tmp_path / "d", 8)
    r = train_tiny(data, tmp_path / "run", head="semantic", label_embeddings="minilm")
    assert r.metrics["run"]["head"] == "semantic"
    z = zero_shot(
        [str(data / "red")], labels=["crimson", "emerald", "navy", "yellow"], run=r.run_dir,
        out=tmp_path / "zs",
    )  # fmt: skip
    assert z.classes == ["crimson", "emerald", "navy", "yellow"] and len(z.predictions) == 8
    loaded = load_run(z.run_dir)
    assert isinstance(loaded.model.head, SemanticHead) and loaded.model.head.out_features == 4


def test_zero_shot_cli(tiny_clip: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from headstart.cli import app

    data = write_class_folders(tmp_path / "d", 2)
    args = ["zero-shot", str(data / "blue"), "-m", f"hf:{tiny_clip}", "--labels", "red, blue"]
    res = CliRunner().invoke(app, [*args, "--prompt", "ensemble", "--out", str(tmp_path / "zs")])
    assert res.exit_code == 0, res.output
    assert "zero-shot over 2 classes" in res.output and "saved as run" in res.output
    assert json.loads((tmp_path / "zs" / "classes.json").read_text()) == ["red", "blue"]
    res = CliRunner().invoke(app, ["zero-shot", "-m", f"hf:{tiny_clip}", "--labels", "red"])
    assert isinstance(res.exception, ModelError)  # main() prints it without a traceback, exit 3
    assert "at least two class names" in str(res.exception)
