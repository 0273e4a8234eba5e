"""Train (or resume) the class-conditional source model of LSO on the *seen* emoji classes, and ship it.

LSO injects a new class into a conditional StyleGAN2 trained on seen classes only. The classes are notebook
06's: one subcategory drawn in one style (``noto/animal-mammal``), noto + twemoji, with its fixed seen/unseen
split (``fewshot_lib.methods.lofgan.emoji_episode_classes``), so LSO and LoFGAN are measured on the same unseen
classes. The architecture is the shipped source model's (``SOURCE_MODEL_CONFIG``) with ``c_dim`` = the number of
seen classes; a fresh run starts its synthesis network and discriminator trunk from the shipped unconditional
model (``--init-from``; the mapping and the class projection are new), which saves most of the ≈ 5 CPU-hours the
unconditional model needed.

Every ``--export-every`` iterations (and at the end) G_ema and D are exported in half precision to
``data/checkpoints/<name>.pt`` and ``<name>_d.pt`` with manifests: sha256, the seen classes in label order,
every sitting (command, steps, wall time, process CPU seconds, threads) and the metric history — FID and
recognisability against the seen images, and the mean per-class consistency (share of a class's samples that the
emoji network's subcategory head assigns to that class's subcategory; the bar: ≥ 0.60), all emoji-features-v1.

    nice -n 10 python scripts/train_conditional_source.py --minutes 120 --log /tmp/cond.log
    # every class drawn equally often (reals and fake classes), not in proportion to its images
    nice -n 10 python scripts/train_conditional_source.py --class-balanced --minutes 120 --log /tmp/cond.log
    python scripts/train_conditional_source.py --export-only
    # a new machine (no runs/ folder): carry on from the shipped export (fp16 weights, fresh optimiser state)
    python scripts/train_conditional_source.py --warm-start data/checkpoints/stylegan2_cond_seen32.pt

Notebook 07 loads it with ``fewshot_lib.artifacts.load("stylegan2_cond_seen32")``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fewshot_lib.checkpoint import file_sha256, load_checkpoint  # noqa: E402
from fewshot_lib.config import data_dir, repo_root  # noqa: E402
from fewshot_lib.data.emoji import load_emoji  # noqa: E402
from fewshot_lib.methods.lofgan import emoji_episode_classes  # noqa: E402
from fewshot_lib.models.stylegan2 import (
    SOURCE_MODEL_CONFIG,
    Discriminator,
    Generator,  # noqa: E402
    count_parameters,
)
from fewshot_lib.models.stylegan2_io import export_discriminator, export_generator, load_generator  # noqa: E402
from fewshot_lib.train import GANTrainer, TrainConfig  # noqa: E402
from fewshot_lib.artifacts import manifest_path  # noqa: E402
from fewshot_lib.sittings import (  # noqa: E402
    Sitting,
    metric_history,
    record_metrics,
    start_script,
    train_in_sittings,
    training_commands,
    training_cost,
)
from train_source_model import HISTORY_KEYS, warm_start  # noqa: E402

log = logging.getLogger("train_conditional_source")
STYLES = ("noto", "twemoji")
SAMPLES_PER_CLASS = 32


def seen_data() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``(class names in label order, images [N, 3, 32, 32], labels [N])`` of the seen classes."""
    seen, _ = emoji_episode_classes(load_emoji(size=32), styles=STYLES, min_count=10)
    names = list(seen)
    images = torch.cat([seen[c] for c in names])
    labels = torch.cat([torch.full((len(seen[c]),), i, dtype=torch.long) for i, c in enumerate(names)])
    return names, images, labels


