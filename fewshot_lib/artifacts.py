"""One registry of every file the project ships in ``data/``: where it is, its manifest, its sha256, how to
load it and the command that rebuilds it.

>>> from fewshot_lib import artifacts
>>> G = artifacts.load("stylegan2_noto32")              # checked against its manifest, then loaded
>>> artifacts.manifest("stylegan2_noto32")["steps"]     # what the manifest records
>>> artifacts.names()                                    # everything shipped (and found) right now

Every shipped file ``<name>`` has a manifest beside it (``<name>.manifest.json``; a LoFGAN export's
discriminator ``<name>_d.pt`` shares its generator's manifest under ``d_sha256``). :meth:`Artifact.check`
refuses a missing file or manifest (:class:`ArtifactMissing`, a ``FileNotFoundError``) and a file whose
sha256 differs from the manifest's (:class:`ArtifactCorrupt`, a ``ValueError``), both naming the command that
rebuilds the file, so a truncated copy or a swapped checkpoint never loads as the one whose numbers the
manifest reports.

The registry knows the built-in files and every ``data/checkpoints/*.manifest.json`` that appears later
(LoFGAN exports, further source models): the name says which kind it is (:func:`describe`). It sits at the
bottom of the package (it imports only ``config`` and ``checkpoint``) so that every layer can ask it for a
checked path; each kind's loader belongs to the layer that owns the format and is named in :data:`LOADERS`,
imported only when :func:`load` runs.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import file_sha256
from .config import data_dir

log = logging.getLogger(__name__)

__all__ = [
    "Artifact",
    "ArtifactMissing",
    "ArtifactCorrupt",
    "LOADERS",
    "describe",
    "get",
    "names",
    "load",
    "check",
    "manifest",
    "manifest_path",
    "check_all",
    "source_model_paths",
    "source_model_available",
    "load_source_model",
    "load_source_discriminator",
]

#: kind → ``"module:function"`` of its loader, called as ``function(path, device)``.
LOADERS: dict[str, str] = {
    "emoji_dataset": "fewshot_lib.data.emoji:read_emoji_file",
    "feature_net": "fewshot_lib.metrics.features:read_emoji_feature_net",
    "stylegan2_generator": "fewshot_lib.models.stylegan2_io:load_generator",
    "stylegan2_discriminator": "fewshot_lib.models.stylegan2_io:load_discriminator",
    "lofgan_generator": "fewshot_lib.models.lofgan:load_lofgan_export",
    "lofgan_discriminator": "fewshot_lib.models.lofgan:load_lofgan_export",
}

#: The files committed with the repository (checked by the tests); others are found by their manifests.
BUILT_IN = (
    "emoji_32",
    "emoji_features",
    "stylegan2_noto32",
    "stylegan2_noto32_d",
    "mixdl_showcase_stylegan2",
    "mixdl_showcase_mixdl",
)


class ArtifactMissing(FileNotFoundError):
    """A shipped file (or its manifest) is not there; the message names the command that rebuilds it."""


class ArtifactCorrupt(ValueError):
    """A shipped file's sha256 differs from its manifest's; the message names the command that rebuilds it."""


def manifest_path(path: str | Path) -> Path:
    """``<name>.manifest.json`` beside ``<name>.pt`` / ``<name>.npz`` (the rule all shipped files follow)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.manifest.json")


@dataclass(frozen=True)
class Artifact:
    """One shipped file. Paths are relative to :func:`fewshot_lib.config.data_dir` (``FEWSHOT_DATA``)
    unless absolute.

    Attributes:
        name: registry name, the file's stem (``stylegan2_noto32``).
        file: the file (``checkpoints/stylegan2_noto32.pt``).
        kind: a key of :data:`LOADERS`.
        rebuild: the shell command that makes the file again.
        manifest_file: its manifest; ``sha_key`` the manifest field holding its sha256.
        pairs_with: for a discriminator, the generator it was exported with (their steps should agree).
    """

    name: str
    file: str
    kind: str
    rebuild: str
    manifest_file: str
    sha_key: str = "sha256"
    pairs_with: str | None = None

    @property
    def path(self) -> Path:
        return data_dir() / self.file

    @property
    def manifest_path(self) -> Path:
        return data_dir() / self.manifest_file

    def at(self, path: str | Path) -> "Artifact":
        """The same kind of file at another place (its manifest beside it), e.g. a user's own copy."""
        path = Path(path).resolve()
        shared = self.sha_key != "sha256"  # a LoFGAN D shares its generator's <stem minus _d>.manifest.json
        man = (
            path.with_name(f"{path.stem.removesuffix('_d')}.manifest.json") if shared else manifest_path(path)
        )
        return replace(self, file=str(path), manifest_file=str(man))

    def available(self) -> bool:
        """Whether the file and its manifest are both there (nothing is read)."""
        return self.path.is_file() and self.manifest_path.is_file()

    def _missing(self, what: Path) -> ArtifactMissing:
        return ArtifactMissing(
            f"Shipped file {self.name!r} is incomplete: no {what.name} in {what.parent}. "
            f"Rebuild it with `{self.rebuild}` (or restore data/ with git)."
        )

    def manifest(self) -> dict[str, Any]:
        """The manifest's contents (raises :class:`ArtifactMissing` when it is not there)."""
        if not self.manifest_path.is_file():
            raise self._missing(self.manifest_path)
        return json.loads(self.manifest_path.read_text())

    def check(self) -> Path:
        """The file's path once it exists and its sha256 matches the manifest; else one clear error."""
        if not self.path.is_file():
            raise self._missing(self.path)
        expected = self.manifest().get(self.sha_key)
        actual = file_sha256(self.path)
        if actual != expected:
            raise ArtifactCorrupt(
                f"{self.path.name}: sha256 {actual[:12]}… does not match its manifest "
                f"{self.manifest_path.name} ({str(expected)[:12]}…). The file is corrupt or was replaced; "
                f"rebuild it with `{self.rebuild}` (or restore data/ with git)."
            )
        return self.path

    def load(self, device: str | torch.device = "cpu", verify: bool = True) -> Any:
        """Check (unless ``verify=False``, which still needs the file) and load with the kind's loader."""
        if verify:
            path = self.check()
        elif not self.path.is_file():
            raise self._missing(self.path)
        else:
            path = self.path
        obj = loader(self.kind)(path, device)
        if verify and self.pairs_with is not None:
            self._check_pair()
        return obj

    def _check_pair(self) -> None:
        partner = get(self.pairs_with)
        if not partner.manifest_path.is_file():
            return
        mine, theirs = self.manifest().get("steps"), partner.manifest().get("steps")
        if theirs is not None and theirs != mine:
            log.warning(
                "%s is from step %s but %s is from step %s; re-export them together (`%s`)",
                self.path.name,
                mine,
                partner.path.name,
                theirs,
                partner.rebuild,
            )


