"""Tests for fewshot_lib.methods.mixdl: coefficients, mixing in W, hand-computed losses, the D head, a smoke run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from fewshot_lib.methods import mixdl as M
from fewshot_lib.metrics import generator as GM
from fewshot_lib.models.stylegan2 import Discriminator, Generator


def tiny_models(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    g = Generator(16, style_dim=16, n_mlp=2, channel_base=16 * 8, channel_max=8)
    d = Discriminator(16, channel_base=16 * 8, channel_max=8)
    return g, d


# ----------------------------------------------------------------------------------------------- coefficients
@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_dirichlet_rows_are_on_the_simplex(alpha):
    c = M.dirichlet_coefficients(6, 4, alpha, torch.Generator().manual_seed(0))
    assert c.shape == (6, 4) and c.dtype == torch.float32
    assert (c > 0).all()
    torch.testing.assert_close(c.sum(1), torch.ones(6))


def test_dirichlet_is_seeded_and_concentration_matters():
    a = M.dirichlet_coefficients(4, 4, 1.0, torch.Generator().manual_seed(3))
    b = M.dirichlet_coefficients(4, 4, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # α → 0: nearly one-hot rows; α large: rows near the centre 1/K
    sharp = M.dirichlet_coefficients(2000, 4, 0.05, torch.Generator().manual_seed(0))
    flat = M.dirichlet_coefficients(2000, 4, 50.0, torch.Generator().manual_seed(0))
    assert sharp.max(1).values.mean() > 0.9
    assert (flat - 0.25).abs().max() < 0.25 and flat.max(1).values.mean() < 0.35
    # α = 1 is uniform on the simplex: each coordinate has mean 1/K and variance (K-1)/(K²(K+1)) = 3/80
    uni = M.dirichlet_coefficients(20000, 4, 1.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(uni.mean(0), torch.full((4,), 0.25), atol=0.01, rtol=0)
    assert abs(float(uni[:, 0].var()) - 3 / 80) < 0.003


@pytest.mark.parametrize(
    "kwargs", [dict(n_mix=0, n_anchors=4), dict(n_mix=2, n_anchors=1), dict(n_mix=2, n_anchors=3, alpha=0.0)]
)
def test_dirichlet_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        M.dirichlet_coefficients(**kwargs)


# ----------------------------------------------------------------------------------------------- mixing in W
def test_mix_latents_shapes_and_vertices():
    w = torch.randn(4, 8)
    c = M.dirichlet_coefficients(3, 4, 1.0, torch.Generator().manual_seed(0))
    assert M.mix_latents(w, c).shape == (3, 8)
    # a one-hot coefficient row returns that anchor; the centre returns the mean
    onehot = torch.eye(4)[[2]]
    torch.testing.assert_close(M.mix_latents(w, onehot), w[[2]])
    torch.testing.assert_close(M.mix_latents(w, torch.full((1, 4), 0.25)), w.mean(0, keepdim=True))


def test_mix_latents_refuses_the_broadcast_latent_that_crashes_the_reference():
    g, _ = tiny_models()
    z = torch.randn(4, 16)
    _, broadcast = g(z, return_latents=True)  # [4, n_latent, 16]
    c = M.dirichlet_coefficients(4, 4)
    with pytest.raises(ValueError, match="mapping outputs"):
        M.mix_latents(broadcast, c)
    with pytest.raises(ValueError, match="coeffs"):
        M.mix_latents(g.mapping(z), torch.ones(4, 3) / 3)


# ----------------------------------------------------------------------------------------------- losses
@pytest.mark.filterwarnings("ignore:reduction")
def test_distance_loss_equals_hand_computed_value():
    # mixup features m and two anchors a1, a2 in R²; cosines written out by hand
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = torch.tensor([[3.0, 4.0]])  # cos to a1 = 0.6, to a2 = 0.8
    c = torch.tensor([[0.7, 0.3]])
    p1 = math.exp(0.6) / (math.exp(0.6) + math.exp(0.8))
    p = [p1, 1 - p1]
    t1 = math.exp(0.7) / (math.exp(0.7) + math.exp(0.3))  # softmax of the coefficients (reference)
    t = [t1, 1 - t1]
    kl = sum(t[j] * math.log(t[j] / p[j]) for j in range(2))
    # reduction "mean" (nn.KLDivLoss default) divides the sum by B·K = 2
    loss = M.mixup_distance_loss(m, a, c)
    assert abs(float(loss) - kl / 2) < 1e-6
    assert abs(float(M.mixup_distance_loss(m, a, c, reduction="batchmean")) - kl) < 1e-6
    # the paper's target: the coefficients themselves
    kl_paper = sum(c[0, j].item() * math.log(c[0, j].item() / p[j]) for j in range(2))
    assert abs(float(M.mixup_distance_loss(m, a, c, target="coefficients")) - kl_paper / 2) < 1e-6
    # and it is nn.KLDivLoss(reduction="mean") of the reference
    ref = nn.KLDivLoss()(torch.log(torch.tensor([p])), torch.tensor([t]))
    assert abs(float(loss) - float(ref)) < 1e-6


def test_layerwise_logits_use_each_mixups_own_layer():
    torch.manual_seed(0)
    mix = [torch.randn(3, 2, 4, 4), torch.randn(3, 5, 2, 2), torch.randn(3, 1, 8, 8)]
    anc = [torch.randn(4, 2, 4, 4), torch.randn(4, 5, 2, 2), torch.randn(4, 1, 8, 8)]
    layers = torch.tensor([2, 0, 2])
    logits = M.layerwise_mixup_logits(mix, anc, layers)
    assert logits.shape == (3, 4)
    for i, layer in enumerate(layers.tolist()):
        expected = torch.nn.functional.cosine_similarity(mix[layer][i].flatten()[None], anc[layer].flatten(1))
        torch.testing.assert_close(logits[i], expected)


def test_sample_mixup_layers_excludes_first_and_last():
    layers = M.sample_mixup_layers(1000, 7, torch.Generator().manual_seed(0))
    assert layers.min() == 1 and layers.max() == 5


def test_generator_loss_is_zero_only_when_similarities_match_the_target_and_has_gradients():
    g, _ = tiny_models()
    c = M.dirichlet_coefficients(4, 4, 1.0, torch.Generator().manual_seed(0))
    w = g.mapping(torch.randn(4, 16))
    _, _, fa = g(w, input_is_latent=True, return_features=True)
    _, _, fm = g(M.mix_latents(w, c), input_is_latent=True, return_features=True)
    layers = M.sample_mixup_layers(4, len(fa), torch.Generator().manual_seed(0))
    loss = M.generator_distance_loss(fm, fa, c, layers)
    assert loss.item() > 0
    loss.backward()
    assert g.style[1].weight.grad is not None and g.style[1].weight.grad.abs().sum() > 0


def test_projection_head_trains():
    """The D distance loss falls when the projection head (and D) are optimised on fixed images."""
    _, d = tiny_models(1)
    head = M.ProjectionHead(8)
    torch.manual_seed(0)
    anchors, mixes = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    c = M.dirichlet_coefficients(4, 4, 0.3, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(list(head.parameters()) + list(d.parameters()), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = M.discriminator_distance_loss(d, head, anchors, mixes, c)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_target_name():
    with pytest.raises(ValueError, match="target"):
        M.target_distribution(torch.ones(1, 2) / 2, "paper")


# ----------------------------------------------------------------------------------------------- with the trainer
@pytest.mark.parametrize("use_d", [True, False])
def test_short_training_run_with_the_hook(use_d, tmp_path):
    from fewshot_lib.train import GANTrainer, TrainConfig

    g, d = tiny_models()
    images = torch.rand(10, 3, 16, 16) * 2 - 1
    hook = M.MixDLHook(d, M.MixDLConfig(use_d=use_d))
    cfg = TrainConfig(steps=6, batch=4, augment=None, pl_every=4, r1_every=4, seed=0)
    trainer = GANTrainer(g, d, images, cfg, run_dir=tmp_path, hook=hook)
    head_before = hook.head.linear.weight.detach().clone()
    result = trainer.train(show_progress=False)
    h = result.history
    assert result.steps == 6 and len(h["g_loss"]) == 6
    assert len(h["mixdl_g_dist"]) == 3  # steps 0, 2, 4
    assert all(math.isfinite(v) and v >= 0 for v in h["mixdl_g_dist"])
    if use_d:
        assert len(h["mixdl_d_dist"]) == 3 and len(h["mixdl_g_mix"]) == 3
        assert not torch.equal(head_before, hook.head.linear.weight)  # the head is optimised with D
    else:
        assert "mixdl_d_dist" not in h
        assert torch.equal(head_before, hook.head.linear.weight)
    # the checkpoint holds the hook's modules and resumes
    ck = torch.load(result.checkpoint, weights_only=True)
    assert len(ck["hook_modules"]["d"]) == (2 if use_d else 0)
    assert ck["hook"]["config"]["use_d"] is use_d


def test_discriminate_switches_to_patches_on_mixup_steps_only():
    _, d = tiny_models()
    hook = M.MixDLHook(d, M.MixDLConfig(patch_resolution=8))
    x = torch.randn(4, 3, 16, 16)
    assert hook.discriminate(d, x, step=0, phase="d").shape == (4, 1, 8, 8)
    assert hook.discriminate(d, x, step=1, phase="d").shape == (4, 1)
    g_only = M.MixDLHook(d, M.MixDLConfig(use_d=False))
    assert g_only.discriminate(d, x, step=0, phase="d").shape == (4, 1)


@pytest.mark.parametrize(
    "kwargs",
    [dict(mixup_every=0), dict(lambda_g=-1.0), dict(n_anchors=1), dict(alpha=0.0), dict(target="paper")],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        M.MixDLConfig(**kwargs)


def test_variants_change_one_thing_each():
    _, d = tiny_models()
    assert M.variant_hook("stylegan2", d) == (None, None)
    assert M.variant_hook("diffaugment", d) == (None, M.DIFFAUGMENT_POLICY)
    g_only, aug = M.variant_hook("mixdl_g", d, M.MixDLConfig(lambda_g=5.0))
    assert aug is None and not g_only.config.use_d and g_only.config.lambda_g == 5.0
    full, aug = M.variant_hook("mixdl", d)
    assert aug is None and full.config.use_d
    with pytest.raises(ValueError, match="variant"):
        M.variant_hook("mixup", d)


def test_interpolation_walk_endpoints_and_step_distances():
    from fewshot_lib.metrics.features import random_emoji_extractor

    g, _ = tiny_models()
    w = g.mapping(torch.randn(2, 16))
    images, steps = GM.interpolation_walk(g, w[0], w[1], n_steps=4, extractor=random_emoji_extractor())
    assert images.shape == (5, 3, 16, 16) and steps.shape == (4,) and (steps >= 0).all()
    synth = GM.fixed_noise_synthesis(g)
    torch.testing.assert_close(images[0], synth(w[:1])[0])
    torch.testing.assert_close(images[-1], synth(w[1:])[0])
