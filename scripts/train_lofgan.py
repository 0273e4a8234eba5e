"""Train LoFGAN (or its global-fusion baseline) on the seen emoji classes and ship the generator.

Notebook 06's lab run (300 iterations) cannot reach the regime where local fusion works: a lab-size LoFGAN
needs thousands of iterations before its unseen-class samples look like members of the class. This script
trains the notebook's lab model (32 px, ``nf`` 16, batch 8 episodes of k = 3, the notebook's fixed seen/unseen
split of noto + twemoji subcategories) for a wall-clock budget, on CPU, resuming exactly from ``--run-dir``.

Every ``--export-every`` iterations (and at the end) G and D are exported in half precision to
``data/checkpoints/<name>.pt`` and ``<name>_d.pt`` with a manifest: sha256, every training sitting (command,
steps, wall time, process CPU seconds, threads), and the unseen-class metric history (class consistency,
near-copies, recognisability, LPIPS diversity, FID — ``fewshot_lib.metrics.unseen_class``, emoji-features-v1)
measured on the notebook's unseen classes with 32 samples per class.

    nice -n 10 python scripts/train_lofgan.py --fusion local --seed 0 --minutes 120 --log /tmp/lofgan0.log
    python scripts/train_lofgan.py --fusion local --seed 0 --export-only
    # a new machine (no runs/ folder) carries on from the shipped export (fp16 weights, fresh optimiser state)
    python scripts/train_lofgan.py --fusion local --seed 0 --warm-start data/checkpoints/lofgan_emoji32_seed0.pt
    # N GPUs (or N CPU processes without --device): the --batch episodes are split over the ranks, which take
    # the single-process step (fewshot_lib.distributed); only rank 0 evaluates, exports and records
    torchrun --nproc_per_node=4 scripts/train_lofgan.py --device cuda --minutes 60

Notebooks load an export (checked against its manifest) with ``fewshot_lib.artifacts.load(name)`` and read its
manifest with ``fewshot_lib.artifacts.manifest(name)``.
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
from fewshot_lib.checkpoint import file_sha256, load_checkpoint, save_atomic, verify_sha256  # noqa: E402
from fewshot_lib.config import data_dir, repo_root  # noqa: E402
from fewshot_lib.data.emoji import load_emoji  # noqa: E402
from fewshot_lib.artifacts import manifest_path  # noqa: E402
from fewshot_lib.methods import lofgan as LF  # noqa: E402
from fewshot_lib.metrics import conditioning_split, get_extractor  # noqa: E402
from fewshot_lib.metrics.unseen_class import sample_episodes, unseen_class_report  # noqa: E402
from fewshot_lib.sittings import (  # noqa: E402
    Sitting,
    metric_history,
    record_command,
    record_metrics,
    start_script,
    train_in_sittings,
    training_commands,
    training_cost,
)

log = logging.getLogger("train_lofgan")

# Notebook 06's lab model and recipe (its `lab` profile), trained for far longer than the notebook can.
LAB_MODEL = dict(size=32, feature_size=8, nf=16, nf_d=16, max_nf_d=128, k=3, batch=8, gp_every=4)
STYLES = ("noto", "twemoji")
N_PER_CLASS = 32  # samples per unseen class at each export


def real_manifold(data, ext) -> torch.Tensor:
    """Features ``[M, D]`` of every real emoji of the training styles: the manifold recognisability is judged on."""
    return ext.features(data.select(styles=list(STYLES)).tensors(), show_progress=False)


def evaluate(
    trainer: LF.LoFGANTrainer, conditioning: dict, held_out: dict, manifold: torch.Tensor, ext
) -> dict[str, float]:
    """Unseen-class metrics of the current G (eval mode, fixed episodes and fusion randomness)."""
    fn = LF.episode_generate_fn(trainer.g, generator=torch.Generator().manual_seed(0))
    fakes, shots = sample_episodes(fn, conditioning, k=trainer.cfg.k, n_per_class=N_PER_CLASS, seed=0)
    report = unseen_class_report(fakes, shots, held_out, manifold=manifold, extractor=ext)
    return {k: round(v.value, 4) for k, v in report.items()}


def warm_start(trainer: LF.LoFGANTrainer, g_path: Path) -> dict:
    """Start from a shipped export (G, ``_d.pt`` and manifest): weights only, fresh Adam state, data order
    reseeded from the step; returns the export's manifest (its sittings and history carry on)."""
    d_path, man = g_path.with_name(f"{g_path.stem}_d.pt"), manifest_path(g_path)
    for path in (g_path, d_path, man):
        if not path.is_file():
            raise FileNotFoundError(f"--warm-start needs {path.name} beside {g_path.name}")
    manifest = json.loads(man.read_text())
    verify_sha256(
        g_path, manifest.get("sha256"), "re-export it with --export-only on the machine that trained it."
    )
    g, d = load_checkpoint(g_path), load_checkpoint(d_path)
    if g["classes"] != trainer.classes:
        raise ValueError(f"{g_path.name} was trained on other classes than this run's seen split")
    trainer.g.load_state_dict({k: v.float() for k, v in g["g"].items()})
    trainer.d.load_state_dict({k: v.float() for k, v in d["d"].items()})
    trainer.step = int(manifest["steps"])
    trainer.sampler.generator.manual_seed(1_000_003 * trainer.step + 17)
    return manifest