def loader(kind: str) -> Callable[[Path, str | torch.device], Any]:
    """The function that loads files of ``kind`` (imported on first use)."""
    if kind not in LOADERS:
        raise ValueError(f"No loader for kind {kind!r}; known kinds: {sorted(LOADERS)}")
    module, function = LOADERS[kind].split(":")
    return getattr(importlib.import_module(module), function)


_LOFGAN = re.compile(r"(lofgan|globalfusion)_emoji32_seed(\d+)")
_SHOWCASE = re.compile(r"mixdl_showcase_(\w+?)(?:_seed([1-9]\d*))?(_d)?")
_ADAPTED = re.compile(r"(tgan|freezed|ewc|cdc)_(\w+?)_shots(\d+)")


def adaptation_name(method: str, style: str, shots_seed: int) -> str:
    """The export name of ``scripts/train_adaptation.py``: ``<method>_<target style>_shots<seed>``."""
    name = f"{method}_{style}_shots{shots_seed}"
    if parse_adaptation(name) != (method, style, shots_seed):
        raise ValueError(
            f"No adaptation export name for method {method!r}, style {style!r}, seed {shots_seed!r}"
        )
    return name


def parse_adaptation(name: str) -> tuple[str, str, int] | None:
    """``(method, target style, shots seed)`` of an adaptation export name, ``None`` for any other name."""
    if m := _ADAPTED.fullmatch(name):
        return m.group(1), m.group(2), int(m.group(3))
    return None


def parse_showcase(name: str) -> tuple[str, int] | None:
    """``(variant, seed)`` of a MixDL showcase generator's export name (``mixdl_showcase_<variant>`` for seed 0,
    ``mixdl_showcase_<variant>_seed<N>``), ``None`` for any other name (its ``_d`` file included)."""
    if (m := _SHOWCASE.fullmatch(name)) and not m.group(3):
        return m.group(1), int(m.group(2) or 0)
    return None


def _discriminator_in_generator_manifest(name: str, file: str, kind: str, command: str) -> Artifact:
    """A ``<generator>_d`` file whose sha256 sits in its generator's manifest (``d_sha256``), not in its own."""
    base = name.removesuffix("_d")
    return Artifact(
        name, file, kind, command, f"checkpoints/{base}.manifest.json", sha_key="d_sha256", pairs_with=None
    )


