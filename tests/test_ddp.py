"""Data-parallel training (``fewshot_lib.distributed``) on CPU: two gloo processes take the single-process step.

The pytest process trains tiny models alone on the global batch; two worker processes (this file run as a
script, with the environment ``torchrun`` would set: RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free
MASTER_PORT) train the same models with the batch split over them — the StyleGAN2 trainer (unconditional with
ADA, and class-conditional with flips and a fixed augmentation probability, both with lazy R1 and path length,
resumed half-way from rank 0's checkpoint) and the LoFGAN trainer. The weights must agree within 1e-5. The
same workers also train once with the gradient all-reduce replaced by a no-op, and those weights must *not*
agree: the comparison can tell. A rank killed, or stopped, mid-training must end the job with a clear error
within a bounded time instead of a hang.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fewshot_lib.methods.lofgan import LoFGANConfig, LoFGANTrainer
from fewshot_lib.models.stylegan2 import Discriminator, Generator
from fewshot_lib.train import GANTrainer, TrainConfig

GAN_STEPS, LOFGAN_STEPS = 6, 3


def gan_trainer(kind: str, run_dir: Path | None = None) -> GANTrainer:
    """A tiny 16-px StyleGAN2 trainer; ``kind`` is ``"ada"`` (unconditional, adaptive augmentation) or
    ``"labels"`` (class-conditional, x-flips, augmentation with probability 0.5). Global batch 8."""
    torch.manual_seed(0)
    c_dim = 3 if kind == "labels" else 0
    G = Generator(16, style_dim=8, n_mlp=1, channel_base=64, channel_max=8, c_dim=c_dim)
    D = Discriminator(16, channel_base=64, channel_max=8, c_dim=c_dim)
    images = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(24) % 3 if c_dim else None
    cfg = TrainConfig(
        steps=GAN_STEPS,
        batch=8,
        r1_every=2,
        pl_every=2,
        n_sample=4,
        ada_target=0.6 if kind == "ada" else None,
        ada_speed_images=64,
        augment_p=0.5,
        xflip=kind == "labels",
    )
    return GANTrainer(G, D, images, cfg, run_dir=run_dir, labels=labels)


def lofgan_trainer() -> LoFGANTrainer:
    """A tiny LoFGAN trainer (4 episodes of 3 shots per step), in float64.

    Why float64: LoFGAN has parameters whose exact gradient is zero — each conv bias in front of a BatchNorm,
    and D's real/fake bias while every hinge term is active — so their float32 gradients are pure rounding
    noise, which Adam normalises into full ``lr``-sized steps: any two summation orders (one process or two)
    then differ there by about ``lr`` per step (measured: 3e-4 after 3 steps, every other weight within 1e-6).
    In float64 that noise stays far below Adam's ``eps`` and the comparison sees the mechanism only.
    """
    gen = torch.Generator().manual_seed(0)
    classes = {f"c{i}": (torch.rand(6, 3, 16, 16, generator=gen) * 2 - 1).double() for i in range(4)}
    cfg = LoFGANConfig(size=16, feature_size=4, nf=4, nf_d=4, max_nf_d=16, batch=4, steps=LOFGAN_STEPS)
    trainer = LoFGANTrainer(classes, cfg, seed=3)
    trainer.g.double()  # the same Parameter objects: the optimisers keep them
    trainer.d.double()
    return trainer


def weights(trainer) -> dict[str, dict[str, torch.Tensor]]:
    if isinstance(trainer, GANTrainer):
        mods = {"g": trainer.G, "d": trainer.D, "g_ema": trainer.g_ema}
    else:
        mods = {"g": trainer.g, "d": trainer.d}
    return {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in mods.items()}


def max_difference(a: dict, b: dict) -> float:
    return max((a[k][n].float() - b[k][n].float()).abs().max().item() for k in a for n in a[k])


# ----------------------------------------------------------------------------------------------------------
# The worker: this file run as a script by each rank
# ----------------------------------------------------------------------------------------------------------


def worker(mode: str, out: Path) -> None:
    from fewshot_lib import distributed

    distributed.init_from_env()
    rank = distributed.rank()
    if mode in ("die", "hang"):  # rank 1 dies (or freezes) in its third step; rank 0 must not wait forever
        trainer = gan_trainer("ada")
        if rank == 1:
            step = trainer.train_step

            def failing_step():
                if trainer.step == 2:
                    os.kill(os.getpid(), signal.SIGKILL if mode == "die" else signal.SIGSTOP)
                return step()

            trainer.train_step = failing_step
        trainer.train(steps=GAN_STEPS, show_progress=False)
        return
    results = {}
    for kind in ("ada", "labels"):  # half the steps, then every rank resumes from rank 0's checkpoint
        run_dir = out / f"run_{kind}"
        first = gan_trainer(kind, run_dir)
        first.train(steps=GAN_STEPS // 2, show_progress=False)
        trainer = gan_trainer(kind, run_dir)
        trainer.train(show_progress=False)
        results[kind] = {
            "weights": weights(trainer),
            "history": trainer.history,
            "samples_written": len(first.samples) + len(trainer.samples),
        }
    lofgan = lofgan_trainer()
    lofgan.train(show_progress=False)
    results["lofgan"] = {"weights": weights(lofgan), "history": lofgan.history}
    distributed.all_reduce_grads = lambda params: None  # a broken all-reduce: the ranks drift apart
    broken = gan_trainer("ada")
    broken.train(show_progress=False)
    broken_lofgan = lofgan_trainer()
    broken_lofgan.train(show_progress=False)
    results["broken"] = {"weights": weights(broken)}
    results["broken_lofgan"] = {"weights": weights(broken_lofgan)}
    torch.save(results, out / f"rank{rank}.pt")


# ----------------------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, out: Path, timeout_s: float = 60.0) -> list[subprocess.Popen]:
    """Start two ranks of :func:`worker` with the environment torchrun would give them."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "FEWSHOT_DIST_TIMEOUT": str(timeout_s),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, mode, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
        return [(p.returncode, err) for p, err in zip(procs, errs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    results = finish(launch("train", out), timeout=240)
    for rank, (code, err) in enumerate(results):
        assert code == 0, f"rank {rank} failed:\n{err[-3000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("kind", ["ada", "labels"])
def test_ddp_gan_two_ranks_match_one_process(two_ranks, kind):
    single = gan_trainer(kind)
    single.train(show_progress=False)
    want = weights(single)
    for rank, res in enumerate(two_ranks):
        got = res[kind]
        assert max_difference(got["weights"], want) < 1e-5, f"rank {rank} drifted from the single process"
        assert got["history"].keys() == single.history.keys()
        for key, values in single.history.items():
            assert got["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-5), key
    # only rank 0 wrote sample grids (one per train() call); rank 1 none
    assert [r[kind]["samples_written"] for r in two_ranks] == [2, 0]
    # the test can fail: without the all-reduce the ranks' weights leave the single process's
    if kind == "ada":
        assert max_difference(two_ranks[0]["broken"]["weights"], want) > 1e-3
        assert max_difference(two_ranks[0]["broken"]["weights"], two_ranks[1]["broken"]["weights"]) > 1e-3


def test_ddp_lofgan_two_ranks_match_one_process(two_ranks):
    single = lofgan_trainer()
    single.train(show_progress=False)
    want = weights(single)
    for rank, res in enumerate(two_ranks):
        got = res["lofgan"]
        assert max_difference(got["weights"], want) < 1e-5, f"rank {rank} drifted from the single process"
        for key, values in single.history.items():
            assert got["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-5), key
    assert max_difference(two_ranks[0]["broken_lofgan"]["weights"], want) > 1e-4


@pytest.mark.parametrize("mode", ["die", "hang"])
def test_ddp_dead_or_hung_rank_ends_the_job_with_a_clear_error(tmp_path, mode):
    """A killed rank closes its sockets (the other fails at once); a stopped one is caught by the timeout."""
    procs = launch(mode, tmp_path, timeout_s=5)
    start = time.monotonic()
    try:
        err = procs[0].communicate(timeout=60)[1]
        elapsed = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert procs[0].returncode != 0, err[-2000:]
    assert "DistributedError" in err and "another rank died or stopped responding" in err, err[-2000:]
    assert elapsed < 60


def test_ddp_shard_rows_keep_minibatch_stddev_groups_whole():
    from fewshot_lib.distributed import shard_rows
    from fewshot_lib.models.stylegan2 import minibatch_stddev

    x = torch.randn(8, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    whole = minibatch_stddev(x, group=4)
    parts = [shard_rows(8, 2, r, group=4) for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == list(range(8))
    for rows in parts:  # each rank's own stddev over its rows = the single process's at those rows
        torch.testing.assert_close(minibatch_stddev(x[rows], group=4), whole[rows])
    assert shard_rows(8, 2, 1).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="cannot be split over 4 ranks"):
        shard_rows(8, 4, 0, group=4)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
