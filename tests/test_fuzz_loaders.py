"""Fuzz the three user-facing loaders (image folder, ``.npy``, checkpoint) with the files users really bring.

Every case must end in a correct load or a clear error: the library's own exception type, a message naming
the file, no traceback frames from a third-party library, nothing executed (a pickle's ``__reduce__`` would
create a marker file) and nothing in the folder changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import struct
import sys
import traceback
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_lib.checkpoint import (
    CheckpointLoadError,
    first_nonfinite,
    load_checkpoint,
    save_atomic,
    strip_ansi,
)
from fewshot_lib.data.folders import ImageLoadError, load_image_folder
from fewshot_lib.data.npy_format import load_npy_classes
from fewshot_lib.models import stylegan2 as sg

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"fewshot-fuzz-executed-{os.getpid()}"


class Evil:
    """Unpickling this runs code: it would create MARKER (never the case in these tests)."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a loader executed code from a pickle"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every regular file (links are not followed: loops must stay loops)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[p.name] = ("link:" + os.readlink(p), 0)
        elif p.is_file():
            out[p.name] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def assert_clear_error(err: BaseException, name: str) -> None:
    """Our message names the file, carries no ANSI codes, and no third-party frame is in the traceback."""
    msg = str(err)
    assert name in msg, msg
    assert "\x1b" not in msg
    text = "".join(traceback.format_exception(err))
    third_party = [
        line for line in text.splitlines() if "site-packages" in line and "fewshot_lib" not in line
    ]
    assert not third_party, text


