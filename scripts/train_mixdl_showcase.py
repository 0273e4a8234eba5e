"""Train the two generators of notebook 05's "staircase or ramp?" showcase and ship them.

MixDL's claim is about the *memorisation* regime: trained from scratch on 10 images for long enough, plain
StyleGAN2 reproduces its shots and its latent walks become staircases; MixDL is meant to keep them ramps. The
notebook's lab runs (400 iterations) never get there, so this script trains, on one CPU core, for a wall-clock
budget:

* ``--variant stylegan2``: plain StyleGAN2 (no augmentation) — the paper's over-fitted baseline;
* ``--variant mixdl``: the same model and recipe plus full MixDL (``fewshot_lib.methods.mixdl.MixDLHook``),

on notebook 05's default task (noto *Smileys & Emotion*, 10 shots drawn with ``--seed``, 0 by default) with the notebook's lab
model (``mixdl.LAB_MODEL``, batch 4). Every ``--measure-every`` iterations it logs how much the EMA generator
copies its shots and how stairlike its walks are (``fewshot_lib.metrics.generator.memorisation_metrics``: share of near-copies, median
distance to the nearest shot, NN-modes, PPL sub-interval mean/std/end, largest step share). It resumes exactly
from ``--run-dir`` (the trainer's checkpoint) when run again. At the end the EMA generator is exported in half
precision to ``data/checkpoints/mixdl_showcase_<variant>.pt`` (``..._<variant>_seed<N>.pt`` for ``--seed N``
>= 1: the shots of ``mixdl.category_task(seed=N)``), D beside it as ``..._d.pt`` (fp16, with MixDL's projection
head: what ``--warm-start`` needs on another machine), and one manifest (both sha256, commands and sittings with
their CPU seconds and threads, steps, wall time, the memorisation trajectory).

    nice -n 10 python scripts/train_mixdl_showcase.py --variant stylegan2 --minutes 20 --log /tmp/showcase_sg2.log
    nice -n 10 python scripts/train_mixdl_showcase.py --variant mixdl --minutes 20 --log /tmp/showcase_mixdl.log
    nice -n 10 python scripts/train_mixdl_showcase.py --variant mixdl --seed 1 --steps 10000   # another shot set
    python scripts/train_mixdl_showcase.py --variant mixdl --export-only   # re-export from the last checkpoint
    python scripts/train_mixdl_showcase.py --variant mixdl --seed 1 --steps 20000 \\
        --warm-start data/checkpoints/mixdl_showcase_mixdl_seed1.pt    # continue from the shipped files elsewhere

Notebook 05 loads them with ``fewshot_lib.methods.mixdl.load_showcase_generator(variant, seed=N)``
(``mixdl.shipped_showcase_seeds()`` lists the seeds whose pair ships).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fewshot_lib.checkpoint import file_sha256, load_checkpoint, verify_sha256  # noqa: E402
from fewshot_lib.config import data_dir, repo_root  # noqa: E402
from fewshot_lib.methods import mixdl  # noqa: E402
from fewshot_lib.metrics.generator import memorisation_metrics  # noqa: E402
from fewshot_lib.models.stylegan2 import Discriminator, Generator, count_parameters  # noqa: E402
from fewshot_lib.models.stylegan2_io import (  # noqa: E402
    export_discriminator,
    export_generator,
    load_generator,
    load_state_strict,
)
from fewshot_lib.train import GANTrainer, TrainConfig  # noqa: E402
from fewshot_lib.sittings import (  # noqa: E402
    warm_start_files,
    Sitting,
    record_command,
    start_script,
    train_in_sittings,
    training_commands,
    training_cost,
)

log = logging.getLogger("train_mixdl_showcase")


def showcase_train_config(steps: int, seed: int = 0, batch: int = 4) -> TrainConfig:
    """Notebook 05's recipe (batch 4, R1 γ = 1, x-flips, no augmentation) with a short fixed EMA half-life.

    The half-life (400 images = 100 iterations) keeps ``G_ema`` close to ``G``: a long EMA would average over
    the modes a memorising generator jumps between and hide the very effect we want to see.
    """
    return TrainConfig(
        steps=steps,
        batch=batch,
        r1_gamma=1.0,
        ema_half_life_images=400,
        xflip=True,
        augment=None,
        n_sample=64,
        sample_every=0,
        checkpoint_every=0,
        seed=seed,
    )


def build_trainer(
    variant: str,
    shots: torch.Tensor,
    run_dir: str | Path | None,
    model_kwargs: dict,
    steps: int,
    seed: int = 0,
    batch: int = 4,
    device: str | torch.device = "cpu",
) -> GANTrainer:
    """A fresh seeded G/D (+ the MixDL hook for ``variant="mixdl"``) on ``shots [k, 3, H, W]``."""
    if variant not in mixdl.SHOWCASE_VARIANTS:
        raise ValueError(f"--variant must be one of {mixdl.SHOWCASE_VARIANTS}, got {variant!r}")
    torch.manual_seed(seed)
    g = Generator(**model_kwargs)
    d = Discriminator(
        model_kwargs["size"],
        channel_base=model_kwargs["channel_base"],
        channel_max=model_kwargs["channel_max"],
    ).to(device)
    hook, policy = mixdl.variant_hook(variant, d)
    assert policy is None, "the showcase compares un-augmented variants"
    return GANTrainer(
        g, d, shots, showcase_train_config(steps, seed, batch), run_dir=run_dir, device=device, hook=hook
    )


def train_showcase(
    trainer: GANTrainer,
    shots: torch.Tensor,
    until_step: int,
    sitting: Sitting,
    measure_every: int,
    trajectory: list[dict],
    measure_kwargs: dict | None = None,
    on_measure=None,
) -> list[dict]:
    """Train in chunks of ``measure_every`` iterations until ``until_step`` or the sitting's budget.

    After each chunk the trainer's checkpoint is written (when it has a run_dir), and
    ``memorisation_metrics`` of ``G_ema`` is appended to ``trajectory`` (with ``step``, ``seconds`` =
    training time so far and ``s_per_it`` of the chunk). ``on_measure(entry)`` is called after each entry.
    Returns ``trajectory``.
    """
    clock = {"t": time.time(), "step": trainer.step}

    def measure() -> str:
        s_per_it = (time.time() - clock["t"]) / max(1, trainer.step - clock["step"])
        e = {
            "step": trainer.step,
            "seconds": round(trainer.seconds, 1),
            "s_per_it": round(s_per_it, 4),
            **memorisation_metrics(trainer.g_ema, shots, **(measure_kwargs or {})),
        }
        trajectory.append(e)
        if on_measure is not None:
            on_measure(e)
        clock.update(t=time.time(), step=trainer.step)
        return (
            f"copies {e['copy_fraction']:.2f} (pixel {e['pixel_copy_fraction']:.2f})  "
            f"nn/gap {e['nn_ratio_median']:.3f}  modes {e['nn_modes']:.0f}  div {e['lpips_diversity']:.3f}  "
            f"PPL mean {e['ppl_mean']:.3f} std {e['ppl_std']:.3f} rel {e['ppl_rel_std']:.3f} "
            f"end {e['ppl_end']:.3f}  max-share {e['max_step_share']:.3f}"
        )

    train_in_sittings(
        trainer,
        sitting,
        stop=until_step,
        chunk=measure_every,
        train_kwargs=dict(resume=False, show_progress=False),
        after_chunk=measure,
        last_export=trainer.step,  # (no exports inside: main() exports at the end)
    )
    return trajectory


def export(
    trainer: GANTrainer, args: argparse.Namespace, trajectory: list[dict], run_dir: Path, task: dict
) -> Path:
    """EMA generator (fp16) → ``data/checkpoints/<mixdl.showcase_name(variant, seed)>.pt`` + manifest, and beside
    it ``<name>_d.pt``: D (fp16; with MixDL's projection head under ``mixdl_head``), what ``--warm-start`` needs
    besides G. Both files' sha256 are in the one manifest (``sha256``, ``d_sha256``)."""
    name = mixdl.showcase_name(args.variant, args.seed)
    out = Path(args.out_dir or data_dir() / "checkpoints") / f"{name}.pt"
    commands = training_commands(run_dir)
    info = {
        "variant": args.variant,
        "steps": trainer.step,
        "wall_time_s": round(trainer.seconds, 1),
        "task": task,
    }
    export_generator(trainer.g_ema, out, half=True, info=info)
    d_out = out.with_name(f"{name}_d.pt")
    # MixDL's projection head trains with D: a warm start needs it too
    head = {"mixdl_head": trainer.hook.head} if isinstance(trainer.hook, mixdl.MixDLHook) else {}
    export_discriminator(trainer.D, d_out, info=info, with_modules=head)
    manifest = {
        "name": name,
        "file": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "d_file": d_out.name,
        "d_sha256": file_sha256(d_out),
        "d_bytes": d_out.stat().st_size,
        **info,
        "images_seen": trainer.step * trainer.cfg.batch,
        "cpu_time_s": training_cost(run_dir)["cpu_s"],
        "threads": sorted({e.get("threads") for e in commands if e.get("threads") is not None}),
        "command": " ; then ".join(e["command"] for e in commands) or "unknown",
        "training_sessions": commands,
        "precision": "float16 weights (cast to float32 on load)",
        "torch": torch.__version__,
        "device": str(trainer.device),
        "trained_by": "fewshot_lib.train.GANTrainer + fewshot_lib.methods.mixdl (this project's code)",
        "model_config": trainer.g_ema.config,
        "g_parameters": count_parameters(trainer.G),
        "train_config": dict(vars(trainer.cfg)),
        "mixdl_config": trainer.hook.config.as_dict() if args.variant == "mixdl" else None,
        "memorisation": trajectory[-1] if trajectory else {},
        "memorisation_trajectory": trajectory,
    }
    out.with_name(f"{name}.manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    log.info("exported %s at step %d (%.1f kB)", out.name, trainer.step, out.stat().st_size / 1e3)
    return out


def warm_start(trainer: GANTrainer, g_path: str | Path, run_dir: Path, variant: str, seed: int) -> list[dict]:
    """Start ``trainer`` from a shipped export (``g_path``, its ``_d.pt`` and manifest beside it); returns the
    manifest's memorisation trajectory.

    The run folder's checkpoint (optimiser moments, exact RNG) lives only on the machine that trained; the shipped
    files are what a new machine has, in fp16, so this is a warm start, not an exact resume: G and G_ema both start
    from the EMA weights, D (and MixDL's projection head) from the ``_d`` file, Adam's moments at zero, the data
    order reseeded from the step. Steps, wall time and the recorded sittings carry on from the manifest.
    """
    g_path, d_path, manifest = warm_start_files(g_path)
    if manifest.get("variant") != variant or manifest.get("task", {}).get("seed") != seed:
        raise SystemExit(
            f"{g_path.name} is variant {manifest.get('variant')!r}, seed {manifest.get('task', {}).get('seed')}: "
            f"not --variant {variant} --seed {seed}"
        )
    fix = "re-export it with --export-only on the machine that trained it."
    verify_sha256(g_path, manifest.get("sha256"), fix)
    verify_sha256(d_path, manifest.get("d_sha256"), fix)
    state = load_generator(g_path).state_dict()
    load_state_strict(trainer.G, state, f"{g_path.name} → G")
    load_state_strict(trainer.g_ema, state, f"{g_path.name} → G_ema")
    ck = load_checkpoint(d_path)
    load_state_strict(trainer.D, {k: v.float() for k, v in ck["d"].items()}, f"{d_path.name} → D")
    if isinstance(trainer.hook, mixdl.MixDLHook):
        head = {k: v.float() for k, v in ck["mixdl_head"].items()}
        load_state_strict(trainer.hook.head, head, f"{d_path.name} → MixDL head")
    trainer.step = int(manifest["steps"])
    trainer.seconds = float(manifest.get("wall_time_s", 0.0))
    trainer.gen.manual_seed(trainer.cfg.seed + trainer.step)
    if not training_commands(run_dir):
        for entry in manifest.get("training_sessions", []):
            record_command(run_dir, entry)
    log.info("warm start from %s at step %d (fp16 weights, fresh optimiser state)", g_path, trainer.step)
    return list(manifest.get("memorisation_trajectory", []))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", required=True, choices=mixdl.SHOWCASE_VARIANTS)
    p.add_argument(
        "--run-dir", default=None, help="training folder (default runs/mixdl_showcase_<variant>[_seed<N>])"
    )
    p.add_argument(
        "--out-dir",
        default=None,
        help="export folder (default data/checkpoints, the shipped files)",
    )
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of this invocation")
    p.add_argument("--steps", type=int, default=100_000, help="maximum total iterations")
    p.add_argument(
        "--measure-every", type=int, default=500, help="iterations between memorisation measurements"
    )
    p.add_argument("--n-samples", type=int, default=256, help="samples per memorisation measurement")
    p.add_argument("--n-paths", type=int, default=32, help="latent walks per measurement")
    p.add_argument("--seed", type=int, default=0, help="seed of the task (which shots) and of the training")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--export-only", action="store_true")
    p.add_argument(
        "--warm-start",
        default=None,
        metavar="G.pt",
        help="start a fresh --run-dir from a shipped export (its _d.pt and manifest beside it)",
    )
    p.add_argument("--log", default=None, help="also log to this file")
    args = p.parse_args(argv)

    command = start_script("train_mixdl_showcase.py", args, argv)
    logging.getLogger("fewshot_lib.metrics.fid").setLevel(logging.ERROR)

    task = {"style": "noto", "category": "Smileys & Emotion", "n_shots": 10, "seed": args.seed}
    shots, _ = mixdl.category_task(task["style"], task["category"], task["n_shots"], task["seed"])
    # Each seed is its own task (shots) and its own training: its own run folder and export name
    # (mixdl.showcase_name: seed 0 keeps the first shipped names, seed N >= 1 adds _seed<N>).
    suffix = f"_seed{args.seed}" if args.seed else ""
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else repo_root() / "runs" / f"mixdl_showcase_{args.variant}{suffix}"
    )
    seeds_file = run_dir / "task.json"
    if seeds_file.is_file() and json.loads(seeds_file.read_text()).get("seed") != args.seed:
        raise SystemExit(
            f"{run_dir} trains the task of seed {json.loads(seeds_file.read_text()).get('seed')}, not --seed "
            f"{args.seed}: give this seed its own --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    seeds_file.write_text(json.dumps(task) + "\n")
    trainer = build_trainer(args.variant, shots, run_dir, mixdl.LAB_MODEL, args.steps, seed=args.seed)
    traj_path = run_dir / "memorisation.json"
    trajectory = json.loads(traj_path.read_text()) if traj_path.is_file() else []
    note = None
    if trainer.checkpoint_path.exists():
        trainer.load(trainer.checkpoint_path)
    elif args.warm_start:
        trajectory = trajectory or warm_start(trainer, args.warm_start, run_dir, args.variant, args.seed)
        note = f"warm start from {Path(args.warm_start).name} (fp16 weights, fresh optimiser state)"
    trajectory = [e for e in trajectory if e["step"] <= trainer.step]  # entries past the checkpoint are lost
    log.info(
        "%s: shots %s, G %d params, D %d params, start step %d",
        args.variant,
        tuple(shots.shape),
        count_parameters(trainer.G),
        count_parameters(trainer.D),
        trainer.step,
    )
    if args.export_only:
        export(trainer, args, trajectory, run_dir, task)
        return
    sitting = Sitting(run_dir, command, trainer.step, args.minutes, threads=args.threads, note=note)
    train_showcase(
        trainer,
        shots,
        args.steps,
        sitting,
        args.measure_every,
        trajectory,
        dict(n_samples=args.n_samples, n_paths=args.n_paths),
        on_measure=lambda e: traj_path.write_text(json.dumps(trajectory, indent=1) + "\n"),
    )
    export(trainer, args, trajectory, run_dir, task)


if __name__ == "__main__":
    main()
