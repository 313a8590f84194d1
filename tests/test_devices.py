"""The one device decision (headstart.devices) reaches every stage outside Lightning's loop.

On a CPU machine a fake accelerator is used: a ``Compute`` on ``cuda`` while ``Module.to`` /
``Tensor.to`` are spies that record the move and leave the data where it is. Where CUDA is
visible, the ``cuda_*`` tests run the same stages on the real GPU."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

import headstart.training.features as features_mod
from headstart import devices
from headstart.devices import Compute, compute_for, resolve_compute
from headstart.errors import HeadstartError
from headstart.evaluation.predict import predict_logits
from headstart.models import Backbone, create_backbone
from headstart.training.features import extract_features, features_for

CUDA = torch.device("cuda", 0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")


def tiny_backbone() -> Backbone:
    return create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)


def images(n: int = 10) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 3)


class Moves:
    """Spies on ``Module.to`` / ``Tensor.to``: device moves are recorded and not done."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.modules: list[tuple[torch.nn.Module, torch.device]] = []
        self.tensors: list[tuple[torch.device, bool]] = []
        real_module_to, real_tensor_to = torch.nn.Module.to, torch.Tensor.to

        def module_to(mod: torch.nn.Module, *args: Any, **kw: Any) -> Any:
            target = args[0] if args else kw.get("device")
            if isinstance(target, (torch.device, str)):
                self.modules.append((mod, torch.device(target)))
                return mod
            return real_module_to(mod, *args, **kw)

        def tensor_to(t: torch.Tensor, *args: Any, **kw: Any) -> Any:
            target = args[0] if args else kw.get("device")
            if isinstance(target, torch.device):
                self.tensors.append((target, bool(kw.get("non_blocking", False))))
                return t
            return real_tensor_to(t, *args, **kw)

        monkeypatch.setattr(torch.nn.Module, "to", module_to)
        monkeypatch.setattr(torch.Tensor, "to", tensor_to)

    def of(self, module: torch.nn.Module) -> list[str]:
        return [str(d) for m, d in self.modules if m is module]


