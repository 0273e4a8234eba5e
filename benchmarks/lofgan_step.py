"""Speed of one LoFGAN training iteration (D step + G step) at the reference configuration.

Reference config: 128 px, batch 8 episodes, 3 shots, G nf=32, D nf=64 (→1024), gradient penalty every step.
Prints seconds per iteration and images per second (generated images = episodes; the D also sees B·k reals).

    .venv/bin/python benchmarks/lofgan_step.py                 # reference config, this package
    .venv/bin/python benchmarks/lofgan_step.py --anomaly       # same, with autograd anomaly detection on, as the
                                                               # reference train.py leaves it
    .venv/bin/python benchmarks/lofgan_step.py --size 32 --nf 16 --nf-d 16 --gp-every 4   # the notebook's lab model

Run by hand on an idle machine; timings on a shared machine vary a lot (report the load with the numbers).

Measured 2026-11-23 on the project's 2-core CPU box, 1 torch thread, 128 px, batch 8 × 3 shots. The box was
shared (load average ≈ 3: two other 1-thread trainings), so the runs were made back to back under the same load;
compare rows of one table only.

=======================================================  ============  =====  ======
run                                                      s / iter      img/s  vs ref
                                                         mean (min)
=======================================================  ============  =====  ======
reference code (edward3862/LoFGAN-pytorch, anomaly on)   160.8 (150.3) 0.050  1.0×
this package, penalty every step (the reference recipe)   78.1 (74.0)  0.102  2.06×
this package, same, anomaly detection on                  73.3 (70.6)  0.109  2.19×
this package, ``--gp-every 4`` (lazy penalty)             44.3 (37.1)  0.181  3.6×
=======================================================  ============  =====  ======

Where the time goes and what was done about it (``fewshot_lib.models.lofgan.PenaltyConv2d``): the class-logit
gradient penalty is a double backprop through the 38 M-parameter D. PyTorch's generic second derivative of a
convolution computes its weight term as a convolution with a feature-map-sized kernel, which on CPU costs
several times a normal weight gradient; D's convolutions therefore route their input gradient through an op of
their own whose backward is the two ordinary kernels, and skip weight gradients inside the penalty's
``autograd.grad``. Same numbers (tested against stock ``nn.Conv2d``), D step ≈ 25 % faster. Further gains over
the reference: one backward pass per update instead of one per loss term, no D weight gradients in the G step,
no anomaly detection (worth little here).
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
