"""StyleGAN2 files: rosinality/stylegan2-pytorch checkpoints and the project's own export format.

:mod:`fewshot_lib.models.stylegan2` holds the model; this module reads and writes it.

* **rosinality compatibility.** Module, parameter and buffer names and shapes of our ``Generator`` and
  ``Discriminator`` follow rosinality/stylegan2-pytorch (the code base of CDC and MixDL), so its ``.pt``
  checkpoints load with ``strict=True`` through :func:`load_rosinality` (architecture read off the tensors,
  ``module.`` prefixes of ``nn.DataParallel`` stripped) and :func:`save_rosinality` writes files its code loads.
* **Export.** :func:`export_generator` / :func:`export_discriminator` write the small fp16 files the project
  ships in ``data/checkpoints`` (``{"g_ema", "config", "latent_avg", "info"}`` / ``{"d", "config", "info"}``);
  :func:`load_generator` / :func:`load_discriminator` read them back in float32. Which shipped file is which,
  its manifest and sha256 check live in :mod:`fewshot_lib.artifacts`.

Taught in: ``notebooks/01_stylegan2_building_blocks.ipynb`` (loading a rosinality checkpoint).
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_atomic
from .stylegan2 import Discriminator, Generator, validate_discriminator_config, validate_generator_config

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# 1. rosinality checkpoint compatibility
# ---------------------------------------------------------------------------------------------------------

PICKLE_HELP = (
    "It holds pickled Python objects other than tensors and an argparse.Namespace, so it cannot be loaded "
    "safely with weights_only=True. If you trust where it came from, call load_rosinality(path, "
    "trust_pickle=True) once and save a clean copy with save_rosinality(...); or convert it yourself: "
    "ck = torch.load(path, weights_only=False); torch.save({k: ck[k] for k in ('g', 'd', 'g_ema', "
    "'latent_avg') if k in ck}, 'clean.pt').")


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a leading ``module.`` (from ``nn.DataParallel``, as in CDC's released models) from every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def infer_generator_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read ``size``, ``style_dim``, ``n_mlp`` and the channel table off a generator state dict."""
    state = strip_module_prefix(state)
    try:
        n_mlp = len({k.split(".")[1] for k in state if k.startswith("style.") and k.endswith(".weight")})
        style_dim = state["style.1.weight"].shape[1]
        n_rgbs = len({k.split(".")[1] for k in state if k.startswith("to_rgbs.")})
        size = 2 ** (n_rgbs + 2)
        channels = {4: state["input.input"].shape[1]}
        for k in range(n_rgbs):
            channels[2 ** (k + 3)] = state[f"convs.{2 * k}.conv.weight"].shape[1]
    except KeyError as err:
        raise ValueError(f"Not a StyleGAN2 (rosinality-layout) generator state dict: missing key {err}.") from None
    return dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=channels)