def describe(name: str) -> Artifact:
    """The registry entry for ``name``, from the naming rules of the files the project ships.

    ``emoji_<size>`` datasets; ``emoji_features`` (and ``emoji_features_seen``);
    ``mixdl_showcase_<variant>`` and ``mixdl_showcase_<variant>_seed<N>`` (N >= 1), and their ``_d``; LoFGAN
    exports ``lofgan_emoji32_seed<N>`` / ``globalfusion_emoji32_seed<N>`` and their ``_d``; otherwise a
    StyleGAN2 export (``<name>``, and ``<name>_d`` for its discriminator) of ``scripts/train_adaptation.py``
    (``<method>_<style>_shots<k>``), ``scripts/train_conditional_source.py`` (``stylegan2_cond_*``) or
    ``scripts/train_source_model.py`` (any other name).
    """
    if m := re.fullmatch(r"emoji_(\d+)", name):
        command = f"python -m fewshot_lib.data.emoji build --size {m.group(1)}"
        return Artifact(name, f"{name}.npz", "emoji_dataset", command, f"{name}.manifest.json")
    file, man = f"checkpoints/{name}.pt", f"checkpoints/{name}.manifest.json"
    if name == "emoji_features":
        return Artifact(name, file, "feature_net", "python scripts/train_feature_net.py", man)
    if name == "emoji_features_seen":  # run D: never saw notebook 06's unseen classes (training losses only)
        return Artifact(
            name, file, "feature_net", "python scripts/train_feature_net.py --holdout-unseen-classes", man
        )
    if m := _SHOWCASE.fullmatch(name):
        seed = f" --seed {m.group(2)}" if m.group(2) else ""
        command = f"python scripts/train_mixdl_showcase.py --variant {m.group(1)}{seed}"
        if m.group(3):  # its D (+ MixDL's head), for --warm-start
            return _discriminator_in_generator_manifest(name, file, "stylegan2_discriminator", command)
        return Artifact(name, file, "stylegan2_generator", command, man)
    if m := _LOFGAN.fullmatch(name.removesuffix("_d")):
        base = m.group(0)
        fusion = "local" if m.group(1) == "lofgan" else "global"
        command = f"python scripts/train_lofgan.py --fusion {fusion} --seed {m.group(2)}"
        if name.endswith("_d"):
            return _discriminator_in_generator_manifest(name, file, "lofgan_discriminator", command)
        return Artifact(name, file, "lofgan_generator", command, man)
    base = name.removesuffix("_d")
    if adapted := parse_adaptation(base):  # scripts/train_adaptation.py: <method>_<target style>_shots<seed>
        method, style, shots_seed = adapted
        command = f"python scripts/train_adaptation.py --method {method} --target-style {style} --shots-seed {shots_seed}"
    elif base.startswith("stylegan2_cond_"):  # scripts/train_conditional_source.py (LSO's conditional source)
        command = f"python scripts/train_conditional_source.py --name {base}"
    else:
        command = f"python scripts/train_source_model.py --name {base} --export-only"
    if name.endswith("_d"):
        return Artifact(name, file, "stylegan2_discriminator", command, man, pairs_with=base)
    return Artifact(name, file, "stylegan2_generator", command, man)


def get(name: str) -> Artifact:
    """The entry for ``name`` (any name following the rules of :func:`describe`)."""
    if not name or "/" in name or name.endswith((".pt", ".json", ".npz")):
        raise ValueError(f"{name!r} is not an artifact name; use a file's stem, e.g. one of {names()}")
    return describe(name)


def names() -> list[str]:
    """The built-in files and every ``<name>.pt`` in ``data/checkpoints`` that has a manifest."""
    found = set(BUILT_IN)
    folder = data_dir() / "checkpoints"
    for man in folder.glob("*.manifest.json") if folder.is_dir() else []:
        stem = man.name.removesuffix(".manifest.json")
        if (folder / f"{stem}.pt").is_file():
            found.add(stem)
            shares_manifest = _LOFGAN.fullmatch(stem) or _SHOWCASE.fullmatch(stem)  # a D without its own
            if shares_manifest and (folder / f"{stem}_d.pt").is_file():
                found.add(f"{stem}_d")
    return sorted(found)


def load(name: str, device: str | torch.device = "cpu", verify: bool = True) -> Any:
    """Load a shipped file after checking it (see :meth:`Artifact.load`)."""
    return get(name).load(device=device, verify=verify)


def check(name: str) -> Path:
    """The checked path of a shipped file (see :meth:`Artifact.check`)."""
    return get(name).check()


def manifest(name: str) -> dict[str, Any]:
    """The manifest of a shipped file."""
    return get(name).manifest()


def check_all() -> dict[str, str]:
    """``{name: "ok" | error message}`` for every file :func:`names` lists (hashes them all)."""
    status = {}
    for name in names():
        try:
            check(name)
            status[name] = "ok"
        except (ArtifactMissing, ArtifactCorrupt) as err:
            status[name] = str(err)
    return status


# ---------------------------------------------------------------------------------------------------------
# The names notebooks and scripts used before the registry
# ---------------------------------------------------------------------------------------------------------


def source_model_paths(name: str = "stylegan2_noto32") -> tuple[Path, Path]:
    """``(checkpoint, manifest)`` paths of a shipped model under ``data/checkpoints``."""
    entry = get(name)
    return entry.path, entry.manifest_path


def source_model_available(name: str = "stylegan2_noto32") -> bool:
    return get(name).available()


def load_source_model(
    name: str = "stylegan2_noto32", device: str | torch.device = "cpu", verify: bool = True
):
    """The project-trained source generator (EMA weights, float32, eval mode): ``load(name)``."""
    return load(name, device=device, verify=verify)


def load_source_discriminator(
    name: str = "stylegan2_noto32", device: str | torch.device = "cpu", verify: bool = True
):
    """The discriminator exported with the source generator ``name`` (``<name>_d``): ``load(name + "_d")``.

    Adaptation fine-tunes the *pretrained* D as well, so the generator alone is not enough; a warning says
    when the two files are from different training steps.
    """
    return load(f"{name}_d", device=device, verify=verify)
