"""LoFGAN: the local fusion module, the image-level loss target, the D/G step, resume, data splits, .npy presets."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from fewshot_lib.data.fewshot import EpisodeSampler
from fewshot_lib.data.npy_format import PRESETS, load_npy_classes, load_preset, npy_unseen_pools
from fewshot_lib.methods.lofgan import (
    LoFGANConfig,
    LoFGANTrainer,
    class_logit_gradient_penalty,
    generate,
    g_step,
    global_reconstruction_loss,
    local_reconstruction_loss,
    local_target,
    lr_at,
    thumbnails,
    train_step,
)
from fewshot_lib.models.lofgan import (
    GlobalFusion,
    LocalFusionModule,
    LoFGANDiscriminator,
    LoFGANGenerator,
    PenaltyConv2d,
    base_first_order,
    local_matching,
    local_replacement,
    local_selection,
    n_downsamplings,
    random_alpha,
)


def _feats(b=2, k=3, c=5, h=4, seed=0):
    return torch.randn(b, k, c, h, h, generator=torch.Generator().manual_seed(seed))


def test_lfm_eta_zero_returns_base():
    f = _feats()
    base_index = torch.tensor([2, 0])
    fused, rec = LocalFusionModule(0.5)(f, rate=0.0, base_index=base_index)
    assert rec.positions.shape == (2, 0)
    assert torch.equal(fused, f[torch.arange(2), base_index])


def test_lfm_alpha_base_one_returns_base_and_full_rate_mixes():
    f = _feats()
    base_index = torch.tensor([1, 2])
    alpha = torch.zeros(2, 3)
    alpha[torch.arange(2), base_index] = 1.0
    fused, rec = LocalFusionModule(1.0)(f, alpha=alpha, base_index=base_index)
    assert rec.positions.shape == (2, 16)
    assert torch.allclose(fused, f[torch.arange(2), base_index])
    fused_mixed, _ = LocalFusionModule(1.0)(f, base_index=base_index)  # random α: every position changes
    assert not torch.allclose(fused_mixed, f[torch.arange(2), base_index])


def test_lfm_steps_by_hand():
    g = torch.Generator().manual_seed(1)
    pos = local_selection(3, 64, 0.5, g)
    assert pos.shape == (3, 32) and all(len(set(r.tolist())) == 32 for r in pos)
    base, refs = torch.randn(3, 7, 64), torch.randn(3, 2, 7, 64)
    refs[:, 0, :, 5] = 3.0 * base[:, :, pos[0, 0]]  # a scaled copy is a perfect cosine match
    ref_pos, sim = local_matching(base, refs, pos)
    assert ref_pos.shape == (3, 2, 32) and sim.shape == (3, 2, 32, 64)
    assert ref_pos[0, 0, 0] == 5 and sim[0, 0, 0, 5] == pytest.approx(1.0, abs=1e-5)
    alpha = random_alpha(3, 3, g)
    assert torch.allclose(alpha.sum(1), torch.ones(3))
    out = local_replacement(base, refs, pos, ref_pos, alpha)
    b, p = 1, pos[1, 3]
    want = alpha[b, 0] * base[b, :, p] + sum(
        alpha[b, 1 + j] * refs[b, j, :, ref_pos[b, j, 3]] for j in range(2)
    )
    assert torch.allclose(out[b, :, p], want, atol=1e-6)
    untouched = torch.ones(64, dtype=torch.bool)
    untouched[pos[1]] = False
    assert torch.equal(out[1][:, untouched], base[1][:, untouched])
    assert base_first_order(torch.tensor([1, 0, 2]), 3).tolist() == [[1, 0, 2], [0, 1, 2], [2, 0, 1]]
    with pytest.raises(ValueError, match="eta"):
        local_selection(1, 4, 1.5)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_positions_and_image_target_agree(size):
    """Encoding each shot as its own s×s thumbnail makes the feature-level fusion *equal* the image target."""
    s = size // 16 if size >= 64 else size // 4  # exercise several feature sizes: 8 (32 px), 4 (64), 8 (128)
    shots = torch.rand(2, 3, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    feats = thumbnails(shots, s)  # [B, k, 3, s, s] as the "features"
    fused, rec = LocalFusionModule(0.5)(feats, generator=torch.Generator().manual_seed(0))
    assert rec.feature_size == s and rec.positions.max() < s * s
    target = local_target(shots, rec)
    assert target.shape == (2, 3, s, s)
    assert torch.allclose(target, fused, atol=1e-6)


@pytest.mark.parametrize("size,feature_size", [(32, 8), (64, 8), (64, 4), (128, 8)])
def test_loss_grid_follows_feature_size(size, feature_size):
    g = LoFGANGenerator(size, feature_size, nf=4)
    shots = torch.rand(2, 3, 3, size, size) * 2 - 1
    fake, rec = g(shots, generator=torch.Generator().manual_seed(0))
    assert fake.shape == (2, 3, size, size) and rec.feature_size == feature_size
    assert rec.positions.shape == (2, int(0.5 * feature_size**2))
    assert rec.ref_positions.shape == (2, 2, int(0.5 * feature_size**2))
    loss = local_reconstruction_loss(fake, shots, rec)
    loss.backward()
    assert torch.isfinite(loss) and g.encoder.net[0][1].weight.grad is not None
    assert n_downsamplings(size, feature_size) == int(np.log2(size // feature_size))


def test_global_fusion_and_its_loss():
    f = _feats()
    alpha = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    fused, rec = GlobalFusion()(f, alpha=alpha)
    assert torch.allclose(fused[1], f[1, 0]) and torch.allclose(
        fused[0], (alpha[0, :, None, None, None] * f[0]).sum(0)
    )
    shots = torch.rand(2, 3, 3, 8, 8)
    blend = (alpha[:, :, None, None, None] * shots).sum(1)
    assert global_reconstruction_loss(blend, shots, rec).item() == pytest.approx(0.0, abs=1e-7)


def test_discriminator_heads_and_penalty():
    d = LoFGANDiscriminator(num_classes=5, size=32, feature_size=8, nf_d=8)
    x = torch.randn(2, 3, 3, 32, 32)
    adv, cls = d(x)
    assert adv.shape == (6,) and cls.shape == (6, 5)
    real = x.flatten(0, 1).requires_grad_(True)
    _, cls = d(real)
    gp = class_logit_gradient_penalty(cls, real, torch.zeros(6, dtype=torch.long), n_episodes=2)
    assert gp.item() > 0
    with pytest.raises(ValueError, match="D expects"):
        d(torch.randn(2, 1, 32, 32))


def _penalty_and_grads(d, x, labels):
    """Hinge + class + class-logit penalty of D on ``x`` and the gradients of every parameter (double backprop)."""
    d.zero_grad(set_to_none=True)
    real = x.clone().requires_grad_(True)
    adv, cls = d(real)
    gp = class_logit_gradient_penalty(cls, real, labels, n_episodes=2)
    loss = torch.relu(1 - adv).mean() + torch.nn.functional.cross_entropy(cls, labels) + 10 * gp
    loss.backward()
    grads = {
        n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in d.named_parameters()
    }
    return loss.detach(), grads, real.grad


def test_penalty_conv_matches_stock_conv_through_double_backprop():
    # PenaltyConv2d only changes *how* the second derivative is computed: values and gradients must match the
    # stock nn.Conv2d path, including the penalty's second-order terms.
    torch.manual_seed(0)
    d_fast = LoFGANDiscriminator(num_classes=4, size=32, feature_size=8, nf_d=8).double()
    d_stock = copy.deepcopy(d_fast)
    n_swapped = 0
    for m in d_stock.modules():
        if isinstance(m, PenaltyConv2d):
            m.forward = types.MethodType(torch.nn.Conv2d.forward, m)
            n_swapped += 1
    assert n_swapped >= 5
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    loss_fast, grads_fast, x_grad_fast = _penalty_and_grads(d_fast, x, labels)
    loss_stock, grads_stock, x_grad_stock = _penalty_and_grads(d_stock, x, labels)
    assert torch.allclose(loss_fast, loss_stock, rtol=1e-10)
    for name, g in grads_stock.items():
        assert torch.allclose(grads_fast[name], g, rtol=1e-7, atol=1e-10), name
    assert torch.allclose(x_grad_fast, x_grad_stock, rtol=1e-7, atol=1e-10)
    assert any(g.abs().sum() > 0 for g in grads_fast.values())


def _plain_train_step(tr, shots, labels):
    """The straightforward LoFGAN iteration that the optimised :func:`train_step` must reproduce: the same losses
    and the same random draws, but D with stock ``nn.Conv2d`` convolutions (PyTorch's own double backward), one
    backward per loss term as in the reference code, and D's weight gradients computed in the G step and
    thrown away. (The D passes run in the same order, because each D forward in train mode advances the
    spectral norms' power iteration.)"""
    cfg, g, d = tr.cfg, tr.g, tr.d
    b, k = shots.shape[:2]
    tr.opt_d.zero_grad()
    with torch.no_grad():
        fake, _ = g(shots, generator=tr.fusion_rng)
    real = shots.flatten(0, 1).clone().requires_grad_(True)
    y_real = labels.repeat_interleave(k)
    real_adv, real_cls = d(real)
    fake_adv, _ = d(fake)
    torch.relu(1 - real_adv).mean().backward(retain_graph=True)
    (grad,) = torch.autograd.grad(real_cls.gather(1, y_real[:, None]).mean(), real, create_graph=True)
    (cfg.w_gp * grad.pow(2).sum() / b).backward(retain_graph=True)
    torch.nn.functional.cross_entropy(real_cls, y_real).backward()
    torch.relu(1 + fake_adv).mean().backward()
    tr.opt_d.step()
    tr.opt_g.zero_grad()
    fake, record = g(shots, generator=tr.fusion_rng)
    fake_adv, fake_cls = d(fake)
    rec = local_reconstruction_loss(fake, shots, record, cfg.recon_mode)
    (-fake_adv.mean() + torch.nn.functional.cross_entropy(fake_cls, labels) + cfg.w_recon * rec).backward()
    tr.opt_g.step()


def test_optimised_train_step_matches_the_straightforward_one_after_five_steps():
    # Every speed-up of the step (PenaltyConv2d's double backward, one backward per update, the penalty on the
    # shared real pass, no D weight gradients in the G step) must leave the training itself unchanged: the same
    # weights after five steps within 1e-5. In float64, as in tests/test_ddp.py: in float32 the parameters
    # whose exact gradient is zero (a conv bias before a BatchNorm) get rounding noise that Adam turns into
    # lr-sized steps, whatever the summation order.
    gen = torch.Generator().manual_seed(0)
    classes = {f"c{i}": (torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1).double() for i in range(4)}
    cfg = LoFGANConfig(size=16, feature_size=4, nf=4, nf_d=8, max_nf_d=16, batch=2)
    fast, plain = (LoFGANTrainer(classes, cfg, seed=5) for _ in range(2))
    for tr in (fast, plain):
        tr.g.double()  # the same Parameter objects: the optimisers keep them
        tr.d.double()
    n_stock = 0
    for m in plain.d.modules():
        if isinstance(m, PenaltyConv2d):
            m.forward = types.MethodType(torch.nn.Conv2d.forward, m)
            n_stock += 1
    assert n_stock >= 5
    for step in range(5):
        shots, y = fast.sampler.sample()
        shots_p, y_p = plain.sampler.sample()
        assert torch.equal(shots, shots_p) and torch.equal(y, y_p)
        train_step(fast.g, fast.d, fast.opt_g, fast.opt_d, shots, y, cfg, fast.fusion_rng, step=step)
        _plain_train_step(plain, shots, y)
    for part in ("g", "d"):
        got, want = getattr(fast, part).state_dict(), getattr(plain, part).state_dict()
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=1e-5, msg=f"{part}.{name}")
        moved = LoFGANTrainer(classes, cfg, seed=5)
        assert any(  # (and the five steps did move the weights)
            not torch.allclose(v.double(), getattr(moved, part).state_dict()[n].double(), atol=1e-5)
            for n, v in want.items()
        )


def test_penalty_conv_is_a_conv2d_with_the_same_state_dict():
    conv, stock = PenaltyConv2d(3, 5, 3), torch.nn.Conv2d(3, 5, 3)
    stock.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(conv(x), stock(x))


def test_lr_schedule():
    assert lr_at(0, 1e-4, 100, 50) == 1e-4 and lr_at(49, 1e-4, 100, 50) == 1e-4
    assert lr_at(75, 1e-4, 100, 50) == pytest.approx(5e-5) and lr_at(100, 1e-4, 100, 50) == 0.0


def _classes(n_cls=4, n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"c{i}": torch.rand(n, 3, size, size, generator=g) * 2 - 1 for i in range(n_cls)}


def _cfg(fusion="local", **kw):
    return LoFGANConfig(
        size=16,
        feature_size=4,
        nf=4,
        nf_d=4,
        max_nf_d=16,
        fusion=fusion,
        batch=2,
        steps=4,
        decay_start=2,
        **kw,
    )


@pytest.mark.parametrize("fusion", ["local", "global"])
def test_one_train_step_is_finite_and_updates(fusion):
    tr = LoFGANTrainer(_classes(), _cfg(fusion), seed=0)
    g0 = [p.detach().clone() for p in tr.g.parameters()]
    d0 = [p.detach().clone() for p in tr.d.parameters()]
    shots, y = tr.sampler.sample()
    losses = train_step(tr.g, tr.d, tr.opt_g, tr.opt_d, shots, y, tr.cfg, tr.fusion_rng)
    assert set(losses) == {"d_real", "d_fake", "d_cls", "d_gp", "g_adv", "g_cls", "g_rec"}
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, tr.g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, tr.d.parameters()))


