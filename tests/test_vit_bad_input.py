"""Hostile files given to ``vit-hooks`` (images, register means, heads, batch files): each refused in one
line ``vit-hooks: error: ...`` naming the file and what is accepted, exit status 2, before the model
loads where the header or the file itself tells, with nothing written; and every PIL image mode either
converted to RGB as computed here by hand or refused."""

from __future__ import annotations

import colorsys
import io
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mech_interp.storage.tensor_files import check_checkpoint
from mech_interp.validation.errors import UsageError
from vit_hooks import cli
from vit_hooks.image_file import check_image, read_rgb, to_rgb

TINY = ["--model", "random:vit-tiny-reg4"]  # 4 blocks, 4 registers, d_model 48


def run_vit_cli(args, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- files the cases build in tmp_path --------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A 1-bit grayscale PNG that declares ``width x height`` and holds no pixel data: all a header check
    reads, without the memory a real image of that size would take to write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _folder(t: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``t/imgs``: one good image, plus ``extra`` files by name."""
    folder = t / "imgs"
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.arange(64 * 80 * 3, dtype=np.uint8).reshape(64, 80, 3)).save(folder / "a.png")
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    return folder


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def _truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    return _encoded(Image.fromarray(noise), "PNG")[:2000]


def _tiff(mode: str) -> bytes:
    return _encoded(Image.new(mode, (8, 8)), "TIFF")


def _broken_link(t: Path, where: str) -> None:
    _folder(t)
    target = t / "imgs" / where
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(t / "gone.png", target)


def _class_folder_with_broken_link(t: Path) -> None:
    for wnid in ("n01440764", "n01443537"):
        (t / "imgs" / wnid).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(t / "imgs" / wnid / "a.jpg")
    os.symlink(t / "gone.jpg", t / "imgs" / "n01443537" / "b.jpg")


def _means(t: Path, means) -> None:
    _folder(t)
    torch.save(means, t / "means.pt")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _pickle(t: Path, name: str, payload) -> None:
    """A pickle whose loading would run ``echo pwned``: plain (``pickle``) or as torch saves one."""
    _folder(t)
    if name.endswith(".pth"):
        torch.save(payload, t / name)
    else:
        (t / name).write_bytes(pickle.dumps(payload, protocol=4))


def _file(t: Path, name: str, write) -> None:
    _folder(t)
    write(t / name)


def _truncated_torch_file(path: Path) -> None:
    torch.save({b: torch.zeros(4, 48) for b in range(4)}, path)
    path.write_bytes(path.read_bytes()[:1000])


def _head(t: Path, weight: torch.Tensor) -> None:
    _folder(t)
    torch.save({"weight": weight, "bias": torch.zeros(weight.shape[0])}, t / "head.pth")


def _batch(t: Path, text: str) -> None:
    _folder(t)
    (t / "b.toml").write_text(text)


GOOD = torch.zeros(4, 48)
NAN = torch.zeros(4, 48).index_put_((torch.tensor([2]), torch.tensor([7])), torch.tensor(float("nan")))
MEANS = ["fix-reg-mean", *TINY, "--images", "{tmp}/imgs", "--means", "{tmp}/means.pt"]
IMAGES = ["layerwise", *TINY, "--images", "{tmp}/imgs"]
HEAD = ["fix-reg-mean", *TINY, "--images", "{tmp}/imgs", "--means", "measure", "--head", "{tmp}/head.pth"]
CHECKPOINT = ["layerwise", "--model", "vit_small_patch14_reg4_dinov2@{tmp}/model.pth", "--images", "{tmp}/imgs"]
RUNS = "[[runs]]\nmodels = ['random:vit-tiny']\nexperiments = ['layerwise']\n"

# (id, setup(tmp), args with {tmp}, expected substring of the one error line). None of them loads a model.
CASES = [
    # 1. PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS = 178956970 pixels)
    ("image-over-bomb-limit", lambda t: _folder(t, {"big.png": _png_header(15000, 15000)}), IMAGES,
     "image '{tmp}/imgs/big.png' is too large to decode safely: DecompressionBombError: Image size (225000000 pixels) exceeds limit of "
     "178956970 pixels"),
    # 2. entries the folder lists that are not images
    ("broken-symlink-flat", lambda t: _broken_link(t, "b.png"), IMAGES,
     "'{tmp}/imgs/b.png' is a broken symbolic link (to '{tmp}/gone.png')"),
    ("broken-symlink-in-class-folder", _class_folder_with_broken_link, IMAGES,
     "'{tmp}/imgs/n01443537/b.jpg' is a broken symbolic link"),
    ("broken-symlink-beyond-n-images", lambda t: _broken_link(t, "z.png"), [*IMAGES, "--n-images", "1"],
     "'{tmp}/imgs/z.png' is a broken symbolic link"),
    ("fifo-named-png", lambda t: _file(t, "imgs/p.png", os.mkfifo), IMAGES,
     "'{tmp}/imgs/p.png' is not a regular file"),
    # 3. register-means keys that are not the blocks 0..N-1 as integers
    ("means-key-letter", lambda t: _means(t, {"a": GOOD}), MEANS, "has the key 'a' (str): expected the blocks 0..N-1"),
    ("means-key-float", lambda t: _means(t, {0: GOOD, 1.5: GOOD}), MEANS, "has the key 1.5 (float)"),
    ("means-key-digit-string", lambda t: _means(t, {"3": GOOD}), MEANS, "has the key '3' (str)"),
    ("means-key-zero-string", lambda t: _means(t, {"0": GOOD}), MEANS, "has the key '0' (str)"),
    ("means-key-gap", lambda t: _means(t, {0: GOOD, 2: GOOD}), MEANS,
     "has the key 2 among 2 blocks: expected the keys 0..1"),
    # 4. unreadable images and pickles, one line each
    ("text-named-png", lambda t: _folder(t, {"x.png": b"hello\n" * 10}), IMAGES,
     "cannot read image '{tmp}/imgs/x.png': UnidentifiedImageError: cannot identify image file '{tmp}/imgs/x.png': expected an image file"),
    ("zero-byte-jpeg", lambda t: _folder(t, {"z.jpg": b""}), IMAGES,
     "cannot read image '{tmp}/imgs/z.jpg': the file is empty: expected an image file PIL decodes"),
    ("means-pickle-running-code", lambda t: _pickle(t, "means.pt", {0: _RunsCode()}), MEANS,
     "cannot read register-means file '{tmp}/means.pt' (not loadable with weights_only=True: "),
    ("head-pickle-running-code", lambda t: _pickle(t, "head.pth", {"weight": _RunsCode()}), HEAD,
     "cannot read --head '{tmp}/head.pth' (not loadable with weights_only=True: "),
    ("means-truncated", lambda t: _file(t, "means.pt", _truncated_torch_file), MEANS,
     "cannot read register-means file '{tmp}/means.pt' (RuntimeError: PytorchStreamReader failed reading zip archive: failed "
     "finding central directory): expected a .pt file"),
    ("checkpoint-pickle-running-code", lambda t: _pickle(t, "model.pth", {"pos_embed": _RunsCode()}), CHECKPOINT,
     "cannot read checkpoint '{tmp}/model.pth' (not loadable with weights_only=True: "),
    ("checkpoint-text", lambda t: _file(t, "model.pth", lambda p: p.write_text("hi\n")), CHECKPOINT,
     "cannot read checkpoint '{tmp}/model.pth' (KeyError: "),
    ("checkpoint-broken-safetensors", lambda t: _file(t, "model.safetensors", lambda p: p.write_bytes(b"\xff" * 64)),
     ["layerwise", "--model", "vit_small_patch14_reg4_dinov2@{tmp}/model.safetensors", "--images", "{tmp}/imgs"],
     "cannot read checkpoint '{tmp}/model.safetensors' ("),
    # 5. image modes without a defined conversion to RGB
    ("float-tiff-named-png", lambda t: _folder(t, {"f.png": _tiff("F")}), IMAGES,
     "image '{tmp}/imgs/f.png' has PIL mode 'F' (floating-point samples, whose white the mode does not define): "
     "accepted modes 1, L, P, RGB"),
    ("lab-tiff-named-png", lambda t: _folder(t, {"l.png": _tiff("LAB")}), IMAGES, "has PIL mode 'LAB'"),
    # 6. means (and head weights) no computation can use
    ("means-nan", lambda t: _means(t, {b: NAN if b == 1 else GOOD for b in range(4)}), MEANS,
     "register-means file '{tmp}/means.pt' at block 1 holds 1 value that is not finite as float32 (the first, at "
     "[2, 7], is nan)"),
    ("means-infinite", lambda t: _means(t, {b: GOOD - float("inf") for b in range(4)}), MEANS,
     "at block 0 holds 192 values that are not finite as float32 (the first, at [0, 0], is -inf)"),
    ("means-beyond-float32", lambda t: _means(t, {b: GOOD.double() + 1e300 for b in range(4)}), MEANS,
     "at block 0 holds 192 values that are not finite as float32 (the first, at [0, 0], is 1e+300)"),
    ("means-complex", lambda t: _means(t, {b: GOOD.to(torch.complex64) for b in range(4)}), MEANS,
     "at block 0 is a complex64 tensor: expected real floating-point values"),
    ("head-nan", lambda t: _head(t, torch.full((10, 96), float("nan"))), HEAD,
     "--head '{tmp}/head.pth': its weight holds 960 values that are not finite"),
    ("head-complex", lambda t: _head(t, torch.zeros(10, 96, dtype=torch.complex64)), HEAD,
     "its weight is a complex64 tensor"),
    ("head-integer-keys", lambda t: _file(t, "head.pth", lambda p: torch.save({0: torch.zeros(3)}, p)), HEAD,
     "holds no linear layer"),
    # 7. batch files nested past what the TOML parser (recursive) survives
    ("batch-deep-arrays", lambda t: _batch(t, "a = " + "[" * 100_000 + "\n" + RUNS), ["batch", "{tmp}/b.toml"],
     "config file '{tmp}/b.toml' nests lists or tables deeper than 32 levels"),
    ("batch-deep-inline-tables", lambda t: _batch(t, "a = " + "{b = " * 50 + "1" + "}" * 50 + "\n" + RUNS),
     ["batch", "{tmp}/b.toml"], "nests lists or tables deeper than 32 levels"),
]


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the bad input was refused")


@pytest.mark.unit
@pytest.mark.parametrize("case_id, setup, args, needle", CASES, ids=[c[0] for c in CASES])
def test_vit_bad_input_is_refused_in_one_line_before_the_model(tmp_path, capsys, monkeypatch, case_id, setup, args,
                                                               needle):
    setup(tmp_path)
    monkeypatch.setattr("vit_hooks.session.load_vit", _no_model)
    monkeypatch.setattr("vit_hooks.loading.load_vit", _no_model)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    before = set(tmp_path.rglob("*"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, stderr = run_vit_cli([a.replace("{tmp}", str(tmp_path)) for a in args] + ["--out", out], capsys)
    needle = needle.replace("{tmp}", str(tmp_path))
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("vit-hooks: error: ") and needle in stderr, stderr
    assert "Traceback" not in stderr and "pwned" not in stdout + stderr
    assert len(stderr.replace(str(tmp_path), "")) < 400, "a long reason was not cut"
    assert not [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert set(tmp_path.rglob("*")) == before and not out.exists(), "a refused run wrote files"


# Found only when the pixels are decoded, after the model has loaded: still one line, status 2, nothing kept.
DECODE_CASES = [
    ("truncated-png", lambda t: _folder(t, {"t.png": _truncated_png()}), IMAGES,
     "cannot read image '{tmp}/imgs/t.png': OSError: image file is truncated: expected a complete image file"),
]


@pytest.mark.integration
@pytest.mark.parametrize("case_id, setup, args, needle", DECODE_CASES, ids=[c[0] for c in DECODE_CASES])
def test_vit_undecodable_image_ends_the_run_in_one_line(tmp_path, capsys, case_id, setup, args, needle):
    setup(tmp_path)
    out = tmp_path / "out"
    code, _, stderr = run_vit_cli([a.replace("{tmp}", str(tmp_path)) for a in args] + ["--out", out], capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("vit-hooks: error:")]
    assert code == 2 and len(errors) == 1 and needle.replace("{tmp}", str(tmp_path)) in errors[0], stderr
    assert "Traceback" not in stderr and not out.exists()


# --- image modes: converted as computed here, or refused -------------------------------------------

PIXELS = [(0, 0), (1, 0), (2, 0), (3, 0)]


def _ycbcr(y: int, cb: int, cr: int) -> tuple[float, float, float]:
    """JPEG's (JFIF) full-range YCbCr to RGB."""
    return y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)


def _image(mode: str, values: list) -> Image.Image:
    img = Image.new(mode, (len(values), 1))
    for (x, y), v in zip(PIXELS, values):
        img.putpixel((x, y), v)
    return img


def _palette(mode: str) -> Image.Image:
    img = Image.new(mode, (4, 1))
    img.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255, 255, 255, 255])
    for x in range(4):
        img.putpixel((x, 0), x if mode == "P" else (x, 50 * x))
    return img


