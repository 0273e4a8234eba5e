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


# ---- the LoFGAN trainer: the same options in its own step functions -------------------------------------


def lofgan(checkpoint=None, **options):
    from fewshot_lib.methods.lofgan import LoFGANConfig, LoFGANTrainer

    gen = torch.Generator().manual_seed(0)
    classes = {f"c{i}": torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1 for i in range(4)}
    cfg = LoFGANConfig(size=16, feature_size=4, nf=4, nf_d=4, max_nf_d=16, batch=2, steps=4, **options)
    return LoFGANTrainer(classes, cfg, seed=3, checkpoint=checkpoint)


def lofgan_difference(a, b) -> float:
    pairs = [(a.g.state_dict(), b.g.state_dict()), (a.d.state_dict(), b.d.state_dict())]
    return max((x[k].float() - y[k].float()).abs().max().item() for x, y in pairs for k in x)


def test_lofgan_amp_bf16_runs_g_and_d_in_bf16_and_the_penalty_in_float32(monkeypatch):
    import fewshot_lib.methods.lofgan as LF

    penalty_inputs = []
    real_penalty = LF.class_logit_gradient_penalty

    def penalty(logits, real, labels, n):
        penalty_inputs.append((torch.is_autocast_enabled("cpu"), logits.dtype))
        return real_penalty(logits, real, labels, n)

    monkeypatch.setattr(LF, "class_logit_gradient_penalty", penalty)
    fp32 = lofgan()
    fp32.train(show_progress=False)
    bf16 = lofgan(amp="bf16")
    seen = []
    bf16.d.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    bf16.train(show_progress=False)
    assert torch.bfloat16 in seen and all(
        torch.isfinite(torch.tensor(v)).all() for v in bf16.history.values()
    )
    assert penalty_inputs and all(p == (False, torch.float32) for p in penalty_inputs)
    assert all(p.dtype == torch.float32 for p in bf16.g.parameters())  # weights stay float32
    assert 0 < lofgan_difference(fp32, bf16) < 0.05  # four Adam steps of lr 1e-4 apart at most


def test_lofgan_amp_fp16_scales_the_loss_and_resumes_exactly(tmp_path):
    from fewshot_lib.checkpoint import load_checkpoint

    whole = lofgan(amp="fp16")
    whole.train(show_progress=False)
    assert set(whole.scalers) == {"g", "d"}
    half = lofgan(tmp_path / "ck.pt", amp="fp16")
    half.train(steps=2, save_every=2, show_progress=False)
    assert "scalers" in load_checkpoint(tmp_path / "ck.pt")
    resumed = lofgan(tmp_path / "ck.pt", amp="fp16")
    assert resumed.resume() and resumed.step == 2
    resumed.train(show_progress=False)
    assert lofgan_difference(whole, resumed) == 0.0
    with pytest.raises(ValueError, match="amp='fp8'"):
        lofgan(amp="fp8")


def test_lofgan_channels_last_gives_the_same_training_within_float_tolerance():
    plain = lofgan()
    plain.train(show_progress=False)
    nhwc = lofgan(channels_last=True)
    convs = [m for m in nhwc.d.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    nhwc.train(show_progress=False)
    for k, v in plain.history.items():  # the same losses at every step
        torch.testing.assert_close(torch.tensor(nhwc.history[k]), torch.tensor(v), rtol=1e-5, atol=1e-6)
    # and the same generator. (Weights are compared through G's output with batch statistics: a conv bias feeding
    # a BatchNorm has a gradient of zero up to rounding, which Adam's first step turns into ±lr either way —
    # without effect on what the layer outputs, though the running means that eval mode uses lag behind it.)
    shots = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        out = [t.g(shots, generator=torch.Generator().manual_seed(2))[0] for t in (plain, nhwc)]
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-4)
