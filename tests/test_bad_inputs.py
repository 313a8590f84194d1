"""The bad-input matrix: every mistake a user can make with a folder, a CSV or a run folder, each
built as a real file tree in a tmp dir. Outcome per case: a counted skip (named in the log), an
image that decodes correctly anyway, a warning, or an error naming the file and what to do —
never a traceback. docs/reliability.md lists the same cases with their outcome and exit code.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.data import load_splits
from headstart.data.datasets import ImageDataset
from headstart.errors import DataError, HeadstartError
from headstart.files import open_rgb
from tests.conftest import TINY, write_class_folders
from tests.inprocess_cli import run_main

# ------------------------------------------------------------------------------ file builders


def _png(size: tuple[int, int] = (24, 24), mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3)).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(size: tuple[int, int] = (48, 48), mode: str = "RGB", **save: Any) -> bytes:
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3)).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "JPEG", **save)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims ``width x height`` pixels (what a decompression bomb looks like
    to a scanner: the header is read before any pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _tree(tmp: Path, per_class: int = 4) -> Path:
    return write_class_folders(tmp / "data", per_class)


def _all(splits: Any) -> list[Path]:
    return [s.path for s in splits.train + splits.val + splits.test]


# ------------------------------------------------------------------------- 1. counted skips
# (builder adding bad files to a good 3-class tree, skip reason, count, file named in the log)


def _zero_byte(root: Path) -> None:
    (root / "red" / "empty.png").write_bytes(b"")


def _truncated_png(root: Path) -> None:
    good = _png()
    (root / "red" / "truncated.png").write_bytes(good[: len(good) // 2])


def _truncated_jpeg(root: Path) -> None:
    good = _jpeg()
    (root / "red" / "truncated.jpg").write_bytes(good[: len(good) // 2])


def _big_jpeg() -> bytes:
    data = _jpeg((512, 512), quality=95)  # noise: ~0.5 MB, above the scan's full-decode size
    assert len(data) > 300 * 1024
    return data


def _truncated_big_jpeg(root: Path) -> None:
    good = _big_jpeg()
    (root / "red" / "big_cut.jpg").write_bytes(good[: len(good) * 2 // 3])


def _corrupt_jpeg(root: Path) -> None:
    good = _jpeg()
    noise = np.random.default_rng(5).integers(0, 255, len(good) - 200).astype(np.uint8)
    (root / "red" / "corrupt.jpg").write_bytes(good[:200] + noise.tobytes())


def _corrupt_png(root: Path) -> None:
    good = bytearray(_png())
    for i in range(60, 90):  # inside the image data: CRC no longer matches
        good[i] ^= 0xFF
    (root / "red" / "corrupt.png").write_bytes(bytes(good))


def _text_named_jpg(root: Path) -> None:
    (root / "red" / "notes.jpg").write_text("this is not a picture")


def _bomb(root: Path) -> None:
    (root / "red" / "bomb.png").write_bytes(_png_header_only(20000, 20000))


def _non_image(root: Path) -> None:
    (root / "red" / "notes.txt").write_text("hello")
    (root / "green" / "labels.json").write_text("{}")


def _ds_store(root: Path) -> None:
    (root / "red" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")


def _thumbs_db(root: Path) -> None:
    (root / "red" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "green" / "desktop.ini").write_text("[.ShellClassInfo]")


def _hidden(root: Path) -> None:
    (root / "red" / ".hidden.png").write_bytes(_png())
    (root / "red" / ".thumbnails").mkdir()
    (root / "red" / ".thumbnails" / "t.png").write_bytes(_png())
    (root / ".git").mkdir()  # a hidden folder at class level is not a class


def _symlink_loop(root: Path) -> None:
    (root / "red" / "loop").symlink_to(root / "red", target_is_directory=True)


def _broken_symlink(root: Path) -> None:
    (root / "red" / "gone.png").symlink_to(root / "nowhere.png")


def _self_symlink(root: Path) -> None:
    (root / "red" / "self.png").symlink_to(root / "red" / "self.png")


SKIP_CASES: list[tuple[str, Callable[[Path], None], str, int, str | None]] = [
    ("zero-byte PNG", _zero_byte, "unreadable image", 1, "empty.png"),
    ("truncated PNG", _truncated_png, "unreadable image", 1, "truncated.png"),
    ("truncated JPEG", _truncated_jpeg, "unreadable image", 1, "truncated.jpg"),
    ("truncated JPEG over 256 KiB", _truncated_big_jpeg, "unreadable image", 1, "big_cut.jpg"),
    ("corrupt JPEG data", _corrupt_jpeg, "unreadable image", 1, "corrupt.jpg"),
    ("corrupt PNG data", _corrupt_png, "unreadable image", 1, "corrupt.png"),
    ("text file named .jpg", _text_named_jpg, "unreadable image", 1, "notes.jpg"),
    (
        "decompression bomb",
        _bomb,
        "unreadable image",
        1,
        "bomb.png (Image size (400000000 pixels) exceeds limit",
    ),
    ("non-image files", _non_image, "non-image file", 2, None),
    (".DS_Store", _ds_store, "hidden file", 1, None),
    ("Thumbs.db / desktop.ini", _thumbs_db, "hidden file", 2, None),
    ("hidden files and folders", _hidden, "hidden file", 2, None),
    ("symlink loop", _symlink_loop, "symlink loop", 1, "red/loop -> "),
    ("broken symlink", _broken_symlink, "broken link or special file", 1, "gone.png"),
    ("self-referencing symlink", _self_symlink, "broken link or special file", 1, "self.png"),
]


@pytest.fixture
def headstart_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """headstart's warnings (its logger does not propagate once the CLI set up logging)."""
    logger = logging.getLogger("headstart")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="headstart")
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize(
    ("build", "reason", "count", "named"),
    [pytest.param(*c[1:], id=c[0]) for c in SKIP_CASES],
)
def test_counted_skip(
    build: Callable[[Path], None],
    reason: str,
    count: int,
    named: str | None,
    tmp_path: Path,
    headstart_log: pytest.LogCaptureFixture,
) -> None:
    root = _tree(tmp_path)
    good = sorted(root.rglob("*.png"))
    build(root)
    s = load_splits(root)
    assert s.skipped[reason] == count, dict(s.skipped)
    assert sorted(_all(s)) == good  # exactly the good images, nothing else
    assert f"{count} {reason}" in headstart_log.text  # the summary line counts it
    if named is not None:
        assert named in headstart_log.text  # the file is named
        if "exceeds limit" in named:  # ... and what to do about it
            assert "Downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS" in headstart_log.text
        if reason == "unreadable image":  # --strict fails on it instead
            with pytest.raises(DataError, match="drop --strict"):
                load_splits(root, strict=True)


