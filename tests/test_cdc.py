"""CDC, its patch discriminator and the fine-tuning baselines, on tiny generators (fast, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from fewshot_lib.methods.baselines import (
    AdaptationEvaluator,
    EWCHook,
    adaptation_config,
    frozen_block_parameters,
    make_adapter,
    run_adaptation,
)
from fewshot_lib.methods.cdc import (
    AnchorSampler,
    CDCHook,
    cross_domain_consistency,
    distance_consistency_loss,
    kl_from_logits,
    sample_layers,
    similarity_kl,
    similarity_logits,
)
from fewshot_lib.metrics.correspondence import correspondence_score, nearest_labels
from fewshot_lib.metrics import get_extractor
from fewshot_lib.metrics.features import random_emoji_extractor
from fewshot_lib.metrics.style import style_share
from fewshot_lib.models.helpers import generate_with_features
from fewshot_lib.models.patch_discriminator import PatchDiscriminator, default_patch_resolution
from fewshot_lib.models.stylegan2 import Discriminator, Generator


def tiny_g(seed: int = 0, size: int = 32) -> Generator:
    torch.manual_seed(seed)
    return Generator(size, style_dim=16, n_mlp=1, channel_base=64, channel_max=8)


def tiny_d(seed: int = 0, size: int = 32) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(size, channel_base=64, channel_max=8)


def perturbed_copy(g: Generator, scale: float = 0.3, seed: int = 1) -> Generator:
    other = tiny_g(0, g.size)
    other.load_state_dict(g.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return other


# ------------------------------------------------------------------ the similarity → softmax → KL block
def test_similarity_logits_are_offdiagonal_cosines():
    f = torch.randn(5, 3, 4, 4)
    logits = similarity_logits(f)
    assert logits.shape == (5, 4)
    flat = f.flatten(1)
    cos = torch.nn.functional.cosine_similarity(flat[1], flat[3], dim=0)
    assert torch.allclose(
        logits[1, 2], cos, atol=1e-6
    )  # row 1, the others are 0, 2, 3, 4 → index 2 = sample 3
    assert torch.allclose(
        logits[4, 0], torch.nn.functional.cosine_similarity(flat[4], flat[0], dim=0), atol=1e-6
    )
    keys = torch.randn(3, 3, 4, 4)
    assert similarity_logits(f, keys).shape == (5, 3)
    with pytest.raises(ValueError, match="at least 3"):
        similarity_logits(torch.randn(2, 8))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_similarity_kl_matches_kldivloss_reductions():
    feats, target = torch.randn(6, 10), torch.softmax(torch.randn(6, 5), 1)
    log_p = torch.log_softmax(similarity_logits(feats), 1)
    for reduction in ("mean", "batchmean", "sum"):
        expected = nn.KLDivLoss(reduction=reduction)(log_p, target)
        assert torch.allclose(similarity_kl(feats, target, reduction=reduction), expected, atol=1e-6), (
            reduction
        )
    per_row = similarity_kl(feats, target, reduction="none")
    assert per_row.shape == (6,) and (per_row >= 0).all()
    # 'batchmean' = (N-1)·'mean' without keys: λ=1000 with 'mean' is λ=1000/(N-1) with 'batchmean'
    assert torch.allclose(
        similarity_kl(feats, target, reduction="batchmean"),
        5 * similarity_kl(feats, target, reduction="mean"),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="target_probs"):
        similarity_kl(feats, torch.softmax(torch.randn(6, 6), 1))
    with pytest.raises(ValueError, match="reduction"):
        kl_from_logits(torch.randn(3, 2), torch.full((3, 2), 0.5), reduction="avg")


def test_distance_consistency_zero_iff_same_relations():
    f = torch.randn(4, 8, 4, 4)
    assert distance_consistency_loss(f.clone(), f).abs() < 1e-6
    assert distance_consistency_loss(3.0 * f, f).abs() < 1e-6  # cosine ignores scale
    other = torch.randn(4, 8, 4, 4)
    assert distance_consistency_loss(other, f) > 1e-4
    with pytest.raises(ValueError, match="same shape"):
        distance_consistency_loss(f, f[:3])


def test_mixed_layer_loss_reduces_to_single_layer_and_sums_for_lists():
    src = [torch.randn(4, 2, 2, 2) for _ in range(3)]
    ada = [s + 0.5 * torch.randn_like(s) for s in src]
    same = cross_domain_consistency(ada, src, layer_per_sample=torch.full((4,), 2))
    assert torch.allclose(same, distance_consistency_loss(ada[2], src[2]), atol=1e-6)
    summed = cross_domain_consistency(ada, src, layers=[1, 2])
    assert torch.allclose(
        summed, distance_consistency_loss(ada[1], src[1]) + distance_consistency_loss(ada[2], src[2])
    )
    with pytest.raises(ValueError, match="exactly one"):
        cross_domain_consistency(ada, src)
    layers = sample_layers(1000, 13, torch.Generator().manual_seed(0))
    assert layers.min() == 1 and layers.max() == 12  # layer 0 (4×4) never used


def test_generator_loss_zero_for_identical_g_positive_otherwise_and_grad_only_to_adapted():
    source = tiny_g(0)
    hook = CDCHook(source, tiny_d(), feat_batch=4)
    # fresh generators have noise strength 0, so the independent noise maps do not matter
    assert hook.distance_loss(tiny_g(0), torch.Generator().manual_seed(0)).abs() < 1e-5
    adapted = perturbed_copy(source)
    loss = hook.distance_loss(adapted, torch.Generator().manual_seed(0))
    assert loss > 1e-4
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in adapted.parameters())
    assert all(p.grad is None and not p.requires_grad for p in hook.source.parameters())
    assert all(p.grad is None for p in source.parameters())  # the caller's model is untouched
    assert hook.distance_loss(adapted, torch.Generator().manual_seed(0)).shape == ()


def test_generator_features_are_one_per_styled_conv():
    g = tiny_g(0)
    img, feats = generate_with_features(g, torch.randn(3, 16))
    assert img.shape == (3, 3, 32, 32)
    assert len(feats) == g.num_layers and [f.shape[-1] for f in feats] == [4, 8, 8, 16, 16, 32, 32]


# ------------------------------------------------------------------ patch discriminator
@pytest.mark.parametrize("size,expected", [(32, 16), (256, 32)])
def test_patch_discriminator_shapes(size, expected):
    torch.manual_seed(0)
    d = Discriminator(size, channel_base=64, channel_max=4)  # narrow: fast even at 256 px
    pd = PatchDiscriminator(d, n_heads=2)
    assert pd.patch_resolution == expected == default_patch_resolution(size)
    x = torch.randn(3, 3, size, size)
    assert pd(x, mode="patch").shape == (3, 1, expected, expected)
    assert pd(x, mode="patch", head=1).shape == (3, 1, expected, expected)
    assert pd(x, mode="image").shape == (3, 1)
    assert torch.equal(pd(x, mode="image"), d(x))  # the shared D is unchanged


def test_patch_discriminator_patches_are_local_and_errors_are_clear():
    pd = PatchDiscriminator(tiny_d())
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    pd(x, mode="patch")[0, 0, 8, 8].backward()  # a central patch
    seen = x.grad.abs().sum(dim=(0, 1)) > 0
    assert seen[16, 16] and not seen[0, 0] and not seen[31, 31]  # it cannot see the corners
    assert 0.05 < seen.float().mean() < 0.3  # a 12×12 region of 32×32
    with pytest.raises(ValueError, match="mode"):
        pd(x, mode="pixel")
    with pytest.raises(ValueError, match="head"):
        pd(x, mode="patch", head=3)
    with pytest.raises(ValueError, match="patch_resolution"):
        PatchDiscriminator(tiny_d(), patch_resolution=5)
    with pytest.raises(ValueError, match="convs"):
        PatchDiscriminator(nn.Linear(2, 2), size=32)


# ------------------------------------------------------------------ anchors
def test_anchor_sampling():
    s = AnchorSampler(10, 64, sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert s.anchors.shape == (10, 64)
    z, idx = s.sample(4000, torch.Generator().manual_seed(1))
    assert z.shape == (4000, 64) and idx.min() >= 0 and idx.max() <= 9 and len(idx.unique()) == 10
    noise = z - s.anchors[idx]
    assert abs(noise.std().item() - 0.1) < 0.005 and abs(noise.mean().item()) < 0.005
    again = AnchorSampler(10, 64, sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.anchors, s.anchors)
    exact = AnchorSampler(3, 8, sigma=0.0, generator=torch.Generator().manual_seed(0))
    z0, idx0 = exact.sample(5)
    assert torch.equal(z0, exact.anchors[idx0])  # σ = 0: the anchors themselves
    with pytest.raises(ValueError, match="sigma"):
        AnchorSampler(3, 8, sigma=-1)
    restored = AnchorSampler.from_anchors(s.anchors, 0.1)
    assert torch.equal(restored.anchors, s.anchors) and restored.sigma == 0.1


# ------------------------------------------------------------------ training on the shared trainer
def _params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_cdc_training_smoke_run_follows_the_schedule():
    source_g, source_d = tiny_g(0), tiny_d(0)
    before = _params(source_g)
    target = torch.rand(6, 3, 32, 32) * 2 - 1
    trainer = make_adapter(
        "cdc",
        source_g,
        source_d,
        target,
        adaptation_config(5, batch=2, pl_every=2),
        feat_batch=4,
        n_anchors=6,
    )
    hook = trainer.hook
    assert hook.discriminate(trainer.D, target[:2], 0, "d").shape == (2, 1)  # anchor step: image level
    assert hook.discriminate(trainer.D, target[:2], 1, "d").shape == (
        2,
        1,
        16,
        16,
    )  # patch step: 16×16 at 32 px
    head_before = hook.patch_d.heads[0].weight.detach().clone()
    result = trainer.train(show_progress=False)
    assert result.steps == 5 and len(trainer.history["dist"]) == 5 and "r1" in trainer.history
    assert all(np.isfinite(v) for values in trainer.history.values() for v in values)
    z, _ = hook.anchors.sample(3)
    assert hook.anchors.anchors.shape == (6, 16) and z.shape == (3, 16)
    assert all(torch.equal(before[k], v) for k, v in _params(source_g).items())  # source untouched
    assert all(torch.equal(before[k], v) for k, v in _params(hook.source).items())  # frozen copy too
    assert any(not torch.equal(before[k], v) for k, v in _params(trainer.G).items())
    assert not torch.equal(head_before, hook.patch_d.heads[0].weight)  # heads are trained
    assert hook.patch_d.discriminator is trainer.D  # ... on the trainer's D
    other = CDCHook(source_g, tiny_d())
    other.load_state_dict(hook.state_dict())  # anchors are checkpointed
    assert torch.equal(other.anchors.anchors, hook.anchors.anchors)


def test_baselines_freeze_the_right_parameters():
    target = torch.rand(4, 3, 32, 32) * 2 - 1
    cfg = adaptation_config(2, batch=2)
    tgan = make_adapter("tgan", tiny_g(), tiny_d(), target, cfg)
    fz = make_adapter("freezed", tiny_g(), tiny_d(), target, cfg, freeze_d=2)
    frozen = {k for k in _params(fz.D) if k.startswith(("convs.0.", "convs.1."))}
    assert tgan.frozen == [] and frozen and set(fz.frozen) == frozen
    d_before = {"tgan": _params(tgan.D), "freezed": _params(fz.D)}
    for t in (tgan, fz):
        t.train(show_progress=False)
    changed = {
        name: {k for k, v in _params(t.D).items() if not torch.equal(v, d_before[name][k])}
        for name, t in (("tgan", tgan), ("freezed", fz))
    }
    assert not (changed["freezed"] & frozen) and changed["freezed"]  # early blocks untouched, the rest trains
    assert frozen <= changed["tgan"]  # TGAN trains them
    with pytest.raises(ValueError, match="blocks"):
        frozen_block_parameters(tiny_d(), 99)


def test_ewc_penalty_pulls_towards_source():
    target = torch.rand(4, 3, 32, 32) * 2 - 1
    t = make_adapter("ewc", tiny_g(), tiny_d(), target, adaptation_config(1, batch=2), ewc_weight=1.0)
    hook: EWCHook = t.hook
    hook.n_batches = 1
    hook.estimate_fisher(t)
    assert hook.penalty(t.G).item() == 0.0  # at the source weights
    assert hook.penalty(perturbed_copy(t.G)).item() > 0
    t.train(show_progress=False)  # runs inside the shared trainer
    assert "ewc" in t.history and np.isfinite(t.history["ewc"]).all()


def test_bad_inputs_raise_clear_errors():
    cfg = adaptation_config(1, batch=2)
    with pytest.raises(ValueError, match="shots"):
        make_adapter("tgan", tiny_g(), tiny_d(), torch.rand(4, 32, 32), cfg)
    with pytest.raises(ValueError, match="method"):
        make_adapter("mixup", tiny_g(), tiny_d(), torch.rand(4, 3, 32, 32), cfg)
    with pytest.raises(ValueError, match="layer_mode"):
        make_adapter("cdc", tiny_g(), tiny_d(), torch.rand(4, 3, 32, 32), cfg, layer_mode="some")
    with pytest.raises(ValueError, match="CDC"):
        make_adapter("tgan", tiny_g(), tiny_d(), torch.rand(4, 3, 32, 32), cfg, kl_weight=1.0)


# ------------------------------------------------------------------ correspondence score
def test_correspondence_score_perfect_random_and_chance():
    ext = random_emoji_extractor(0)
    gen = torch.Generator().manual_seed(0)
    src_gallery, tgt_gallery = torch.randn(6, 32, generator=gen), torch.randn(6, 32, generator=gen)
    labels = np.array(["a", "b", "c", "d", "e", "f"])
    pick = torch.arange(60) % 6
    src = src_gallery[pick] + 0.01 * torch.randn(60, 32, generator=gen)
    tgt = tgt_gallery[pick] + 0.01 * torch.randn(60, 32, generator=gen)
    assert list(nearest_labels(src[:6], src_gallery, labels, ext)) == list(labels)
    perfect = correspondence_score(src, tgt, src_gallery, labels, tgt_gallery, labels, ext)
    assert perfect.value == 1.0 and abs(perfect.details["chance"] - 1 / 6) < 0.08
    shuffled = correspondence_score(
        src, tgt[torch.randperm(60, generator=gen)], src_gallery, labels, tgt_gallery, labels, ext
    )
    assert shuffled.value < 0.5 and shuffled.details["above_chance"] < 0.25
    with pytest.raises(ValueError, match="paired"):
        correspondence_score(src, tgt[:5], src_gallery, labels, tgt_gallery, labels, ext)
    with pytest.raises(ValueError, match="gallery_labels"):
        nearest_labels(src, src_gallery, labels[:3], ext)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_evaluator_and_run_adaptation_curves():
    ext = random_emoji_extractor(0)
    real = torch.rand(12, 3, 32, 32) * 2 - 1
    labels = np.array(list("aabbccddeeff"))
    g = tiny_g(0)
    ev = AdaptationEvaluator(g, torch.randn(8, 16), real[:4], real, real, labels, real, labels, extractor=ext)
    scores = ev(g)
    assert set(scores) == {
        "fid",
        "recognisability",
        "intra_cluster_lpips",
        "nn_modes",
        "nn_lpips",
        "correspondence",
        "correspondence_chance",
    }
    assert math.isnan(scores["recognisability"])  # the untrained control cannot name what it sees
    assert all(np.isfinite(v) for k, v in scores.items() if k != "recognisability")
    no_labels = AdaptationEvaluator(g, torch.randn(8, 16), real[:4], real, extractor=ext)(g)
    assert np.isnan(no_labels["correspondence"]) and np.isfinite(no_labels["fid"])
    # with the target's style named, the emoji network's style head adds the style share of the same images
    emoji_ext = get_extractor("emoji")
    styled = AdaptationEvaluator(
        g, torch.randn(8, 16), real[:4], real, extractor=emoji_ext, style="fluent_3d"
    )
    images = styled.generate(g)
    assert styled(g, images=images)["style_share"] == style_share(images, "fluent_3d", emoji_ext).value
    assert "style_share" not in no_labels
    # another shot set on the same real sets: equal to a fresh evaluator, the real features shared, not recomputed
    z2, shots2 = torch.randn(8, 16), real[4:8]
    fresh = AdaptationEvaluator(g, z2, shots2, real, real, labels, real, labels, extractor=ext)
    other = ev.with_shots(g, z2, shots2)
    assert other.target_features is ev.target_features and torch.equal(other.shots, shots2)
    torch.manual_seed(3)
    a = other(g)
    torch.manual_seed(3)
    assert a == pytest.approx(fresh(g), nan_ok=True) and torch.equal(ev.shots, real[:4])
    trainer, curve = run_adaptation(
        "tgan",
        g,
        tiny_d(),
        real[:4],
        adaptation_config(3, batch=2, r1_gamma=0),
        evaluator=ev,
        eval_every=2,
        show_progress=False,
    )
    assert [c["step"] for c in curve] == [0, 2, 3] and trainer.step == 3
    trainer, curve = run_adaptation(
        "tgan", g, tiny_d(), real[:4], adaptation_config(1, batch=2, r1_gamma=0), show_progress=False
    )
    assert curve == [] and trainer.step == 1


def test_source_export_writes_g_and_d_of_the_same_step(tmp_path, monkeypatch, load_script):
    # scripts/train_source_model.py exports the EMA generator and the discriminator together, each with a
    # manifest listing every training sitting; both load back and a damaged file is refused.
    import argparse
    import json

    from fewshot_lib import sittings
    from fewshot_lib.artifacts import load_source_discriminator, load_source_model, source_model_paths
    from fewshot_lib.train import GANTrainer, TrainConfig

    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="train_source_model"):
        load_source_discriminator("tiny")
    script = load_script("train_source_model")
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    trainer = GANTrainer(
        tiny_g(1), tiny_d(2), real, TrainConfig(steps=2, batch=4, sample_every=0, checkpoint_every=0)
    )
    trainer.train(steps=2, resume=False, show_progress=False)
    run_dir = tmp_path / "run"
    sittings.record_command(run_dir, {"command": "first", "started": "a", "start_step": 0, "end_step": 1})
    sittings.record_command(run_dir, {"command": "second", "started": "b", "start_step": 1, "end_step": 1})
    sittings.record_command(run_dir, {"command": "second", "started": "b", "start_step": 1, "end_step": 2})
    args = argparse.Namespace(out=None, name="tiny", style="noto", reference_style="noto")
    script.export(trainer, args, real, run_dir, with_features=False)
    g = load_source_model("tiny")
    d = load_source_discriminator("tiny")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(d(x), trainer.D.eval()(x), atol=1e-2)  # fp16 weights
    z = torch.randn(2, g.style_dim)
    assert torch.allclose(
        g(z, randomize_noise=False)[0], trainer.g_ema.eval()(z, randomize_noise=False)[0], atol=2e-2
    )
    path, manifest_path = source_model_paths("tiny_d")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["steps"] == 2 and manifest["command"] == "first ; then second"
    assert [e["end_step"] for e in manifest["training_sessions"]] == [1, 2] and "exported_by" not in manifest
    script.export(trainer, args, real, run_dir, with_features=False, exported_by="third --export-only")
    manifest = json.loads(manifest_path.read_text())  # an export-only run is recorded, not as a sitting
    assert manifest["exported_by"] == "third --export-only" and manifest["command"] == "first ; then second"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="sha256"):
        load_source_discriminator("tiny")


def test_a_resume_without_lr_keeps_the_rate_of_the_run(tmp_path, load_script):
    # A decayed learning rate must survive a plain resume (and --export-only must record it), so without
    # --lr the script takes the checkpoint's rate, else the warm-start export's, else StyleGAN2's 0.002.
    import json

    from fewshot_lib.train import GANTrainer, TrainConfig

    script = load_script("train_source_model")
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    trainer = GANTrainer(
        tiny_g(1),
        tiny_d(2),
        real,
        TrainConfig(steps=1, batch=4, lr=0.0007, sample_every=0, checkpoint_every=0),
        run_dir=tmp_path / "run",
    )
    trainer.train(steps=1, resume=False, show_progress=False)  # writes run/checkpoint.pt
    assert script.previous_lr(trainer.checkpoint_path, None) == 0.0007
    export = tmp_path / "model.pt"
    export.with_suffix(".manifest.json").write_text(json.dumps({"train_config": {"lr": 0.0005}}))
    assert script.previous_lr(tmp_path / "none.pt", str(export)) == 0.0005
    assert script.previous_lr(tmp_path / "none.pt", None) == script.DEFAULT_LR == 0.002


def test_warm_start_carries_on_from_an_export(tmp_path, monkeypatch, load_script):
    # A new machine has only the shipped fp16 export: --warm-start loads G, G_ema and D from it and carries
    # the step count and the recorded sittings on; a wrong width or a missing D is refused with a clear error.
    import argparse

    from fewshot_lib import sittings

    from fewshot_lib.train import GANTrainer, TrainConfig

    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))
    script = load_script("train_source_model")
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    cfg = TrainConfig(steps=3, batch=4, sample_every=0, checkpoint_every=0)
    old = GANTrainer(tiny_g(1), tiny_d(2), real, cfg)
    old.train(steps=3, resume=False, show_progress=False)
    old_run = tmp_path / "old_run"
    sittings.record_command(old_run, {"command": "first", "started": "a", "start_step": 0, "end_step": 3})
    sittings.record_metrics(
        old_run, 3, {"fid_emoji": 50.0, "recognisability": 0.25, "other": 1.0}, script.HISTORY_KEYS
    )
    out = tmp_path / "export" / "tiny.pt"
    script.export(
        old,
        argparse.Namespace(out=str(out), name="tiny", style="noto", reference_style="noto"),
        real,
        old_run,
        with_features=False,
    )

    new_run = tmp_path / "new_run"
    new = GANTrainer(tiny_g(5), tiny_d(6), real, cfg, run_dir=new_run)
    script.warm_start(new, out, new_run)
    assert new.step == 3
    for a, b in ((new.G, old.g_ema), (new.g_ema, old.g_ema), (new.D, old.D)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(x, y.float(), atol=2e-3, rtol=1e-3), name  # fp16 round trip
    assert [e["command"] for e in sittings.training_commands(new_run)] == ["first"]
    assert sittings.metric_history(new_run) == [{"step": 3, "fid_emoji": 50.0, "recognisability": 0.25}]
    new.train(steps=4, resume=False, show_progress=False)  # it trains on from there
    assert new.step == 4

    wide = GANTrainer(
        Generator(32, style_dim=16, n_mlp=1, channel_base=64, channel_max=16), tiny_d(2), real, cfg
    )
    with pytest.raises(ValueError, match="channel-max"):
        script.warm_start(wide, out, tmp_path / "wide_run")
    out.with_name("tiny_d.pt").unlink()
    with pytest.raises(FileNotFoundError, match="tiny_d.pt"):
        script.warm_start(GANTrainer(tiny_g(1), tiny_d(2), real, cfg), out, tmp_path / "other_run")
