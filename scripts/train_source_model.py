"""Train (or resume) the shipped StyleGAN2 source model and export it with a manifest.

The default trains a 32×32 lab-size generator on all ``noto`` emoji (1,906 images) with DiffAugment, on CPU,
for a wall-clock budget; it resumes exactly from ``--run-dir`` when run again. Every ``--export-every`` steps
(and at the end) the EMA generator and the discriminator of the same step are exported in half precision to
``data/checkpoints/<name>.pt`` and ``<name>_d.pt``, each with a manifest (sha256, the training commands, steps,
wall time, metrics, and the FID/recognisability history of every export so far). Every training invocation is
appended to ``<run-dir>/commands.json`` so the manifest lists all of them (a model trained in several sittings
records each).

    nice -n 10 python scripts/train_source_model.py --minutes 70 --log /tmp/sg2_source.log
    python scripts/train_source_model.py --export-only        # re-export G and D from the last checkpoint
    # on a new machine (no runs/ folder): carry on from the shipped export (fp16 weights, fresh optimiser)
    python scripts/train_source_model.py --warm-start data/checkpoints/stylegan2_noto32.pt --minutes 60
    # the 64-wide model shipped before it (0.42 M parameters; its recognisability flattened near 51 %)
    python scripts/train_source_model.py --channel-max 64 --name stylegan2_noto32_w64
    # N GPUs (or N CPU processes without --device): the global --batch is split over the ranks, which take
    # the single-process step (fewshot_lib.distributed); only rank 0 writes checkpoints, exports and records
    torchrun --nproc_per_node=4 scripts/train_source_model.py --device cuda --batch 64 --minutes 60

Later notebooks load them (checked against their manifests) with ``fewshot_lib.artifacts.load("stylegan2_noto32")``
and ``fewshot_lib.artifacts.load("stylegan2_noto32_d")``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fewshot_lib import distributed  # noqa: E402
from fewshot_lib.artifacts import manifest_path  # noqa: E402
from fewshot_lib.checkpoint import file_sha256, load_checkpoint, verify_sha256  # noqa: E402
from fewshot_lib.config import data_dir, repo_root  # noqa: E402
from fewshot_lib.data.emoji import load_emoji  # noqa: E402
from fewshot_lib.models.stylegan2 import (
    SOURCE_MODEL_CONFIG,
    Discriminator,
    Generator,  # noqa: E402
    count_parameters,
    sample,
)
from fewshot_lib.models.stylegan2_io import export_discriminator, export_generator  # noqa: E402
from fewshot_lib.sittings import (  # noqa: E402
    Sitting,
    metric_history,
    record_command,
    record_metrics,
    start_script,
    train_in_sittings,
    training_commands,
    warm_start_files,
)
from fewshot_lib.train import GANTrainer, TrainConfig  # noqa: E402

log = logging.getLogger("train_source_model")

# The shipped model's architecture: ≈ 0.3 s per iteration at batch 16 on two cores. (The 64-wide model shipped
# before it cost a third of that and stalled near 51 % recognisable.)
MODEL = SOURCE_MODEL_CONFIG
DEFAULT_LR = 0.002  # StyleGAN2's; the shipped model was decayed to 0.001 and 0.0005 in later sittings


def pixel_stats(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Cheap pixel-space agreement of fakes with reals (no feature network needed)."""

    def stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.clamp(-1, 1)
        white = (x > 0.9).all(1).float().mean()  # fraction of (near-)white background pixels
        return {
            "mean": x.mean((0, 2, 3)),
            "std": x.std((0, 2, 3)),
            "white": white,
            "sat": (x.max(1).values - x.min(1).values).mean(),
        }

    r, f = stats(real), stats(fake)
    return {
        "channel_mean_abs_diff": float((r["mean"] - f["mean"]).abs().mean()),
        "channel_std_abs_diff": float((r["std"] - f["std"]).abs().mean()),
        "white_fraction_real": float(r["white"]),
        "white_fraction_fake": float(f["white"]),
        "colourfulness_real": float(r["sat"]),
        "colourfulness_fake": float(f["sat"]),
    }


