"""Build the multi-style emoji dataset from npm packages (the embedded default data of fewshot-gen).

Why emoji? The same ~1,600 concepts ("grinning face", "rocket", ...) are drawn by several vendors in clearly
different *styles*, under permissive licences, with a two-level label (category / subcategory). That gives
every method in this package something it needs: a large source domain (one style), a 10-shot target domain
whose images *correspond* to source images (another style), and many classes for k-shot generation.

Pipeline (one function per step):

1. ``fetch_packages``  ``npm pack`` the packages into a temporary folder (the only network access).
2. ``read_metadata``   labels from ``emoji-datasource``'s ``emoji.json``; key = normalised codepoints.
3. ``*_sources``       per style: key → a PNG file or an SVG document.
4. ``frame_and_resize`` crop to the visible pixels, centre with a 4 % margin, composite on white, downsample.
5. ``build``           render every style in a process pool and write one compressed ``.npz``.

Only the 32×32 build is committed (``data/emoji_32.npz``); ``python -m fewshot_lib.data.emoji build --size 64``
makes the 64×64 one on demand (needs ``npm`` and ``pip install resvg-py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

BUILDER_VERSION = "1.0"
RENDER_SIZE = 256  # SVGs are rasterised at this size, then downsampled (sharper than rendering small)
MARGIN = 0.04  # empty border around the tight bounding box, as a fraction of its longer side
ALPHA_VISIBLE = 8  # alpha above this counts as "drawn" when cropping

# npm package → version. Pinned so a rebuild gives the same images.
PACKAGES = {
    "emoji-datasource-google": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "@iconify-json/fluent-emoji-flat": "1.2.6",
    "@iconify-json/fluent-emoji": "1.2.7",
    "@iconify-json/fluent-emoji-high-contrast": "1.2.6",
}

# style name → (package, licence, author) — the NOTICE file repeats this.
STYLES = {
    "noto": ("emoji-datasource-google", "Apache-2.0", "Google Noto Emoji"),
    "twemoji": ("emoji-datasource-twitter", "CC-BY-4.0", "Twitter/X Corp. and contributors (Twemoji)"),
    "fluent_flat": ("@iconify-json/fluent-emoji-flat", "MIT", "Microsoft Fluent Emoji (flat)"),
    "fluent_3d": ("@iconify-json/fluent-emoji", "MIT", "Microsoft Fluent Emoji (colour, 3-D look)"),
    "fluent_hc": (
        "@iconify-json/fluent-emoji-high-contrast",
        "MIT",
        "Microsoft Fluent Emoji (high contrast)",
    ),
}
EXCLUDED_CATEGORIES = ("Component",)  # skin-tone swatches, not emoji


def norm_key(sequence: str) -> str:
    """Normalise a codepoint sequence so every vendor's file name maps to the same key.

    Lower-case hex, ``-`` separated, variation selector FE0F dropped, leading zeros dropped:
    ``"0023-FE0F-20E3" → "23-20e3"``, ``"1F469-200D-1F52C" → "1f469-200d-1f52c"``.
    """
    cps = [int(c, 16) for c in sequence.lower().replace("_", "-").split("-") if c]
    return "-".join(format(c, "x") for c in cps if c != 0xFE0F)


# ------------------------------------------------------------------------------------------------ 1. fetch
def fetch_packages(dest: Path) -> dict[str, Path]:
    """``npm pack`` each package into ``dest`` and unpack it; returns package name → its ``package/`` folder."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    try:
        out = subprocess.run(
            ["npm", "pack", "--json", *specs], cwd=dest, check=True, capture_output=True, text=True
        ).stdout
    except FileNotFoundError as err:
        raise RuntimeError("Building the emoji dataset needs `npm` (Node.js) on PATH.") from err
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"`npm pack` failed (no access to the npm registry?):\n{err.stderr}") from err
    folders = {}
    for entry in json.loads(out):
        tgz = dest / entry["filename"]
        target = dest / tgz.stem
        with tarfile.open(tgz) as tar:
            tar.extractall(target, filter="data")
        folders[entry["name"]] = target / "package"
    return folders


# --------------------------------------------------------------------------------------------- 2. labels
@dataclass(frozen=True)
class EmojiEntry:
    key: str
    name: str
    category: str
    subcategory: str
    image_file: str  # file name used by the emoji-datasource PNG folders
    sort_order: int


def read_metadata(emoji_json: Path) -> list[EmojiEntry]:
    """Base emoji (no skin-tone variants) with their labels, sorted in Unicode order."""
    entries = []
    for row in json.loads(emoji_json.read_text()):
        if row["category"] in EXCLUDED_CATEGORIES:
            continue
        name = (row.get("name") or row.get("short_name") or "").lower()
        entries.append(
            EmojiEntry(
                norm_key(row["unified"]),
                name,
                row["category"],
                row["subcategory"],
                row["image"],
                int(row["sort_order"]),
            )
        )
    return sorted(entries, key=lambda e: e.sort_order)


# -------------------------------------------------------------------------------------------- 3. sources
def png_sources(package: Path, vendor: str, entries: list[EmojiEntry]) -> dict[str, Path]:
    """emoji-datasource ships one 64×64 RGBA PNG per emoji: ``img/<vendor>/64/<image>``."""
    folder = package / "img" / vendor / "64"
    return {e.key: folder / e.image_file for e in entries if (folder / e.image_file).is_file()}


