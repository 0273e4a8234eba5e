"""LSO: stage 1 (LAL) moves only the mapping side, stage 2 (LSR) never touches its teachers, exact resume,
inversion of a conditional generator, clear errors."""

import pytest
import torch

from fewshot_lib.methods.lso import (
    Anchors,
    InversionFinetuneTask,
    LSOConfig,
    LSOTask,
    TrainingFeatures,
    convex_codes,
    inversion_only_samples,
    mapping_parameters,
    shipped_task_samples,
)
from fewshot_lib.metrics.features import EmojiFeatureNet
from fewshot_lib.models.stylegan2 import Discriminator, Generator
from fewshot_lib.projector import project

TINY = LSOConfig(lal_steps=3, lsr_steps=4, batch=4, seen_batch=2, r1_every=2)


def tiny_models(c_dim: int = 3):
    torch.manual_seed(0)
    G = Generator(32, style_dim=16, n_mlp=2, channel_base=64, channel_max=16, c_dim=c_dim).eval()
    D = Discriminator(32, channel_base=64, channel_max=16, c_dim=c_dim)
    return G, D


@pytest.fixture(scope="module")
def features():
    torch.manual_seed(1)
    return TrainingFeatures(EmojiFeatureNet())  # any frozen emoji-architecture net will do for the mechanics


@pytest.fixture(scope="module")
def task_inputs():
    g = torch.Generator().manual_seed(3)
    shots = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    w_inv = torch.randn(3, 8, 16, generator=g)  # W+ targets [k, L, D] (L = 8 at 32 px)
    return shots, w_inv


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_lal_moves_only_the_mapping_side_and_lsr_leaves_the_teachers_alone(features, task_inputs):
    G, D = tiny_models()
    shots, w_inv = task_inputs
    task = LSOTask(G, D, shots, w_inv, features, TINY, seed=0)
    assert task.c_new == 3 and task.G.c_dim == 4 and G.c_dim == 3  # the originals are never modified
    before = params(task.G)
    task.run("lal")
    after = params(task.G)
    embed, mlp = mapping_parameters(task.G)
    mapping_ids = {id(p) for p in embed + mlp}
    names = {n for n, p in task.G.named_parameters() if id(p) in mapping_ids}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= names | {"class_embed.gain"}  # synthesis bit-identical
    assert not torch.equal(task.anchors.z, torch.zeros_like(task.anchors.z))  # anchors left the centroid
    assert task.history.values["lal_sigma"] and task.step["lal"] == 3
    task.run("lsr")
    teacher_g, teacher_d = params(task.teacher_g), params(task.teacher_d)
    task.run("lsr", steps=6)
    assert all(torch.equal(teacher_g[k], v) for k, v in task.teacher_g.state_dict().items())
    assert all(torch.equal(teacher_d[k], v) for k, v in task.teacher_d.state_dict().items())
    assert not any(p.requires_grad for p in task.teacher_g.parameters())
    synth = [k for k in after if not k.startswith(("style.", "class_embed."))]
    assert any(not torch.equal(after[k], task.G.state_dict()[k]) for k in synth)  # LSR tunes the synthesis
    images = task.sample(5, magnitude=0.5)
    assert images.shape == (5, 3, 32, 32) and torch.isfinite(images).all()


