"""Run LSO on notebook 06's unseen classes and ship the samples notebook 07 evaluates.

One LSO *task* = one unseen class × one episode of k shots (drawn from the class's fixed conditioning pool with
the task's seed). For every task this script

1. inverts the k shots into W+ of the shipped conditional source model (``fewshot_lib.projector.project``:
   pixel MSE + the perceptual distance of ``emoji-features-seen-v1``, a network that never saw these classes;
   cached per task),
2. runs LSO's two stages (``fewshot_lib.methods.lso.LSOTask``; resumable per task),
3. samples the injected class at the sampling magnitudes, and two baselines on the same shots and inversions:
   **inversion only** (images from random convex combinations of the shots' inverted codes with fresh noise,
   through the unchanged seen-class model) and **inversion + plain fine-tune** (``InversionFinetuneTask``: LSR's
   synthesis/D fine-tune around those codes for ``--lsr-steps`` steps, without LAL and without seen-class
   preservation).

Validation classes (disjoint from the evaluation classes) are run at every magnitude of ``--magnitudes`` so that
notebook 07 can choose the sampling magnitude without looking at the classes its claims are measured on.
Everything goes to ``data/lso/lso_samples_seed<seed>.npz`` (uint8 images ``[N, 32, 32, 3]`` with ``method``,
``task`` = class, ``episode``, ``magnitude``, ``seed`` per image) with a manifest (sha256, command, sittings, CPU
seconds, the LSO config, σ(m) per task, the shots' indices); finished tasks are skipped when run again.

A seed takes hours of one core, so it is run in sittings — and possibly on another machine, where the run folder
is gone: when the run folder holds no finished task but the shipped ``lso_samples_seed<seed>.npz`` exists, its
tasks are unpacked into the run folder (with the sittings of its manifest) and only the missing ones are run. The
shipped file must come from the same source model, shots, LSO config and sampling settings; otherwise the script
stops and says which setting differs (move the file away to start again).

    nice -n 10 python scripts/run_lso_tasks.py --seed 0 --minutes 120 --log /tmp/lso0.log
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fewshot_lib import artifacts  # noqa: E402
from fewshot_lib.checkpoint import file_sha256, load_checkpoint, save_atomic  # noqa: E402
from fewshot_lib.config import data_dir, repo_root  # noqa: E402
from fewshot_lib.data.emoji import load_emoji, to_uint8  # noqa: E402
from fewshot_lib.methods.lofgan import emoji_episode_classes  # noqa: E402
from fewshot_lib.methods.lso import (
    InversionFinetuneTask,
    LSOConfig,
    LSOTask,
    TrainingFeatures,  # noqa: E402
    draw_shots,
    inversion_only_samples,
    read_task_samples,
)
from fewshot_lib.metrics.protocols import conditioning_split  # noqa: E402
from fewshot_lib.projector import project  # noqa: E402
from fewshot_lib.sittings import (  # noqa: E402
    Sitting,
    record_command,
    start_script,
    training_commands,
    training_cost,
)

log = logging.getLogger("run_lso_tasks")
STYLES = ("noto", "twemoji")
# The lab recipe: the reference's rates and weights, fewer steps (its flowers row runs 125 + 375 at batch 16).
LAB = LSOConfig(lal_steps=60, lsr_steps=150, batch=8, seen_batch=4, r1_gamma=0.0064)


def unseen_tasks(n_eval: int, n_val: int) -> tuple[list[str], list[str], dict, dict]:
    """``(evaluation classes, validation classes, conditioning pools, held-out images)``: the unseen classes of
    notebook 06 in their fixed order; the last ``n_val`` are validation, the first ``n_eval`` evaluation."""
    _, unseen = emoji_episode_classes(load_emoji(size=32), styles=STYLES, min_count=10)
    conditioning, held_out = conditioning_split(unseen, n_condition=10, seed=0)
    names = list(conditioning)
    if n_eval + n_val > len(names):
        raise ValueError(f"{n_eval} evaluation + {n_val} validation classes > {len(names)} unseen classes")
    return names[:n_eval], names[len(names) - n_val :], conditioning, held_out


# Per-image arrays of a task file (and of the shipped file, concatenated over tasks).
IMAGE_KEYS = ("images", "method", "magnitude", "task", "episode", "validation", "seed")


def run_settings(args: argparse.Namespace, cfg: LSOConfig, magnitudes: list[float]) -> dict:
    """The settings a task's samples depend on, as the manifest records them: a shipped file continues only
    where all of them match."""
    return {
        "seed": args.seed,
        "k": args.k,
        "magnitudes": magnitudes,
        "n_per_task": args.n_per_task,
        "lso_config": cfg.as_dict(),
        "invert_steps": args.invert_steps,
        "source_sha256": artifacts.manifest(args.source).get("sha256"),
        "training_features": args.features,
    }


def continue_from_shipped(
    out: Path, run_dir: Path, tasks: list[tuple[str, int, bool]], settings: dict
) -> int:
    """Unpack the finished tasks of a shipped samples file ``out`` into an empty ``run_dir`` (task files and
    sittings) so that a new machine continues where the last one stopped; returns how many tasks were unpacked.

    Raises ``ValueError`` naming the differing setting when ``out`` was made with other settings, and when it
    holds a task this invocation does not plan (then it is not a continuation of this run either)."""
    if not out.is_file() or any(run_dir.glob("task[0-9][0-9][0-9].npz")):
        return 0
    shipped, manifest = read_task_samples(out, "move it away to start again")
    for key in settings:  # compared as JSON stores them (tuples become lists)
        if manifest.get(key) != json.loads(json.dumps(settings[key])):
            raise ValueError(
                f"{out} was made with {key}={manifest.get(key)!r}, this run has {key}={settings[key]!r}: its "
                f"tasks cannot be continued (move it away to start again, or pass the same settings)"
            )
    index = {task: i for i, task in enumerate(tasks)}
    for j, (cls, ep, val) in enumerate(
        zip(shipped["task_class"], shipped["task_episode"], shipped["task_validation"])
    ):
        key = (str(cls), int(ep), bool(val))
        if key not in index:
            raise ValueError(f"{out} holds task {key}, which this run does not plan (other --classes?)")
        rows = (
            (shipped["task"] == key[0]) & (shipped["episode"] == key[1]) & (shipped["validation"] == key[2])
        )
        np.savez_compressed(
            run_dir / f"task{index[key]:03d}.npz",
            **{k: shipped[k][rows] for k in IMAGE_KEYS},
            shot_indices=shipped["task_shot_indices"][j],
            sigma=np.array(shipped["task_sigma"][j]),
            anchors=shipped["anchors"][j],
            shots=shipped["shots"][j],
        )
    for entry in manifest.get("sittings", []):
        record_command(run_dir, entry)
    log.info(
        "continuing %s: %d finished tasks unpacked into %s", out.name, len(shipped["task_class"]), run_dir
    )
    return len(shipped["task_class"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="draws the episodes and seeds LSO")
    p.add_argument("--source", default="stylegan2_cond_seen32", help="shipped conditional source (G and _d)")
    p.add_argument("--features", default="emoji_features_seen", help="training-loss network (not the judge)")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--classes", type=int, default=6, help="evaluation classes")
    p.add_argument("--val-classes", type=int, default=3, help="validation classes (choose the magnitude)")
    p.add_argument("--episodes", type=int, default=3, help="tasks per evaluation class")
    p.add_argument(
        "--val-episodes", type=int, default=1, help="tasks per validation class (they only choose s)"
    )
    p.add_argument("--n-per-task", type=int, default=32)
    p.add_argument("--magnitudes", default="0.4,0.6,0.8,1.0")
    p.add_argument("--invert-steps", type=int, default=200)
    p.add_argument("--lal-steps", type=int, default=LAB.lal_steps)
    p.add_argument("--lsr-steps", type=int, default=LAB.lsr_steps)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--out", default=None, help="default data/lso/lso_samples_seed<seed>.npz")
    p.add_argument("--log", default=None)
    args = p.parse_args(argv)
    command = start_script("run_lso_tasks.py", args, argv)
    magnitudes = [float(m) for m in args.magnitudes.split(",")]
    cfg = replace(LAB, lal_steps=args.lal_steps, lsr_steps=args.lsr_steps)

    run_dir = Path(args.run_dir) if args.run_dir else repo_root() / "runs" / f"lso_seed{args.seed}"
    out = Path(args.out) if args.out else data_dir() / "lso" / f"lso_samples_seed{args.seed}.npz"
    run_dir.mkdir(parents=True, exist_ok=True)
    G = artifacts.load(args.source).eval()
    D = artifacts.load(f"{args.source}_d")
    net, net_meta = artifacts.load(args.features)
    if net_meta.get("name") == "emoji-features-v1":
        p.error(
            f"--features {args.features} is the metrics' judge (emoji-features-v1, trained on every class); LSO's "
            "training losses need emoji_features_seen (scripts/train_feature_net.py --holdout-unseen-classes)"
        )
    features = TrainingFeatures(net)
    eval_classes, val_classes, conditioning, _ = unseen_tasks(args.classes, args.val_classes)
    tasks = [(c, e, True) for c in val_classes for e in range(args.val_episodes)] + [
        (c, e, False) for c in eval_classes for e in range(args.episodes)
    ]
    settings = run_settings(args, cfg, magnitudes)
    try:
        continue_from_shipped(out, run_dir, tasks, settings)
    except ValueError as err:
        p.error(str(err))
    sitting = Sitting(run_dir, command, start_step=None, minutes=args.minutes, threads=args.threads)
    for i, (cls, ep, is_val) in enumerate(tasks):
        done = run_dir / f"task{i:03d}.npz"
        if done.is_file():
            continue
        if not sitting.time_left():
            log.info("time budget used: %d of %d tasks done", i, len(tasks))
            break
        t0 = time.time()
        shots, shot_idx = draw_shots(conditioning[cls], args.k, args.seed, i)
        inv_path = run_dir / f"task{i:03d}_inversion.pt"
        if inv_path.is_file():
            w_inv = load_checkpoint(inv_path)["w_plus"]
        else:
            res = project(
                G,
                shots,
                steps=args.invert_steps,
                w_plus=True,
                seed=args.seed,
                feature_loss=lambda x, y: torch.stack(
                    [features.perceptual(a[None], b[None]) for a, b in zip(x, y)]
                ),
            )
            w_inv = res.latents
            save_atomic({"w_plus": w_inv, "pixel_mse": res.pixel_mse, "images": res.images}, inv_path)
        task = LSOTask(G, D, shots, w_inv, features, cfg, seed=args.seed * 1000 + i)
        state_path = run_dir / f"task{i:03d}_lso.pt"
        if state_path.is_file():
            task.load_state_dict(load_checkpoint(state_path))
        task.run("lal")
        save_atomic(task.state_dict(), state_path)
        task.run("lsr")
        images, meta = [], []
        for s in magnitudes:  # every magnitude: notebook 07 chooses on the validation classes
            images.append(to_uint8(task.sample(args.n_per_task, magnitude=s, seed=i)))
            meta += [("lso", s)] * args.n_per_task
        images.append(to_uint8(inversion_only_samples(G, w_inv, args.n_per_task, seed=i)))
        meta += [("inversion_only", float("nan"))] * args.n_per_task
        if not is_val:  # the ablation is compared on the evaluation classes only
            plain = InversionFinetuneTask(G, D, shots, w_inv, features, cfg, seed=args.seed * 1000 + i)
            plain.run()
            images.append(to_uint8(plain.sample(args.n_per_task, seed=i)))
            meta += [("inversion_finetune", float("nan"))] * args.n_per_task
        np.savez_compressed(
            done,
            images=np.concatenate(images),
            method=np.array([m for m, _ in meta]),
            magnitude=np.array([s for _, s in meta]),
            task=np.array([cls] * len(meta)),
            episode=np.full(len(meta), ep),
            validation=np.full(len(meta), is_val),
            seed=np.full(len(meta), args.seed),
            shot_indices=np.array(shot_idx),
            sigma=np.array(task.anchors.sigma.item()),
            anchors=to_uint8(task.anchor_images()),
            shots=to_uint8(shots),
        )
        state_path.unlink(missing_ok=True)
        sitting.record(tasks_done=i + 1)
        log.info(
            "task %d/%d %s ep %d (%s): σ(m)=%.3f, %.0f s",
            i + 1,
            len(tasks),
            cls,
            ep,
            "validation" if is_val else "evaluation",
            task.anchors.sigma.item(),
            time.time() - t0,
        )
    sitting.record()
    finished = sorted(run_dir.glob("task[0-9][0-9][0-9].npz"))
    if not finished:
        return
    parts = [dict(np.load(f)) for f in finished]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp.npz")  # written whole, then renamed: a killed export loses nothing
    np.savez_compressed(
        tmp,
        **{k: np.concatenate([q[k] for q in parts]) for k in IMAGE_KEYS},
        shots=np.stack([q["shots"] for q in parts]),
        anchors=np.stack([q["anchors"] for q in parts]),
        task_class=np.array([str(q["task"][0]) for q in parts]),
        task_episode=np.array([int(q["episode"][0]) for q in parts]),
        task_validation=np.array([bool(q["validation"][0]) for q in parts]),
        task_shot_indices=np.stack([q["shot_indices"] for q in parts]),
        task_sigma=np.array([float(q["sigma"]) for q in parts]),
    )
    tmp.replace(out)
    commands = training_commands(run_dir)
    manifest = {
        "name": out.stem,
        "file": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "tasks_done": len(finished),
        "tasks_planned": len(tasks),
        "evaluation_classes": eval_classes,
        "validation_classes": val_classes,
        "source": args.source,
        **settings,
        "command": " ; then ".join(e["command"] for e in commands),
        "cpu_time_s": training_cost(run_dir)["cpu_s"],
        "sittings": commands,
        "produced_by": "fewshot_lib.methods.lso.LSOTask (this project's code)",
    }
    manifest_tmp = out.with_name(f"{out.stem}.manifest.json.tmp")
    manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    manifest_tmp.replace(out.with_name(f"{out.stem}.manifest.json"))
    log.info("wrote %s: %d tasks", out, len(finished))


if __name__ == "__main__":
    main()
