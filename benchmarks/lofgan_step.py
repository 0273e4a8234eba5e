"""Speed of one LoFGAN training iteration (D step + G step) at the reference configuration.

Reference config: 128 px, batch 8 episodes, 3 shots, G nf=32, D nf=64 (→1024), gradient penalty every step.
Prints seconds per iteration and images per second (generated images = episodes; the D also sees B·k reals).

    .venv/bin/python benchmarks/lofgan_step.py                 # reference config, this package
    .venv/bin/python benchmarks/lofgan_step.py --anomaly       # same, with autograd anomaly detection on, as the
                                                               # reference train.py leaves it
    .venv/bin/python benchmarks/lofgan_step.py --size 32 --nf 16 --nf-d 16 --gp-every 4   # the notebook's lab model

Run by hand on an idle machine; timings on a shared machine vary a lot (report the load with the numbers).

Measured 2026-12-01 on the project's 2-core CPU box (AMD EPYC, AVX-512), quiet: the two other 1-thread
trainings paused (load average 1.0–1.1, the measuring process itself). 1 torch thread, 128 px, batch 8 × 3
shots, penalty every step. Side by side in one process: one warm-up iteration each, then three interleaved
pairs (reference: edward3862/LoFGAN-pytorch's own ``update_lr``, ``dis_update``, ``gen_update`` under
``set_detect_anomaly(True)`` as its train.py runs them, ``.cuda()`` made a no-op; this package:
:func:`~fewshot_lib.methods.lofgan.train_step`), so both saw the same machine.

=======================================================  ============  ======  ======
run                                                      s / iter      img/s   vs ref
                                                         mean (min)
=======================================================  ============  ======  ======
reference code (LoFGAN-pytorch @c169621, anomaly on)      164.1 (159.8) 0.049   1.0×
this package, penalty every step (the reference recipe)   84.9 (82.1)   0.094   1.93×
=======================================================  ============  ======  ======

The pairs gave 1.90×, 2.00× and 1.90×. The goal of ≥ 3× at this recipe (issue #19) is **not met**. Earlier
figures: 2.06× on 2026-11-23 (shared box, back to back) and 1.92× quiet (89.8 vs 46.7 s/iter; 1.84× at
batch 4), as quoted in issue #19.

Why 3× is out of reach without changing the numbers: in one iteration this package runs six D passes'
worth of convolutions over the B·k reals (forward; the penalty's input gradient; the main input gradient
and weight gradient; the double backward's two ordinary convolutions) and five over the B fakes (D step
forward, input and weight gradients; G step forward and input gradient). That is the minimum for these losses computed
exactly, and the convolutions run at about the speed of a forward convolution. The reference costs about
twice that.

What was measured and did not help (same box, under load, A/B in one process): ``channels_last``
(``LoFGANConfig.channels_last``) on CPU: the 128 px convolutions alone run 1.2–1.8× faster, but the whole
step did not get faster (20.7 vs 20.5 s at batch 2, 128 px), because padding, activation and pooling copy
between layouts. Running the D passes in micro-batches of 6, 3 or 1 reals (spectral norms cached so the
power iteration stays one per pass): 59–62 s vs 63 s for D's real part, within the noise. A leaky ReLU
without PyTorch's all-zero second-derivative term: 14.8 vs 14.5 s, bit-identical and no faster. Two
torch threads: not measured cleanly (a third process started on the second core during that run).

Where the time goes and what was done about it (``fewshot_lib.models.lofgan.PenaltyConv2d``): the class-logit
gradient penalty is a double backprop through the 38 M-parameter D. PyTorch's generic second derivative of a
convolution computes its weight term as a convolution with a feature-map-sized kernel, which on CPU costs
several times a normal weight gradient; D's convolutions therefore route their input gradient through an op of
their own whose backward is the two ordinary kernels, and skip weight gradients inside the penalty's
``autograd.grad``. Same numbers (tested against stock ``nn.Conv2d``, and the whole step against a
straightforward one over five steps: ``tests/test_lofgan.py``), D step ≈ 25 % faster. Further gains over
the reference: one backward pass per update instead of one per loss term, no D weight gradients in the G step,
no unused D pass over the reals in the G step, no anomaly detection (worth little here).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fewshot_lib.config import get_device
from fewshot_lib.methods.lofgan import LoFGANConfig, LoFGANTrainer, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--nf", type=int, default=32)
    ap.add_argument("--nf-d", type=int, default=64)
    ap.add_argument("--classes", type=int, default=85, help="seen classes (D class head); flowers: 85")
    ap.add_argument("--fusion", choices=["local", "global"], default="local")
    ap.add_argument("--gp-every", type=int, default=1, help="lazy penalty; use a multiple of it for --iters")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--anomaly", action="store_true", help="torch.autograd.set_detect_anomaly(True)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    cfg = LoFGANConfig(
        size=args.size,
        nf=args.nf,
        nf_d=args.nf_d,
        fusion=args.fusion,
        k=args.k,
        batch=args.batch,
        gp_every=args.gp_every,
    )
    gen = torch.Generator().manual_seed(0)
    data = {
        str(c): torch.rand(args.k + 2, 3, args.size, args.size, generator=gen) * 2 - 1
        for c in range(args.classes)
    }
    tr = LoFGANTrainer(data, cfg, seed=0, device=device)
    n_g = sum(p.numel() for p in tr.g.parameters())
    n_d = sum(p.numel() for p in tr.d.parameters())
    torch.autograd.set_detect_anomaly(args.anomaly)
    times = []
    for i in range(args.warmup + args.iters):
        shots, y = tr.sampler.sample()
        shots, y = shots.to(device), y.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_step(tr.g, tr.d, tr.opt_g, tr.opt_d, shots, y, cfg, tr.fusion_rng, step=i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    sec = sum(times) / len(times)  # the mean: with --gp-every n only every n-th step pays for the penalty
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"LoFGAN step ({args.fusion} fusion) {args.size}px, batch {args.batch} episodes × {args.k} shots, "
        f"G {n_g / 1e6:.2f}M / D {n_d / 1e6:.2f}M params, device {device}, threads {torch.get_num_threads()}, "
        f"anomaly detection {'on' if args.anomaly else 'off'}, load avg {load:.1f}"
    )
    print(f"  mean {sec:.3f} s/iter over {len(times)} iters (min {min(times):.3f}, max {max(times):.3f})")
    print(f"  {args.batch / sec:.2f} generated img/s, {args.batch * args.k / sec:.2f} real img/s through D")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
