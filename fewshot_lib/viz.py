"""Figures: image grids, sheets with row/column labels, training curves (and their smoothing), latent walks.

All functions take images as ``[N, 3, H, W]`` tensors in ``[-1, 1]`` (or ``[N, H, W, 3]`` uint8 arrays) so that
generator outputs and dataset images can be shown the same way. Plotting functions draw on a matplotlib
axis and return it; the notebook ends the cell with ``plt.show()``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from .data.emoji import to_uint8


def _as_uint8(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        return to_uint8(images)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected a [-1,1] tensor or a uint8 array, got {images.dtype}")
    return images


def image_grid(images, nrow: int = 8, pad: int = 1, pad_value: int = 200) -> np.ndarray:
    """Tile ``N`` images into one ``[rows·(H+pad)+pad, nrow·(W+pad)+pad, 3]`` uint8 array."""
    imgs = _as_uint8(images)
    n, h, w, _ = imgs.shape
    nrow = max(1, min(nrow, n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), pad_value, np.uint8)
    for i, img in enumerate(imgs):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = (
            img
        )
    return grid


def show_grid(images, nrow: int = 8, title: str | None = None, ax=None, scale: float = 0.45):
    """Show images as a grid on ``ax`` (a new figure sized to the grid when ``None``)."""
    grid = image_grid(images, nrow)
    if ax is None:
        h, w = grid.shape[:2]
        _, ax = plt.subplots(figsize=(max(2.0, w / 32 * scale * 1.6), max(1.2, h / 32 * scale * 1.6)), dpi=80)
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _wrap_label(text: str, width: int = 11, lines: int = 2) -> str:
    """A column label on at most ``lines`` short lines (whole words; "…" only if it still does not fit)."""
    import textwrap

    parts = textwrap.wrap(str(text), width) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: width - 1] + "…"
    return "\n".join(parts)


def show_sheet(
    rows: Sequence,
    row_labels: Sequence[str],
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    scale: float = 0.7,
):
    """A labelled sheet: one row per entry of ``rows`` (each ``[M, 3, H, W]`` or uint8), same column count.

    Used for correspondence sheets (rows = styles or methods, columns = the same emoji / latent).
    """
    rows = [_as_uint8(r) for r in rows]
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(n_cols * scale, len(rows) * scale + 0.3), dpi=80, squeeze=False
    )
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
            if j == 0:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
            if i == 0 and col_labels is not None and j < len(col_labels):
                # narrow cells (scale < 1) only fit a small font; wider ones get the row labels' size
                ax.set_title(_wrap_label(col_labels[j]), fontsize=8 if scale >= 1 else 6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_grid(images, path: str | Path, nrow: int = 8, upscale: int = 2) -> Path:
    """Save a grid as PNG (nearest-neighbour ``upscale`` so 32-px images stay visible)."""
    grid = image_grid(images, nrow)
    img = Image.fromarray(grid)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    title: str | None = None,
    xlabel: str = "step",
    ylabel: str = "",
    ax=None,
    x: Sequence[float] | None = None,
    logy: bool = False,
):
    """Plot several named curves on one axis (e.g. losses or a metric over training)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3), dpi=80)
    for name, ys in curves.items():
        xs = x if x is not None else range(len(ys))
        ax.plot(list(xs)[: len(ys)], list(ys), label=name)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return ax