@torch.no_grad()
def class_samples(g: Generator, n_classes: int, per_class: int, seed: int = 123) -> torch.Tensor:
    """``per_class`` samples of every class, class-major: ``[n_classes · per_class, 3, H, W]``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for c in range(n_classes):
        z = torch.randn(per_class, g.style_dim, generator=gen)
        out.append(g(z, c=torch.full((per_class,), c), randomize_noise=False)[0].cpu())
    return torch.cat(out)


def evaluate(g: Generator, names: list[str], real: torch.Tensor) -> dict[str, float]:
    from fewshot_lib import metrics as M
    from fewshot_lib.metrics.unseen_class import class_consistency

    ext = M.get_extractor("emoji")
    fake = class_samples(g.eval(), len(names), SAMPLES_PER_CLASS)
    f_real = ext.features(real, show_progress=False)
    consistency = class_consistency(
        {c: fake[i * SAMPLES_PER_CLASS : (i + 1) * SAMPLES_PER_CLASS] for i, c in enumerate(names)}, ext
    )
    per_class = list(consistency.details["per_class"].values())
    return {
        "fid_emoji": float(M.fid(f_real, ext.features(fake, show_progress=False), ext)),
        "recognisability": M.recognisability(f_real, fake, extractor=ext).value,
        "class_consistency": consistency.value,  # = the mean over classes (equal samples per class)
        "classes_above_60": sum(v >= 0.6 for v in per_class) / len(per_class),
        "extractor": ext.name,
    }


def init_from_unconditional(trainer: GANTrainer, g_path: Path) -> str:
    """Start the synthesis network (and D's trunk) from a shipped unconditional export; the conditional
    mapping, D's last layer and its class projection keep their fresh initialisation."""
    src = load_generator(g_path)
    copied = []
    for target in (trainer.G, trainer.g_ema):
        state = target.state_dict()
        for k, v in src.state_dict().items():
            if not k.startswith("style.") and k in state and state[k].shape == v.shape:
                state[k] = v.float()
                copied.append(k)
        target.load_state_dict(state)
    d_ck = load_checkpoint(g_path.with_name(f"{g_path.stem}_d.pt"))
    d_state = trainer.D.state_dict()
    for k, v in d_ck["d"].items():
        if k in d_state and d_state[k].shape == v.shape:
            d_state[k] = v.float()
    trainer.D.load_state_dict(d_state)
    return (
        f"synthesis and D trunk from {g_path.name} ({len(set(copied))} tensors); mapping and projection new"
    )


def export(
    trainer: GANTrainer,
    args,
    names: list[str],
    real: torch.Tensor,
    run_dir: Path,
    exported_by: str | None = None,
) -> None:
    out = Path(args.out) if args.out else data_dir() / "checkpoints" / f"{args.name}.pt"
    metrics = evaluate(trainer.g_ema, names, real)
    history = record_metrics(run_dir, trainer.step, metrics, HISTORY_KEYS)
    commands = training_commands(run_dir)
    info = {
        "steps": trainer.step,
        "images_seen": trainer.step * trainer.cfg.batch,
        "wall_time_s": round(trainer.seconds, 1),
        "classes": names,
        "dataset": f"emoji_32 seen classes of notebook 06 ({','.join(STYLES)}; {len(names)} classes, "
        f"n={len(real)})",
    }
    common = {
        **info,
        "cpu_time_s": training_cost(run_dir)["cpu_s"],
        "command": " ; then ".join(e["command"] for e in commands) or "unknown",
        "training_sessions": commands,
        "precision": "float16 weights (cast to float32 on load)",
        "torch": torch.__version__,
        "trained_by": "fewshot_lib.train.GANTrainer with labels (this project's code)",
        **({"exported_by": exported_by} if exported_by else {}),
    }
    export_generator(trainer.g_ema, out, half=True, info=info)
    manifest = {
        "name": out.stem,
        "file": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        **common,
        "model_config": trainer.g_ema.config,
        "g_parameters": count_parameters(trainer.G),
        "train_config": dict(vars(trainer.cfg)),
        "metrics": metrics,
        "metric_history": history,
        "metrics_protocol": f"{SAMPLES_PER_CLASS} samples per seen class (seed 123) vs every seen image; "
        "emoji-features-v1",
    }
    manifest_path(out).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    d_out = out.with_name(f"{out.stem}_d.pt")
    export_discriminator(trainer.D, d_out, half=True, info=info)
    d_manifest = {
        "name": d_out.stem,
        "file": d_out.name,
        "sha256": file_sha256(d_out),
        "bytes": d_out.stat().st_size,
        **common,
        "config": trainer.D.config,
        "d_parameters": count_parameters(trainer.D),
    }
    manifest_path(d_out).write_text(json.dumps(d_manifest, indent=2, default=str) + "\n")
    log.info("exported %s at step %d: %s", out.name, trainer.step, metrics)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="stylegan2_cond_seen32")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--chunk", type=int, default=200)
    p.add_argument("--export-every", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init-from",
        default=str(data_dir() / "checkpoints" / "stylegan2_noto32.pt"),
        help="a fresh run starts its synthesis from this unconditional export ('' for random)",
    )
    p.add_argument(
        "--class-balanced",
        action="store_true",
        help="draw every seen class equally often (reals and fake classes); the classes hold 10 to 259 images, "
        "and drawn like the data the small ones stay unlearnt (consistency 0.006 under 15 images at step 1,400)",
    )
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--warm-start", default=None, metavar="G.pt")
    p.add_argument("--log", default=None)
    return p.parse_args(argv)


def make_trainer(
    args: argparse.Namespace, n_classes: int, real: torch.Tensor, labels: torch.Tensor, run_dir: Path
):
    """The conditional G and D (``SOURCE_MODEL_CONFIG`` with ``c_dim = n_classes``) in a fresh ``GANTrainer``."""
    cfg = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        r1_gamma=0.1,
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
    model = {**SOURCE_MODEL_CONFIG, "c_dim": n_classes}
    G = Generator(**model)
    D = Discriminator(
        32, channel_base=model["channel_base"], channel_max=model["channel_max"], c_dim=n_classes
    )
    return GANTrainer(G, D, real, cfg, run_dir=run_dir, labels=labels, class_balanced=args.class_balanced)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = start_script("train_conditional_source.py", args, argv)

    names, real, labels = seen_data()
    run_dir = Path(args.run_dir) if args.run_dir else repo_root() / "runs" / f"source_{args.name}"
    trainer = make_trainer(args, len(names), real, labels, run_dir)
    cfg = trainer.cfg
    note = None
    if trainer.checkpoint_path.exists():
        trainer.load(trainer.checkpoint_path)
    elif args.warm_start:
        warm_start(trainer, args.warm_start, run_dir)
        note = f"warm start from {Path(args.warm_start).name} (fp16 weights, fresh optimiser state)"
    elif args.init_from:
        note = init_from_unconditional(trainer, Path(args.init_from))
    log.info(
        "%d seen classes, %d images, G %d params, D %d params, start step %d",
        len(names),
        len(real),
        count_parameters(trainer.G),
        count_parameters(trainer.D),
        trainer.step,
    )
    if args.export_only:
        export(trainer, args, names, real, run_dir, exported_by=command)
        return
    sitting = Sitting(
        run_dir,
        command,
        trainer.step,
        args.minutes,
        lr=cfg.lr,
        class_balanced=args.class_balanced,
        threads=args.threads,
        note=note,
    )
    train_in_sittings(
        trainer,
        sitting,
        stop=args.steps,
        chunk=args.chunk,
        train_kwargs=dict(resume=False, show_progress=False),
        export=lambda: export(trainer, args, names, real, run_dir),
        export_every=args.export_every,
        last_export=trainer.step
        if metric_history(run_dir)
        else None,  # a first sitting exports its first chunk
    )


if __name__ == "__main__":
    main()