def loader_kwargs(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[dict[str, Any]]:
    """Records the keyword arguments of every DataLoader ``module`` builds."""
    seen: list[dict[str, Any]] = []
    real = torch.utils.data.DataLoader

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append(kw)
        return real(*args, **{**kw, "pin_memory": False})

    monkeypatch.setattr(module, "DataLoader", spy)
    return seen


# --- the decision ------------------------------------------------------------------------------
def test_auto_is_cpu_without_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    c = resolve_compute()
    assert c.device == torch.device("cpu") and not c.pin_memory and c.autocast_dtype is None
    with pytest.raises(HeadstartError, match="--accelerator cuda: no such device"):
        resolve_compute("cuda")
    with pytest.raises(HeadstartError, match="--accelerator 'tpu' is not one of"):
        resolve_compute("tpu")


def test_auto_takes_the_local_rank_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    for name in ("auto", "gpu", "cuda"):
        assert resolve_compute(name).device == torch.device("cuda", 1)
    assert resolve_compute("cpu").device == torch.device("cpu")
    assert resolve_compute("auto").pin_memory


def test_precision_becomes_autocast_dtype() -> None:
    cpu, gpu = torch.device("cpu"), CUDA
    assert Compute(gpu, "16-mixed").autocast_dtype == torch.float16
    assert Compute(gpu, "bf16-mixed").autocast_dtype == torch.bfloat16
    assert Compute(cpu, "bf16-mixed").autocast_dtype == torch.bfloat16
    assert Compute(cpu, "16-mixed").autocast_dtype is None  # as Lightning: no fp16 AMP on CPU
    assert Compute(gpu, "32-true").autocast_dtype is None


def test_compute_for_reads_the_config_fields() -> None:
    from headstart.config import TrainConfig

    cfg = TrainConfig.create(data="d", accelerator="cpu", precision="bf16-mixed")
    assert compute_for(cfg) == Compute(torch.device("cpu"), "bf16-mixed")


# --- stages on a fake accelerator ---------------------------------------------------------------
def test_extraction_moves_model_and_batches_then_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = tiny_backbone()
    kwargs = loader_kwargs(monkeypatch, features_mod)
    moves = Moves(monkeypatch)
    x, y = extract_features(backbone, images(10), compute=Compute(CUDA))
    assert moves.of(backbone) == ["cuda:0", "cpu"]  # to the GPU, then back where it was
    assert moves.tensors and all(t == (CUDA, True) for t in moves.tensors)  # non-blocking
    assert kwargs[0]["pin_memory"] and kwargs[0]["batch_size"] == 1024  # 8x the CPU batch
    assert x.device.type == "cpu" and x.dtype == torch.float32 and x.shape == (10, 512)
    assert y.tolist() == [i % 3 for i in range(10)]


def test_on_cpu_extraction_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = tiny_backbone().eval()
    data = images(6)
    with torch.no_grad():
        want = backbone.body(data.tensors[0]).flatten(1)
    kwargs = loader_kwargs(monkeypatch, features_mod)
    moves = Moves(monkeypatch)
    x, _ = extract_features(backbone, data, compute=resolve_compute("cpu"))
    assert moves.of(backbone) == ["cpu", "cpu"]
    assert moves.tensors and all(t == (torch.device("cpu"), False) for t in moves.tensors)
    assert kwargs[0]["pin_memory"] is False and kwargs[0]["batch_size"] == 128
    assert torch.allclose(x, want, atol=1e-5)
    assert next(backbone.parameters()).device.type == "cpu"


def test_mixed_precision_reaches_extraction_and_evaluation() -> None:
    backbone = tiny_backbone()
    seen: list[tuple[bool, torch.dtype]] = []
    backbone.body.register_forward_hook(
        lambda *_: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
    )
    bf16 = Compute(torch.device("cpu"), "bf16-mixed")
    x, _ = extract_features(backbone, images(4), compute=bf16)
    logits, _ = predict_logits(backbone, images(4), compute=bf16)
    assert seen == [(True, torch.bfloat16)] * 2
    assert x.dtype == logits.dtype == torch.float32  # stored in float32 as before
    fp32, _ = extract_features(backbone, images(4), compute=resolve_compute("cpu"))
    assert seen[-1][0] is False
    assert not torch.equal(x, fp32) and torch.allclose(x, fp32, rtol=0.05, atol=0.05)


def test_mixed_precision_features_have_their_own_cache_entry(tmp_path: Path) -> None:
    backbone, data = tiny_backbone(), images(4)
    samples = [f"s{i}" for i in range(4)]
    idx = {"a": 0, "b": 1, "c": 2}
    kw: dict[str, Any] = {"split": "train", "seed": 0}
    cpu32, bf16 = resolve_compute("cpu"), Compute(torch.device("cpu"), "bf16-mixed")
    with pytest.MonkeyPatch.context() as mp:  # samples are names here, not files
        mp.setattr(
            "headstart.training.feature_cache.feature_key",
            lambda b, s, c, e: hashlib.sha1(repr(sorted(e.items())).encode()).hexdigest(),
        )
        assert not features_for(backbone, data, samples, idx, compute=cpu32, **kw)[2]
        assert features_for(backbone, data, samples, idx, compute=cpu32, **kw)[2]
        assert not features_for(backbone, data, samples, idx, compute=bf16, **kw)[2]


def test_evaluation_moves_model_and_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import headstart.evaluation.predict as predict_mod

    backbone = tiny_backbone()
    kwargs = loader_kwargs(monkeypatch, predict_mod)
    moves = Moves(monkeypatch)
    logits, targets = predict_logits(backbone, images(5), compute=Compute(CUDA))
    assert moves.of(backbone) == ["cuda:0", "cpu"] and kwargs[0]["pin_memory"]
    assert moves.tensors == [(CUDA, True)]
    assert logits.shape == (5, 3) and logits.device.type == "cpu" and len(targets) == 5


def test_moves_to_the_device_happen_outside_inference_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # a parameter copied to the GPU under torch.inference_mode() becomes an inference tensor:
    # no version counter, no autograd. Evaluation runs in inference mode, so the moves of
    # ``placed`` must not (on a real GPU every train() failed in its final evaluation)
    modes: list[bool] = []
    real_module_to = torch.nn.Module.to

    def module_to(mod: torch.nn.Module, *args: Any, **kw: Any) -> Any:
        target = args[0] if args else kw.get("device")
        if isinstance(target, (torch.device, str)):
            modes.append(torch.is_inference_mode_enabled())
            return mod
        return real_module_to(mod, *args, **kw)

    monkeypatch.setattr(torch.nn.Module, "to", module_to)
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **kw: t)
    backbone = tiny_backbone()
    predict_logits(backbone, images(4), compute=Compute(CUDA))
    with torch.inference_mode(), devices.placed(backbone, Compute(CUDA)):
        pass
    assert modes == [False] * 4  # there and back, twice