def export(
    trainer: LF.LoFGANTrainer, out: Path, run_dir: Path, metrics: dict, history: list[dict], wall_s: float
) -> None:
    info = {
        "steps": trainer.step,
        "classes": trainer.classes,
        "cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(trainer.cfg).items()},
    }
    save_atomic(
        {
            **info,
            "g": {k: v.half() if v.is_floating_point() else v for k, v in trainer.g.state_dict().items()},
        },
        out,
    )
    d_out = out.with_name(f"{out.stem}_d.pt")
    save_atomic(
        {
            **info,
            "d": {k: v.half() if v.is_floating_point() else v for k, v in trainer.d.state_dict().items()},
        },
        d_out,
    )
    commands = training_commands(run_dir)
    manifest = {
        "name": out.stem,
        "file": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "d_file": d_out.name,
        "d_sha256": file_sha256(d_out),
        "steps": trainer.step,
        "images_seen": trainer.step * trainer.cfg.batch * (trainer.cfg.k + 1),
        "wall_time_s": round(wall_s, 1),
        "cpu_time_s": training_cost(run_dir)["cpu_s"],
        "dataset": f"emoji_32 styles={','.join(STYLES)}: {len(trainer.classes)} seen classes "
        "(LF.emoji_episode_classes, min_count 10)",
        "command": " ; then ".join(e["command"] for e in commands) or "unknown",
        "training_sessions": commands,
        "precision": "float16 weights (cast to float32 on load)",
        "torch": torch.__version__,
        "trained_by": "fewshot_lib.methods.lofgan.LoFGANTrainer (this project's code)",
        "train_config": info["cfg"],
        "metrics": metrics,
        "metrics_protocol": f"unseen classes of notebook 06, conditioning_split(n_condition=10, seed=0), "
        f"{N_PER_CLASS} samples per class, fewshot_lib.metrics.unseen_class; recognisability "
        f"against every {'+'.join(STYLES)} emoji; extractor emoji-features-v1",
        "metric_history": history,
    }
    manifest_path(out).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("exported %s at step %d: %s", out.name, trainer.step, metrics)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fusion", choices=("local", "global"), default="local")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this invocation")
    p.add_argument(
        "--steps", type=int, default=40_000, help="total iterations (the LR decays over the second half)"
    )
    p.add_argument(
        "--until",
        type=int,
        default=None,
        help="stop this sitting at this step (the schedule still runs to --steps)",
    )
    p.add_argument("--chunk", type=int, default=500, help="iterations between checkpoints")
    p.add_argument("--export-every", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda; under torchrun --nproc_per_node=N each rank takes cuda:LOCAL_RANK and 1/N of the batch",
    )
    p.add_argument("--run-dir", default=None)
    p.add_argument("--out", default=None, help="export path (default data/checkpoints/<name>.pt)")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--warm-start", default=None, metavar="G.pt")
    p.add_argument("--log", default=None)
    args = p.parse_args(argv)
    command = start_script("train_lofgan.py", args, argv)
    device = distributed.init_from_env(args.device)  # a no-op outside torchrun
    main_rank = distributed.is_main()  # only rank 0 evaluates, exports and records
    if not main_rank:
        logging.getLogger().setLevel(logging.WARNING)

    name = LF.export_name(args.fusion, args.seed)
    out = Path(args.out) if args.out else data_dir() / "checkpoints" / f"{name}.pt"
    run_dir = Path(args.run_dir) if args.run_dir else repo_root() / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    data = load_emoji(size=32)
    seen, unseen = LF.emoji_episode_classes(data, styles=STYLES, min_count=10)
    conditioning, held_out = conditioning_split(unseen, n_condition=10, seed=0)
    cfg = LF.LoFGANConfig(fusion=args.fusion, steps=args.steps, decay_start=args.steps // 2, **LAB_MODEL)
    trainer = LF.LoFGANTrainer(seen, cfg, seed=args.seed, device=device, checkpoint=run_dir / "checkpoint.pt")
    note = None
    if not trainer.resume() and args.warm_start:
        manifest = warm_start(trainer, Path(args.warm_start))
        if main_rank and not training_commands(run_dir):
            for e in manifest.get("training_sessions", []):
                record_command(run_dir, e)
        if main_rank and not metric_history(run_dir):
            for h in manifest.get("metric_history", []):
                record_metrics(run_dir, h["step"], h)
        note = f"warm start from {Path(args.warm_start).name} (fp16 weights, fresh optimiser state)"
    judge: dict = {}  # the metrics' network and the real manifold, built at the first export (rank 0 only)

    def do_export() -> None:
        if not judge:
            judge["ext"] = get_extractor("emoji")
            judge["manifold"] = real_manifold(data, judge["ext"])
        metrics = evaluate(trainer, conditioning, held_out, judge["manifold"], judge["ext"])
        history = record_metrics(run_dir, trainer.step, metrics)
        export(trainer, out, run_dir, metrics, history, training_cost(run_dir)["wall_s"])

    if args.export_only:
        if main_rank:
            do_export()
        return
    sitting = Sitting(
        run_dir,
        command,
        trainer.step,
        args.minutes,
        threads=args.threads,
        ranks=distributed.world_size() if distributed.world_size() > 1 else None,
        note=note,
    )
    train_in_sittings(
        trainer,
        sitting,
        stop=min(args.steps, args.until or args.steps),
        chunk=args.chunk,
        train_kwargs=dict(save_every=args.chunk, show_progress=False),
        export=do_export,
        export_every=args.export_every,
        last_export=trainer.step,
        decide=distributed.rank0_decides,
        main_rank=main_rank,
    )


if __name__ == "__main__":
    main()
