"""The exported model predicts what the run evaluates: one decoder (``files.load_model_image``)
behind eager ``predict``, the ONNX predictor and ``serve``, equal to the evaluation transform;
checked on large non-square JPEGs and PNGs made here (issue #18, part 1)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headstart
from headstart.data.transforms import build_eval_transform
from headstart.errors import DataError, HeadstartError
from headstart.files import load_model_image, open_rgb
from headstart.models.preprocessing import Preprocessing
from tests.conftest import COLOURS, train_tiny

#: (width, height, format): several aspect ratios, all but the last over 2,000 px
PHOTOS = [
    (2400, 1500, "JPEG"),
    (1400, 2600, "PNG"),
    (3000, 1000, "JPEG"),
    (2050, 2300, "PNG"),
    (1200, 2900, "JPEG"),
    (400, 328, "PNG"),
]


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Structure that resizing differences change: class-coloured bands of uneven width across
    the long side, a diagonal gradient, a disc off centre and a fine 3-px checkerboard."""
    rng = np.random.default_rng(seed)
    yy, xx = np.arange(height)[:, None], np.arange(width)[None, :]  # broadcast, not meshed
    cuts = np.sort(rng.uniform(0.1, 0.9, size=3))
    band = np.searchsorted(cuts, xx / width if width >= height else yy / height)  # 0..3
    colours = np.array([*COLOURS.values(), (230, 230, 230)], dtype=np.int16)
    arr = np.broadcast_to(colours[rng.permutation(4)][band], (height, width, 3)).copy()
    arr += ((xx + yy) * 60 // (width + height)).astype(np.int16)[..., None]
    cy, cx, r = (
        height * rng.uniform(0.3, 0.7),
        width * rng.uniform(0.3, 0.7),
        min(width, height) / 5,
    )
    arr[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = colours[rng.integers(0, 3)]
    arr += (((xx // 3 + yy // 3) % 2) * 40 - 20).astype(np.int16)[..., None]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def save(im: Image.Image, fmt: str, path: Path | None = None) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture
def trained(split_folder: Path, tmp_path: Path) -> Path:
    return train_tiny(split_folder, tmp_path / "run").run_dir


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    out = tmp_path / "photos"
    out.mkdir()
    files = []
    for i, (w, h, fmt) in enumerate(PHOTOS):
        f = out / f"p{i}_{w}x{h}.{'jpg' if fmt == 'JPEG' else 'png'}"
        save(photo(w, h, seed=i), fmt, f)
        files.append(f)
    return files


def _cli_probs(model: Path, files: list[Path]) -> list[dict[str, float]]:
    """``headstart predict MODEL FILES --json --top-k 3``: every class's probability per file."""
    from typer.testing import CliRunner

    from headstart.cli import app

    args = ["predict", str(model), *map(str, files), "--json", "--top-k", "3"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.strip().splitlines() if line.startswith("{")]
    assert [Path(row["path"]).name for row in rows] == [f.name for f in files]
    return [{t["label"]: t["probability"] for t in row["top"]} for row in rows]


def _served_probs(model: Path, files: list[Path]) -> list[dict[str, float]]:
    from fastapi.testclient import TestClient

    from headstart.export.serve import create_app

    client = TestClient(create_app(model))
    upload = [("files", (f.name, f.read_bytes())) for f in files]
    r = client.post("/predict?top_k=3", files=upload)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["filename"] for p in preds] == [f.name for f in files]
    return [{t["label"]: t["probability"] for t in p["top"]} for p in preds]


def test_predict_run_onnx_and_serve_agree_on_large_photos(
    trained: Path, photos: list[Path]
) -> None:
    model = headstart.export_model(trained, "onnx").path
    eager = _cli_probs(trained, photos)
    results = {
        "onnx": _cli_probs(model, photos),
        "serve onnx": _served_probs(model, photos),
        "serve run": _served_probs(trained, photos),
    }
    for name, got in results.items():
        for f, e, g in zip(photos, eager, got, strict=True):
            assert max(e, key=e.__getitem__) == max(g, key=g.__getitem__), (name, f.name, e, g)
            worst = max(abs(e[c] - g[c]) for c in e)
            assert worst <= 1e-3, f"{name} vs predict RUN on {f.name}: |dp| = {worst:.4f}"

    # the photos do tell preprocessings apart: the old graph's square squash of the whole image
    # (what the exported model used to compute) moves the probabilities far more than 1e-3
    from headstart.export.predictor import open_export

    exported = open_export(model)
    crop = int(exported.metadata["preprocessing"]["crop"])
    squashed = [
        np.asarray(open_rgb(f).resize((crop, crop), Image.Resampling.BILINEAR)) for f in photos
    ]
    old = exported.probabilities(squashed)
    shift = max(
        abs(float(old[i, j]) - eager[i][c])
        for i in range(len(photos))
        for j, c in enumerate(exported.labels)
    )
    assert shift > 1e-2, (
        f"the test photos do not discriminate preprocessings (max shift {shift:.4f})"
    )


@pytest.fixture(scope="module")
def encoded() -> list[tuple[str, bytes]]:
    """Large JPEGs (decoded at reduced scale) and PNGs, and small images (upscaled)."""
    sizes = [(2400, 1500), (1400, 2600), (3001, 1000), (30, 17), (257, 256)]
    return [
        (f"{w}x{h} {fmt}", save(photo(w, h, seed=k), fmt))
        for k, (w, h) in enumerate(sizes)
        for fmt in ("JPEG", "PNG")
    ]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])  # torchvision, timm
def test_decoder_equals_the_evaluation_transform(
    interpolation: str, encoded: list[tuple[str, bytes]]
) -> None:
    """Pixel for pixel (uint8) equal to ``build_eval_transform``'s resize + centre crop after
    ``ImageDataset``'s decoding, also for a crop larger than the resize (zero padding); equal
    model input after normalisation."""
    for name, data in encoded:
        for resize, crop in [(256, 224), (37, 32), (200, 224)]:
            pre = Preprocessing(
                crop=crop, resize=resize, mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225), interpolation=interpolation,
            )  # fmt: skip
            tf = build_eval_transform(pre)
            decoded = open_rgb(io.BytesIO(data), draft_size=resize)  # as ImageDataset does
            geometry = np.asarray(tf.transforms[1](tf.transforms[0](decoded)))
            ours = load_model_image(io.BytesIO(data), resize, crop, interpolation)
            assert ours.shape == (crop, crop, 3)
            np.testing.assert_array_equal(ours, geometry, err_msg=f"{name} {resize}/{crop}")
            x = torch.from_numpy(ours.copy()).permute(2, 0, 1).float() / 255.0
            x = (x - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)
            assert float((x - tf(decoded)).abs().max()) < 1e-5


def test_export_check_needs_the_runs_images(trained: Path, split_folder: Path) -> None:
    split_folder.rename(split_folder.with_name("moved"))
    with pytest.raises(DataError, match=r"export check: the run's data .*split.* cannot be read"):
        headstart.export_model(trained, "onnx")
    assert not (trained / "model.onnx").exists()
    assert not list(trained.glob(".*.tmp"))


def test_export_check_runs_on_full_size_run_images(tmp_path: Path) -> None:
    """The check decodes the run's own files (here 2,400 x 1,500 JPEGs) through the predictor's
    decoder and finds it equal to evaluation; the graph takes only the crop size."""
    import onnxruntime as ort

    data = tmp_path / "big"
    for c, name in enumerate(("a", "b")):
        (data / name).mkdir(parents=True)
        for i in range(4):
            save(photo(2400, 1500, seed=10 * c + i), "JPEG", data / name / f"{i}.jpg")
    run = train_tiny(data, tmp_path / "run", epochs=1).run_dir
    res = headstart.export_model(run, "onnx")
    assert res.max_abs_diff <= 1e-4
    assert res.metadata["format"] == "headstart-export/2"
    assert "(N, 32, 32, 3)" in res.metadata["input"]
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    ok = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    assert sess.run(["probabilities"], {"images": ok})[0].shape == (3, 2)
    with pytest.raises(Exception, match=r"(?i)dimension"):
        sess.run(["probabilities"], {"images": np.zeros((1, 1500, 2400, 3), dtype=np.uint8)})


def test_legacy_exports_are_fed_whole_images(tmp_path: Path) -> None:
    from headstart.export.inputs import ImageInputs

    f = tmp_path / "x.png"
    save(photo(300, 200, seed=0), "PNG", f)
    pre = {"resize": 37, "crop": 32, "interpolation": "bilinear"}
    legacy = ImageInputs.from_export({"format": "headstart-export/1", "preprocessing": pre}, f)
    assert legacy.decode(f).shape == (200, 300, 3)
    current = ImageInputs.from_export({"format": "headstart-export/2", "preprocessing": pre}, f)
    assert current.decode(f).shape == (32, 32, 3)
    with pytest.raises(HeadstartError, match="no usable 'preprocessing'"):
        ImageInputs.from_export({"format": "headstart-export/2"}, f)
    odd = {**pre, "interpolation": "area"}
    with pytest.raises(HeadstartError, match="interpolation 'area'"):
        ImageInputs.from_export({"format": "headstart-export/2", "preprocessing": odd}, f)