def test_training_inference_rank_and_fewshot_use_the_decision(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.adapt.evaluate_episodes as episodes
    import headstart.inference as inference
    import headstart.ranking as ranking
    from tests.conftest import train_tiny

    asked: list[tuple[str, Compute]] = []
    real_extract, real_features_for = features_mod.extract_features, features_mod.features_for

    def extract(backbone: Any, dataset: Any, **kw: Any) -> Any:
        asked.append(("extract", kw["compute"]))
        return real_extract(backbone, dataset, **kw)

    def features_spy(name: str) -> Any:
        def spy(*args: Any, **kw: Any) -> Any:
            asked.append((name, kw["compute"]))
            return real_features_for(*args, **kw)

        return spy

    monkeypatch.setattr(features_mod, "extract_features", extract)
    run = train_tiny(image_folder, tmp_path / "run", precision="bf16-mixed", accelerator="cpu")
    bf16 = Compute(torch.device("cpu"), "bf16-mixed")
    assert [c for n, c in asked if n == "extract"] == [bf16, bf16]  # train and val features
    real_placed = inference.placed
    monkeypatch.setattr(
        inference, "placed", lambda m, c: asked.append(("predict", c)) or real_placed(m, c)
    )
    preds = inference.predict(run.run_dir, [str(image_folder / "red")], accelerator="cpu")
    assert len(preds) == 12 and asked[-1] == ("predict", bf16)  # the run's precision
    monkeypatch.setattr(ranking, "features_for", features_spy("rank"))
    monkeypatch.setattr(episodes, "features_for", features_spy("fewshot"))
    spec = "torchvision:resnet18@none"
    ranking.rank_models(str(image_folder), [spec], image_size=32, probe=False, accelerator="cpu")
    episodes.fewshot_eval(str(image_folder), spec, ways=2, shots=2, queries=2, episodes=2,
                          image_size=32, accelerator="cpu")  # fmt: skip
    cpu = resolve_compute("cpu")
    assert ("rank", cpu) in asked and ("fewshot", cpu) in asked


# --- onnxruntime providers ----------------------------------------------------------------------
def test_onnx_providers_prefer_gpu_when_present() -> None:
    from headstart.export.predictor import onnx_providers

    assert onnx_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    every = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert onnx_providers(every) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider",
    ]  # fmt: skip


def test_onnx_session_asks_for_cuda_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from headstart.export.predictor import onnx_session

    tried: list[list[str]] = []

    class Session:
        def __init__(self, path: str, providers: list[str]) -> None:
            tried.append(providers)
            if providers[0] != "CPUExecutionProvider":
                raise RuntimeError("libcudart.so not found")

    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider",
                                                                 "CPUExecutionProvider"])  # fmt: skip
    assert isinstance(onnx_session(tmp_path / "m.onnx"), Session)
    assert tried == [["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]]


# --- the real GPU (skipped without CUDA) --------------------------------------------------------
@needs_cuda
def test_cuda_extraction_and_evaluation_run_on_the_gpu() -> None:
    backbone = tiny_backbone()
    where: list[tuple[str, str, bool]] = []
    backbone.body.register_forward_hook(
        lambda m, inp, out: where.append(
            (inp[0].device.type, next(m.parameters()).device.type, inp[0].is_contiguous(
                memory_format=torch.channels_last))
        )
    )  # fmt: skip
    gpu = resolve_compute("auto")
    assert gpu.device.type == "cuda" and gpu.pin_memory
    x, _ = extract_features(backbone, images(8), compute=gpu)
    logits, _ = predict_logits(backbone, images(8), compute=gpu)
    assert where[0] == ("cuda", "cuda", True) and where[1][:2] == ("cuda", "cuda")
    assert x.device.type == logits.device.type == "cpu"
    assert next(backbone.parameters()).device.type == "cpu"  # back where it was
    ref, _ = extract_features(backbone, images(8), compute=resolve_compute("cpu"))
    assert torch.allclose(x, ref, rtol=1e-2, atol=1e-2)  # TF32 convolutions on the GPU


@needs_cuda
def test_cuda_autocast_reaches_extraction() -> None:
    backbone = tiny_backbone()
    dtypes: list[torch.dtype] = []
    backbone.body.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    for precision in ("16-mixed", "bf16-mixed"):
        x, _ = extract_features(backbone, images(4), compute=resolve_compute("cuda", precision))
        assert x.dtype == torch.float32
    assert dtypes == [torch.float16, torch.bfloat16]


@needs_cuda
def test_cuda_evaluation_leaves_a_model_that_trains_and_evaluates_again() -> None:
    backbone = tiny_backbone()  # no hooks: evaluation goes through the BatchNorm-folded body
    gpu = resolve_compute("cuda")
    first, _ = predict_logits(backbone, images(8), compute=gpu)
    assert not any(p.is_inference() for p in backbone.parameters())
    backbone.train()
    backbone(images(2).tensors[0]).sum().backward()  # autograd works on the moved-back weights
    again, _ = predict_logits(backbone, images(8), compute=gpu)
    assert torch.allclose(first, again)
