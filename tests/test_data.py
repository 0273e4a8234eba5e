"""The data layer: the embedded emoji set, selection, few-shot sampling, splits, folders, .npy files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_lib.config import data_dir
from fewshot_lib.data.emoji import STYLE_NAMES, load_emoji, to_uint8
from fewshot_lib.data.emoji_build import frame_and_resize, iconify_sources, norm_key
from fewshot_lib.data.fewshot import EpisodeSampler, class_split, class_tensors, sample_shots
from fewshot_lib.data.folders import load_image_folder
from fewshot_lib.data.npy_format import load_npy_classes


def test_embedded_dataset_matches_its_manifest(emoji):
    manifest = json.loads((data_dir() / "emoji_32.manifest.json").read_text())
    assert len(emoji) == manifest["images"] >= 8000
    assert emoji.counts("style") == {s: manifest["counts_per_style"][s] for s in emoji.counts("style")}
    assert emoji.images.shape[1:] == (32, 32, 3) and emoji.images.dtype == np.uint8
    assert len(emoji.classes("subcategory")) >= 80
    assert set(emoji.style) == set(STYLE_NAMES)
    load_emoji(verify=True)  # sha256 of the committed file matches


def test_no_blank_images_and_keys_line_up(emoji):
    for style in STYLE_NAMES:
        imgs = emoji.select(styles=style).images
        assert (imgs.min(axis=(1, 2, 3)) > 250).sum() == 0, style
    common = sorted(set(emoji.select(styles="noto").key) & set(emoji.select(styles="fluent_flat").key))
    a = emoji.select(styles="noto").by_keys(common)
    b = emoji.select(styles="fluent_flat").by_keys(common)
    assert list(a.name) == list(b.name) and list(a.subcategory) == list(b.subcategory)
    # same-key images look more alike than shuffled pairs (coarse colour layout)
    fa = torch.nn.functional.avg_pool2d(a.tensors(), 4).flatten(1)
    fb = torch.nn.functional.avg_pool2d(b.tensors(), 4).flatten(1)
    same = (fa - fb).norm(dim=1)
    other = (fa - fb.roll(1, 0)).norm(dim=1)
    assert (same < other).float().mean() > 0.75


def test_select_and_tensor_round_trip(emoji):
    faces = emoji.select(styles="noto", categories="Smileys & Emotion")
    assert set(faces.style) == {"noto"} and set(faces.category) == {"Smileys & Emotion"}
    x = faces.tensors()
    assert x.shape == (len(faces), 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), faces.images)
    with pytest.raises(ValueError, match="Unknown style"):
        emoji.select(styles="fluent3d")
    with pytest.raises(ValueError, match="more than once"):
        emoji.by_keys([emoji.key[0]])  # several styles share the key


def test_missing_and_corrupt_dataset_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="build --size 64"):
        load_emoji(64, path=tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a valid emoji dataset"):
        load_emoji(path=bad)


def test_sample_shots_is_seeded_and_checks_k(emoji):
    noto = emoji.select(styles="noto")
    a = sample_shots(noto, 10, seed=3, cls="animal-mammal")
    b = sample_shots(noto, 10, seed=3, cls="animal-mammal")
    c = sample_shots(noto, 10, seed=4, cls="animal-mammal")
    assert list(a.key) == list(b.key) and list(a.key) != list(c.key)
    assert len(set(a.key)) == 10 and set(a.subcategory) == {"animal-mammal"}
    with pytest.raises(ValueError, match="fewer than the 10 shots"):
        sample_shots(noto, 10, cls="hotel")
    with pytest.raises(ValueError, match="at least 1"):
        sample_shots(noto, 0)


def test_class_split_is_fixed_disjoint_and_consistent_across_styles(emoji):
    seen, unseen = class_split(emoji.select(styles="noto"))
    assert not set(seen) & set(unseen) and len(unseen) == 20
    assert (seen, unseen) == class_split(emoji.select(styles="noto"))
    seen3d, unseen3d = class_split(emoji.select(styles="fluent_3d"))
    # one ranking for every selection: the unseen sets of two styles nearly coincide
    assert len(set(unseen) & set(unseen3d)) >= 15


def test_episode_sampler_fresh_episodes_from_seen_classes_only(emoji):
    noto = emoji.select(styles="noto")
    seen, unseen = class_split(noto)
    pools = class_tensors(noto, seen)
    sampler = EpisodeSampler(pools, k=3, batch=8, generator=torch.Generator().manual_seed(0))
    episodes = [sampler.sample() for _ in range(5)]
    for shots, cls in episodes:
        assert shots.shape == (8, 3, 3, 32, 32)
        assert all(sampler.classes[i] in seen for i in cls)
        for ep, c in zip(shots, cls):  # every shot comes from its episode's class pool
            pool = pools[sampler.classes[c]].flatten(1)
            assert all((pool == s.flatten()).all(1).any() for s in ep)
    assert not torch.equal(episodes[0][0], episodes[1][0])  # fresh, not a fixed pool
    with pytest.raises(ValueError, match="fewer than k"):
        EpisodeSampler({"tiny": torch.zeros(2, 3, 32, 32)}, k=3)


def test_norm_key_and_framing():
    assert norm_key("0023-FE0F-20E3") == "23-20e3"
    assert norm_key("1F469-200D-1F52C") == "1f469-200d-1f52c"
    rgba = Image.new("RGBA", (100, 60), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (10, 10, 50, 30))
    out = frame_and_resize(rgba, 32)
    assert out.shape == (32, 32, 3) and out[16, 16].tolist() == [255, 0, 0]
    assert out[0, 0].tolist() == [255, 255, 255]  # composited on white
    assert frame_and_resize(Image.new("RGBA", (10, 10)), 32) is None


def test_iconify_sources_resolve_aliases_with_flip(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "icons.json").write_text(
        json.dumps(
            {
                "width": 32,
                "height": 32,
                "icons": {"left": {"body": "<path d='M0 0h8v8z'/>"}},
                "aliases": {"right": {"parent": "left", "hFlip": True}},
            }
        )
    )
    (pkg / "chars.json").write_text(json.dumps({"1f448": "left", "1f449": "right", "1f44a": "missing"}))
    svgs = iconify_sources(pkg)
    assert set(svgs) == {"1f448", "1f449"}
    assert "scale(-1 1)" in svgs["1f449"] and "scale(-1 1)" not in svgs["1f448"]


def _write(folder, n, size=(40, 30), mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, size, 128).save(folder / f"img{i}.png")


def test_image_folder_loader_any_mode_and_size(tmp_path):
    _write(tmp_path / "a", 2, (40, 30), "RGB")
    _write(tmp_path / "a", 1, (64, 64), "RGBA")
    Image.new("L", (20, 50), 10).save(tmp_path / "a" / "grey.jpg")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"x")  # hidden files are ignored
    x = load_image_folder(tmp_path / "a", size=16)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "does not exist"),
        ("empty", "contains no images"),
        ("text", "not images"),
        ("corrupt", "Could not read"),
        ("few", "fewer than the 5 required"),
    ],
)
def test_image_folder_loader_errors(tmp_path, case, match):
    folder = tmp_path / case
    if case != "missing":
        folder.mkdir()
    if case == "text":
        _write(folder, 1)
        (folder / "readme.txt").write_text("hi")
    if case == "corrupt":
        (folder / "broken.png").write_bytes(b"\x89PNG not really")
    if case == "few":
        _write(folder, 2)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_image_folder(folder, size=16, min_images=5)


def test_image_folder_skip_bad(tmp_path):
    _write(tmp_path, 2)
    (tmp_path / "broken.png").write_bytes(b"nope")
    (tmp_path / "notes.txt").write_text("hi")
    assert load_image_folder(tmp_path, size=8, skip_bad=True).shape == (2, 3, 8, 8)


def test_npy_loader_validates_layout(tmp_path):
    good = np.random.default_rng(0).integers(0, 255, (4, 5, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "good.npy", good)
    assert np.array_equal(load_npy_classes(tmp_path / "good.npy"), good)
    np.save(tmp_path / "gray.npy", good[..., 0])
    with pytest.raises(ValueError, match="expected \\[classes"):
        load_npy_classes(tmp_path / "gray.npy")
    np.save(tmp_path / "float.npy", good.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_npy_classes(tmp_path / "float.npy")
    with pytest.raises(FileNotFoundError):
        load_npy_classes(tmp_path / "absent.npy")