def iconify_sources(package: Path, names_from: Path | None = None) -> dict[str, str]:
    """Iconify icon sets: ``chars.json`` maps codepoints → icon name, ``icons.json`` holds SVG bodies.

    The 3-D Fluent set has an empty ``chars.json``; its icon names equal the flat set's, so pass the flat
    package as ``names_from``. Aliases with ``hFlip`` are mirrored copies of their parent.
    """
    icons = json.loads((package / "icons.json").read_text())
    chars = json.loads(((names_from or package) / "chars.json").read_text())
    default_w, default_h = icons.get("width", 16), icons.get("height", 16)
    svgs = {}
    for codepoints, icon_name in chars.items():
        flip = False
        if icon_name not in icons["icons"]:
            alias = icons.get("aliases", {}).get(icon_name)
            if alias is None or alias.get("parent") not in icons["icons"]:
                continue
            flip, icon_name = bool(alias.get("hFlip")), alias["parent"]
        icon = icons["icons"][icon_name]
        w, h = icon.get("width", default_w), icon.get("height", default_h)
        body = icon["body"]
        if flip:
            body = f'<g transform="translate({w} 0) scale(-1 1)">{body}</g>'
        svgs[norm_key(codepoints)] = (
            f'<svg xmlns="http://www.w3.org/2000/svg" '
            f'xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}">{body}</svg>'
        )
    return svgs


# ------------------------------------------------------------------------------------ 4. frame + resize
def load_rgba(source: Path | str) -> Image.Image:
    """A PNG path or an SVG document → an RGBA image (SVGs rasterised at ``RENDER_SIZE``)."""
    if isinstance(source, Path):
        return Image.open(source).convert("RGBA")
    import resvg_py  # only needed when building

    png = resvg_py.svg_to_bytes(svg_string=source, width=RENDER_SIZE, height=RENDER_SIZE)
    return Image.open(io.BytesIO(bytes(png))).convert("RGBA")


def frame_and_resize(rgba: Image.Image, size: int) -> np.ndarray | None:
    """Crop to the drawn pixels, centre on a square with a margin, composite on white, resize.

    Framing by the tight box gives every vendor the same scale (vendors pad their artwork differently).
    Compositing happens at full resolution *before* downsampling, so edges blend into white, not black.
    Returns ``[size, size, 3] uint8`` or ``None`` when nothing is drawn.
    """
    alpha = np.asarray(rgba)[..., 3]
    ys, xs = np.nonzero(alpha > ALPHA_VISIBLE)
    if len(xs) == 0:
        return None
    crop = rgba.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    side = round(max(crop.size) * (1 + 2 * MARGIN))
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    canvas.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
    white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, canvas).convert("RGB")
    if side > size:
        rgb = rgb.resize((size, size), Image.LANCZOS, reducing_gap=2.0)
    else:
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def _render_one(args: tuple[Path | str, int]) -> np.ndarray | None:
    source, size = args
    try:
        return frame_and_resize(load_rgba(source), size)
    except Exception as err:  # one broken icon must not stop a 9k-image build
        log.warning("could not render %s: %s", str(source)[:60], err)
        return None


# ---------------------------------------------------------------------------------------------- 5. build
def build(
    size: int, out: Path, workers: int = 2, packages_dir: Path | None = None, limit: int | None = None
) -> dict:
    """Build ``emoji_<size>.npz`` and return its manifest (also written next to it as JSON)."""
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        pkgs = _package_folders(packages_dir) if packages_dir else fetch_packages(Path(tmp))
        entries = read_metadata(pkgs["emoji-datasource-google"] / "emoji.json")[:limit]
        flat = pkgs["@iconify-json/fluent-emoji-flat"]
        sources = {
            "noto": png_sources(pkgs["emoji-datasource-google"], "google", entries),
            "twemoji": png_sources(pkgs["emoji-datasource-twitter"], "twitter", entries),
            "fluent_flat": iconify_sources(flat),
            "fluent_3d": iconify_sources(pkgs["@iconify-json/fluent-emoji"], names_from=flat),
            "fluent_hc": iconify_sources(pkgs["@iconify-json/fluent-emoji-high-contrast"]),
        }
        images, rows, styles = [], [], []
        with ProcessPoolExecutor(workers) as pool:
            for style, table in sources.items():
                todo = [e for e in entries if e.key in table]
                rendered = pool.map(_render_one, [(table[e.key], size) for e in todo], chunksize=16)
                for entry, img in zip(todo, rendered):
                    if img is not None:
                        images.append(img)
                        rows.append(entry)
                        styles.append(style)
                log.info("%-12s %5d images", style, sum(s == style for s in styles))
    arrays = {
        "images": np.stack(images),
        "key": np.array([r.key for r in rows]),
        "name": np.array([r.name for r in rows]),
        "category": np.array([r.category for r in rows]),
        "subcategory": np.array([r.subcategory for r in rows]),
        "style": np.array(styles),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp_out, **arrays)
    tmp_out.replace(out)
    manifest = {
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
        "size": size,
        "builder_version": BUILDER_VERSION,
        "packages": PACKAGES,
        "images": len(rows),
        "counts_per_style": {s: int(sum(x == s for x in styles)) for s in STYLES},
        "concepts": len({r.key for r in rows}),
        "subcategories": len({r.subcategory for r in rows}),
        "build_seconds": round(time.time() - start, 1),
        "command": f"python -m fewshot_lib.data.emoji build --size {size}",
    }
    out.with_name(out.stem + ".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _package_folders(root: Path) -> dict[str, Path]:
    """Find already-unpacked packages (``<root>/<anything>/package/package.json``) by their npm name."""
    found = {}
    for pj in root.glob("*/package/package.json"):
        found[json.loads(pj.read_text())["name"]] = pj.parent
    missing = set(PACKAGES) - set(found)
    if missing:
        raise FileNotFoundError(f"{root} lacks unpacked packages: {sorted(missing)}")
    return found
