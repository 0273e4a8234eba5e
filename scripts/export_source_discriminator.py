"""Export the discriminator of the source model's training run next to the shipped generator.

Few-shot adaptation (TGAN, FreezeD, CDC; ``notebooks/04_cdc.ipynb``) fine-tunes the *pretrained* discriminator
too, but ``scripts/train_source_model.py`` ships only the EMA generator. This script takes ``d`` from the same
run's trainer checkpoint (``runs/source_<name>/checkpoint.pt``) and writes, in half precision,

    data/checkpoints/<name>_d.pt              {"d": state dict, "config": Discriminator kwargs, "info": {...}}
    data/checkpoints/<name>_d.manifest.json   sha256, steps, source checkpoint

Run it after every export of the generator so that the pair comes from the same step:

    python scripts/export_source_discriminator.py --name stylegan2_noto32

Loaded with ``fewshot_lib.methods.baselines.load_source_discriminator()``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fewshot_lib.checkpoint import load_checkpoint, save_atomic  # noqa: E402
from fewshot_lib.config import repo_root  # noqa: E402
from fewshot_lib.methods.baselines import source_discriminator_paths  # noqa: E402
from fewshot_lib.models.stylegan2 import file_sha256  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="stylegan2_noto32", help="shipped model name")
    p.add_argument("--run-dir", default=None, help="training folder (default runs/source_<name>)")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir) if args.run_dir else repo_root() / "runs" / f"source_{args.name}"
    ck = load_checkpoint(run_dir / "checkpoint.pt")
    for key in ("d", "d_config", "step"):
        if key not in ck:
            raise ValueError(f"{run_dir / 'checkpoint.pt'} is not a GANTrainer checkpoint (missing {key!r})")
    out, manifest = source_discriminator_paths(args.name)
    state = {k: v.half() if v.is_floating_point() else v for k, v in ck["d"].items()}
    info = {"steps": int(ck["step"]), "source": f"runs/source_{args.name}/checkpoint.pt"}
    save_atomic({"d": state, "config": dict(ck["d_config"]), "info": info}, out)
    manifest.write_text(json.dumps({"name": f"{args.name}_d", "file": out.name, "sha256": file_sha256(out),
                                    "bytes": out.stat().st_size, **info,
                                    "precision": "float16 weights (cast to float32 on load)",
                                    "config": dict(ck["d_config"])}, indent=2) + "\n")
    print(f"wrote {out.name} (step {info['steps']}, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