# (mode, image, the RGB of its pixels by hand, tolerance: PIL's fixed-point formulas round differently by 1)
MODES = [
    ("1", _image("1", [0, 1, 0, 1]), [(0, 0, 0), (255, 255, 255)] * 2, 0),
    ("L", _image("L", [0, 7, 128, 255]), [(v, v, v) for v in (0, 7, 128, 255)], 0),
    ("LA", _image("LA", [(0, 9), (7, 0), (128, 200), (255, 255)]), [(v, v, v) for v in (0, 7, 128, 255)], 0),
    ("P", _palette("P"), [(10, 20, 30), (200, 100, 0), (0, 0, 255), (255, 255, 255)], 0),
    ("PA", _palette("PA"), [(10, 20, 30), (200, 100, 0), (0, 0, 255), (255, 255, 255)], 0),
    ("RGB", _image("RGB", [(1, 2, 3), (250, 0, 9)] * 2), [(1, 2, 3), (250, 0, 9)] * 2, 0),
    ("RGBA", _image("RGBA", [(1, 2, 3, 0), (250, 0, 9, 77)] * 2), [(1, 2, 3), (250, 0, 9)] * 2, 0),
    ("RGBX", _image("RGBX", [(1, 2, 3, 0), (250, 0, 9, 77)] * 2), [(1, 2, 3), (250, 0, 9)] * 2, 0),
    ("CMYK", _image("CMYK", [(100, 50, 200, 60), (0, 0, 0, 0), (255, 0, 0, 0), (30, 60, 90, 255)]),
     [tuple(round((255 - c) * (255 - k) / 255) for c in cmy) for *cmy, k in
      [(100, 50, 200, 60), (0, 0, 0, 0), (255, 0, 0, 0), (30, 60, 90, 255)]], 0),
    ("YCbCr", _image("YCbCr", [(100, 50, 200), (128, 128, 128), (16, 128, 128), (200, 90, 160)]),
     [tuple(min(255, max(0, round(c))) for c in _ycbcr(*v))
      for v in [(100, 50, 200), (128, 128, 128), (16, 128, 128), (200, 90, 160)]], 1),
    ("HSV", _image("HSV", [(100, 50, 200), (0, 255, 255), (170, 128, 64), (0, 0, 90)]),
     [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h / 255, s / 255, v / 255))
      for h, s, v in [(100, 50, 200), (0, 255, 255), (170, 128, 64), (0, 0, 90)]], 1),
]
SIXTEEN = [0, 128, 129, 385, 30000, 65535]  # round(v / 257): 0, 0, 1, 1, 117, 255