def test_g_step_gives_d_no_gradient_and_keeps_its_frozen_layers_frozen():
    tr = LoFGANTrainer(_classes(), _cfg(), seed=0)
    first = next(tr.d.parameters())
    first.requires_grad_(False)  # a deliberately frozen D layer (FreezeD-style)
    shots, y = tr.sampler.sample()
    g_step(tr.g, tr.d, tr.opt_g, shots, y, tr.cfg, tr.fusion_rng)
    assert all(p.grad is None for p in tr.d.parameters())
    assert not first.requires_grad
    assert all(p.requires_grad for p in list(tr.d.parameters())[1:])


def test_resume_continues_exactly(tmp_path):
    straight = LoFGANTrainer(_classes(), _cfg(), seed=3)
    straight.train(4, show_progress=False)
    first = LoFGANTrainer(_classes(), _cfg(), seed=3, checkpoint=tmp_path / "ck.pt")
    first.train(2, save_every=2, show_progress=False)
    resumed = LoFGANTrainer(_classes(), _cfg(), seed=3, checkpoint=tmp_path / "ck.pt")
    assert resumed.resume() and resumed.step == 2
    resumed.train(4, show_progress=False)
    for a, b in zip(straight.g.state_dict().values(), resumed.g.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert np.allclose(straight.history["g_rec"], resumed.history["g_rec"])
    other = LoFGANTrainer(_classes(n_cls=3), _cfg(), seed=3, checkpoint=tmp_path / "ck.pt")
    with pytest.raises(ValueError, match="different classes"):
        other.resume()


def test_generate_shapes_and_eta():
    g = LoFGANGenerator(16, 4, nf=4)
    shots = torch.rand(3, 3, 16, 16) * 2 - 1
    out = generate(g, shots, n=5, eta=0.0, generator=torch.Generator().manual_seed(0), batch=2)
    assert out.shape == (5, 3, 16, 16) and out.abs().max() <= 1 and g.training
    with pytest.raises(ValueError, match="one class"):
        generate(g, shots[None], n=2)


def test_episodes_never_mix_seen_and_unseen():
    from fewshot_lib.data.emoji import load_emoji
    from fewshot_lib.methods.lofgan import emoji_episode_classes

    data = load_emoji()
    seen, unseen = emoji_episode_classes(data, styles=("noto", "twemoji"))
    assert len(unseen) >= 15
    sub = lambda name: name.split("/", 1)[1]  # noqa: E731
    assert not {sub(c) for c in seen} & {sub(c) for c in unseen}
    unseen_pixels = {x.numpy().tobytes() for v in unseen.values() for x in v}
    sampler = EpisodeSampler(seen, k=3, batch=8, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        shots, cls = sampler.sample()
        for episode, c in zip(shots, cls.tolist()):
            pool = {x.numpy().tobytes() for x in seen[sampler.classes[c]]}
            assert all(x.numpy().tobytes() in pool for x in episode)
            assert not any(x.numpy().tobytes() in unseen_pixels for x in episode)


def test_npy_presets(tmp_path, monkeypatch):
    assert (PRESETS["flowers"].n_seen, PRESETS["animals"].n_seen, PRESETS["vggface"].n_seen) == (
        85,
        119,
        1802,
    )
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (102, 40, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "flowers.npy", small)
    with pytest.raises(ValueError, match="128 px"):
        load_preset("flowers", tmp_path / "flowers.npy")
    from fewshot_lib.data import npy_format

    monkeypatch.setitem(
        npy_format.PRESETS, "tiny", npy_format.NpyPreset("tiny", "t.npy", 102, 40, 4, 85, 17, 10)
    )
    arr, seen, unseen = load_preset("tiny", tmp_path / "flowers.npy")
    assert (seen, unseen) == (range(85), range(85, 102))
    with pytest.raises(ValueError, match="unknown .npy preset"):
        load_preset("cars", tmp_path / "flowers.npy")
    float01 = rng.random((3, 12, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", float01)
    arr = load_npy_classes(tmp_path / "f.npy", allow_float01=True)
    cond, held = npy_unseen_pools(arr, range(1, 3), n_condition=10)
    assert set(cond) == {"1", "2"} and cond["1"].shape == (10, 3, 8, 8) and held["2"].shape == (2, 3, 8, 8)
    assert torch.allclose(
        cond["1"][0], torch.from_numpy(float01[1, 0]).permute(2, 0, 1) * 2 - 1, atol=1 / 255
    )
    np.save(tmp_path / "bad.npy", float01 * 3)
    with pytest.raises(ValueError, match="expected \\[0, 1\\]"):
        load_npy_classes(tmp_path / "bad.npy", allow_float01=True)