def feature_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """FID/KID, precision/recall and recognisability with the project's emoji feature network (if present)."""
    try:
        from fewshot_lib import metrics as M

        ext = M.get_extractor("emoji")
        f_real, f_fake = ext.features(real), ext.features(fake)
        r = M.fid(f_real, f_fake, extractor=ext)
        out = {
            "fid_emoji": float(r),
            "fid_extractor": r.extractor,
            "kid_emoji": float(M.kid(f_real, f_fake, extractor=ext)),
        }
        out.update({k: v.value for k, v in M.precision_recall(f_real, f_fake, extractor=ext).items()})
        rec = M.recognisability(f_real, fake, extractor=ext)
        out.update(recognisability=rec.value, recognisability_details=rec.details)
        return out
    except Exception as err:  # the metrics module is optional for this script
        log.warning("feature metrics skipped: %s", err)
        return {"feature_metrics": f"unavailable ({type(err).__name__})"}


def previous_lr(checkpoint: Path, warm_start: str | None) -> float:
    """The learning rate to carry on with when ``--lr`` is not given: the resumed checkpoint's, else that of the
    export a warm start begins from, else ``DEFAULT_LR`` — so that a plain resume (or ``--export-only``) never
    silently resets a decayed rate, and the manifest's ``train_config`` states the rate really used."""
    if checkpoint.is_file():
        return float(load_checkpoint(checkpoint)["train_config"]["lr"])
    manifest = manifest_path(Path(warm_start)) if warm_start else None
    if manifest is not None and manifest.is_file():
        return float(json.loads(manifest.read_text()).get("train_config", {}).get("lr", DEFAULT_LR))
    return DEFAULT_LR


HISTORY_KEYS = (
    "fid_emoji",
    "kid_emoji",
    "precision",
    "recall",
    "recognisability",
    "class_consistency",
    "classes_above_60",
)  # (the last two: conditional models)


def warm_start(trainer: GANTrainer, g_path: str | Path, run_dir: Path) -> None:
    """Start ``trainer`` from an export of this script (``g_path``, its ``_d.pt`` and manifest beside it).

    The run folder's full checkpoint (optimiser moments, exact RNG) lives only on the machine that trained;
    the shipped files are what a new machine has. They hold the EMA generator and D in fp16, so this is a warm
    start, not an exact resume: G and G_ema both start from the EMA weights, Adam's moments start at zero
    (with beta2 = 0.99 they settle within a few hundred steps), the path-length mean starts afresh, and the
    data order is reseeded from the step. The step count, wall time and the recorded training sittings
    carry on from the manifest so that the next export still describes the whole training.
    """
    from fewshot_lib.models.stylegan2 import same_architecture
    from fewshot_lib.models.stylegan2_io import load_generator, load_state_strict

    g_path, d_path, manifest = warm_start_files(g_path)
    verify_sha256(
        g_path, manifest.get("sha256"), "re-export it with --export-only on the machine that trained it."
    )
    g_ema = load_generator(g_path)
    if not same_architecture(g_ema.config, trainer.G.config):
        raise ValueError(
            f"{g_path.name} has generator config {g_ema.config}, but this run builds "
            f"{trainer.G.config}; pass the matching --channel-max."
        )
    state = g_ema.state_dict()
    load_state_strict(trainer.G, state, f"{g_path.name} → G")
    load_state_strict(trainer.g_ema, state, f"{g_path.name} → G_ema")
    d_ck = load_checkpoint(d_path)
    load_state_strict(trainer.D, {k: v.float() for k, v in d_ck["d"].items()}, f"{d_path.name} → D")
    trainer.step = int(manifest["steps"])
    trainer.seconds = float(manifest.get("wall_time_s", 0.0))
    trainer.gen.manual_seed(trainer.cfg.seed + trainer.step)
    if distributed.is_main() and not training_commands(run_dir):
        for entry in manifest.get("training_sessions", []):
            record_command(run_dir, entry)
    if distributed.is_main() and not metric_history(run_dir):
        for entry in manifest.get("metric_history", []):
            record_metrics(run_dir, entry["step"], entry, HISTORY_KEYS)
    log.info("warm start from %s at step %d (fp16 weights, fresh optimiser state)", g_path, trainer.step)


