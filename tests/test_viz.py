"""viz helpers that notebooks used to write in cells: the moving average and the latent-walk figure."""

import matplotlib

matplotlib.use("Agg")

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
