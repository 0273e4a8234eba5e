"""The trainer's GPU options run on CPU through the same code paths: bf16 / fp16 autocast of the main passes
(the regularisers stay float32), channels_last, the torch.compile switch. All are off by default, so the
defaults' results do not change (``tests/test_trainer_resume.py``, ``tests/test_stylegan2.py``)."""

from __future__ import annotations

import pytest
import torch

import fewshot_lib.train as train_module
from fewshot_lib.checkpoint import load_checkpoint
from fewshot_lib.models.stylegan2 import Discriminator, Generator
from fewshot_lib.train import GANTrainer, TrainConfig


def trainer(run_dir=None, **options) -> GANTrainer:
    torch.manual_seed(0)
    G = Generator(16, style_dim=8, n_mlp=1, channel_base=64, channel_max=8)
    D = Discriminator(16, channel_base=64, channel_max=8)
    images = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = TrainConfig(steps=4, batch=4, r1_every=2, pl_every=2, n_sample=4, **options)
    return GANTrainer(G, D, images, cfg, run_dir=run_dir)


def max_difference(a: GANTrainer, b: GANTrainer) -> float:
    sa, sb = a.G.state_dict(), b.G.state_dict()
    da, db = a.D.state_dict(), b.D.state_dict()
    return max(
        max((sa[k] - sb[k]).abs().max().item() for k in sa),
        max((da[k] - db[k]).abs().max().item() for k in da),
    )


def test_amp_bf16_runs_the_main_passes_in_bf16_and_the_regularisers_in_float32(monkeypatch):
    seen = []  # (autocast on?, dtype of D's logits) at each D call
    r1_dtypes = []
    real_r1 = train_module.r1_penalty

    def r1(logits, images):
        r1_dtypes.append((torch.is_autocast_enabled("cpu"), logits.dtype))
        return real_r1(logits, images)

    monkeypatch.setattr(train_module, "r1_penalty", r1)
    fp32 = trainer()
    fp32.train(show_progress=False)
    bf16 = trainer(amp="bf16")
    bf16.D.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    bf16.train(show_progress=False)
    assert all(v for h in bf16.history.values() for v in torch.isfinite(torch.tensor(h)).tolist())
    assert torch.bfloat16 in seen  # the main passes
    assert r1_dtypes and all(d == (False, torch.float32) for d in r1_dtypes[-2:])  # R1: float32
    diff = max_difference(fp32, bf16)
    assert 0 < diff < 0.05, diff  # a few Adam steps of lr 0.002 apart at most


def test_amp_fp16_scales_the_loss_and_resumes_exactly(tmp_path):
    whole = trainer(amp="fp16")
    whole.train(show_progress=False)
    assert set(whole.scalers) == {"g", "d"}
    assert all(torch.isfinite(torch.tensor(v)).all() for v in whole.history.values())
    half = trainer(tmp_path / "run", amp="fp16")
    half.train(steps=2, show_progress=False)
    assert "scaler" in load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    resumed = trainer(tmp_path / "run", amp="fp16")
    resumed.train(show_progress=False)
    assert resumed.step == 4 and max_difference(whole, resumed) == 0.0


def test_channels_last_gives_the_same_training_within_float_tolerance():
    plain = trainer()
    plain.train(show_progress=False)
    nhwc = trainer(channels_last=True)
    assert nhwc.D.convs[1].conv1[0].weight.is_contiguous(memory_format=torch.channels_last)  # a 3×3 conv
    nhwc.train(show_progress=False)
    assert max_difference(plain, nhwc) < 1e-5


def test_compile_switch_compiles_the_main_passes_only(monkeypatch):
    compiled = []

    def fake_compile(module):  # torch.compile's contract (a callable module); compiling takes minutes on CPU
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    t = trainer(compile=True)
    assert compiled == [t.G, t.D] and t._G_main is t.G and t._D_main is t.D
    t.train(steps=2, show_progress=False)


def test_unknown_amp_mode_is_refused():
    with pytest.raises(ValueError, match="amp='fp8'"):
        TrainConfig(amp="fp8")
