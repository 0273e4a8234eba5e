"""Saving and loading checkpoints safely.

Two rules, both from hard experience with long GAN runs:

* **Write atomically.** A run killed mid-save must never leave a half-written file where the last good
  checkpoint used to be: write to a temporary file in the same folder, flush it to disk, then
  ``os.replace`` it over the old one (an atomic rename on every OS we support). A full disk or an
  unwritable folder raises :class:`CheckpointWriteError` naming the file, and the old checkpoint stays.
* **Load with ``weights_only=True``.** Unpickling arbitrary objects can run arbitrary code; a checkpoint is
  tensors, numbers, strings, lists and dicts, so torch's restricted loader is enough.

A file that cannot be loaded is diagnosed before and after torch looks at it: empty, not a PyTorch file at all
(random bytes, an image, a ``.npy``), a plain Python pickle (never unpickled), a truncated zip archive, or
pickled objects other than tensors. The message starts with the cause; torch's own advice to set
``weights_only=False`` is not repeated. Weights that are NaN or infinite are refused, naming the first bad
tensor, so a diverged checkpoint cannot quietly sample NaN images.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6 writes a zip archive
LEGACY_MAGIC = (
    b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # older torch.save: pickle protocol 2 + magic number
)
OTHER_FORMATS = {  # first bytes of files users give by mistake
    b"\x93NUMPY": "a NumPy .npy array",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive (unpack it first)",
    b"{": "a text/JSON file",
    b"version https://git-lfs": "a Git LFS pointer (run `git lfs pull`)",
}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, unwritable folder …); the previous file is unchanged."""


class CheckpointLoadError(ValueError):
    """A checkpoint could not be loaded: corrupt, not a checkpoint, unsafe, or holding non-finite weights."""


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (torch and some libraries colour their messages)."""
    return _ANSI.sub("", text)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temp file + fsync + rename); returns the path.

    Raises :class:`CheckpointWriteError` (an ``OSError``) naming ``path`` when the folder cannot be created or
    written or the disk is full; whatever was at ``path`` before is then left exactly as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # mkstemp makes the file private (0600); give it the mode a plain open() would, so a shared
        # checkpoint folder stays readable by the group the user's umask allows.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing was written"
        hint = {
            errno.ENOSPC: " The disk is full: free some space or choose another run folder.",
            errno.EDQUOT: " The disk quota is exceeded: free some space or choose another run folder.",
            errno.EACCES: " The folder is not writable: fix its permissions or choose another run folder.",
            errno.EROFS: " The file system is read-only: choose another run folder.",
            errno.ENOTDIR: " A path component is a file, not a folder: choose another run folder.",
        }.get(err.errno, "")
        # from None: the cause is in the message; torch's internal frames would only hide it.
        raise CheckpointWriteError(
            err.errno,
            f"Could not write checkpoint {path}: {err.strerror or strip_ansi(str(err))}; {kept}.{hint}",
        ) from None
    except BaseException:  # KeyboardInterrupt, a pickling error …: never leave the temp file behind
        _remove_quietly(tmp)
        raise
    return path


def _remove_quietly(tmp: str | None) -> None:
    if tmp and os.path.exists(tmp):
        try:
            os.remove(tmp)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def _first_bytes(path: Path, n: int = 32) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def sniff_format(path: str | os.PathLike) -> str:
    """``"zip"`` (torch ≥ 1.6), ``"legacy"`` (older torch.save), ``"pickle"`` (a plain Python pickle, which is
    never loaded) or a description of what else the file is (``"a PNG image"``, ``"unknown"``)."""
    head = _first_bytes(Path(path))
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(LEGACY_MAGIC):
        return "legacy"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO opcode: a plain pickle
        return "pickle"
    for magic, what in OTHER_FORMATS.items():
        if head.startswith(magic):
            return what
    return "unknown"


def _torch_cause(text: str) -> str:
    """The one line of a ``torch.load`` error that says what is wrong (torch buries it under advice)."""
    text = strip_ansi(text)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it holds a pickled Python object `{found.group(1)}` (not a tensor, number, string, list or "
            "dict), which the safe loader (weights_only=True) refuses because loading it could run code"
        )
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    if found:
        return f"its pickle stream is not one the safe loader (weights_only=True) accepts ({found.group(1).strip()})"
    if "central directory" in text or "zip archive" in text:
        return "the zip archive is truncated or corrupt (an interrupted copy or download?)"
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return first[:200]


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    safe_globals: Iterable[type] = (),
    pickle_help: str | None = None,
    check_finite: bool = True,
) -> dict:
    """Load a checkpoint written by :func:`save_atomic` (or any tensor-only ``torch.save`` file).

    Args:
        safe_globals: classes allowed besides tensors and plain values (e.g. ``argparse.Namespace``).
        pickle_help: what to tell the user when the file holds other pickled objects.
        check_finite: refuse floating-point tensors holding NaN or ±inf (naming the first one).

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointLoadError` (a ``ValueError``) for an
    empty, truncated, corrupt, non-checkpoint or pickled-object file, the cause first, naming the path.
    """
    path = Path(path)
    if not path.is_file():
        link = " (a dangling symlink or a symlink loop)" if path.is_symlink() else ""
        raise FileNotFoundError(f"No checkpoint at {path}{link}.")
    if path.stat().st_size == 0:
        raise CheckpointLoadError(
            f"Checkpoint {path} is empty (an interrupted copy?); delete it and retrain or re-copy."
        )
    kind = sniff_format(path)
    if kind == "pickle":
        raise CheckpointLoadError(
            f"Checkpoint {path} could not be read: it is a plain Python pickle, not a torch.save file, and "
            "unpickling it could run code, so it was not opened. Re-save the tensors with torch.save."
        )
    if kind not in ("zip", "legacy"):
        what = "unknown bytes" if kind == "unknown" else kind
        raise CheckpointLoadError(
            f"Checkpoint {path} could not be read: it is not a PyTorch checkpoint "
            f"(it looks like {what}; corrupt or the wrong file?)."
        )
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt / unsafe files
        cause = _torch_cause(str(err))
        if "pickled Python object" in cause:
            help_text = pickle_help or (
                "If you trust its source, convert it once, keeping only state dicts and plain values: "
                "`ck = torch.load(path, weights_only=False); torch.save({'g_ema': ck['g_ema']}, 'clean.pt')`."
            )
            raise CheckpointLoadError(
                f"Checkpoint {path} could not be loaded safely: {cause}. {help_text}"
            ) from None
        layout = "zip" if kind == "zip" else "legacy (pre-1.6) torch"
        raise CheckpointLoadError(
            f"Checkpoint {path} could not be read (truncated or corrupt {layout} file?): {cause}."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointLoadError(f"Checkpoint {path} holds a {type(obj).__name__}, expected a dict.")
    if check_finite:
        bad = first_nonfinite(obj)
        if bad is not None:
            raise CheckpointLoadError(
                f"Checkpoint {path} holds non-finite values (NaN or inf) in {bad}: the run that wrote it had "
                "diverged. Use an earlier checkpoint or retrain."
            )
    return obj


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix or "<root>", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}['{k}']" if prefix else f"['{k}']")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def first_nonfinite(obj: Any) -> str | None:
    """Where (``"['g_ema']['conv1.bias']"``) the first floating-point tensor with a NaN/inf sits, else ``None``."""
    for where, t in _tensors(obj):
        if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all()):
            return where
    return None


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
        raise ValueError(
            f"{Path(path).name}: sha256 {actual[:12]}… does not match its manifest "
            f"({str(expected)[:12]}…). The file is corrupt or was replaced; {how_to_fix}"
        )