def plot_bars(
    values: Mapping[str, float],
    errors: Mapping[str, float] | None = None,
    title: str | None = None,
    ylabel: str = "",
    ax=None,
):
    """A bar chart of named values with optional error bars (e.g. mean ± std over seeds)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3), dpi=80)
    names = list(values)
    ax.bar(
        names,
        [values[n] for n in names],
        yerr=[errors[n] for n in names] if errors else None,
        capsize=4,
        color="#4c72b0",
    )
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    for label in ax.get_xticklabels():  # long names slanted and anchored at their bar, so none overlap
        label.set_rotation(35)
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    return ax


def smooth(values: Sequence[float], k: int | None = None) -> np.ndarray:
    """Moving average over ``k`` points (default: 2 % of the series, at least 1) for noisy training curves.

    Only full windows are kept (``len - k + 1`` points); a series shorter than ``k`` comes back unchanged, so a
    short smoke run still draws its raw values instead of nothing.
    """
    v = np.asarray(values, dtype=float)
    k = max(1, int(k if k is not None else len(v) // 50))
    return np.convolve(v, np.ones(k) / k, mode="valid") if len(v) >= k else v


def plot_walks(
    generators: Mapping[str, torch.nn.Module],
    n_walks: int = 3,
    z_seed: int = 7,
    extractor="emoji",
    n_steps: int = 10,
):
    """Latent walks, "staircase or ramp": one row per walk; per generator its image strip along
    ``lerp(w0, w1, t)``, and in the last column the LPIPS of every step as grouped bars (one colour per generator).

    Every generator walks between the mappings of the same seeded ``z`` pairs (``z_seed``); returns the figure.
    """
    from .metrics.generator import interpolation_walk

    first = next(iter(generators.values()))
    colors = method_colors(list(generators))  # the same colour per method as every other figure
    zs = torch.randn(2, n_walks, first.style_dim, generator=torch.Generator().manual_seed(z_seed))
    width = 0.8 / len(generators)
    fig, axes = plt.subplots(
        n_walks,
        len(generators) + 1,
        figsize=(13, 1.25 * n_walks + 0.4),
        dpi=80,
        gridspec_kw=dict(width_ratios=[5] * len(generators) + [2.2]),
        squeeze=False,
    )
    for row in range(n_walks):
        for col, (name, g) in enumerate(generators.items()):
            dev = next(g.parameters()).device
            with torch.no_grad():
                w0, w1 = (g.mapping(zs[k, row : row + 1].to(dev))[0] for k in (0, 1))
            strip, step_d = interpolation_walk(
                g, w0, w1, n_steps=n_steps, extractor=extractor
            )  # [n+1, 3, H, W]
            show_grid(strip, nrow=n_steps + 1, title=f"{name}, walk {row}", ax=axes[row, col])
            axes[row, -1].bar(
                np.arange(1, n_steps + 1) + width * (col - (len(generators) - 1) / 2),
                step_d.numpy(),
                width=width,
                label=name,
                color=colors[name],
            )
        axes[row, -1].set_ylabel("step LPIPS", fontsize=7)
        axes[row, -1].tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7)
    axes[-1, -1].set_xlabel("step of the walk", fontsize=8)
    fig.tight_layout()
    return fig


def label_columns(axes, labels: Sequence[str], width: int = 11, fontsize: int = 6) -> None:
    """Title each axis of ``axes`` with its whole label, wrapped on word boundaries and never cut.

    ``show_sheet`` keeps column labels to two lines (with "…" beyond); where the names must be read in full
    (emoji names on a correspondence sheet), call ``show_sheet`` without ``col_labels``, then this on its first
    row of axes and ``fig.tight_layout()`` again. A word longer than ``width`` stays whole on its own line.
    """
    import textwrap

    for ax, text in zip(axes, labels):
        lines = textwrap.wrap(str(text), width, break_long_words=False, break_on_hyphens=False) or [""]
        ax.set_title("\n".join(lines), fontsize=fontsize)


# One fixed colour per method name, so a method keeps its colour in every figure of a notebook (curves, bars,
# walks) whatever order or subset a figure draws. Unknown names get the next unused colour of the default cycle.
METHOD_COLORS = {
    "source": "#7f7f7f",
    "tgan": "#1f77b4",
    "freezed": "#ff7f0e",
    "cdc": "#2ca02c",
    "stylegan2": "#1f77b4",
    "diffaugment": "#ff7f0e",
    "mixdl_g": "#9467bd",
    "mixdl": "#2ca02c",
    "lofgan": "#2ca02c",
    "global_fusion": "#ff7f0e",
    "copy_shots": "#7f7f7f",
    "lso": "#d62728",
    "inversion_finetune": "#9467bd",
    "inversion_only": "#8c564b",
    "real held-out": "#7f7f7f",
}


def method_colors(names: Sequence[str]) -> dict[str, str]:
    """``{name: colour}`` for ``names``: the fixed colour of a known method (``METHOD_COLORS``), else the next
    colour of matplotlib's default cycle that no other name of ``names`` uses."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    taken = {METHOD_COLORS[n] for n in names if n in METHOD_COLORS}
    spare = iter([c for c in cycle if c not in taken] + cycle)
    return {n: METHOD_COLORS[n] if n in METHOD_COLORS else next(spare) for n in names}


def color_by_method(ax, colors: Mapping[str, str] | None = None):
    """Recolour what ``plot_curves`` / ``plot_bars`` / ``plot_walks`` drew on ``ax`` by method name: lines by their
    label, bars by their label or x tick label; redraws the legend, adding one to a bar chart.

    ``colors`` defaults to ``method_colors`` of the names found. Returns ``ax``.
    """
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    bar_groups = [c for c in ax.containers if hasattr(c, "patches")]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    names = [ln.get_label() for ln in lines] + [
        g.get_label() for g in bar_groups if g.get_label() and not g.get_label().startswith("_")
    ]
    single_bars = len(bar_groups) == 1 and bar_groups[0].get_label().startswith("_")
    if single_bars:
        names += ticks[: len(bar_groups[0].patches)]
    colors = dict(colors) if colors is not None else method_colors(list(dict.fromkeys(names)))
    for ln in lines:
        if ln.get_label() in colors:
            ln.set_color(colors[ln.get_label()])
    for group in bar_groups:
        if single_bars:  # one bar per method, named by the x ticks
            for patch, name in zip(group.patches, ticks):
                if name in colors:
                    patch.set_facecolor(colors[name])
        elif group.get_label() in colors:
            for patch in group.patches:
                patch.set_facecolor(colors[group.get_label()])
    if single_bars:
        patches = [p for p, n in zip(bar_groups[0].patches, ticks) if n in colors]
        ax.legend(patches, [n for n in ticks if n in colors], fontsize=7)
    elif names:  # one named curve gets a legend too: the colour must say which method it is
        ax.legend(fontsize=7)
    return ax