def export(
    trainer: GANTrainer,
    args: argparse.Namespace,
    real: torch.Tensor,
    run_dir: Path,
    with_features: bool,
    exported_by: str | None = None,
) -> None:
    """Write G (EMA) and D of the current step with their manifests, measured against ``real`` (the
    ``--reference-style`` images); ``exported_by`` records a separate ``--export-only`` command (e.g. one that
    wrote the export under another name)."""
    out = Path(args.out) if args.out else data_dir() / "checkpoints" / f"{args.name}.pt"
    name = (
        out.stem
    )  # G, D and their manifests share the file name: <name>.pt, <name>_d.pt, <name>.manifest.json
    fake = sample(trainer.g_ema, 2000 if with_features else 512, seed=123)
    metrics = pixel_stats(real, fake)
    history = metric_history(run_dir)
    if with_features:
        metrics.update(feature_metrics(real, fake))
        if "fid_emoji" in metrics:
            history = record_metrics(run_dir, trainer.step, metrics, HISTORY_KEYS)
    commands = training_commands(run_dir)
    info = {
        "steps": trainer.step,
        "images_seen": trainer.step * trainer.cfg.batch,
        "wall_time_s": round(trainer.seconds, 1),
        "dataset": f"emoji_32 style={args.style} (n={len(trainer.images)})",
        "metrics_reference": f"emoji_32 style={args.reference_style} (n={len(real)})",
    }
    common = {
        **info,
        "command": " ; then ".join(e["command"] for e in commands) or "unknown",
        "training_sessions": commands,
        "precision": "float16 weights (cast to float32 on load)",
        "torch": torch.__version__,
        "device": str(trainer.device),
        "trained_by": "fewshot_lib.train.GANTrainer (this project's code)",
    }
    if exported_by:
        common["exported_by"] = exported_by
    export_generator(trainer.g_ema, out, half=True, info=info)
    manifest = {
        "name": name,
        "file": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        **common,
        "model_config": trainer.g_ema.config,
        "g_parameters": count_parameters(trainer.G),
        "train_config": {k: v for k, v in vars(trainer.cfg).items()},
        "metrics": metrics,
        "metric_history": history,
    }
    manifest_path(out).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    # The discriminator of the same step: adaptation methods (notebook 04) fine-tune it too.
    d_out = out.with_name(f"{name}_d.pt")
    export_discriminator(trainer.D, d_out, half=True, info=info)
    d_manifest = {
        "name": f"{name}_d",
        "file": d_out.name,
        "sha256": file_sha256(d_out),
        "bytes": d_out.stat().st_size,
        **common,
        "config": trainer.D.config,
        "d_parameters": count_parameters(trainer.D),
    }
    manifest_path(d_out).write_text(json.dumps(d_manifest, indent=2, default=str) + "\n")
    log.info("exported %s and %s at step %d: %s", out.name, d_out.name, trainer.step, metrics)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--style", default="noto", help="emoji style(s) to train on, comma-separated")
    p.add_argument(
        "--reference-style",
        default="noto",
        help="style whose images every export's FID/recognisability is measured against (the same "
        "yardstick whatever the training styles)",
    )
    p.add_argument("--name", default="stylegan2_noto32", help="exported model name")
    p.add_argument("--run-dir", default=None, help="training folder (default runs/source_<name>)")
    p.add_argument("--out", default=None, help="export path (default data/checkpoints/<name>.pt)")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this invocation")
    p.add_argument("--steps", type=int, default=200_000, help="maximum total iterations")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--channel-max",
        type=int,
        default=MODEL["channel_max"],
        help="widest layer of G and D (128 ships; 64 costs a third as much per iteration)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"Adam learning rate (default: the rate of the run being resumed, else {DEFAULT_LR}); "
        "a resume with another value uses it (e.g. a late decay)",
    )
    p.add_argument("--r1-gamma", type=float, default=0.1)
    p.add_argument("--chunk", type=int, default=200, help="iterations between checkpoints")
    p.add_argument(
        "--export-every",
        type=int,
        default=4000,
        help="iterations between exports (each measures FID, recognisability, … into the metric history)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda; under torchrun --nproc_per_node=N each rank takes cuda:LOCAL_RANK and 1/N of --batch",
    )
    p.add_argument("--export-only", action="store_true")
    p.add_argument(
        "--warm-start",
        default=None,
        metavar="G.pt",
        help="if the run folder has no checkpoint, start from this export (+ its _d.pt and manifest)",
    )
    p.add_argument("--log", default=None, help="also log to this file")
    args = p.parse_args(argv)

    command = start_script("train_source_model.py", args, argv)
    device = distributed.init_from_env(args.device)  # a no-op outside torchrun
    main_rank = distributed.is_main()  # only rank 0 exports and records
    if not main_rank:
        logging.getLogger().setLevel(logging.WARNING)

    data = load_emoji(styles=args.style.split(","))
    real = data.tensors()
    reference = load_emoji(styles=[args.reference_style]).tensors()
    run_dir = Path(args.run_dir) if args.run_dir else repo_root() / "runs" / f"source_{args.name}"
    lr = args.lr if args.lr is not None else previous_lr(run_dir / "checkpoint.pt", args.warm_start)
    cfg = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=lr,
        r1_gamma=args.r1_gamma,
        r1_every=16,
        pl_weight=2.0,
        pl_every=4,
        mixing=0.9,
        ema_half_life_images=5_000,
        ema_rampup=0.05,
        augment="color,translation,cutout",
        sample_every=0,
        checkpoint_every=0,
        n_sample=64,
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    model = {**MODEL, "channel_max": args.channel_max}
    G, D = (
        Generator(**model),
        Discriminator(32, channel_base=model["channel_base"], channel_max=model["channel_max"]),
    )
    trainer = GANTrainer(G, D, real, cfg, run_dir=run_dir, device=device)
    warm = None
    if trainer.checkpoint_path.exists():
        trainer.load(trainer.checkpoint_path)
    elif args.warm_start:
        warm_start(trainer, args.warm_start, run_dir)
        warm = f"warm start from {Path(args.warm_start).name} (fp16 weights, fresh optimiser state)"
    log.info(
        "data %s, G %d params, D %d params, start step %d",
        tuple(real.shape),
        count_parameters(G),
        count_parameters(D),
        trainer.step,
    )
    if args.export_only:
        if main_rank:
            export(trainer, args, reference, run_dir, with_features=True, exported_by=command)
        return
    sitting = Sitting(
        run_dir,
        command,
        trainer.step,
        args.minutes,
        lr=cfg.lr,
        threads=args.threads,
        style=args.style,
        note=warm,
    )
    train_in_sittings(
        trainer,
        sitting,
        stop=args.steps,
        chunk=args.chunk,
        train_kwargs=dict(resume=False, show_progress=False),  # each chunk saves checkpoint + sample grid
        export=lambda: export(trainer, args, reference, run_dir, with_features=True),
        export_every=args.export_every,
        last_export=trainer.step,
        decide=distributed.rank0_decides,
        main_rank=main_rank,
    )


if __name__ == "__main__":
    main()