def infer_discriminator_channels(state: dict[str, torch.Tensor]) -> dict[int, int]:
    """Channel table of a discriminator state dict ``{res: channels}``."""
    state = strip_module_prefix(state)
    if "convs.0.0.weight" not in state:
        raise ValueError("Not a StyleGAN2 (rosinality-layout) discriminator state dict: no 'convs.0.0.weight'.")
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("convs.")}) - 1
    size = 2 ** (n_blocks + 2)
    channels = {size: state["convs.0.0.weight"].shape[0]}
    for i in range(1, n_blocks + 1):
        channels[size // 2 ** i] = state[f"convs.{i}.conv2.1.weight"].shape[0]
    return channels


def _base_and_max(channels: dict[int, int]) -> tuple[int, int] | None:
    """Find ``(channel_base, channel_max)`` reproducing a channel table exactly, or ``None``."""
    cmax = max(channels.values())
    for base in sorted({c * r for r, c in channels.items()}):
        if all(min(base // r, cmax) == c for r, c in channels.items()):
            return base, cmax
    return None


def generator_from_state(state: dict[str, torch.Tensor], **overrides: Any) -> "Generator":
    """Build a :class:`Generator` whose architecture matches ``state`` (no weights loaded yet)."""
    cfg = infer_generator_config(state)
    bm = _base_and_max(cfg["channels"])
    if bm is None:
        raise ValueError(f"Unsupported channel table {cfg['channels']} (not min(base // res, max)).")
    kw = dict(size=cfg["size"], style_dim=cfg["style_dim"], n_mlp=cfg["n_mlp"], channel_base=bm[0],
              channel_max=bm[1])
    kw.update(overrides)
    return Generator(**kw)


def discriminator_from_state(state: dict[str, torch.Tensor], **overrides: Any) -> "Discriminator":
    channels = infer_discriminator_channels(state)
    bm = _base_and_max(channels)
    if bm is None:
        raise ValueError(f"Unsupported discriminator channel table {channels}.")
    kw = dict(size=max(channels), channel_base=bm[0], channel_max=bm[1])
    kw.update(overrides)
    return Discriminator(**kw)


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str = "state dict") -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing, unexpected and mis-shaped keys."""
    state = strip_module_prefix(state)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")
        parts = [f"{len(missing)} missing: {show(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {show(unexpected)}" if unexpected else "",
                 f"{len(mismatched)} shape mismatches: {show(mismatched)}" if mismatched else ""]
        raise ValueError(f"{what} does not match {type(module).__name__}"
                         f"({getattr(module, 'size', '?')}px): " + "; ".join(p for p in parts if p)
                         + ". Check size, channel_multiplier / channel_base, style_dim and n_mlp.")
    module.load_state_dict(state, strict=True)


def read_torch_file(path: str | os.PathLike, trust_pickle: bool = False) -> dict:
    """``torch.load`` a checkpoint on CPU with ``weights_only=True`` (``argparse.Namespace`` allowed).

    rosinality's ``train.py`` checkpoints pickle an ``argparse.Namespace`` under ``args``; that class is
    harmless, so it is allow-listed. Anything else pickled is refused unless ``trust_pickle=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.stat().st_size == 0:
        raise ValueError(f"Checkpoint {path} is empty (an interrupted download or copy?).")
    if trust_pickle:
        log.warning("Loading %s with weights_only=False (trust_pickle=True): only do this for trusted files.", path)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    else:
        # load_checkpoint tells random bytes, truncated zips and plain pickles apart from pickled objects, so
        # the trust_pickle advice is only given for the last; it also refuses NaN/inf weights by name.
        obj = load_checkpoint(path, safe_globals=[argparse.Namespace], pickle_help=PICKLE_HELP)
    if not isinstance(obj, dict):
        raise ValueError(f"Checkpoint {path} holds a {type(obj).__name__}, expected a dict of state dicts.")
    return obj


@dataclass
class RosinalityCheckpoint:
    """What :func:`load_rosinality` returns. ``g_ema`` is the generator to sample from."""

    g_ema: Generator
    g: Generator | None = None
    d: Discriminator | None = None
    latent_avg: torch.Tensor | None = None
    keys: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def load_rosinality(path: str | os.PathLike, device: str | torch.device = "cpu", trust_pickle: bool = False,
                    fused: bool | None = None) -> RosinalityCheckpoint:
    """Load a rosinality/stylegan2-pytorch ``.pt`` (also CDC's and MixDL's) with ``strict=True``.

    Accepted layouts: ``{"g_ema", "g"?, "d"?, "latent_avg"?, ...}`` from ``train.py`` / ``convert_weight.py``,
    and CDC's adapted models whose keys start with ``module.``. The architecture (size, style_dim, n_mlp,
    channels) is read off the tensors. A state dict that does not match raises ``ValueError`` listing the
    missing / unexpected / mis-shaped keys — never a silent partial load. When ``g_ema`` is absent, ``g`` is
    used for sampling. ``latent_avg`` is taken from the file, else computed with ``mean_latent(4096)``.
    """
    ck = read_torch_file(path, trust_pickle=trust_pickle)
    over = {"fused": fused}
    gen_state = ck.get("g_ema", ck.get("g"))
    if gen_state is None:
        raise ValueError(f"{path} has no 'g_ema' or 'g' entry (keys: {sorted(ck)[:10]}); not a StyleGAN2 checkpoint.")
    g_ema = generator_from_state(gen_state, **over)
    load_state_strict(g_ema, gen_state, f"{Path(path).name}['{'g_ema' if 'g_ema' in ck else 'g'}']")
    g = None
    if "g" in ck and "g_ema" in ck:
        g = generator_from_state(ck["g"], **over)
        load_state_strict(g, ck["g"], f"{Path(path).name}['g']")
    d = None
    if "d" in ck:
        d_state = strip_module_prefix(ck["d"])
        extra_d = {k: v for k, v in d_state.items() if k.startswith("sim_linear.")}  # MixDL's projection head
        d_state = {k: v for k, v in d_state.items() if not k.startswith("sim_linear.")}
        d = discriminator_from_state(d_state)
        load_state_strict(d, d_state, f"{Path(path).name}['d']")
    else:
        extra_d = {}
    latent_avg = ck.get("latent_avg")
    g_ema = g_ema.to(device).eval()
    if latent_avg is not None:
        latent_avg = latent_avg.float().view(1, -1).to(device)
        g_ema.latent_avg = latent_avg
    else:
        latent_avg = g_ema.mean_latent(4096, generator=torch.Generator().manual_seed(0))
    extra = {k: v for k, v in ck.items() if k in ("ada_aug_p",)}
    if extra_d:
        extra["d_sim_linear"] = extra_d
    return RosinalityCheckpoint(g_ema=g_ema, g=g.to(device) if g is not None else None,
                                d=d.to(device) if d is not None else None, latent_avg=latent_avg,
                                keys=sorted(ck), extra=extra)


def save_rosinality(path: str | os.PathLike, g_ema: Generator, g: Generator | None = None,
                    d: Discriminator | None = None, latent_avg: torch.Tensor | None = None) -> Path:
    """Write ``{"g_ema", "g"?, "d"?, "latent_avg"?}`` (tensors only) that rosinality's code can load."""
    obj: dict[str, Any] = {"g_ema": g_ema.state_dict()}
    if g is not None:
        obj["g"] = g.state_dict()
    if d is not None:
        obj["d"] = d.state_dict()
    if latent_avg is not None:
        obj["latent_avg"] = latent_avg.detach().reshape(-1).cpu()
    return save_atomic(obj, path)


# ---------------------------------------------------------------------------------------------------------
# 2. The project's export format (what data/checkpoints ships)
# ---------------------------------------------------------------------------------------------------------


def _shipping_state(module: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    """``module``'s state dict on CPU, floating-point tensors in fp16 when ``half`` (loaders cast back)."""
    return {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
            for k, v in module.state_dict().items()}


def export_generator(g_ema: Generator, path: str | os.PathLike, half: bool = True,
                     info: dict[str, Any] | None = None, n_mean: int = 4096) -> Path:
    """Save an EMA generator for shipping: ``{"g_ema", "config", "latent_avg", "info"}`` (fp16 by default).

    Half precision halves the file; :func:`load_generator` casts back to float32.
    """
    g_ema = g_ema.eval()
    latent_avg = g_ema.mean_latent(n_mean, generator=torch.Generator().manual_seed(0)).detach().cpu()
    return save_atomic({"g_ema": _shipping_state(g_ema, half), "config": g_ema.config, "latent_avg": latent_avg.float(),
                        "info": dict(info or {})}, path)


def export_discriminator(D: "Discriminator", path: str | os.PathLike, half: bool = True,
                         info: dict[str, Any] | None = None) -> Path:
    """Save a discriminator for shipping: ``{"d", "config", "info"}`` (fp16 by default).

    Adaptation methods fine-tune the source D too, so it ships beside the generator of the same step;
    :func:`load_discriminator` reads it back (float32).
    """
    return save_atomic({"d": _shipping_state(D, half), "config": dict(D.config), "info": dict(info or {})}, path)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Load a file written by :func:`export_generator` (strict) → EMA generator in eval mode, float32."""
    ck = load_checkpoint(path)
    if "g_ema" not in ck or "config" not in ck:
        raise ValueError(f"{path} is not an exported generator (needs 'g_ema' and 'config'); for rosinality "
                         "files use load_rosinality().")
    cfg = validate_generator_config(ck["config"], f"{path}['config']")  # before allocating anything
    cfg["fused"] = None
    G = Generator(**cfg)
    load_state_strict(G, {k: v.float() for k, v in ck["g_ema"].items()}, f"{Path(path).name}['g_ema']")
    G = G.to(device).eval()
    if ck.get("latent_avg") is not None:
        G.latent_avg = ck["latent_avg"].float().view(1, -1).to(device)
    return G


def load_discriminator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Discriminator:
    """Load a file written by :func:`export_discriminator` (strict) → discriminator in eval mode, float32."""
    ck = load_checkpoint(path)
    for key in ("d", "config"):
        if key not in ck:
            raise ValueError(f"{Path(path).name} is not an exported discriminator (missing {key!r})")
    D = Discriminator(**validate_discriminator_config(ck["config"], f"{path}['config']"))
    load_state_strict(D, {k: v.float() for k, v in ck["d"].items()}, f"{Path(path).name}['d']")
    return D.to(device).eval()
