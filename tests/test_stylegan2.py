"""Tests of the StyleGAN2 model, losses, augmentation, checkpoint compatibility and the trainer (tiny nets)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from fewshot_lib import artifacts
from fewshot_lib.augment import AdaptiveAugment, diff_augment, rand_translation
from fewshot_lib.checkpoint import file_sha256
from fewshot_lib.models import stylegan2 as sg
from fewshot_lib.models import stylegan2_io as sgio
from fewshot_lib.models.helpers import frozen
from fewshot_lib.stylegan2_losses import (
    PathLengthState,
    d_logistic_loss,
    g_nonsaturating_loss,
    path_length_penalty,
    r1_penalty,
)
from fewshot_lib.train import GANTrainer, TrainConfig


TINY = dict(style_dim=32, n_mlp=2, channel_base=256, channel_max=32)


def tiny(size: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    return sg.Generator(size, **TINY), sg.Discriminator(size, channel_base=256, channel_max=32)


# ------------------------------------------------------------------------------------------------ blocks
def test_block_shapes():
    x = torch.randn(3, 8, 4, 4)
    w = torch.randn(3, 16)
    assert sg.ModulatedConv2d(8, 6, 3, 16)(x, w).shape == (3, 6, 4, 4)
    assert sg.ModulatedConv2d(8, 6, 3, 16, upsample=True)(x, w).shape == (3, 6, 8, 8)
    assert sg.StyledConv(8, 6, 3, 16, upsample=True)(x, w).shape == (3, 6, 8, 8)
    assert sg.ToRGB(8, 16)(x, w, torch.randn(3, 3, 2, 2)).shape == (3, 3, 4, 4)
    assert sg.ResBlock(8, 12)(torch.randn(2, 8, 16, 16)).shape == (2, 12, 8, 8)
    assert sg.Upsample([1, 3, 3, 1])(x).shape == (3, 8, 8, 8)
    assert sg.Downsample([1, 3, 3, 1])(x).shape == (3, 8, 2, 2)


def test_fir_resampling_preserves_constants():
    x = torch.ones(1, 2, 8, 8)
    up = sg.Upsample([1, 3, 3, 1])(x)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]), atol=1e-6)
    down = sg.Downsample([1, 3, 3, 1])(x)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]), atol=1e-6)


def test_generator_and_discriminator_shapes_and_features():
    G, D = tiny(32)
    z = torch.randn(5, 32)
    img, lat, feats = G(z, return_latents=True, return_features=True)
    assert img.shape == (5, 3, 32, 32) and lat.shape == (5, G.n_latent, 32) and G.n_latent == 8
    assert [f.shape[-1] for f in feats] == [4, 8, 8, 16, 16, 32, 32]
    logits, dfeats = D(img, return_features=True)
    assert logits.shape == (5, 1)
    assert [f.shape[-1] for f in dfeats[:-1]] == [32, 16, 8, 4, 4] and dfeats[-1].shape == (5, 32)
    with pytest.raises(ValueError, match="expects images"):
        D(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="power-of-two"):
        sg.Generator(24)


def naive_modulated_conv(conv: sg.ModulatedConv2d, x, style):
    """One sample at a time with an explicitly built kernel (the definition, no tricks)."""
    outs = []
    for b in range(x.shape[0]):
        s = conv.modulation(style[b : b + 1])[0]  # [I]
        w = conv.weight[0] * conv.scale * s[None, :, None, None]  # [O, I, k, k]
        if conv.demodulate:
            w = w / torch.sqrt((w**2).sum([1, 2, 3], keepdim=True) + 1e-8)
        if conv.upsample:
            o = F.conv_transpose2d(x[b : b + 1], w.transpose(0, 1), stride=2)
            o = conv.blur(o)
        else:
            o = F.conv2d(x[b : b + 1], w, padding=conv.padding)
        outs.append(o)
    return torch.cat(outs)


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_per_sample_loop(upsample, fused, demodulate):
    torch.manual_seed(0)
    conv = sg.ModulatedConv2d(6, 5, 3, 8, upsample=upsample, fused=fused, demodulate=demodulate)
    with torch.no_grad():
        conv.modulation.bias.add_(torch.randn(6) * 0.3)
    x, style = torch.randn(4, 6, 5, 5), torch.randn(4, 8)
    assert torch.allclose(conv(x, style), naive_modulated_conv(conv, x, style), atol=1e-5)


def test_demodulation_normalises_activations():
    torch.manual_seed(0)
    x = torch.randn(8, 128, 16, 16)
    style = torch.randn(8, 32)
    demod = sg.ModulatedConv2d(128, 128, 3, 32)
    plain = sg.ModulatedConv2d(128, 128, 3, 32, demodulate=False)
    plain.load_state_dict(demod.state_dict())
    with torch.no_grad():
        for m in (demod, plain):  # large styles: without demodulation the output scale follows them
            m.modulation.bias.fill_(5.0)
        s_demod, s_plain = demod(x, style).std().item(), plain(x, style).std().item()
    assert abs(s_demod - 1) < 0.1, s_demod
    assert s_plain > 3, s_plain


def test_minibatch_stddev_any_batch():
    D = tiny(16)[1]
    for b in (1, 2, 3, 5, 6, 7, 8):
        assert D(torch.randn(b, 3, 16, 16)).shape == (b, 1)
    assert sg.stddev_group_size(8) == 4 and sg.stddev_group_size(6) == 3 and sg.stddev_group_size(7) == 7
    # a batch of identical images has (almost) zero std feature
    x = torch.randn(1, 5, 4, 4).repeat(4, 1, 1, 1)
    assert sg.minibatch_stddev(x)[:, -1].abs().max() < 1e-3


def test_truncation_and_style_mixing():
    G, _ = tiny(16)
    z = torch.randn(2, 32)
    with pytest.raises(ValueError, match="truncation"):
        G(z, truncation=0.5)
    w_avg = G.mean_latent(256, generator=torch.Generator().manual_seed(0))
    _, lat = G(z, truncation=0.0, return_latents=True)
    assert torch.allclose(lat, w_avg.expand(2, G.n_latent, -1), atol=1e-5)
    z2 = torch.randn(2, 32)
    _, lat = G([z, z2], inject_index=3, return_latents=True)
    w1, w2 = G.mapping(z), G.mapping(z2)
    assert torch.allclose(lat[:, :3], w1[:, None].expand(-1, 3, -1)) and torch.allclose(
        lat[:, 3:], w2[:, None].expand(-1, G.n_latent - 3, -1)
    )
    with pytest.raises(ValueError, match="layers"):
        G(torch.randn(2, 3, 32), input_is_latent=True)


def test_forward_is_mapping_then_latents_then_synthesis():
    # forward keeps rosinality's signature and is exactly the composition of the three stages (same random
    # draws in the same order: the style-mixing crossover, then the per-layer noise)
    G, _ = tiny(16)
    G.mean_latent(64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, sg.NoiseInjection):
                m.weight.fill_(0.3)
    z, z2 = torch.randn(3, 32), torch.randn(3, 32)
    for kwargs in ({}, {"truncation": 0.7}, {"inject_index": None}, {"input_is_latent": True}):
        styles = [z, z2] if "inject_index" in kwargs else z
        torch.manual_seed(7)
        img, lat, feats = G(styles, return_latents=True, return_features=True, **kwargs)
        torch.manual_seed(7)
        latent = G.latents(styles, **kwargs)
        img2, feats2 = G.synthesis(latent, return_features=True)
        assert (
            torch.equal(lat, latent) and torch.equal(img, img2) and len(feats) == len(feats2) == G.num_layers
        )
        assert all(torch.equal(a, b) for a, b in zip(feats, feats2))
    assert torch.equal(G.latents(z), G.mapping(z)[:, None].expand(-1, G.n_latent, -1))
    assert G.synthesis(G.latents(z), randomize_noise=False).shape == (3, 3, 16, 16)
    assert G.truncate([z], 1.0) == [z]


def test_noise_gives_stochastic_detail_only_when_strength_nonzero():
    G, _ = tiny(16)
    z = torch.randn(2, 32)
    a, _ = G(z)
    b, _ = G(z)
    assert torch.equal(a, b)  # noise strengths start at 0
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, sg.NoiseInjection):
                m.weight.fill_(0.5)
    a, _ = G(z)
    b, _ = G(z)
    c, _ = G(z, randomize_noise=False)
    d, _ = G(z, randomize_noise=False)
    assert not torch.allclose(a, b) and torch.equal(c, d)


# ------------------------------------------------------------------------- rosinality checkpoint layout
def rosinality_generator_layout(
    size: int, style_dim: int, n_mlp: int, ch: dict[int, int]
) -> dict[str, tuple]:
    """Key → shape of a rosinality ``Generator`` state dict, written out from the reference notes (§3.2)."""
    keys: dict[str, tuple] = {}
    for i in range(1, n_mlp + 1):
        keys[f"style.{i}.weight"], keys[f"style.{i}.bias"] = (style_dim, style_dim), (style_dim,)
    keys["input.input"] = (1, ch[4], 4, 4)

    def styled(prefix, i, o, up):
        keys[f"{prefix}.conv.weight"] = (1, o, i, 3, 3)
        keys[f"{prefix}.conv.modulation.weight"], keys[f"{prefix}.conv.modulation.bias"] = (
            (i, style_dim),
            (i,),
        )
        if up:
            keys[f"{prefix}.conv.blur.kernel"] = (4, 4)
        keys[f"{prefix}.noise.weight"], keys[f"{prefix}.activate.bias"] = (1,), (o,)

    def to_rgb(prefix, i, up):
        keys[f"{prefix}.bias"] = (1, 3, 1, 1)
        keys[f"{prefix}.conv.weight"] = (1, 3, i, 1, 1)
        keys[f"{prefix}.conv.modulation.weight"], keys[f"{prefix}.conv.modulation.bias"] = (
            (i, style_dim),
            (i,),
        )
        if up:
            keys[f"{prefix}.upsample.kernel"] = (4, 4)

    styled("conv1", ch[4], ch[4], False)
    to_rgb("to_rgb1", ch[4], False)
    log_size = int(math.log2(size))
    in_ch = ch[4]
    for k, r in enumerate(range(3, log_size + 1)):
        out = ch[2**r]
        styled(f"convs.{2 * k}", in_ch, out, True)
        styled(f"convs.{2 * k + 1}", out, out, False)
        to_rgb(f"to_rgbs.{k}", out, True)
        in_ch = out
    for i in range((log_size - 2) * 2 + 1):
        r = 2 ** ((i + 5) // 2)
        keys[f"noises.noise_{i}"] = (1, 1, r, r)
    return keys


def rosinality_discriminator_layout(size: int, ch: dict[int, int]) -> dict[str, tuple]:
    keys: dict[str, tuple] = {"convs.0.0.weight": (ch[size], 3, 1, 1), "convs.0.1.bias": (ch[size],)}
    in_ch = ch[size]
    for i, r in enumerate(range(int(math.log2(size)), 2, -1), start=1):
        out = ch[2 ** (r - 1)]
        p = f"convs.{i}"
        keys.update(
            {
                f"{p}.conv1.0.weight": (in_ch, in_ch, 3, 3),
                f"{p}.conv1.1.bias": (in_ch,),
                f"{p}.conv2.0.kernel": (4, 4),
                f"{p}.conv2.1.weight": (out, in_ch, 3, 3),
                f"{p}.conv2.2.bias": (out,),
                f"{p}.skip.0.kernel": (4, 4),
                f"{p}.skip.1.weight": (out, in_ch, 1, 1),
            }
        )
        in_ch = out
    keys.update(
        {
            "final_conv.0.weight": (ch[4], ch[4] + 1, 3, 3),
            "final_conv.1.bias": (ch[4],),
            "final_linear.0.weight": (ch[4], ch[4] * 16),
            "final_linear.0.bias": (ch[4],),
            "final_linear.1.weight": (1, ch[4]),
            "final_linear.1.bias": (1,),
        }
    )
    return keys


def shapes(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_official_layout_and_parameter_counts():
    """Config-f at 256 px has 30,034,338 / 28,864,129 parameters and 135 / 50 entries (reference notes §1)."""
    G, D = sg.Generator(256), sg.Discriminator(256)
    assert sg.count_parameters(G) == 30_034_338 and len(G.state_dict()) == 135
    assert sg.count_parameters(D) == 28_864_129 and len(D.state_dict()) == 50
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    assert shapes(G) == rosinality_generator_layout(256, 512, 8, ch)
    assert shapes(D) == rosinality_discriminator_layout(256, ch)


def random_state(layout: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in layout.items()}


SMALL_CH = {4: 64, 8: 64, 16: 64, 32: 32}


def test_random_rosinality_state_dict_round_trips_strictly(tmp_path):
    g_layout = rosinality_generator_layout(32, 48, 3, SMALL_CH)
    d_layout = rosinality_discriminator_layout(32, SMALL_CH)
    g_ema, g, d = random_state(g_layout, 1), random_state(g_layout, 2), random_state(d_layout, 3)
    path = tmp_path / "train.pt"
    torch.save(
        {
            "g": g,
            "d": d,
            "g_ema": g_ema,
            "g_optim": {},
            "d_optim": {},
            "latent_avg": torch.randn(48),
            "args": argparse.Namespace(size=32),
            "ada_aug_p": 0.0,
        },
        path,
    )
    ck = sgio.load_rosinality(path)
    assert ck.g_ema.size == 32 and ck.g_ema.style_dim == 48 and ck.g_ema.n_mlp == 3
    assert ck.g_ema.channels == SMALL_CH
    for mine, ref in ((ck.g_ema, g_ema), (ck.g, g), (ck.d, d)):
        sd = mine.state_dict()
        assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
    assert ck.latent_avg.shape == (1, 48)
    # back out: our file loads again, and a CDC-style DataParallel ("module.") g_ema-only file too
    out = sgio.save_rosinality(tmp_path / "ours.pt", ck.g_ema, ck.g, ck.d, ck.latent_avg)
    again = sgio.load_rosinality(out)
    assert all(torch.equal(again.g_ema.state_dict()[k], g_ema[k]) for k in g_ema)
    torch.save({"g_ema": {f"module.{k}": v for k, v in g_ema.items()}}, tmp_path / "cdc.pt")
    cdc = sgio.load_rosinality(tmp_path / "cdc.pt")
    assert (
        cdc.g is None
        and cdc.d is None
        and torch.equal(cdc.g_ema.state_dict()["input.input"], g_ema["input.input"])
    )
    img, _ = cdc.g_ema(torch.randn(2, 48))
    assert img.shape == (2, 3, 32, 32)


def test_mismatched_or_corrupt_checkpoints_fail_clearly(tmp_path):
    g_layout = rosinality_generator_layout(32, 48, 3, SMALL_CH)
    state = random_state(g_layout, 0)
    G = sgio.generator_from_state(state)
    bad = dict(state)
    bad.pop("conv1.noise.weight")
    bad["extra.weight"] = torch.zeros(1)
    bad["input.input"] = torch.zeros(1, 32, 4, 4)
    with pytest.raises(ValueError) as err:
        sgio.load_state_strict(G, bad, "bad.pt['g']")
    msg = str(err.value)
    assert "conv1.noise.weight" in msg and "extra.weight" in msg and "input.input" in msg and "missing" in msg
    # a 16 px generator cannot take a 32 px state dict
    with pytest.raises(ValueError, match="missing|unexpected"):
        sgio.load_state_strict(sg.Generator(16, 48, 3, channel_base=1024, channel_max=64), state)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        sgio.load_rosinality(corrupt)
    with pytest.raises(FileNotFoundError):
        sgio.load_rosinality(tmp_path / "missing.pt")
    torch.save({"g_ema": state, "args": torch.nn.Identity()}, tmp_path / "pickled.pt")  # arbitrary object
    with pytest.raises(ValueError, match="trust_pickle"):
        sgio.load_rosinality(tmp_path / "pickled.pt")
    assert (
        sgio.load_rosinality(tmp_path / "pickled.pt", trust_pickle=True).g_ema is not None
    )  # trusted: loads
    sick = {k: (v.clone().fill_(float("nan")) if k == "conv1.conv.weight" else v) for k, v in state.items()}
    torch.save({"g_ema": sick, "args": torch.nn.Identity()}, tmp_path / "sick.pt")
    with pytest.raises(ValueError, match=r"non-finite.*conv1\.conv\.weight"):  # trusted is not healthy
        sgio.load_rosinality(tmp_path / "sick.pt", trust_pickle=True)
    torch.save({"d": {}}, tmp_path / "nog.pt")
    with pytest.raises(ValueError, match="g_ema"):
        sgio.load_rosinality(tmp_path / "nog.pt")


def test_export_and_load_generator(tmp_path):
    G, _ = tiny(16)
    path = sgio.export_generator(G, tmp_path / "m.pt", half=True, n_mean=64)
    G2 = sgio.load_generator(path)
    z = torch.randn(2, 32)
    a, _ = G(z, randomize_noise=False)
    b, _ = G2(z, randomize_noise=False)
    assert (a - b).abs().max() < 0.05  # fp16 weights
    assert G2.latent_avg.shape == (1, 32)


# ------------------------------------------------------------------------------------------------ losses
def test_losses_finite_r1_positive_and_pl_state():
    G, D = tiny(16)
    real = torch.randn(4, 3, 16, 16).requires_grad_(True)
    real_logits = D(real)
    fake, lat = G(torch.randn(4, 32), return_latents=True)
    fake_logits = D(fake)
    for v in (d_logistic_loss(real_logits, fake_logits), g_nonsaturating_loss(fake_logits)):
        assert torch.isfinite(v) and v > 0
    r1 = r1_penalty(real_logits, real)
    assert torch.isfinite(r1) and r1 > 0
    r1.backward()
    assert D.convs[0][0].weight.grad is not None and D.convs[0][0].weight.grad.abs().sum() > 0
    state = PathLengthState()
    pl, lengths = path_length_penalty(fake, lat, state)
    assert torch.isfinite(pl) and lengths.shape == (4,) and state.mean > 0
    # logistic loss: a perfect D has ~0 loss, a fooled one a large loss
    assert d_logistic_loss(torch.full((4, 1), 20.0), torch.full((4, 1), -20.0)) < 1e-6
    assert g_nonsaturating_loss(torch.full((4, 1), -20.0)) > 19
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(real_logits, real.detach())


# ------------------------------------------------------------------------------------------ augmentation
def test_diff_augment():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    y = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, p=0.0), x)
    with pytest.raises(ValueError, match="Unknown DiffAugment"):
        diff_augment(x, "colour")
    # translation moves content by whole pixels and fills with zeros
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 4, 4] = 1
    out = rand_translation(img, generator=torch.Generator().manual_seed(3))
    assert out.sum() == 1 and out.abs().max() == 1


def test_adaptive_augment_moves_p():
    ada = AdaptiveAugment(target=0.6, speed_images=100, interval=1)
    for _ in range(3):
        ada.update(torch.ones(10, 1))  # D overconfident on reals -> more augmentation
    assert ada.p == pytest.approx(0.3)
    for _ in range(5):
        ada.update(-torch.ones(10, 1))
    assert ada.p == 0.0


# ------------------------------------------------------------------------------------------------ trainer
def _trainer(run_dir, steps=4, **kw):
    G, D = tiny(16)
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = TrainConfig(steps=steps, batch=4, r1_every=2, pl_every=2, n_sample=4, ada_target=0.6, **kw)
    return GANTrainer(G, D, images, cfg, run_dir=run_dir)


def test_resume_is_bit_identical(tmp_path):
    full = _trainer(tmp_path / "a")
    full.train(show_progress=False)
    part = _trainer(tmp_path / "b")
    part.train(steps=2, show_progress=False)
    resumed = _trainer(tmp_path / "b")
    res = resumed.train(show_progress=False)
    assert res.steps == 4 and resumed.step == 4
    assert full.history == resumed.history
    for a, b in ((full.G, resumed.G), (full.D, resumed.D), (full.g_ema, resumed.g_ema)):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k
    assert full.pl_state.mean == resumed.pl_state.mean and full.pl_state.mean > 0
    assert res.checkpoint is not None and res.checkpoint.exists() and res.samples


def test_resume_with_a_new_learning_rate_uses_it(tmp_path):
    # A late-training lr decay is a resume with another --lr: the saved Adam moments come back, the lr is the
    # new config's (loading the optimiser state alone would silently restore the old one).
    _trainer(tmp_path, steps=2).train(show_progress=False)
    slower = _trainer(tmp_path, steps=3, lr=0.0005)
    slower.load(slower.checkpoint_path)
    same = _trainer(tmp_path, steps=3)
    same.load(same.checkpoint_path)
    for new, old in ((slower.g_optim, same.g_optim), (slower.d_optim, same.d_optim)):
        assert [g["lr"] for g in new.param_groups] == pytest.approx([g["lr"] / 4 for g in old.param_groups])
        moments = [s["exp_avg"] for s in new.state.values()]
        assert moments and all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, old.state.values()))
    assert slower.step == same.step == 2


def test_nan_is_detected(tmp_path):
    tr = _trainer(tmp_path, steps=2)
    with torch.no_grad():
        tr.G.to_rgb1.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        tr.train(show_progress=False)


def test_trainer_rejects_bad_inputs():
    G, D = tiny(16)
    with pytest.raises(ValueError, match="px"):
        GANTrainer(G, D, torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        GANTrainer(G, D, torch.zeros(4, 16, 16))
    with pytest.raises(ValueError, match="batch"):
        TrainConfig(batch=0)


# ---------------------------------------------------------------------------------------------- projector
def test_projector_w_and_w_plus_reduce_error():
    from fewshot_lib.projector import project

    G, _ = tiny(16)
    with torch.no_grad():
        target, _ = G(torch.randn(2, 32, generator=torch.Generator().manual_seed(5)), randomize_noise=False)
        start, _ = G(G.mean_latent(512).expand(2, -1), input_is_latent=True, randomize_noise=False)
    start_mse = (start - target).pow(2).flatten(1).mean(1)
    w = project(G, target, steps=60, n_mean=512)
    wp = project(
        G,
        target,
        steps=60,
        w_plus=True,
        n_mean=512,
        optimize_noise=True,
        feature_loss=lambda x, y: (x - y).abs().flatten(1).mean(1),
    )
    assert w.latents.shape == (2, 32) and wp.latents.shape == (2, G.n_latent, 32)
    assert (w.pixel_mse < 0.5 * start_mse).all(), (w.pixel_mse, start_mse)
    assert (wp.pixel_mse < 0.5 * start_mse).all()
    assert all(p.requires_grad for p in G.parameters())
    with pytest.raises(ValueError, match="target"):
        project(G, torch.zeros(1, 3, 8, 8))


def test_load_source_model_checks_sha256(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train_source_model"):
        artifacts.load_source_model("tiny")
    G, _ = tiny(16)
    ckpt, manifest = artifacts.source_model_paths("tiny")
    sgio.export_generator(G, ckpt, n_mean=64)
    manifest.write_text(json.dumps({"sha256": file_sha256(ckpt)}))
    G2 = artifacts.load_source_model("tiny")
    assert G2.size == 16 and not G2.training
    manifest.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ValueError, match="sha256"):
        artifacts.load_source_model("tiny")


def test_shipped_source_model_if_present():
    """A shipped model (when committed) loads, matches its manifest and makes varied 32 px images; its
    architecture is SOURCE_MODEL_CONFIG and its discriminator is from the same step."""

    name = "stylegan2_noto32"
    if not artifacts.source_model_available(name):
        pytest.skip(f"no {name} in data/checkpoints")
    G = artifacts.load_source_model(name)
    assert {k: G.config[k] for k in sg.SOURCE_MODEL_CONFIG} == sg.SOURCE_MODEL_CONFIG
    imgs = sg.sample(G, 16, seed=0)
    assert imgs.shape == (16, 3, 32, 32) and torch.isfinite(imgs).all()
    assert (imgs[:8] - imgs[8:]).abs().mean() > 0.05  # not one image repeated
    D = artifacts.load_source_discriminator(name)
    assert D(imgs).shape == (16, 1)


def test_hooks_are_called_and_extra_modules_trained(tmp_path):
    from fewshot_lib.train import GANHook

    class Probe(GANHook):
        def __init__(self):
            self.head = torch.nn.Linear(3, 1)
            self.calls = {"z": 0, "disc": 0, "d": 0, "g": 0}
            self.counter = 0

        def sample_z(self, trainer, step, batch):
            self.calls["z"] += 1
            return [torch.randn(batch, 32, generator=trainer.gen)]

        def discriminate(self, D, images, step, phase):
            self.calls["disc"] += 1
            return D(images)

        def d_extra(self, ctx):
            self.calls["d"] += 1
            return self.head(ctx.real.mean((2, 3))).pow(2).mean()

        def g_extra(self, ctx):
            self.calls["g"] += 1
            assert ctx.fake is not None and ctx.fake_logits is not None
            return None

        def d_modules(self):
            return [self.head]

        def state_dict(self):
            return {"counter": self.counter + 1}

        def load_state_dict(self, state):
            self.counter = state["counter"]

    G, D = tiny(16)
    hook = Probe()
    before = hook.head.weight.detach().clone()
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    tr = GANTrainer(
        G,
        D,
        images,
        TrainConfig(steps=2, batch=4, r1_gamma=0, pl_weight=0, augment=None),
        run_dir=tmp_path,
        hook=hook,
    )
    tr.train(show_progress=False)
    assert hook.calls["z"] == 4 and hook.calls["d"] == 2 and hook.calls["g"] == 2 and hook.calls["disc"] == 6
    assert not torch.equal(before, hook.head.weight)  # optimised with D's Adam
    hook2 = Probe()
    tr2 = GANTrainer(
        *tiny(16),
        images,
        TrainConfig(steps=2, batch=4, r1_gamma=0, pl_weight=0, augment=None),
        run_dir=tmp_path,
        hook=hook2,
    )
    tr2.load(tmp_path / "checkpoint.pt")
    assert hook2.counter == 1 and torch.equal(hook2.head.weight, hook.head.weight)


def test_frozen_restores_each_flag_even_after_an_error():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net[0].weight.requires_grad_(False)
    before = [p.requires_grad for p in net.parameters()]
    x = torch.randn(3, 2, requires_grad=True)
    with pytest.raises(RuntimeError, match="boom"):
        with frozen(net):
            net(x).sum().backward()
            assert x.grad is not None and all(p.grad is None for p in net.parameters())
            raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == before == [False, True, True, True]


def test_trainer_keeps_deliberately_frozen_weights_frozen():
    # The trainer freezes D only inside the G step: a D layer the user froze stays frozen (and unchanged)
    # through training, while the rest of D and all of G learn.
    G, D = tiny(16)
    first = D.convs[0][0].weight
    first.requires_grad_(False)
    before_d, before_g = first.detach().clone(), G.to_rgb1.conv.weight.detach().clone()
    last = next(D.final_linear.parameters())
    before_last = last.detach().clone()
    tr = GANTrainer(
        G,
        D,
        torch.rand(8, 3, 16, 16) * 2 - 1,
        TrainConfig(steps=2, batch=4, sample_every=0, checkpoint_every=0, augment=""),
    )
    tr.train(steps=2, resume=False, show_progress=False)
    assert not first.requires_grad and torch.equal(first, before_d)
    assert all(p.requires_grad for n, p in D.named_parameters() if p is not first)
    assert not torch.equal(last, before_last) and not torch.equal(G.to_rgb1.conv.weight, before_g)