@pytest.mark.unit
@pytest.mark.parametrize("mode, img, expected, atol", MODES, ids=[m[0] for m in MODES])
def test_image_modes_convert_to_rgb_as_computed_by_hand(tmp_path, mode, img, expected, atol):
    got = np.asarray(to_rgb(img), dtype=np.int64)[0]
    assert np.abs(got - np.array(expected)).max() <= atol, (got.tolist(), expected)
    if mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK"):  # what PNG, JPEG, BMP, WebP hold: through a file
        path = tmp_path / f"img.{'jpg' if mode == 'CMYK' else 'png'}"
        img.save(path, quality=100) if mode == "CMYK" else img.save(path)
        check_image(path)
        if mode != "CMYK":  # JPEG is lossy
            assert np.array_equal(np.asarray(read_rgb(path)), np.asarray(to_rgb(img)))


@pytest.mark.unit
@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16B", "TIFF"), ("I;16", "TIFF")])
def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped_to_white(tmp_path, mode, fmt):
    path = tmp_path / "deep.png"  # the folder takes .png whatever the content
    img = Image.new(mode, (len(SIXTEEN), 1))
    for x, v in enumerate(SIXTEEN):
        img.putpixel((x, 0), v)
    img.save(path, fmt)
    with Image.open(path) as opened:
        assert opened.mode == mode
    check_image(path)
    got = np.asarray(read_rgb(path))
    assert got.shape == (1, len(SIXTEEN), 3) and got.dtype == np.uint8
    assert got[0, :, 0].tolist() == [round(v / 257) for v in SIXTEEN] == [0, 0, 1, 1, 117, 255]
    assert (got == got[..., :1]).all()  # gray


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["I", "F", "LAB"])
def test_modes_without_a_defined_white_or_colour_are_refused(tmp_path, mode):
    path = tmp_path / "odd.png"
    path.write_bytes(_tiff(mode))
    for read in (check_image, read_rgb):
        with pytest.raises(UsageError, match=f"has PIL mode '{mode}'") as err:
            read(path)
        assert "\n" not in str(err.value) and "save it as an 8-bit or 16-bit PNG" in str(err.value)


