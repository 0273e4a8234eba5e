"""Profiles, devices, seeds and run folders: the few pieces of state every notebook needs.

A *profile* says how big a run is, never what it does. The same cells run in every profile:

=========  ===============================  ==========================================
profile    where                            scale
=========  ===============================  ==========================================
``smoke``  CI, 2 CPU cores                  seconds per notebook; shapes and checks only
``lab``    a laptop / 2-core CPU            minutes per notebook; the default without a GPU
``full``   a GPU                            the papers' settings (hours)
=========  ===============================  ==========================================

``profile="auto"`` resolves as: the ``FEWSHOT_PROFILE`` environment variable if set, else ``full`` when a
CUDA GPU is present, else ``lab``. Tools that cannot inject papermill parameters (nbval, testbook) pass the
profile through that variable, which the notebook kernel inherits.

Taught in: ``notebooks/00_data_and_setup.ipynb``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

PROFILES = ("smoke", "lab", "full")
PROFILE_ENV = "FEWSHOT_PROFILE"
T = TypeVar("T")


def repo_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml`` and ``data/``).

    Paths are resolved from here, never from the current directory: papermill runs a notebook in the
    caller's folder, nbval in the notebook's folder.
    """
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Folder of the embedded dataset and shipped checkpoints (``FEWSHOT_DATA`` overrides it)."""
    return Path(os.environ.get("FEWSHOT_DATA", repo_root() / "data"))


class ProfileError(ValueError):
    """An unknown profile name (the message is one line: what was given, where from, what is accepted)."""


def resolve_profile(profile: str = "auto") -> str:
    """Turn ``"auto"`` (or an explicit name) into one of ``smoke``, ``lab``, ``full``.

    Raises :class:`ProfileError` for any other name, saying whether it came from ``FEWSHOT_PROFILE``.
    """
    source = ""
    if profile in (None, "", "auto"):
        source = f" (from ${PROFILE_ENV})" if os.environ.get(PROFILE_ENV, "") else ""
        profile = os.environ.get(PROFILE_ENV, "") or ("full" if torch.cuda.is_available() else "lab")
    name = str(profile).strip().lower()
    if name not in PROFILES:
        import difflib

        close = difflib.get_close_matches(name, PROFILES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ProfileError(
            f"Unknown profile {profile!r}{source}; choose one of {', '.join(PROFILES)} or auto.{hint}"
        )
    return name


def by_profile(profile: str, *, smoke: T, lab: T, full: T) -> T:
    """Pick the value for a profile: ``steps = by_profile(p, smoke=4, lab=400, full=50_000)``."""
    return {"smoke": smoke, "lab": lab, "full": full}[resolve_profile(profile)]


def get_device(device: str | torch.device = "auto") -> torch.device:
    """The best available device, falling back to CPU: cuda → mps → cpu (like d2l's ``try_gpu``).

    An explicit request for an unavailable device raises instead of silently running elsewhere.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available; use 'auto' or 'cpu'.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' was requested but MPS is not available; use 'auto' or 'cpu'.")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) in one call; returns a seeded CPU ``torch.Generator``.

    Sample latents with the returned generator *on the CPU* and move them, so the same seed gives the same
    pictures on every device.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def unique_dir(parent: str | os.PathLike, stem: str) -> Path:
    """Create and return a new folder ``parent/<stem>-<n>`` (n = 1, 2, …) that no one else has.

    ``mkdir(exist_ok=False)`` is atomic, so two processes started in the same second get different folders
    instead of writing into one.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = parent / f"{stem}-{n}"
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent} already holds 9999 folders named {stem}-<n>; clean it up.")


def make_run_dir(run_dir: str | os.PathLike | None = None, name: str = "run") -> Path:
    """Create (if needed) and return the folder where a notebook writes ``metrics.json`` and figures.

    ``None`` or ``""`` gives a new ``runs/<timestamp>-<name>-<n>`` under the repository root (never one that
    another run already uses).
    """
    if not run_dir:
        return unique_dir(
            Path(os.environ.get("FEWSHOT_RUNS") or repo_root() / "runs"),
            f"{time.strftime('%Y%m%d-%H%M%S')}-{name}",
        )
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment_summary(device: torch.device | None = None) -> dict[str, Any]:
    """Versions and hardware facts worth printing at the top of a notebook."""
    import platform

    device = device or get_device()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
