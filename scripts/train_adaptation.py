"""Adapt the shipped source model to 10 shots of another emoji style (CDC, TGAN or FreezeD) and ship the result.

Notebook 04's lab runs (200 iterations) barely move the baselines; the papers adapt for thousands of
iterations (CDC: 5,000 at batch 4). This script runs one method on one shot set for a wall-clock budget, on
CPU, with the notebook's recipe (``baselines.adaptation_config``), resuming exactly from ``--run-dir``.

The shot set is drawn from ``--target-style`` with ``--shots-seed`` (different seeds draw different shots), the
training randomness with ``--seed``. Every ``--eval-every`` iterations the EMA generator is scored on fixed
latents (``baselines.AdaptationEvaluator``: FID against the whole target style, recognisability, intra-cluster
LPIPS, correspondence — plus the style head's target-style share, ``metrics.style``; extractor
emoji-features-v1) into the curve. At the end (and with ``--export-only``) G_ema and D are exported in half
precision to ``data/checkpoints/<method>_<style>_shots<k>.pt`` (+ ``_d.pt``) with a manifest: sha256, every
sitting (command, steps, wall time, process CPU seconds, threads), the shots' indices and the curve.

    nice -n 10 python scripts/train_adaptation.py --method cdc --shots-seed 0 --minutes 60 --log /tmp/cdc0.log
    python scripts/train_adaptation.py --method cdc --shots-seed 0 --export-only
    # a new machine: carry on from the shipped export (fp16 weights, fresh optimiser state)
    python scripts/train_adaptation.py --method cdc --shots-seed 0 --warm-start data/checkpoints/cdc_fluent_3d_shots0.pt
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

from fewshot_lib import artifacts  # noqa: E402
from fewshot_lib.checkpoint import file_sha256  # noqa: E402
from fewshot_lib.config import data_dir, repo_root  # noqa: E402
from fewshot_lib.data.emoji import load_emoji  # noqa: E402
from fewshot_lib.data.fewshot import draw_shot_indices  # noqa: E402
from fewshot_lib.methods.baselines import (
    AdaptationEvaluator,
    adaptation_config,
    load_source_discriminator,  # noqa: E402
    make_adapter,
)
from fewshot_lib.models.stylegan2 import count_parameters, export_discriminator, export_generator  # noqa: E402
from fewshot_lib.models.stylegan2 import load_source_model  # noqa: E402
from fewshot_lib.artifacts import manifest_path  # noqa: E402
from fewshot_lib.sittings import (  # noqa: E402
    Sitting,
    start_script,
    train_in_sittings,
    training_commands,
    training_cost,
)
from train_source_model import warm_start  # noqa: E402

log = logging.getLogger("train_adaptation")

METHOD_OPTIONS = {"tgan": {}, "freezed": {"freeze_d": 2}, "cdc": {"kl_weight": 1000.0}}


def draw_shots(target: torch.Tensor, n_shots: int, shots_seed: int) -> tuple[torch.Tensor, list[int]]:
    """``n_shots`` images of ``target`` drawn with ``shots_seed`` (notebook 04's rule: sorted indices)."""
    idx = draw_shot_indices(len(target), n_shots, shots_seed)
    return target[idx], idx


def evaluate(trainer, evaluator: AdaptationEvaluator) -> dict[str, float]:
    return {"step": trainer.step, **{k: round(float(v), 4) for k, v in evaluator(trainer.g_ema).items()}}


def export(trainer, out: Path, run_dir: Path, curve: list[dict], task: dict) -> None:
    info = {"steps": trainer.step, "wall_time_s": round(trainer.seconds, 1), "task": task}
    anchors = getattr(trainer.hook, "anchors", None)
    if anchors is not None:  # CDC: its anchor latents [k, z_dim] (explore.read_anchors), so an explorer can
        info.update(cdc_anchors=anchors.anchors.tolist(), cdc_anchor_sigma=anchors.sigma)  # draw from them
    export_generator(trainer.g_ema, out, half=True, info=info)
    d_out = out.with_name(f"{out.stem}_d.pt")
    export_discriminator(trainer.D, d_out, half=True, info=info)
    commands = training_commands(run_dir)
    common = {
        **info,
        "images_seen": trainer.step * trainer.cfg.batch,
        "cpu_time_s": training_cost(run_dir)["cpu_s"],
        "command": " ; then ".join(e["command"] for e in commands) or "unknown",
        "training_sessions": commands,
        "precision": "float16 weights (cast to float32 on load)",
        "torch": torch.__version__,
        "trained_by": "fewshot_lib.methods.baselines.make_adapter + GANTrainer (this project's code)",
        "train_config": {k: v for k, v in vars(trainer.cfg).items()},
    }
    manifest = {
        "name": out.stem,
        "file": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        **common,
        "model_config": trainer.g_ema.config,
        "g_parameters": count_parameters(trainer.G),
        "metrics": curve[-1] if curve else {},
        "metric_history": curve,
        "metrics_protocol": "AdaptationEvaluator on 500 fixed latents vs every image of the target style "
        "+ style head share; extractor emoji-features-v1",
    }
    manifest_path(out).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    d_manifest = {
        "name": d_out.stem,
        "file": d_out.name,
        "sha256": file_sha256(d_out),
        "bytes": d_out.stat().st_size,
        **common,
        "config": trainer.D.config,
    }
    manifest_path(d_out).write_text(json.dumps(d_manifest, indent=2, default=str) + "\n")
    log.info("exported %s at step %d: %s", out.name, trainer.step, manifest["metrics"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=sorted(METHOD_OPTIONS), required=True)
    p.add_argument("--target-style", default="fluent_3d")
    p.add_argument(
        "--shots-seed", type=int, default=0, help="which 10 shots (different seeds, different shots)"
    )
    p.add_argument("--seed", type=int, default=0, help="training randomness")
    p.add_argument("--n-shots", type=int, default=10)
    p.add_argument("--source", default="stylegan2_noto32", help="shipped source model name (G and _d)")
    p.add_argument(
        "--steps", type=int, default=5000, help="total iterations (CDC's reference: 5,000 at batch 4)"
    )
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this invocation")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--out", default=None, help="export path (default data/checkpoints/<name>.pt)")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--warm-start", default=None, metavar="G.pt")
    p.add_argument("--log", default=None)
    args = p.parse_args(argv)
    command = start_script("train_adaptation.py", args, argv)

    name = artifacts.adaptation_name(args.method, args.target_style, args.shots_seed)
    out = Path(args.out) if args.out else data_dir() / "checkpoints" / f"{name}.pt"
    run_dir = Path(args.run_dir) if args.run_dir else repo_root() / "runs" / name
    emoji = load_emoji()
    source_data, target_data = emoji.select(styles="noto"), emoji.select(styles=args.target_style)
    target = target_data.tensors()
    shots, shot_idx = draw_shots(target, args.n_shots, args.shots_seed)
    task = {
        "target_style": args.target_style,
        "n_shots": args.n_shots,
        "shots_seed": args.shots_seed,
        "shot_indices": shot_idx,
        "shot_keys": [str(target_data.key[i]) for i in shot_idx],
        "method": args.method,
        "source": args.source,
    }
    G_source, D_source = load_source_model(args.source), load_source_discriminator(args.source)
    cfg = adaptation_config(args.steps, args.batch, seed=args.seed)
    options = dict(METHOD_OPTIONS[args.method])
    if args.method == "cdc":
        options["n_anchors"] = args.n_shots
    torch.manual_seed(args.seed)
    trainer = make_adapter(args.method, G_source, D_source, shots, cfg, **options)
    trainer.run_dir = run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    z_eval = torch.randn(args.n_eval, G_source.style_dim, generator=torch.Generator().manual_seed(10_000))
    evaluator = AdaptationEvaluator(
        G_source,
        z_eval,
        shots,
        target,
        source_gallery=source_data.tensors(),
        source_labels=source_data.subcategory,
        target_gallery=target,
        target_labels=target_data.subcategory,
        style=args.target_style,
    )
    curve_path = run_dir / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []
    note = None
    if trainer.checkpoint_path.exists():
        trainer.load(trainer.checkpoint_path)
    elif args.warm_start:
        warm_start(trainer, args.warm_start, run_dir)
        curve = curve or json.loads(manifest_path(Path(args.warm_start)).read_text()).get(
            "metric_history", []
        )
        note = f"warm start from {Path(args.warm_start).name} (fp16 weights, fresh optimiser state)"
    curve = [e for e in curve if e["step"] <= trainer.step]
    if not curve:
        curve.append(evaluate(trainer, evaluator))  # step 0: the source itself
    if args.export_only:
        export(trainer, out, run_dir, curve, task)
        return

    def evaluate_chunk() -> str:
        trainer.save()
        curve.append(evaluate(trainer, evaluator))
        curve_path.write_text(json.dumps(curve, indent=1) + "\n")
        return "  ".join(f"{k}={v}" for k, v in curve[-1].items() if k != "step")

    sitting = Sitting(run_dir, command, trainer.step, args.minutes, threads=args.threads, note=note)
    train_in_sittings(
        trainer,
        sitting,
        stop=args.steps,
        chunk=args.eval_every,
        train_kwargs=dict(resume=False, show_progress=False),
        after_chunk=evaluate_chunk,
        export=lambda: export(trainer, out, run_dir, curve, task),
        last_export=None,  # exported once, at the end of the sitting
    )


if __name__ == "__main__":
    main()