def png_bomb(path: Path, side: int = 100_000) -> None:
    """A tiny PNG whose header claims ``side × side`` pixels (Pillow checks the header before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def rng_image(h: int = 16, w: int = 16) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------ image folders
def _good(path: Path) -> None:
    rng_image().save(path)


def _exif_rotated(path: Path) -> None:
    # Stored 40 wide × 20 tall, top half black; orientation 6 shows it upright as 20 × 40 with the black half
    # on the right (the stored top row is the displayed right column).
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[10:] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)


def _gif_two_frames(path: Path) -> None:
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    red.save(path, save_all=True, append_images=[blue])


def _pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"x": Evil()}))


IMAGE_CASES = {
    # name: (file name, writer, expected [R, G, B] of the top-left 2×2 mean at size 20, or None for an error)
    "truncated": ("t.png", lambda p: (rng_image(64, 64).save(p), p.write_bytes(p.read_bytes()[:200])), None),
    "zero_byte": ("z.png", lambda p: p.write_bytes(b""), None),
    "random_bytes": ("r.jpg", lambda p: p.write_bytes(np.random.default_rng(1).bytes(500)), None),
    "pickle_with_code": ("p.png", _pickle, None),
    "bomb": ("bomb.png", png_bomb, None),
    "bomb_warning_range": ("bomb2.png", lambda p: png_bomb(p, 10_000), None),  # Pillow would only warn here
    "one_by_one": ("1x1.png", lambda p: Image.new("RGB", (1, 1), (10, 200, 30)).save(p), (10, 200, 30)),
    "white_16bit": (
        "w16.png",
        lambda p: Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(p),
        (255, 255, 255),
    ),
    "narrow_16bit": (
        "n16.png",
        lambda p: Image.fromarray(np.linspace(20000, 21000, 64).reshape(8, 8).astype(np.uint16)).save(p),
        (78, 78, 78),
    ),
    "float_tiff": (
        "f.tif",
        lambda p: Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(p),
        (128, 128, 128),
    ),
    "float_out_of_range": (
        "f2.tif",
        lambda p: Image.fromarray(np.full((8, 8), 7.0, np.float32)).save(p),
        None,
    ),
    "int32_tiff": (
        "i32.tif",
        lambda p: Image.fromarray(np.full((8, 8), 2**31 - 1, np.int32)).save(p),
        (255, 255, 255),
    ),  # a signed 32-bit TIFF at its maximum is white, by its declared depth
    "cmyk": ("c.jpg", lambda p: Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, quality=95), (255, 0, 0)),
    "palette_transparent": (
        "pt.png",
        lambda p: Image.new("P", (8, 8), 0).save(p, transparency=0),
        (255, 255, 255),
    ),
    "la": ("la.png", lambda p: Image.new("LA", (8, 8), (0, 0)).save(p), (255, 255, 255)),
    "exif_rotated": ("e.jpg", _exif_rotated, (255, 255, 255)),
    "multi_frame": ("anim.gif", _gif_two_frames, (255, 0, 0)),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_image_folder_fuzz(tmp_path, case, caplog):
    name, write, expected = IMAGE_CASES[case]
    folder = tmp_path / "imgs"
    folder.mkdir()
    write(folder / name)
    before = snapshot(folder)
    with caplog.at_level(logging.INFO, logger="fewshot_lib"):
        if expected is None:
            with pytest.raises(ImageLoadError) as err:
                load_image_folder(folder, size=20)
            assert_clear_error(err.value, name)
            if case.startswith("bomb"):
                assert "decompression bomb" in str(err.value)
        else:
            x = load_image_folder(folder, size=20)
            assert x.shape == (1, 3, 20, 20)
            pixels = ((x[0, :, :2, :2].mean(dim=(1, 2)) + 1) * 127.5).tolist()
            assert pixels == pytest.approx(expected, abs=12), pixels
    assert snapshot(folder) == before
    if case == "exif_rotated":  # upright: the black half is on the right, not at the top
        assert float(x[0, 0, :, -2:].mean()) < -0.9 and float(x[0, 0, :, :2].mean()) > 0.9
    if case in ("one_by_one", "white_16bit", "narrow_16bit", "float_tiff", "cmyk"):
        assert "upscaled" in caplog.text and name in caplog.text  # 1 px or 8 px → 20 px: blurred
    if case == "multi_frame":
        assert "2 frames" in caplog.text and name in caplog.text


def test_sixteen_bit_uses_bit_depth_not_min_max(tmp_path):
    """Two 16-bit images with different ranges keep their relative brightness (per-image min–max did not)."""
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "a_white.png")
    Image.fromarray(np.linspace(20000, 21000, 64).reshape(8, 8).astype(np.uint16)).save(
        tmp_path / "b_mid.png"
    )
    x = (load_image_folder(tmp_path, size=8) + 1) * 127.5
    assert float(x[0].min()) > 254  # all-white stays white
    assert 77 < float(x[1].min()) and float(x[1].max()) < 83  # 20000–21000 of 65535 ≈ 78–82, not 0–255


def _symlink_loop(folder: Path) -> None:
    os.symlink(folder / "b.png", folder / "a.png")
    os.symlink(folder / "a.png", folder / "b.png")


@pytest.mark.parametrize("case", ["loop", "dangling", "fifo"])
def test_image_folder_links_and_special_files(tmp_path, case, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _good(folder / "good.png")
    if case == "loop":
        _symlink_loop(folder)
        names, reason = ["a.png", "b.png"], "symlink loop"
    elif case == "dangling":
        os.symlink(tmp_path / "gone.png", folder / "d.png")
        names, reason = ["d.png"], "dangling"
    else:
        os.mkfifo(folder / "pipe.png")
        names, reason = ["pipe.png"], "not a regular file"
    (folder / "sub").mkdir()  # subfolders are not searched: a warning, not an error
    before = snapshot(folder)
    with pytest.raises(ImageLoadError) as err:
        load_image_folder(folder, size=8)
    for n in names:
        assert_clear_error(err.value, n)
    assert reason in str(err.value) and "skip_bad" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="fewshot_lib"):
        x = load_image_folder(folder, size=8, skip_bad=True)
    assert x.shape == (1, 3, 8, 8)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert len(skipped) == len(names) and all(any(n in s for s in skipped) for n in names)
    assert "subfolder" in caplog.text and "sub" in caplog.text
    assert snapshot(folder) == before


def test_symlink_to_a_good_image_is_followed(tmp_path):
    outside = tmp_path / "elsewhere.png"
    _good(outside)
    folder = tmp_path / "imgs"
    folder.mkdir()
    os.symlink(outside, folder / "link.png")
    assert load_image_folder(folder, size=8).shape == (1, 3, 8, 8)


def test_every_skipped_image_is_logged_by_name(tmp_path, caplog):
    _good(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("hi")
    with caplog.at_level(logging.WARNING, logger="fewshot_lib"):
        x = load_image_folder(tmp_path, size=8, skip_bad=True)
    assert x.shape == (1, 3, 8, 8)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert any("broken.png" in s for s in skipped) and any("notes.txt" in s for s in skipped)


def test_relative_folder_error_shows_where_it_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_image_folder("imgs")
    assert str(tmp_path / "imgs") in str(err.value)


# -------------------------------------------------------------------------------------------------- .npy
def _npy_truncated(p: Path) -> None:
    np.save(p, np.zeros((2, 3, 4, 4, 3), np.uint8))
    p.write_bytes(p.read_bytes()[:-20])


def _npy_object_with_code(p: Path) -> None:
    with open(p, "wb") as f:  # np.save pickles an object array; loading must not unpickle it
        np.save(f, np.array([Evil()], dtype=object), allow_pickle=True)


def _npz(p: Path) -> None:
    with open(p, "wb") as f:
        np.savez(f, images=np.zeros((1, 1, 4, 4, 3), np.uint8))


NPY_CASES = {
    "truncated": (_npy_truncated, None),
    "zero_byte": (lambda p: p.write_bytes(b""), None),
    "random_bytes": (lambda p: p.write_bytes(np.random.default_rng(2).bytes(400)), None),
    "pickle_with_code": (_pickle, None),
    "object_array_with_code": (_npy_object_with_code, None),
    "npz": (_npz, None),
    "one_by_one": (lambda p: np.save(p, np.full((1, 1, 1, 1, 3), 7, np.uint8)), (1, 1, 1, 1, 3)),
    "sixteen_bit": (lambda p: np.save(p, np.zeros((1, 1, 4, 4, 3), np.uint16)), None),
    "float01": (lambda p: np.save(p, np.full((1, 2, 4, 4, 3), 0.5, np.float32)), (1, 2, 4, 4, 3)),
    "float_nan": (lambda p: np.save(p, np.full((1, 2, 4, 4, 3), np.nan, np.float32)), None),
}


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("case", sorted(NPY_CASES))
def test_npy_loader_fuzz(tmp_path, case, mmap):
    write, shape = NPY_CASES[case]
    path = tmp_path / "data.npy"
    write(path)
    before = snapshot(tmp_path)
    if shape is None:
        with pytest.raises(ValueError) as err:
            load_npy_classes(path, mmap=mmap, allow_float01=True)
        assert_clear_error(err.value, "data.npy")
    else:
        assert load_npy_classes(path, mmap=mmap, allow_float01=True).shape == shape
    assert snapshot(tmp_path) == before


def test_npz_error_says_what_to_do(tmp_path):
    _npz(tmp_path / "d.npz")
    with pytest.raises(ValueError, match=r"\.npz archive.*np\.save") as err:
        load_npy_classes(tmp_path / "d.npz")
    assert "ndim" not in str(err.value)


def test_npy_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.npy", tmp_path / "a.npy")
    os.symlink(tmp_path / "a.npy", tmp_path / "b.npy")
    with pytest.raises(FileNotFoundError) as err:
        load_npy_classes(tmp_path / "a.npy")
    assert_clear_error(err.value, "a.npy")
    assert "symlink" in str(err.value)


# ----------------------------------------------------------------------------------------------- checkpoints
TINY_G = dict(size=16, style_dim=8, n_mlp=1, channel_base=64, channel_max=8)


def _tiny_generator_file(path: Path) -> None:
    torch.manual_seed(0)
    sg.load_generator  # noqa: B018 — resolves wherever the loader lives (stylegan2 or stylegan2_io)
    export = getattr(sys.modules[sg.load_generator.__module__], "export_generator")
    export(sg.Generator(**TINY_G), path, half=False, n_mean=16)


def _ck_truncated(p: Path) -> None:
    _tiny_generator_file(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _ck_nan(p: Path) -> None:
    _tiny_generator_file(p)
    ck = torch.load(p, weights_only=True)
    ck["g_ema"]["conv1.conv.weight"][0, 0, 0, 0, 0] = float("nan")
    torch.save(ck, p)


def _ck_config(**changes):
    def write(p: Path) -> None:
        _tiny_generator_file(p)
        ck = torch.load(p, weights_only=True)
        ck["config"].update(changes)
        torch.save(ck, p)

    return write


CK_CASES = {
    # name: (writer, substring the error must contain; None = loads)
    "good": (_tiny_generator_file, None),
    "truncated": (_ck_truncated, "truncated"),
    "zero_byte": (lambda p: p.write_bytes(b""), "empty"),
    "random_bytes": (
        lambda p: p.write_bytes(np.random.default_rng(3).bytes(600)),
        "not a PyTorch checkpoint",
    ),
    "a_png": (lambda p: rng_image().save(p, format="PNG"), "PNG image"),
    "plain_pickle_with_code": (_pickle, "plain Python pickle"),
    "torch_save_with_code": (lambda p: torch.save({"g_ema": {}, "x": Evil()}, p), "pickled Python object"),
    "legacy_torch_with_code": (
        lambda p: torch.save({"x": Evil()}, p, _use_new_zipfile_serialization=False),
        "pickled Python object",
    ),
    "nan_weights": (_ck_nan, "['g_ema']['conv1.conv.weight']"),
    "unknown_config_key": (_ck_config(bogus_width=3), "bogus_width"),
    "huge_config": (_ck_config(size=16384), "size=16384"),
    "too_many_parameters_config": (
        _ck_config(size=1024, style_dim=1024, channel_base=1 << 20, channel_max=1024, n_mlp=16),
        "parameters",
    ),
}


@pytest.mark.parametrize("loader", ["load_checkpoint", "load_generator", "load_rosinality"])
@pytest.mark.parametrize("case", sorted(CK_CASES))
def test_checkpoint_loader_fuzz(tmp_path, case, loader, monkeypatch):
    write, expected = CK_CASES[case]
    path = tmp_path / "model.pt"
    write(path)
    before = snapshot(tmp_path)
    load = {
        "load_checkpoint": load_checkpoint,
        "load_generator": sg.load_generator,
        "load_rosinality": sg.load_rosinality,
    }[loader]
    # Nothing may be allocated for a config that fails validation: building a Generator here is a failure.
    io_module = sys.modules[sg.load_generator.__module__]
    if expected is not None and "config" in case and loader == "load_generator":
        monkeypatch.setattr(io_module, "Generator", lambda **kw: pytest.fail(f"allocated {kw}"))
    config_case = "config" in case or case == "good"
    if expected is None or (config_case and loader != "load_generator"):
        out = load(path)  # the file itself is fine for loaders that ignore config
        assert out is not None
    else:
        with pytest.raises((ValueError, OSError)) as err:
            load(path)
        assert_clear_error(err.value, "model.pt")
        msg = str(err.value)
        assert expected in msg, msg
        assert (
            "In PyTorch 2.6" not in msg and "Please file an issue" not in msg
        )  # torch's text is not repeated
        if "weights_only=False" in msg:  # the cause comes before any advice
            assert msg.index(expected) < msg.index("weights_only=False")
        if case in ("random_bytes", "truncated", "zero_byte", "a_png"):
            assert "trust_pickle" not in msg  # no advice to trust a file that is merely broken
        assert not isinstance(err.value, TypeError)
    assert snapshot(tmp_path) == before


def test_first_nonfinite_and_strip_ansi():
    assert (
        first_nonfinite({"a": torch.ones(2), "b": [torch.zeros(1), torch.tensor([1.0, float("inf")])]})
        == "['b'][1]"
    )
    assert first_nonfinite({"a": torch.ones(2), "n": torch.arange(3)}) is None
    assert strip_ansi("\x1b[1mWeights\x1b[0m only") == "Weights only"


def test_checkpoint_errors_are_not_cut_short(tmp_path, monkeypatch):
    """The cause of a refused pickle names the class in full, however long torch's message is."""
    import types

    class_name = "Payload" + "A" * 400
    module = types.ModuleType("some_untrusted_module")
    cls = type(class_name, (), {})
    cls.__module__, cls.__qualname__ = module.__name__, class_name
    setattr(module, class_name, cls)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    torch.save({"x": cls()}, tmp_path / "long.pt")
    with pytest.raises(CheckpointLoadError) as err:
        load_checkpoint(tmp_path / "long.pt")
    assert f"some_untrusted_module.{class_name}" in str(err.value)
    assert str(err.value).startswith(f"Checkpoint {tmp_path / 'long.pt'} could not be loaded safely")


def test_save_atomic_round_trip_still_works(tmp_path):
    save_atomic({"w": torch.ones(2)}, tmp_path / "x.pt")
    assert torch.equal(load_checkpoint(tmp_path / "x.pt")["w"], torch.ones(2))


def test_ansi_codes_in_torch_errors_are_stripped(tmp_path, monkeypatch):
    _tiny_generator_file(tmp_path / "model.pt")

    def coloured_failure(*args, **kwargs):  # what a colouring torch build or wrapper may raise
        raise RuntimeError(
            "\x1b[1m\x1b[31mPytorchStreamReader failed reading zip archive: failed finding "
            "central directory\x1b[0m"
        )

    monkeypatch.setattr(torch, "load", coloured_failure)
    with pytest.raises(CheckpointLoadError) as err:
        load_checkpoint(tmp_path / "model.pt")
    assert "\x1b" not in str(err.value) and "truncated or corrupt" in str(err.value)
    monkeypatch.setattr(
        torch,
        "load",
        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("\x1b[33msomething new\x1b[0m went wrong")),
    )
    with pytest.raises(CheckpointLoadError) as err:
        load_checkpoint(tmp_path / "model.pt")
    assert "something new went wrong" in str(err.value)
