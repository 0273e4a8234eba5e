"""How long does LSO take to inject one new class? (issue #17's target: ≤ 3 min per class on 2 CPU cores, lab.)

One injection = W+ inversion of the k shots + stage 1 (LAL) + stage 2 (LSR), at the lab recipe of
``scripts/run_lso_tasks.py`` (inversion 200 steps, LAL 60, LSR 150 at batch 8), on the shipped conditional
source model when present (else a fresh model of the same architecture: the timing is the same). It also times
single LAL and LSR steps of the reference recipe (``LSOConfig()`` defaults: batch 16, 125 + 375 steps) so the
full configuration's time per class can be read off.

    .venv/bin/python benchmarks/lso_adapt.py                 # 2 threads
    .venv/bin/python benchmarks/lso_adapt.py --threads 1

Run by hand on an idle machine (pause background trainings with ``kill -STOP``); it prints one table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from fewshot_lib import artifacts  # noqa: E402
from fewshot_lib.methods.lso import LSOConfig, LSOTask, TrainingFeatures  # noqa: E402
from fewshot_lib.metrics.features import EmojiFeatureNet  # noqa: E402
from fewshot_lib.models.stylegan2 import SOURCE_MODEL_CONFIG, Discriminator, Generator  # noqa: E402
from fewshot_lib.projector import project  # noqa: E402
from run_lso_tasks import LAB, unseen_tasks  # noqa: E402


def models():
    name = "stylegan2_cond_seen32"
    if artifacts.get(name).available():
        return artifacts.load(name).eval(), artifacts.load(f"{name}_d"), "shipped " + name
    torch.manual_seed(0)
    c_dim = 90
    G = Generator(**SOURCE_MODEL_CONFIG, c_dim=c_dim).eval()
    D = Discriminator(
        32,
        channel_base=SOURCE_MODEL_CONFIG["channel_base"],
        channel_max=SOURCE_MODEL_CONFIG["channel_max"],
        c_dim=c_dim,
    )
    return G, D, "fresh model of the shipped architecture (no conditional export found)"


def features() -> TrainingFeatures:
    if artifacts.get("emoji_features_seen").available():
        return TrainingFeatures(artifacts.load("emoji_features_seen")[0])
    return TrainingFeatures(EmojiFeatureNet())  # same cost


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--invert-steps", type=int, default=200)
    p.add_argument("--step-reps", type=int, default=5, help="steps timed for the reference recipe")
    p.add_argument("--lal-steps", type=int, default=LAB.lal_steps, help="(shorten only to check the script)")
    p.add_argument("--lsr-steps", type=int, default=LAB.lsr_steps, help="(shorten only to check the script)")
    args = p.parse_args()
    lab = replace(LAB, lal_steps=args.lal_steps, lsr_steps=args.lsr_steps)
    torch.set_num_threads(args.threads)
    G, D, what = models()
    feats = features()
    eval_classes, _, conditioning, _ = unseen_tasks(1, 0)
    shots = conditioning[eval_classes[0]][:3]
    perceptual = lambda x, y: torch.stack([feats.perceptual(a[None], b[None]) for a, b in zip(x, y)])  # noqa: E731

    w_inv = None

    def invert():
        nonlocal w_inv
        w_inv = project(G, shots, steps=args.invert_steps, w_plus=True, feature_loss=perceptual).latents

    t_inv = timed(invert)
    task = LSOTask(G, D, shots, w_inv, feats, lab, seed=0)
    t_lal = timed(lambda: task.run("lal"))
    t_lsr = timed(lambda: task.run("lsr"))
    total = t_inv + t_lal + t_lsr

    ref = LSOConfig()
    ref_task = LSOTask(
        G, D, shots, w_inv, feats, replace(ref, lal_steps=args.step_reps, lsr_steps=args.step_reps)
    )
    s_lal = timed(lambda: ref_task.run("lal")) / args.step_reps
    s_lsr = timed(lambda: ref_task.run("lsr")) / args.step_reps
    ref_total = t_inv + ref.lal_steps * s_lal + ref.lsr_steps * s_lsr
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"LSO injection of one class ({eval_classes[0]}, k = 3), {what}; torch {torch.__version__}, "
        f"{args.threads} thread(s), load average {load:.1f}"
    )
    print(f"{'recipe':34s} {'inversion':>10s} {'LAL':>14s} {'LSR':>16s} {'total':>9s}")
    print(
        f"{'lab (run_lso_tasks.py)':34s} {t_inv:9.1f}s {t_lal:6.1f}s/{lab.lal_steps:<4d}  "
        f"{t_lsr:7.1f}s/{lab.lsr_steps:<4d} {total / 60:7.2f} min   target ≤ 3 min: "
        f"{'met' if total <= 180 else f'missed by {total / 180:.1f}×'}"
    )
    print(
        f"{'reference (LSOConfig(), batch 16)':34s} {t_inv:9.1f}s {s_lal:6.3f}s/step  {s_lsr:7.3f}s/step  "
        f"{ref_total / 60:7.2f} min (estimated from {args.step_reps} steps each)"
    )


if __name__ == "__main__":
    main()
