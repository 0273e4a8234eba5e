"""The dataset builder, end to end, on tiny npm-style packages the test writes (no network)."""

import json

import pytest
from PIL import Image

from fewshot_lib.data.emoji import load_emoji
from fewshot_lib.data.emoji_build import PACKAGES, build

pytest.importorskip("resvg_py", reason="rendering SVG styles needs resvg-py (the [build] extra)")

EMOJI = [  # unified, name, category, subcategory
    ("1F600", "GRINNING FACE", "Smileys & Emotion", "face-smiling"),
    ("0023-FE0F-20E3", "HASH KEY", "Symbols", "keycap"),
    ("1F3FB", "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "Component", "skin-tone"),  # excluded category
]


def _package(root, name, files):
    folder = root / name.replace("/", "_") / "package"
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": name, "version": PACKAGES[name]}))
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Image.Image):
            content.save(path)
        else:
            path.write_text(content)


def _fake_packages(root):
    rows = [
        {
            "unified": u,
            "name": n,
            "short_name": n.lower(),
            "image": u.lower() + ".png",
            "category": c,
            "subcategory": s,
            "sort_order": i,
        }
        for i, (u, n, c, s) in enumerate(EMOJI)
    ]
    for vendor, colour in (("google", (250, 200, 0, 255)), ("twitter", (0, 120, 250, 255))):
        files = {"emoji.json": json.dumps(rows)}
        for r in rows:
            img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
            img.paste(colour, (8, 16, 56, 48))
            files[f"img/{vendor}/64/{r['image']}"] = img
        _package(root, f"emoji-datasource-{vendor}", files)
    body = "<circle cx='16' cy='16' r='10' fill='#e33'/>"
    icons = json.dumps(
        {"width": 32, "height": 32, "icons": {"grinning-face": {"body": body}, "keycap-hash": {"body": body}}}
    )
    chars = json.dumps({"1f600": "grinning-face", "23-fe0f-20e3": "keycap-hash"})
    _package(root, "@iconify-json/fluent-emoji-flat", {"icons.json": icons, "chars.json": chars})
    _package(root, "@iconify-json/fluent-emoji", {"icons.json": icons, "chars.json": "{}"})
    _package(root, "@iconify-json/fluent-emoji-high-contrast", {"icons.json": icons, "chars.json": chars})


def test_build_from_local_packages(tmp_path):
    _fake_packages(tmp_path / "pkgs")
    out = tmp_path / "emoji_16.npz"
    manifest = build(16, out, workers=1, packages_dir=tmp_path / "pkgs")
    assert manifest["counts_per_style"] == {s: 2 for s in manifest["counts_per_style"]}
    data = load_emoji(16, path=out)
    assert data.images.shape == (10, 16, 16, 3)
    assert set(data.key) == {"1f600", "23-20e3"}  # normalised keys, Component dropped
    noto = data.select(styles="noto").by_keys(["1f600"]).images[0]
    assert noto[8, 8].tolist()[2] < 50 and noto[8, 8, 0] > 200  # yellow square, framed to fill the image
    fluent = data.select(styles="fluent_3d").by_keys(["1f600"]).images[0]  # names borrowed from the flat set
    assert fluent[8, 8, 0] > 180 and fluent[8, 8, 1] < 100
    assert json.loads((tmp_path / "emoji_16.manifest.json").read_text())["sha256"] == manifest["sha256"]


def test_build_reports_missing_packages(tmp_path):
    (tmp_path / "pkgs").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks unpacked packages"):
        build(16, tmp_path / "x.npz", packages_dir=tmp_path / "pkgs")
