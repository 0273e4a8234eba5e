"""Checkpoints written by the trainers before they shared a base class still resume, exactly.

``tests/fixtures/*_step2.pt`` are checkpoints that the previous ``GANTrainer`` and ``LoFGANTrainer`` wrote
after 2 of 4 steps (the format of the background runs' ``runs/*/checkpoint.pt``); ``*_step4.ref.pt`` hold what
the same code had after 4 uninterrupted steps (weights and loss history). Resuming the step-2 files with
today's code must land on the same numbers (up to float noise across CPUs).

One exception, and why: a convolution's bias right before a BatchNorm has a gradient that is exactly zero on
paper (the norm subtracts the channel mean), so what the CPU computes is rounding noise — of a sign that differs
between CPUs — and Adam divides it by its own size, so each step moves the bias by ±lr. Those biases (and the
running means that carry them) are held to what Adam can move them in the two resumed steps, not to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fewshot_lib.checkpoint import load_checkpoint
from fewshot_lib.methods.lofgan import LoFGANConfig, LoFGANTrainer
from fewshot_lib.models.stylegan2 import Discriminator, Generator
from fewshot_lib.train import GANTrainer, TrainConfig

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = {"gan": ("g", "d", "g_ema"), "lofgan": ("g", "d")}


def gan_trainer(run_dir: Path | None = None) -> GANTrainer:
    torch.manual_seed(0)
    G = Generator(16, style_dim=8, n_mlp=1, channel_base=64, channel_max=8)
    D = Discriminator(16, channel_base=64, channel_max=8)
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = TrainConfig(
        steps=4,
        batch=4,
        r1_every=2,
        pl_every=2,
        n_sample=4,
        ada_target=0.6,
        sample_every=0,
        checkpoint_every=0,
    )
    return GANTrainer(G, D, images, cfg, run_dir=run_dir)


def lofgan_trainer(checkpoint: Path | None = None) -> LoFGANTrainer:
    gen = torch.Generator().manual_seed(0)
    classes = {f"c{i}": torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1 for i in range(4)}
    cfg = LoFGANConfig(size=16, feature_size=4, nf=4, nf_d=4, max_nf_d=16, batch=2, steps=4, decay_start=2)
    return LoFGANTrainer(classes, cfg, seed=3, checkpoint=checkpoint)


def biases_before_batchnorm(model: nn.Module) -> set[str]:
    """``<conv>.bias`` and ``<norm>.running_mean`` of every Conv2d followed by a BatchNorm2d in a Sequential."""
    names = set()
    for prefix, module in model.named_modules():
        children = list(module.named_children()) if isinstance(module, nn.Sequential) else []
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and conv.bias is not None:
                names |= {f"{prefix}.{conv_name}.bias", f"{prefix}.{norm_name}.running_mean"}
    return names


def reference(trainer, kind: str) -> dict:
    """What the step-4 reference files keep: the weights and the loss history."""
    state = trainer.state_dict()
    return {"step": state["step"], "history": state["history"], **{k: state[k] for k in KEYS[kind]}}


@pytest.mark.parametrize("kind", ["gan", "lofgan"])
def test_old_checkpoints_resume_exactly(kind, tmp_path):
    old = FIXTURES / f"{kind}trainer_step2.pt"
    want = load_checkpoint(FIXTURES / f"{kind}trainer_step4.ref.pt")
    saved_keys = set(load_checkpoint(old))
    if kind == "gan":
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "checkpoint.pt").write_bytes(old.read_bytes())
        trainer = gan_trainer(run_dir)
        trainer.train(show_progress=False)  # resumes from run_dir/checkpoint.pt
    else:
        (tmp_path / "ck.pt").write_bytes(old.read_bytes())
        trainer = lofgan_trainer(tmp_path / "ck.pt")
        assert trainer.resume() and trainer.step == 2
        trainer.train(4, save_every=2, show_progress=False)
    got = reference(trainer, kind)
    assert got["step"] == want["step"] == 4
    assert got["history"].keys() == want["history"].keys()
    for key, values in want["history"].items():
        assert got["history"][key] == pytest.approx(values, rel=1e-4, abs=1e-5), key
    noise_only = {"g": biases_before_batchnorm(trainer.g)} if kind == "lofgan" else {}
    # two resumed steps of at most about lr each, with a factor of two to spare
    adam_reach = 2 * 2 * max(LoFGANConfig().lr_g, LoFGANConfig().lr_d)
    assert noise_only.get("g", True), "the LoFGAN generator has conv → BatchNorm blocks"
    for part in KEYS[kind]:
        for name, value in want[part].items():
            atol = adam_reach if name in noise_only.get(part, ()) else 1e-5
            torch.testing.assert_close(got[part][name], value, atol=atol, rtol=1e-4, msg=f"{part}.{name}")
    # the format itself is unchanged: today's code writes the same keys
    assert set(load_checkpoint(trainer.checkpoint_path)) == saved_keys