# ------------------------------------------------------- 2. unusual images that must just work


def _cmyk(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "cmyk.jpg"
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(p, "JPEG")  # red in CMYK

    def check(im: Image.Image) -> None:
        r, g, b = im.getpixel((10, 10))
        assert r > 200 and g < 60 and b < 60

    return p, check


def _rgba(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "rgba.png"
    arr = np.zeros((20, 20, 4), np.uint8)
    arr[:10] = (0, 0, 200, 255)  # top half opaque blue, bottom half fully transparent
    Image.fromarray(arr, "RGBA").save(p)

    def check(im: Image.Image) -> None:
        assert im.getpixel((5, 5)) == (0, 0, 200) and im.getpixel((5, 15)) == (255, 255, 255)

    return p, check


def _palette(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "palette.png"
    im = Image.new("P", (20, 20), 1)
    im.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    im.save(p, transparency=0)

    def check(im: Image.Image) -> None:
        assert im.getpixel((3, 3)) == (10, 200, 10)

    return p, check


def _gray16(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "gray16.png"
    arr = np.zeros((20, 20), np.uint16)
    arr[:, 10:] = 30000
    arr[0, 0] = 60000
    Image.fromarray(arr).save(p)  # mode I;16

    def check(im: Image.Image) -> None:
        v = im.getpixel((15, 5))
        assert v[0] == v[1] == v[2] and 120 <= v[0] <= 135  # scaled by the maximum, not clipped
        assert im.getpixel((5, 5)) == (0, 0, 0)

    return p, check


def _gray8(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "gray.png"
    Image.new("L", (20, 20), 77).save(p)

    def check(im: Image.Image) -> None:
        assert im.getpixel((3, 3)) == (77, 77, 77)

    return p, check


def _exif_rotated(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "rotated.jpg"
    im = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    im.save(p, "JPEG", exif=exif.tobytes())

    def check(im: Image.Image) -> None:
        assert im.size == (20, 40)  # displayed upright, as the camera meant

    return p, check


def _unicode_name(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "café_ñ_猫 🐈.png"
    p.write_bytes(_png())
    return p, lambda im: None


def _space_name(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "my holiday photo (1).png"
    p.write_bytes(_png())
    return p, lambda im: None


def _bracket_name(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "scan [red] [1] 2.png"  # rich markup look-alikes
    p.write_bytes(_png())
    return p, lambda im: None


def _jpeg_with_trailer(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    p = d / "motion-photo.jpg"  # phones append a video after the image's end marker
    p.write_bytes(_big_jpeg() + b"ftypmp42" + bytes(300 * 1024))
    return p, lambda im: None


def _file_symlink(d: Path) -> tuple[Path, Callable[[Image.Image], None]]:
    target = d.parent.parent / "outside.png"
    target.write_bytes(_png(seed=9))
    p = d / "linked.png"
    p.symlink_to(target)
    return p, lambda im: None


DECODE_CASES = {
    "CMYK JPEG": _cmyk,
    "RGBA PNG (transparent on white)": _rgba,
    "palette PNG with transparency": _palette,
    "16-bit grayscale PNG": _gray16,
    "8-bit grayscale": _gray8,
    "EXIF rotation": _exif_rotated,
    "unicode file name": _unicode_name,
    "spaces in file name": _space_name,
    "markup-like [brackets] in file name": _bracket_name,
    "symlinked file": _file_symlink,
    "large JPEG with data after its end marker": _jpeg_with_trailer,
}


@pytest.mark.parametrize("build", DECODE_CASES.values(), ids=DECODE_CASES.keys())
def test_unusual_image_is_used_and_decoded(
    build: Callable[[Path], tuple[Path, Callable[[Image.Image], None]]], tmp_path: Path
) -> None:
    root = _tree(tmp_path)
    path, check = build(root / "red")
    s = load_splits(root)
    assert path in _all(s) and not s.skipped
    im = open_rgb(path)
    assert im.mode == "RGB"
    check(im)
    ds = ImageDataset([x for x in s.train + s.val if x.path == path], s.class_to_idx)
    img, target = ds[0]
    assert img.mode == "RGB" and target == s.class_to_idx["red"]


def test_unicode_and_space_class_names(tmp_path: Path) -> None:
    root = write_class_folders(
        tmp_path / "data", 3, classes={"red panda": (200, 0, 0), "猫 ñ": (0, 200, 0)}
    )
    s = load_splits(root)
    assert s.classes == ["red panda", "猫 ñ"]


# ------------------------------------------------------------------ 3. errors naming the fix


def _missing(tmp: Path) -> dict[str, Any]:
    return {"data": tmp / "no" / "such" / "folder"}


def _data_is_a_file(tmp: Path) -> dict[str, Any]:
    f = tmp / "photo.png"
    f.write_bytes(_png())
    return {"data": f}


def _no_class_folders(tmp: Path) -> dict[str, Any]:
    (tmp / "data").mkdir()
    (tmp / "data" / "a.png").write_bytes(_png())
    return {"data": tmp / "data"}


def _empty_class(tmp: Path) -> dict[str, Any]:
    root = _tree(tmp)
    (root / "purple").mkdir()
    return {"data": root}


def _class_of_non_images(tmp: Path) -> dict[str, Any]:
    root = _tree(tmp)
    (root / "docs").mkdir()
    (root / "docs" / "README.txt").write_text("x")
    return {"data": root}


def _class_all_unreadable(tmp: Path) -> dict[str, Any]:
    root = _tree(tmp)
    for f in (root / "blue").iterdir():
        f.write_bytes(b"")
    return {"data": root}


def _one_class(tmp: Path) -> dict[str, Any]:
    return {"data": write_class_folders(tmp / "data", 5, classes={"red": (200, 0, 0)})}


def _one_image_class(tmp: Path) -> dict[str, Any]:
    root = _tree(tmp)
    write_class_folders(root, 1, classes={"rare": (90, 0, 90)})
    return {"data": root}


def _val_class_mismatch(tmp: Path) -> dict[str, Any]:
    root = tmp / "split"
    write_class_folders(root / "train", 3)
    write_class_folders(root / "val", 2, classes={"red": (200, 0, 0), "purple": (90, 0, 90)})
    return {"data": root}


def _csv(tmp: Path, text: str, encoding: str = "utf-8") -> Path:
    root = _tree(tmp)
    lines = [f"{f.relative_to(tmp)},{f.parent.name}" for f in sorted(root.rglob("*.png"))]
    p = tmp / "labels.csv"
    p.write_bytes(text.format(rows="\n".join(lines)).encode(encoding))
    return p


def _csv_no_header(tmp: Path) -> dict[str, Any]:
    return {"data": _csv(tmp, "file,class\n{rows}")}


def _csv_empty_file(tmp: Path) -> dict[str, Any]:
    p = tmp / "labels.csv"
    p.write_bytes(b"")
    return {"data": p}


def _csv_no_usable_rows(tmp: Path) -> dict[str, Any]:
    p = tmp / "labels.csv"
    p.write_text("path,label\nmissing/a.png,red\nmissing/b.png,blue\n")
    return {"data": p}


def _csv_not_utf8(tmp: Path) -> dict[str, Any]:
    return {"data": _csv(tmp, "path,label\n{rows}\ndata/red/caf\u00e9.png,red\n", "latin-1")}


def _csv_oversized_field(tmp: Path) -> dict[str, Any]:
    return {
        "data": _csv(tmp, "path,label,notes\n{rows}\ndata/red/x.png,red," + "x" * 200_000 + "\n")
    }


def _csv_missing(tmp: Path) -> dict[str, Any]:
    return {"data": tmp / "labels.csv"}


ERROR_CASES: dict[str, tuple[Callable[[Path], dict[str, Any]], list[str]]] = {
    "data folder missing": (_missing, ["data folder", "does not exist"]),
    "data is an image, not a folder": (_data_is_a_file, ["photo.png", "not a folder", ".csv"]),
    "no class folders": (_no_class_folders, ["no class folders", "<class>", "docs/data.md"]),
    "empty class folder": (_empty_class, ["purple", "Add images or remove"]),
    "class folder without images": (_class_of_non_images, ["docs", "Add images or remove"]),
    "class whose images are all unreadable": (
        _class_all_unreadable,
        ["blue", "no readable image", "4 unreadable", "Replace the files"],
    ),
    "one class only": (_one_class, ["only one class (red)", "at least two"]),
    "class with a single image, no --val": (_one_image_class, ["rare", "fewer than 2", "--val"]),
    "val class not in train": (_val_class_mismatch, ["purple", "not present in training"]),
    "CSV without path/label header": (_csv_no_header, ["labels.csv", "'path' and a 'label'"]),
    "CSV zero bytes": (_csv_empty_file, ["labels.csv", "'path' and a 'label'"]),
    "CSV with no usable rows": (_csv_no_usable_rows, ["labels.csv", "no usable images"]),
    "CSV not UTF-8": (_csv_not_utf8, ["labels.csv", "not UTF-8", "re-save it as UTF-8"]),
    "CSV field over csv's size limit": (
        _csv_oversized_field,
        ["labels.csv", "not a readable CSV", "field larger than field limit", "re-save it"],
    ),
    "CSV file missing": (_csv_missing, ["labels.csv", "does not exist"]),
}


@pytest.mark.parametrize(("build", "needles"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_names_the_file_and_the_fix(
    build: Callable[[Path], dict[str, Any]], needles: list[str], tmp_path: Path
) -> None:
    kw = build(tmp_path)
    with pytest.raises(DataError) as info:
        load_splits(**kw)
    msg = str(info.value)
    for n in needles:
        assert n in msg, msg
    assert info.value.exit_code == 2


# ---------------------------------------------------------------------- 4. CSV: skips + quirks


def test_csv_missing_paths_labels_extra_columns_and_bom(
    tmp_path: Path, headstart_log: pytest.LogCaptureFixture
) -> None:
    root = _tree(tmp_path)
    files = sorted(root.rglob("*.png"))
    rows = [f"{f.relative_to(tmp_path)},{f.parent.name},note {i},x" for i, f in enumerate(files)]
    rows += ["data/red/not_there.png,red,,", ",green,,", "data/red/red_000.png,,,"]
    p = tmp_path / "labels.csv"
    p.write_text("\ufeffPath, Label ,notes,extra\n" + "\n".join(rows) + "\n", encoding="utf-8")
    s = load_splits(p)
    assert sorted(_all(s)) == files
    assert s.skipped["CSV path not found"] == 1 and s.skipped["CSV row missing path or label"] == 2
    assert "labels.csv:14" in headstart_log.text and "not_there.png" in headstart_log.text
    with pytest.raises(DataError, match=r"labels\.csv:14 .*not_there\.png.*drop --strict"):
        load_splits(p, strict=True)


# ------------------------------------------------------------------------------ 5. warnings


def test_same_file_in_train_and_val_warns_leakage(
    tmp_path: Path, headstart_log: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "split"
    write_class_folders(root / "train", 3)
    write_class_folders(root / "val", 2, seed=7)
    src = root / "train" / "red" / "red_000.png"
    (root / "val" / "red" / "same-file.png").symlink_to(src)
    (root / "val" / "green" / "copy.png").write_bytes(
        (root / "train" / "green" / "green_001.png").read_bytes()
    )
    load_splits(root)
    assert "2 validation file(s) are also in the training data (leakage" in headstart_log.text
    for name in ("same-file.png", "copy.png", "green_001.png", "Remove the duplicates"):
        assert name in headstart_log.text


def test_val_without_a_training_class_warns(
    tmp_path: Path, headstart_log: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "split"
    write_class_folders(root / "train", 3)
    write_class_folders(root / "val", 2, classes={"red": (200, 0, 0), "blue": (0, 0, 200)})
    load_splits(root)
    assert "validation data has no images of class(es) green" in headstart_log.text


# ------------------------------------------------------- 6. failures while training, worker side


def test_damage_inside_a_large_jpeg_is_concealed_by_the_decoder(tmp_path: Path) -> None:
    """The scan reads only the ends of a large JPEG. Damage in the middle (here: most of the
    image data zeroed, markers kept) is not an error for libjpeg either: it decodes the image
    (with wrong pixels), exactly as a full decode during the scan would have."""
    root = _tree(tmp_path)
    data = bytearray(_big_jpeg())
    data[1000 : len(data) - 2000] = bytes(len(data) - 3000)
    bad = root / "red" / "damaged.jpg"
    bad.write_bytes(bytes(data))
    s = load_splits(root)
    assert bad in _all(s) and not s.skipped
    with Image.open(bad) as im:
        im.load()  # a full decode accepts it too
    img, _ = ImageDataset([x for x in s.train + s.val if x.path == bad], s.class_to_idx)[0]
    assert img.size == (512, 512) and img.mode == "RGB"


def test_image_broken_after_the_scan_names_the_file(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    s = load_splits(root)
    victim = s.train[0].path
    victim.write_bytes(victim.read_bytes()[:40])  # replaced mid-run (sync tool, editor...)
    ds = ImageDataset(s.train, s.class_to_idx)
    with pytest.raises(
        DataError, match=f"cannot read image {re.escape(str(victim))}.*Remove or replace"
    ):
        ds[0]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(DataError) as info:  # raised in a worker process, re-raised here
        next(iter(loader))
    assert "Traceback" not in str(info.value) and str(victim) in str(info.value)


# --------------------------------------------------------------------- 7. CLI: exit codes


def _tiny_args() -> list[str]:
    return [
        f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "model": "timm:test_resnet"}.items()
    ]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    def call(*args: str | Path) -> Any:
        r = run_main([str(a) for a in args], capsys, monkeypatch)
        assert "Traceback" not in r.text, r.text[r.text.find("Traceback") - 500 :][:3000]
        return r

    return call


def test_cli_skips_are_counted_and_strict_fails(tmp_path: Path, cli: Callable[..., Any]) -> None:
    root = _tree(tmp_path)
    write_class_folders(root, 4, classes={"cats [old] [bold]": (90, 90, 0)})
    _zero_byte(root)
    _truncated_jpeg(root)
    _ds_store(root)
    r = cli("train", root, *_tiny_args(), "--epochs=1", "--out", tmp_path / "run")
    assert r.code == 0, r.text[-3000:]
    assert "skipped: 1 hidden file, 2 unreadable image" in r.text
    assert "empty.png" in r.text and "truncated.jpg" in r.text
    assert "cats [old] [bold]" in r.text  # class table shows the name literally
    r = cli("train", root, *_tiny_args(), "--epochs=1", "--strict", "--out", tmp_path / "run2")
    assert r.code == 2 and "unreadable image:" in r.text and "drop --strict" in r.text


def test_cli_missing_data_and_bad_yaml(tmp_path: Path, cli: Callable[..., Any]) -> None:
    r = cli("train", tmp_path / "nope")
    assert r.code == 2 and "nope does not exist" in r.text
    bad = tmp_path / "run.yaml"
    bad.write_text("data: [unclosed\n")
    r = cli("train", "--config", bad)
    assert r.code == 2 and "run.yaml is not valid YAML" in r.text


def test_cli_unwritable_output_folder(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path, 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = cli("train", root, *_tiny_args(), "--out", blocker / "run")
    assert r.code == 4 and f"cannot write to output folder {blocker / 'run'}" in r.text
    assert "Choose another --out" in r.text
    # a folder without write permission (chmod does not stop root, who may run the tests:
    # the permission error is raised where the OS would raise it)
    locked = tmp_path / "locked" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *a: Any, **kw: Any) -> None:
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    r = cli("train", root, *_tiny_args(), "--out", locked)
    assert r.code == 4 and "Permission denied" in r.text and str(locked) in r.text


@pytest.fixture
def trained_run(tmp_path: Path, cli: Callable[..., Any]) -> Path:
    root = _tree(tmp_path, 3)
    r = cli("train", root, *_tiny_args(), "--epochs=1", "--out", tmp_path / "run")
    assert r.code == 0, r.text[-3000:]
    return tmp_path / "run"


def test_cli_run_folder_problems(
    trained_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # predict / evaluate on bad inputs
    bad = tmp_path / "shots"
    bad.mkdir()
    (bad / "ok.png").write_bytes(_png())
    (bad / "broken.jpg").write_bytes(_jpeg()[:100])
    r = cli("predict", trained_run, bad)  # the readable one is predicted, the other named
    assert r.code == 0 and f"cannot read image {bad / 'broken.jpg'}" in r.text
    assert "ok.png" in r.text and "1 of 2 inputs could not be read" in " ".join(r.text.split())
    r = cli("predict", trained_run, bad, "--strict")
    assert r.code == 2 and f"cannot read image {bad / 'broken.jpg'}" in r.text
    assert "Replace the file or leave it out" in r.text
    r = cli("predict", trained_run, tmp_path / "nothing.png")
    assert r.code == 2 and "nothing.png does not exist" in r.text
    other = write_class_folders(tmp_path / "other", 2, classes={"purple": (90, 0, 90)})
    r = cli("evaluate", trained_run, "--data", other)
    assert r.code == 2 and "classes the model was not trained on: purple" in r.text
    # --resume problems
    r = cli("train", "--resume", trained_run, "--model", "torchvision:resnet18")
    assert r.code == 4 and "cannot change model" in r.text and "--out <new folder>" in r.text
    r = cli("train", "--resume", tmp_path)  # not a run folder
    assert r.code == 4 and "config.yaml is missing" in r.text
    # last.ckpt replaced by another model's weights (copied in from another run)
    import torchvision

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    other = torchvision.models.resnet18(num_classes=3).state_dict()
    saved["state_dict"] = {f"backbone.body.{k}": v for k, v in other.items()}
    torch.save(saved, ckpt)
    r = cli("train", "--resume", trained_run)
    assert r.code == 4 and f"checkpoint {ckpt} does not fit timm:test_resnet" in r.text
    assert "another model" in r.text


def test_cli_disk_full_while_saving_keeps_the_last_good_checkpoint(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path, 3)
    real_fsync = os.fsync
    writes = {"last": 0}

    def fsync(fd: int) -> None:  # the disk fills up while epoch 1's last.ckpt is written
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.ckpt."):
            writes["last"] += 1
            if writes["last"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "run"
    r = cli("train", root, *_tiny_args(), "--epochs=2", "--no-early-stopping", "--out", run)
    assert r.code == 4, r.text[-3000:]
    assert f"cannot write {run / 'checkpoints' / 'last.ckpt'}: No space left on device" in r.text
    assert "--resume" in r.text
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and not any(n.endswith(".tmp") for n in ckpts)
    from headstart.run import load_checkpoint_file

    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"] == 0
    monkeypatch.setattr(os, "fsync", real_fsync)
    r = cli("train", "--resume", run)  # space freed: the run continues
    assert r.code == 0 and load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_cli_rank_skips_candidates_that_cannot_load(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """One candidate whose weights are not cached offline and one unknown model: both skipped
    with the reason (the hint in rank's ``@none`` form), the one that loads is ranked, exit 0;
    nothing loadable at all: exit 3."""
    root = _tree(tmp_path, 4)
    cached = Path(torch.hub.get_dir()) / "checkpoints"
    assert not list(cached.glob("resnet18-*.pth")), "the test needs resnet18 weights uncached"
    models = "torchvision:resnet18,timm:test_resnet@none,torchvision:no_such_net"
    r = cli("rank", root, "--models", models, "--image-size", "32", "--no-probe")
    text = " ".join(r.text.split())
    assert r.code == 0, r.text[-3000:]
    assert "skipped torchvision:resnet18: weights ResNet18_Weights" in text
    assert "or torchvision:resnet18@none to train from scratch" in text
    assert "--weights none" not in text
    assert "skipped torchvision:no_such_net:" in text
    assert "timm:test_resnet" in text and "transferability ranking" in text
    r = cli("rank", root, "--models", "torchvision:resnet18,torchvision:no_such_net")
    assert r.code == 3 and "no candidate could be scored: torchvision:resnet18:" in r.text


def test_cli_timm_weights_missing_offline_is_an_error_not_a_download(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """timm:resnet18's default weights are not cached: exit 3 before timm is asked for them;
    every timm model is built with the Hugging Face hub client offline."""
    import huggingface_hub.constants as hub
    import timm

    import headstart.models.timm_adapter as adapter

    hub_state: list[tuple[bool, bool]] = []
    real, before = timm.create_model, hub.HF_HUB_OFFLINE

    def create_model(name: str, pretrained: bool = False, **kw: Any) -> Any:
        hub_state.append((pretrained, hub.HF_HUB_OFFLINE))
        return real(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(adapter.timm, "create_model", create_model)
    root = _tree(tmp_path, 3)
    r = cli("train", root, "--model", "timm:resnet18", "--image-size=32", "--out", tmp_path / "a")
    assert r.code == 3, r.text[-3000:]
    assert "pretrained weights of timm:resnet18 (timm/resnet18.a1_in1k) are not in the" in r.text
    assert "--weights none" in r.text and hub_state == []
    r = cli("train", root, *_tiny_args(), "--epochs=1", "--out", tmp_path / "b")
    assert r.code == 0 and hub_state and all(offline for _, offline in hub_state)
    assert before == hub.HF_HUB_OFFLINE  # restored after each build


def test_exit_codes_are_the_documented_ones() -> None:
    from headstart import errors

    doc = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    for cls in (
        errors.DataError, errors.ModelError, errors.RunError, errors.TrainingDiverged,
        errors.Interrupted,
    ):  # fmt: skip
        assert issubclass(cls, HeadstartError)
        assert f"| {cls.exit_code} |" in doc and cls.__name__ in doc


def test_one_message_for_an_unreadable_image_whoever_reads_it(tmp_path: Path) -> None:
    """files.reading_image: any decoder error names the image and says what to do; an error
    that already does (a HeadstartError) passes through unchanged."""
    from headstart.errors import HeadstartError
    from headstart.files import open_rgb, reading_image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    unreadable = r"cannot read image .*broken\.png: .*Replace the file"
    with pytest.raises(DataError, match=unreadable), reading_image(broken):
        open_rgb(broken)
    with pytest.raises(HeadstartError, match=r"^already clear$"), reading_image(broken, "no"):
        raise HeadstartError("already clear")
