"""The embedded emoji dataset: load it, select from it, turn it into tensors.

Every image has five labels: ``key`` (the emoji's normalised codepoints — identical across styles, so the
same concept lines up between vendors), ``name``, ``category`` (9), ``subcategory`` (~95) and ``style``
(``noto``, ``twemoji``, ``fluent_flat``, ``fluent_3d``, ``fluent_hc``).

>>> data = load_emoji()                                # 32×32, all five styles
>>> faces = data.select(styles="noto", categories="Smileys & Emotion")
>>> x = faces.tensors()                                # [N, 3, 32, 32] float in [-1, 1]

Rebuild from the npm packages (needs npm and ``pip install resvg-py``)::

    python -m fewshot_lib.data.emoji build --size 64

Taught in: ``notebooks/00_data_and_setup.ipynb``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .. import artifacts

STYLE_NAMES = ("noto", "twemoji", "fluent_flat", "fluent_3d", "fluent_hc")
LABELS = ("key", "name", "category", "subcategory", "style")


def emoji_path(size: int = 32) -> Path:
    """Where the ``size``-px build lives (``data/emoji_<size>.npz``, registry name ``emoji_<size>``)."""
    return artifacts.get(f"emoji_{size}").path


@dataclass(frozen=True)
class EmojiData:
    """Images ``[N, H, W, 3] uint8`` (RGB on white) and one label array per field, all of length N."""

    images: np.ndarray
    key: np.ndarray
    name: np.ndarray
    category: np.ndarray
    subcategory: np.ndarray
    style: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray | Sequence[int]) -> "EmojiData":
        """Rows by integer index or boolean mask (labels follow the images)."""
        index = np.asarray(index)
        return EmojiData(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def select(
        self,
        styles: str | Iterable[str] | None = None,
        categories: str | Iterable[str] | None = None,
        subcategories: str | Iterable[str] | None = None,
        keys: str | Iterable[str] | None = None,
    ) -> "EmojiData":
        """Keep rows whose labels are in every given list (``None`` = no filter).

        Raises ``ValueError`` naming the unknown values when a filter matches nothing — a typo such as
        ``styles="fluent3d"`` should not silently give an empty dataset.
        """
        mask = np.ones(len(self), bool)
        for column, wanted in (
            ("style", styles),
            ("category", categories),
            ("subcategory", subcategories),
            ("key", keys),
        ):
            if wanted is None:
                continue
            wanted = [wanted] if isinstance(wanted, str) else list(wanted)
            values = getattr(self, column)
            unknown = sorted(set(wanted) - set(values.tolist()))
            if unknown:
                known = sorted(set(values.tolist()))
                hint = f" Known: {known[:12]}{' …' if len(known) > 12 else ''}"
                raise ValueError(f"Unknown {column} value(s) {unknown}.{hint}")
            mask &= np.isin(values, wanted)
        return self.subset(np.nonzero(mask)[0])

    def by_keys(self, keys: Sequence[str]) -> "EmojiData":
        """Exactly one row per key, in the order given (use on a single style to line styles up).

        Raises ``ValueError`` when a key is missing or appears more than once (several styles selected).
        """
        position: dict[str, int] = {}
        for i, k in enumerate(self.key.tolist()):
            if k in position:
                raise ValueError(f"key {k!r} appears more than once; select a single style first.")
            position[k] = i
        missing = [k for k in keys if k not in position]
        if missing:
            raise ValueError(f"{len(missing)} key(s) not in this selection, e.g. {missing[:3]}")
        return self.subset([position[k] for k in keys])

    def tensors(self) -> torch.Tensor:
        """All images as ``[N, 3, H, W]`` float32 in ``[-1, 1]`` (the GAN convention)."""
        return to_tensor(self.images)

    def counts(self, by: str = "subcategory") -> dict[str, int]:
        """Number of rows per value of one label, largest first."""
        values, counts = np.unique(getattr(self, by), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {str(values[i]): int(counts[i]) for i in order}

    def classes(self, by: str = "subcategory", min_count: int = 1) -> list[str]:
        """Sorted class names with at least ``min_count`` rows."""
        return sorted(c for c, n in self.counts(by).items() if n >= min_count)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``[N, H, W, 3] uint8`` → ``[N, 3, H, W]`` float32 in ``[-1, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor` (values outside ``[-1, 1]`` are clipped)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def load_emoji(
    size: int = 32,
    path: str | Path | None = None,
    styles=None,
    categories=None,
    subcategories=None,
    keys=None,
    verify: bool = False,
) -> EmojiData:
    """Load the emoji dataset (optionally filtered, see :meth:`EmojiData.select`).

    ``size`` 32 is committed in ``data/``; other sizes must be built first (the error says how).
    ``verify=True`` checks the file's sha256 against its manifest.
    """
    entry = artifacts.get(f"emoji_{size}")
    entry = entry.at(path) if path else entry
    path = entry.path
    if not path.is_file():
        raise FileNotFoundError(
            f"No emoji dataset at {path}. Build it with `{entry.rebuild}` (needs npm and `pip install "
            "resvg-py`); the 32×32 build ships in data/."
        )
    if verify:
        entry.check()
    data = read_emoji_file(path)
    if any(v is not None for v in (styles, categories, subcategories, keys)):
        data = data.select(styles, categories, subcategories, keys)
    return data


def read_emoji_file(path: str | Path, device: str | None = None) -> EmojiData:
    """Read an ``emoji_<size>.npz`` as it is (no filter, no check; ``device`` is unused: numpy arrays).

    The registry's loader for ``emoji_<size>`` (``fewshot_lib.artifacts.load("emoji_32")``).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = EmojiData(**{name: npz[name] for name in ("images",) + LABELS})
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a valid emoji dataset ({err}); rebuild it.") from err
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fewshot_lib.data.emoji", description="Build or inspect the multi-style emoji dataset."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download the npm packages and render the dataset")
    b.add_argument(
        "--size", type=int, default=32, help="image side in pixels (32 is committed; 64 on demand)"
    )
    b.add_argument("--out", type=Path, default=None, help="output .npz (default data/emoji_<size>.npz)")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--packages-dir", type=Path, default=None, help="use already unpacked npm packages")
    b.add_argument("--limit", type=int, default=None, help="first N emoji only (debugging)")
    i = sub.add_parser("info", help="print counts per style and category")
    i.add_argument("--size", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "build":
        from .emoji_build import build

        manifest = build(
            args.size, args.out or emoji_path(args.size), args.workers, args.packages_dir, args.limit
        )
        print(json.dumps(manifest, indent=2))
    else:
        data = load_emoji(args.size)
        print(f"{len(data)} images of {data.size}×{data.size}")
        print(json.dumps({"style": data.counts("style"), "category": data.counts("category")}, indent=2))


if __name__ == "__main__":
    main()