def test_a_resumed_lso_task_equals_an_uninterrupted_one(features, task_inputs):
    shots, w_inv = task_inputs
    G, D = tiny_models()
    straight = LSOTask(G, D, shots, w_inv, features, TINY, seed=5)
    straight.run("lal")
    straight.run("lsr")
    G, D = tiny_models()
    first = LSOTask(G, D, shots, w_inv, features, TINY, seed=5)
    first.run("lal")
    first.run("lsr", steps=2)
    state = first.state_dict()
    G, D = tiny_models()
    resumed = LSOTask(G, D, shots, w_inv, features, TINY, seed=5)
    resumed.load_state_dict(state)
    resumed.run("lsr")
    for a, b in ((straight.G, resumed.G), (straight.D, resumed.D), (straight.g_ema, resumed.g_ema)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(straight.anchors.z, resumed.anchors.z)


def test_inversion_of_a_conditional_generator_lowers_the_reconstruction_error():
    G, _ = tiny_models()
    target = G(torch.randn(2, 16), c=torch.tensor([0, 2]), randomize_noise=False)[0].detach()
    short = project(G, target, steps=1, w_plus=True, seed=0)
    longer = project(G, target, steps=60, w_plus=True, seed=0)
    assert longer.latents.shape == (2, G.n_latent, 16)
    assert longer.pixel_mse.mean() < short.pixel_mse.mean()


def test_bad_input_gets_a_clear_error(features, task_inputs):
    shots, w_inv = task_inputs
    G, D = tiny_models()
    with pytest.raises(ValueError, match="k ≥ 1"):
        LSOTask(G, D, shots[:0], w_inv[:0], features, TINY)
    with pytest.raises(ValueError, match="px"):
        LSOTask(G, D, torch.zeros(3, 3, 16, 16), w_inv, features, TINY)
    with pytest.raises(ValueError, match="inversions"):
        LSOTask(G, D, shots, w_inv[:2], features, TINY)
    uncond = Generator(32, style_dim=16, n_mlp=2, channel_base=64, channel_max=16)
    with pytest.raises(ValueError, match="class-conditional"):
        LSOTask(uncond, Discriminator(32, channel_base=64, channel_max=16), shots, w_inv, features, TINY)
    with pytest.raises(ValueError, match="k ≥ 1"):
        Anchors(0, 16)
    with pytest.raises(ValueError, match="stage"):
        LSOTask(G, D, shots, w_inv, features, TINY).run("lalr")


def test_convex_codes_are_reproducible_convex_combinations():
    alpha = convex_codes(torch.eye(4), 50, torch.Generator().manual_seed(0))  # one-hot codes → the weights
    assert alpha.shape == (50, 4) and (alpha >= 0).all()
    assert (
        torch.allclose(alpha.sum(1), torch.ones(50)) and alpha.std(0).min() > 0.05
    )  # a different mix each time
    assert torch.equal(alpha, convex_codes(torch.eye(4), 50, torch.Generator().manual_seed(0)))
    w = torch.randn(1, 8, 16).expand(3, -1, -1)  # equal codes stay that code
    assert torch.allclose(
        convex_codes(w, 5, torch.Generator().manual_seed(1)), w[:1].expand(5, -1, -1), atol=1e-6
    )


def test_inversion_plain_finetune_tunes_the_synthesis_without_the_mapping_and_resumes(features, task_inputs):
    shots, w_inv = task_inputs
    G, D = tiny_models()
    task = InversionFinetuneTask(G, D, shots, w_inv, features, TINY, seed=2)
    before = params(task.G)

    def no_mapping(*args, **kwargs):
        raise AssertionError(
            "inversion + plain fine-tune must not use the mapping network (no LAL, no seen classes)"
        )

    task.G.mapping = task.g_ema.mapping = no_mapping
    task.run()
    after = params(task.G)
    embed, mlp = mapping_parameters(task.G)
    mapping_ids = {id(p) for p in embed + mlp}
    mapping_names = {n for n, p in task.G.named_parameters() if id(p) in mapping_ids}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not changed & mapping_names  # synthesis only
    assert task.step == TINY.lsr_steps and len(task.history.values["recon"]) == TINY.lsr_steps
    tuned = task.sample(6, seed=0)
    untuned = inversion_only_samples(G, w_inv, 6, seed=0)
    assert tuned.shape == untuned.shape == (6, 3, 32, 32) and torch.isfinite(tuned).all()
    assert not torch.allclose(tuned, untuned)  # the fine-tune shows
    assert torch.equal(untuned, inversion_only_samples(G, w_inv, 6, seed=0))  # seeded

    G, D = tiny_models()
    straight = InversionFinetuneTask(G, D, shots, w_inv, features, TINY, seed=2)
    straight.run()
    G, D = tiny_models()
    first = InversionFinetuneTask(G, D, shots, w_inv, features, TINY, seed=2)
    first.run(steps=2)
    G, D = tiny_models()
    resumed = InversionFinetuneTask(G, D, shots, w_inv, features, TINY, seed=2)
    resumed.load_state_dict(first.state_dict())
    resumed.run()
    for a, b in ((straight.G, resumed.G), (straight.D, resumed.D), (straight.g_ema, resumed.g_ema)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="k ≥ 1"):
        InversionFinetuneTask(G, D, shots[:0], w_inv[:0], features, TINY)


def test_shipped_task_samples_are_checked_against_their_manifest(tmp_path):
    import json

    import numpy as np

    from fewshot_lib.checkpoint import file_sha256

    assert shipped_task_samples(0, tmp_path) is None  # not shipped: None
    path = tmp_path / "lso_samples_seed0.npz"
    np.savez_compressed(path, images=np.zeros((2, 32, 32, 3), np.uint8), method=np.array(["lso", "lso"]))
    with pytest.raises(ValueError, match="no manifest"):
        shipped_task_samples(0, tmp_path)
    (tmp_path / "lso_samples_seed0.manifest.json").write_text(json.dumps({"sha256": file_sha256(path)}))
    arrays, manifest = shipped_task_samples(0, tmp_path)
    assert arrays["images"].shape == (2, 32, 32, 3) and list(arrays["method"]) == ["lso", "lso"]
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="sha256"):
        shipped_task_samples(0, tmp_path)
