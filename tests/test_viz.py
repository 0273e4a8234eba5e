"""viz helpers that notebooks used to write in cells: the moving average and the latent-walk figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors  # noqa: E402
import matplotlib.pyplot  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fewshot_lib import viz  # noqa: E402
from fewshot_lib.metrics.features import random_emoji_extractor  # noqa: E402
from fewshot_lib.models.stylegan2 import Generator  # noqa: E402


def test_smooth_is_a_moving_average_that_keeps_short_series():
    np.testing.assert_allclose(viz.smooth([1, 2, 3, 4, 5], k=2), [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(viz.smooth([1.0, 2.0], k=5), [1.0, 2.0])  # shorter than the window: as is
    assert len(viz.smooth(np.arange(500.0))) == 500 - 10 + 1  # default window: 2 % of the run
    np.testing.assert_allclose(viz.smooth([4.0, 6.0], k=0), [4.0, 6.0])  # k < 1 means no smoothing


def test_plot_walks_draws_one_strip_per_generator_and_walk_and_the_step_bars():
    torch.manual_seed(0)
    gens = {
        name: Generator(16, style_dim=8, n_mlp=1, channel_base=16 * 4, channel_max=4) for name in ("a", "b")
    }
    fig = viz.plot_walks(gens, n_walks=2, n_steps=4, extractor=random_emoji_extractor())
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[:, 0]] == ["a, walk 0", "a, walk 1"]
    bars = axes[0, -1].patches
    assert len(bars) == 2 * 4 and all(b.get_height() >= 0 for b in bars)  # 2 generators × 4 steps
    assert sorted(round(b.get_x() + b.get_width() / 2, 6) for b in bars)[:2] == [0.8, 1.2]  # grouped around 1


def test_label_columns_keeps_whole_labels():
    fig, axes = matplotlib.pyplot.subplots(1, 2)
    viz.label_columns(axes, ["snowman without snow", "man bouncing ball"], width=11)
    assert axes[0].get_title() == "snowman\nwithout\nsnow" and "…" not in axes[1].get_title()
    assert axes[1].get_title().replace("\n", " ") == "man bouncing ball"  # every word kept
    matplotlib.pyplot.close(fig)


def test_method_colours_are_fixed_per_name_and_distinct():
    a = viz.method_colors(["tgan", "freezed", "cdc"])
    b = viz.method_colors(["cdc", "tgan"])
    assert a["cdc"] == b["cdc"] and a["tgan"] == b["tgan"]  # same method, same colour, any order or subset
    c = viz.method_colors(["cdc", "my_method", "other"])
    assert len(set(c.values())) == 3  # unknown names get colours no listed method uses


def test_color_by_method_recolours_curves_and_bars_and_adds_legends():
    plt = matplotlib.pyplot
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3)
    viz.plot_curves({"mixdl": [1, 2], "stylegan2": [2, 1]}, ax=ax1)
    viz.color_by_method(ax1)
    got = {ln.get_label(): matplotlib.colors.to_hex(ln.get_color()) for ln in ax1.get_lines()}
    assert got == {"mixdl": viz.METHOD_COLORS["mixdl"], "stylegan2": viz.METHOD_COLORS["stylegan2"]}
    viz.plot_bars({"stylegan2": 1.0, "mixdl": 2.0}, ax=ax2)
    viz.color_by_method(ax2)
    faces = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax2.patches]
    assert faces == [viz.METHOD_COLORS["stylegan2"], viz.METHOD_COLORS["mixdl"]]
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == ["stylegan2", "mixdl"]
    viz.plot_curves({"cdc": [1, 2]}, ax=ax3)  # one curve: plot_curves draws no legend, this adds it
    viz.color_by_method(ax3)
    assert ax3.get_legend() is not None
    plt.close(fig)