@pytest.mark.unit
def test_images_between_the_warning_and_the_bomb_limit_are_read_quietly(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above 1000 pixels, refuses above 2000
    quiet, bomb = tmp_path / "quiet.png", tmp_path / "bomb.png"
    Image.new("L", (40, 40), 9).save(quiet)  # 1600 pixels
    Image.new("L", (50, 50), 9).save(bomb)  # 2500 pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_image(quiet)
        assert np.asarray(read_rgb(quiet)).shape == (40, 40, 3)
        with pytest.raises(UsageError, match=r"bomb.png' is too large to decode safely: .*2500 pixels.* 2000 pixels"):
            read_rgb(bomb)
    assert not caught, [str(w.message) for w in caught]
    with pytest.warns(Image.DecompressionBombWarning):  # what PIL alone prints for every such image
        Image.open(quiet).close()


@pytest.mark.unit
@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_readable_checkpoints_pass_the_check_before_the_model(tmp_path, fmt):
    state = {"pos_embed": torch.randn(1, 5, 8), "blocks.0.norm1.weight": torch.ones(8)}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file(state, path)
    else:
        path = tmp_path / "model.pth"
        torch.save({"model": state}, path, _use_new_zipfile_serialization=fmt == "zip")
    check_checkpoint(path, "a state dict")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UsageError, match=r"^cannot read checkpoint '.*model\.(pth|safetensors)' \(.+\): expected a state dict$"):
        check_checkpoint(path, "a state dict")
