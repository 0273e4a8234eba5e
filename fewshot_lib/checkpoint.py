"""Saving and loading checkpoints safely.

Two rules, both from hard experience with long GAN runs:

* **Write atomically.** A run killed mid-save must never leave a half-written file where the last good
  checkpoint used to be: write to a temporary file in the same folder, flush it to disk, then
  ``os.replace`` it over the old one (an atomic rename on every OS we support).
* **Load with ``weights_only=True``.** Unpickling arbitrary objects can run arbitrary code; a checkpoint is
  tensors, numbers, strings, lists and dicts, so torch's restricted loader is enough.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temp file + fsync + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would, so a shared
        # checkpoint folder stays readable by the group the user's umask allows.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_atomic` (or any tensor-only ``torch.save`` file).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a truncated, corrupt or
    pickled-object file, naming the path and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    if path.stat().st_size == 0:
        raise ValueError(f"Checkpoint {path} is empty (an interrupted copy?); delete it and retrain or re-copy.")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt / unsafe files
        text = str(err)
        if "Unsupported global" in text or "GLOBAL" in text:
            raise ValueError(
                f"{path} contains pickled Python objects, not only tensors, so it cannot be loaded safely "
                "with weights_only=True. If you trust its source, convert it once: "
                "`torch.save(torch.load(path, weights_only=False)['g_ema'], 'clean.pt')`-style, keeping only "
                f"state dicts and plain values. ({text.splitlines()[0][:200]})") from err
        raise ValueError(f"Checkpoint {path} could not be read (truncated or corrupt?): {text[:300]}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"Checkpoint {path} holds a {type(obj).__name__}, expected a dict.")
    return obj


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (manifests record it for every shipped file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, how_to_fix: str) -> None:
    """Raise ``ValueError`` when ``path``'s sha256 differs from the one its manifest records.

    A shipped checkpoint that was truncated by a bad copy or silently replaced must not load as if it were
    the one whose metrics the manifest reports. ``how_to_fix`` names the script that rebuilds the file.
    """
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(f"{Path(path).name}: sha256 {actual[:12]}… does not match its manifest "
                         f"({str(expected)[:12]}…). The file is corrupt or was replaced; {how_to_fix}")
