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
import collections as _collections
import hashlib as _hashlib
import io as _io
import logging
import math as _math
import os
import pickle as _pickle
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointLoadError, first_nonfinite, load_checkpoint, save_atomic
from .stylegan2 import (
    Discriminator,
    Generator,
    make_kernel,
    validate_discriminator_config,
    validate_generator_config,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# 1. rosinality checkpoint compatibility
# ---------------------------------------------------------------------------------------------------------

PICKLE_HELP = (
    "It holds pickled Python objects other than tensors and an argparse.Namespace, so it cannot be loaded "
    "safely with weights_only=True. If you trust where it came from, call load_rosinality(path, "
    "trust_pickle=True) once and save a clean copy with save_rosinality(...); or convert it yourself: "
    "ck = torch.load(path, weights_only=False); torch.save({k: ck[k] for k in ('g', 'd', 'g_ema', "
    "'latent_avg') if k in ck}, 'clean.pt')."
)


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a leading ``module.`` (from ``nn.DataParallel``, as in CDC's released models) from every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
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
        raise ValueError(
            f"Not a StyleGAN2 (rosinality-layout) generator state dict: missing key {err}."
        ) from None
    return dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=channels)


def infer_discriminator_channels(state: dict[str, torch.Tensor]) -> dict[int, int]:
    """Channel table of a discriminator state dict ``{res: channels}``."""
    state = strip_module_prefix(state)
    if "convs.0.0.weight" not in state:
        raise ValueError(
            "Not a StyleGAN2 (rosinality-layout) discriminator state dict: no 'convs.0.0.weight'."
        )
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("convs.")}) - 1
    size = 2 ** (n_blocks + 2)
    channels = {size: state["convs.0.0.weight"].shape[0]}
    for i in range(1, n_blocks + 1):
        channels[size // 2**i] = state[f"convs.{i}.conv2.1.weight"].shape[0]
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
    kw = dict(
        size=cfg["size"],
        style_dim=cfg["style_dim"],
        n_mlp=cfg["n_mlp"],
        channel_base=bm[0],
        channel_max=bm[1],
    )
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
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:

        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = [
            f"{len(missing)} missing: {show(missing)}" if missing else "",
            f"{len(unexpected)} unexpected: {show(unexpected)}" if unexpected else "",
            f"{len(mismatched)} shape mismatches: {show(mismatched)}" if mismatched else "",
        ]
        raise ValueError(
            f"{what} does not match {type(module).__name__}"
            f"({getattr(module, 'size', '?')}px): "
            + "; ".join(p for p in parts if p)
            + ". Check size, channel_multiplier / channel_base, style_dim and n_mlp."
        )
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
        log.warning(
            "Loading %s with weights_only=False (trust_pickle=True): only do this for trusted files.", path
        )
        obj = torch.load(path, map_location="cpu", weights_only=False)
        bad = first_nonfinite(obj) if isinstance(obj, dict) else None  # trusted is not the same as healthy
        if bad is not None:
            raise CheckpointLoadError(
                f"Checkpoint {path} holds non-finite values (NaN or inf) in {bad}: the run "
                "that wrote it had diverged. Use an earlier checkpoint or retrain."
            )
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


def load_rosinality(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    fused: bool | None = None,
) -> RosinalityCheckpoint:
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
        raise ValueError(
            f"{path} has no 'g_ema' or 'g' entry (keys: {sorted(ck)[:10]}); not a StyleGAN2 checkpoint."
        )
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
    return RosinalityCheckpoint(
        g_ema=g_ema,
        g=g.to(device) if g is not None else None,
        d=d.to(device) if d is not None else None,
        latent_avg=latent_avg,
        keys=sorted(ck),
        extra=extra,
    )


def save_rosinality(
    path: str | os.PathLike,
    g_ema: Generator,
    g: Generator | None = None,
    d: Discriminator | None = None,
    latent_avg: torch.Tensor | None = None,
) -> Path:
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
    return {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in module.state_dict().items()
    }


def export_generator(
    g_ema: Generator,
    path: str | os.PathLike,
    half: bool = True,
    info: dict[str, Any] | None = None,
    n_mean: int = 4096,
) -> Path:
    """Save an EMA generator for shipping: ``{"g_ema", "config", "latent_avg", "info"}`` (fp16 by default).

    Half precision halves the file; :func:`load_generator` casts back to float32.
    """
    g_ema = g_ema.eval()
    latent_avg = g_ema.mean_latent(n_mean, generator=torch.Generator().manual_seed(0)).detach().cpu()
    return save_atomic(
        {
            "g_ema": _shipping_state(g_ema, half),
            "config": g_ema.config,
            "latent_avg": latent_avg.float(),
            "info": dict(info or {}),
        },
        path,
    )


def export_discriminator(
    D: "Discriminator",
    path: str | os.PathLike,
    half: bool = True,
    info: dict[str, Any] | None = None,
    with_modules: dict[str, nn.Module] | None = None,
) -> Path:
    """Save a discriminator for shipping: ``{"d", "config", "info"}`` (fp16 by default), plus the state of each of
    ``with_modules`` under its name — modules that train with D and a warm start needs (MixDL's projection head).

    Adaptation methods fine-tune the source D too, so it ships beside the generator of the same step;
    :func:`load_discriminator` reads it back (float32).
    """
    state = {"d": _shipping_state(D, half), "config": dict(D.config), "info": dict(info or {})}
    state.update({name: _shipping_state(m, half) for name, m in (with_modules or {}).items()})
    return save_atomic(state, path)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Load a file written by :func:`export_generator` (strict) → EMA generator in eval mode, float32."""
    ck = load_checkpoint(path)
    if "g_ema" not in ck or "config" not in ck:
        raise ValueError(
            f"{path} is not an exported generator (needs 'g_ema' and 'config'); for rosinality "
            "files use load_rosinality()."
        )
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


# ---------------------------------------------------------------------------------------------------------
# 3. NVlabs stylegan2-ada-pytorch pickles, read without running code, and NVlabs-layout state dicts
# ---------------------------------------------------------------------------------------------------------
#
# An NVlabs ``.pkl`` (``network-snapshot-*.pkl``, the official pretrained ``ffhq.pkl`` & co., the conditional
# pickles LSO starts from) is a plain ``pickle`` of ``{"G", "D", "G_ema", "augment_pipe"?,
# "training_set_kwargs"}`` whose networks are ``@persistence.persistent_class`` objects: each pickles as
# ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` holds the *source code* of
# ``training/networks.py`` (``module_src``), the class name and the module's ``__dict__`` (``_parameters``,
# ``_buffers``, ``_modules``, plain attributes, ``_init_kwargs``). Their own loader ``exec``s that source, so
# loading a pickle from the internet runs whatever code it carries. :func:`read_nvlabs_pickle` instead uses an
# unpickler whose ``find_class`` allows only a short list of names and maps every NVlabs class to an inert
# stand-in that merely stores its state: tensors are rebuilt by torch's own rebuild functions (their storages
# with ``torch.load(weights_only=True)``), and anything else a pickle asks for (``os.system``, ``eval``,
# ``subprocess``, a ``__reduce__`` of any other class) is refused with :class:`UnsafePickleError` naming the
# file. The ``module_src`` is never executed (only its sha256 is kept).
#
# How NVlabs' generator maps onto this package's :class:`Generator` (checked by :func:`nvlabs_generator_config`;
# anything else is refused with a message naming the file and the difference, never loaded approximately):
#
# =========================  =====================================  =============================================
# NVlabs                     here                                   conversion
# =========================  =====================================  =============================================
# mapping.fc{i}              style.{i+1} (style.{i} conditional)    same parametrisation (stored N(0,1)/lr, gain
#                                                                   lr/√in, bias·lr); lr_multiplier → lr_mlp;
#                                                                   ``num_layers`` (2 for cfg auto/cifar, 8 for
#                                                                   paper*/stylegan2) → ``n_mlp``
# mapping.embed (c_dim > 0)  class_embed (weight [E, C], gain 1/√C)  same layout; z and embed both normalised and
#                                                                   concatenated [ẑ, ê(c)]; c = one-hot ↔ index
# mapping.w_avg              G.latent_avg / export ``latent_avg``    truncation w_avg + ψ(w - w_avg) is the same;
#                                                                   NVlabs' ``truncation_cutoff`` has no argument
#                                                                   here (truncate a W+ yourself)
# synthesis.b4.const         input.input [1, C, 4, 4]
# b4.conv1 / b{r}.conv0,1    conv1 / convs.{2k}, convs.{2k+1}       weight [O,I,3,3] → [1,O,I,3,3]; affine →
#                                                                   conv.modulation; bias → activate.bias
#                                                                   (bias_act lrelu, gain √2 = FusedLeakyReLU)
# noise_strength []          noise.weight [1]                       use_noise=False → strength 0 (exact)
# noise_const [r, r]         noises.noise_{j} [1, 1, r, r]          noise_mode='const' ↔ randomize_noise=False
# b{r}.torgb                 to_rgb1 / to_rgbs.{k}                  weight [3,C,1,1] → [1,3,C,1,1]; bias [3] →
#                                                                   [1,3,1,1]; style gain 1/√C = our modulated-conv
#                                                                   scale; only architecture='skip' (the default)
# resample_filter buffers    blur / upsample ``kernel`` buffers     only [1,3,3,1] (other filters refused)
# conv_clamp (256 in every   Generator(conv_clamp=...)               clamps after each layer's bias-act and each
# train.py config)                                                  ToRGB's bias, as NVlabs does; part of the
#                                                                   config, so exports rebuild it
# num_fp16_res               —                                      we compute in float32 = NVlabs with
#                                                                   ``force_fp32=True`` (their fp16 GPU path
#                                                                   differs by fp16 rounding)
# =========================  =====================================  =============================================
#
# Refused: architecture 'orig' / 'resnet', img_channels ≠ 3, z_dim ≠ w_dim, embed or layer features ≠ w_dim,
# activations other than lrelu, kernel sizes other than 3 (convs) / 1 (ToRGB), per-layer learning-rate
# multipliers that differ, resolution < 8, TensorFlow-era pickles (``dnnlib.tflib``; convert those with NVlabs'
# ``legacy.py`` in an environment you trust first). The snapshot's unconditional 'resnet' D converts too
# (:func:`load_nvlabs_discriminator`, below); conditional Ds and the augment_pipe are not converted.
#
# Verified against the real NVlabs code (d72cc7d, run in a throwaway directory, never committed): random
# generators built with their ``training.networks.Generator`` (32 px unconditional, 2 mapping layers, conv_clamp
# 256, num_fp16_res 2; 16 px conditional c_dim 5, 8 mapping layers; 16 px with conv_clamp 0.5 so that the
# clamp binds and lr_multiplier 0.05), pickled as their training loop does; :func:`load_nvlabs` reproduced their
# ``G(z, c, noise_mode='const', force_fp32=True)`` images — see tests/test_nvlabs.py for the measured maximum
# absolute differences.


NVLABS_FORMAT = "nvlabs-stylegan2-ada-pytorch"
_NV_FILTER = [1, 3, 3, 1]
SQRT2_ = _math.sqrt(2.0)


class NVlabsPickleError(ValueError):
    """An NVlabs ``.pkl`` could not be read or converted; the message names the file and the reason."""


class UnsafePickleError(NVlabsPickleError):
    """The pickle asks for a Python object outside the allow-list (it would run code when loaded)."""


class _Inert:
    """Stand-in for a pickled NVlabs object: records its class name and state, has no behaviour at all."""

    _nv_qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.__dict__["_nv_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_nv_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self._nv_qualname}>"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict subclass): a plain dict here."""


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (_Inert,), {"_nv_qualname": f"{module}.{name}"})
    return _STAND_INS[key]


def _inert_persistent(meta: Any) -> _Inert:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: keeps the state, never runs
    ``meta['module_src']`` (only its sha256 is recorded)."""
    if (
        not isinstance(meta, dict)
        or meta.get("type") != "class"
        or not isinstance(meta.get("class_name"), str)
    ):
        raise NVlabsPickleError(f"unexpected persistence record {type(meta).__name__}")
    cls = _stand_in_class("persistent", meta["class_name"])
    obj = cls.__new__(cls)
    src = meta.get("module_src")
    obj.__dict__.update(
        _nv_state=meta.get("state"),
        _nv_version=meta.get("version"),
        _nv_src_sha256=_hashlib.sha256(src.encode()).hexdigest() if isinstance(src, str) else None,
    )
    return obj


def _inert_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Stand-in for ``copyreg._reconstructor`` (how protocol-0/1 ``object.__reduce__`` rebuilds objects)."""
    if (
        not (isinstance(cls, type) and issubclass(cls, (_Inert, _EasyDict)))
        or base is not object
        or state is not None
    ):
        raise UnsafePickleError(
            f"copyreg._reconstructor({getattr(cls, '__name__', cls)!r}, ...) is not allowed"
        )
    return cls.__new__(cls)


def _load_storage_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: the same bytes, read by torch's ``weights_only`` loader."""
    if not isinstance(data, (bytes, bytearray)):
        raise NVlabsPickleError("a tensor storage is not stored as bytes")
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # TypedStorage deprecation notices
        return torch.load(_io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("numpy scalar of an object dtype is not allowed")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _numpy_dtype(*args: Any) -> Any:
    import numpy as np

    if not args or not isinstance(args[0], str):
        raise UnsafePickleError("numpy.dtype with a non-string argument is not allowed")
    dt = np.dtype(args[0])
    if dt.hasobject:
        raise UnsafePickleError("numpy object dtypes are not allowed")
    return dt


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``: how protocol-2 pickles store bytes (``encode(str, 'latin1')``) only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is only allowed as encode(str, 'latin1')")
    return text.encode("latin1")


def _safe_globals_table() -> dict[tuple[str, str], Any]:
    rebuild = torch._utils
    table: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _inert_persistent,
        ("copyreg", "_reconstructor"): _inert_reconstructor,
        ("collections", "OrderedDict"): _collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "object"): object,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): rebuild._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("numpy", "dtype"): _numpy_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    # not _rebuild_parameter_with_state: it sets arbitrary attributes on the parameter, and NVlabs never needs it
    for name in ("float32", "float16", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
        table[("torch", name)] = getattr(torch, name)
    table[("torch", "Size")] = torch.Size
    return table


class _RestrictedUnpickler(_pickle.Unpickler):
    """An unpickler that resolves only allow-listed names; NVlabs classes become inert stand-ins."""

    def __init__(self, file: Any, source: str):
        super().__init__(file)
        self._source = source
        self._table = _safe_globals_table()

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle  # protocol-2 pickles name Python 2 modules (__builtin__.set, copy_reg, ...)

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in self._table:
            return self._table[(module, name)]
        if module.startswith("dnnlib.tflib"):
            raise UnsafePickleError(
                f"{self._source} is a TensorFlow-era StyleGAN pickle ({module}.{name}); it is not read here. "
                "Convert it with NVlabs stylegan2-ada-pytorch's legacy.py (in an environment you trust) first."
            )
        if module.split(".")[0] in ("training", "torch_utils") and name.isidentifier() and name[:1].isupper():
            return _stand_in_class(module, name)  # an NVlabs class pickled without persistence: inert too
        raise UnsafePickleError(
            f"{self._source} was refused: its pickle asks for {module}.{name}, which is not part of an NVlabs "
            "network pickle and could run code when loaded. Nothing from it was executed. Only trusted "
            "stylegan2-ada-pytorch network pickles (tensors, init kwargs, persistence records) are accepted."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source} was refused: it uses pickle persistent ids ({str(pid)[:40]!r}), "
            "which NVlabs network pickles do not."
        )


def read_nvlabs_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle an NVlabs ``.pkl`` **without running code**: ``{"G_ema": <inert>, "G": ..., ...}``.

    Networks come back as inert stand-ins; :func:`nvlabs_network` turns one into tensors and init kwargs.
    Raises ``FileNotFoundError``, :class:`UnsafePickleError` (the pickle asks for anything outside the
    allow-list: refused before it can run) or :class:`NVlabsPickleError` (empty, truncated, corrupt, or not
    an NVlabs pickle), each naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No NVlabs pickle at {path}.")
    size = path.stat().st_size
    if size == 0:
        raise NVlabsPickleError(f"{path} is empty (an interrupted download or copy?).")
    with open(path, "rb") as f:
        head = f.read(16)
        if head.startswith(b"PK\x03\x04"):
            raise NVlabsPickleError(
                f"{path} is a torch.save zip archive, not an NVlabs .pkl: use "
                "load_rosinality() or load_generator() (or load_nvlabs on a file it wrote)."
            )
        if not head.startswith(b"\x80"):
            raise NVlabsPickleError(
                f"{path} is not a pickle (it does not start with a pickle protocol header); "
                "corrupt or the wrong file?"
            )
        f.seek(0)
        try:
            obj = _RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except NVlabsPickleError as err:
            raise NVlabsPickleError(f"{path}: {err}") from None
        except (EOFError, _pickle.UnpicklingError, MemoryError) as err:
            raise NVlabsPickleError(
                f"{path} is truncated or corrupt ({type(err).__name__}: {err}; {size} bytes "
                "read); download or copy it again."
            ) from None
        except Exception as err:  # a malformed record inside an otherwise well-formed pickle
            raise NVlabsPickleError(
                f"{path} could not be read as an NVlabs pickle ({type(err).__name__}: {str(err)[:200]})."
            ) from None
    if not isinstance(obj, dict):
        raise NVlabsPickleError(
            f"{path} holds a {type(obj).__name__}, not an NVlabs snapshot dict ({{'G', 'D', 'G_ema', ...}})."
        )
    return obj


def _plain(value: Any) -> Any:
    """Init kwargs / attributes as plain Python values (numpy scalars → numbers, EasyDict → dict)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


@dataclass
class NVlabsNetwork:
    """One network of an NVlabs pickle, as data: ``state`` (dotted names → tensors, as ``state_dict()`` names
    them), ``attrs`` (each submodule's plain attributes, e.g. ``attrs['synthesis.b4.conv1']['conv_clamp']``),
    ``classes`` (submodule → NVlabs class name) and the ``init_kwargs`` it was built with."""

    class_name: str
    init_kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]
    attrs: dict[str, dict[str, Any]]
    classes: dict[str, str]
    persistence_version: Any = None
    module_src_sha256: str | None = None


def nvlabs_network(obj: Any, where: str = "network") -> NVlabsNetwork:
    """Walk an inert NVlabs module tree (from :func:`read_nvlabs_pickle`) into an :class:`NVlabsNetwork`."""
    if not isinstance(obj, _Inert) or not isinstance(obj.__dict__.get("_nv_state"), dict):
        raise NVlabsPickleError(f"{where} is not a pickled NVlabs module (got {type(obj).__name__}).")
    state: dict[str, torch.Tensor] = {}
    attrs: dict[str, dict[str, Any]] = {}
    classes: dict[str, str] = {}

    def walk(node: _Inert, prefix: str) -> None:
        st = node.__dict__.get("_nv_state")
        if not isinstance(st, dict):
            raise NVlabsPickleError(f"{where}: submodule {prefix or '<root>'!r} has no module state.")
        classes[prefix.rstrip(".")] = type(node).__name__
        for group in ("_parameters", "_buffers"):
            for name, t in (st.get(group) or {}).items():
                if t is None:
                    continue
                if type(t) not in (torch.Tensor, nn.Parameter):
                    raise NVlabsPickleError(f"{where}: {prefix}{name} is a {type(t).__name__}, not a tensor.")
                state[f"{prefix}{name}"] = torch.Tensor.clone(torch.Tensor.detach(t))
        attrs[prefix.rstrip(".")] = {
            k: _plain(v)
            for k, v in st.items()
            if not k.startswith("_") and not isinstance(v, (torch.Tensor, _Inert))
        }
        for name, child in (st.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(obj, "")
    root = obj.__dict__["_nv_state"]
    return NVlabsNetwork(
        class_name=type(obj).__name__,
        init_kwargs=_plain(root.get("_init_kwargs") or {}),
        state=state,
        attrs=attrs,
        classes=classes,
        persistence_version=obj.__dict__.get("_nv_version"),
        module_src_sha256=obj.__dict__.get("_nv_src_sha256"),
    )


def _nv_blocks(state: dict[str, torch.Tensor]) -> list[int]:
    return sorted({int(k.split(".")[1][1:]) for k in state if k.startswith("synthesis.b")})


def nvlabs_generator_config(
    net: NVlabsNetwork, where: str = "generator"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check that an NVlabs generator maps exactly onto :class:`Generator`; return ``(config, extras)``.

    ``config`` builds the matching :class:`Generator`; ``extras`` holds ``conv_clamp``, ``num_fp16_res``,
    ``c_dim`` and the NVlabs init kwargs. Every difference this package cannot reproduce exactly raises
    :class:`NVlabsPickleError` naming ``where`` and the difference.
    """

    def refuse(msg: str) -> NVlabsPickleError:
        return NVlabsPickleError(
            f"{where}: {msg}; this package cannot reproduce it exactly, so it is not loaded."
        )

    s, a = net.state, net.attrs
    if net.class_name != "Generator" or "mapping" not in a or "synthesis" not in a:
        raise NVlabsPickleError(
            f"{where} is a {net.class_name}, not an NVlabs Generator (with mapping + synthesis)."
        )
    root = a[""]
    try:
        z_dim, c_dim, w_dim = int(root["z_dim"]), int(root["c_dim"]), int(root["w_dim"])
        res, img_ch = int(root["img_resolution"]), int(root["img_channels"])
    except (KeyError, TypeError, ValueError) as err:
        raise NVlabsPickleError(f"{where}: generator attributes incomplete ({err}).") from None
    if img_ch != 3:
        raise refuse(f"img_channels={img_ch} (only RGB generators)")
    if z_dim != w_dim:
        raise refuse(f"z_dim={z_dim} differs from w_dim={w_dim} (here one style_dim serves both)")
    # -- mapping ------------------------------------------------------------------------------------------
    n_mlp = int(a["mapping"].get("num_layers", 0))
    if n_mlp < 1 or any(f"mapping.fc{i}.weight" not in s for i in range(n_mlp)):
        raise refuse(
            f"mapping network with {n_mlp} layers but fc weights {sorted(k for k in s if '.fc' in k)[:4]}"
        )
    lrs = set()
    for i in range(n_mlp):
        fc, w = a[f"mapping.fc{i}"], s[f"mapping.fc{i}.weight"]
        want_in = w_dim * (2 if c_dim and i == 0 else 1)
        if tuple(w.shape) != (w_dim, want_in):
            raise refuse(
                f"mapping.fc{i} weight {tuple(w.shape)} (expected {(w_dim, want_in)}: embed_features and "
                "layer_features must equal w_dim)"
            )
        if fc.get("activation") != "lrelu":
            raise refuse(f"mapping.fc{i} activation {fc.get('activation')!r} (only 'lrelu')")
        lr = float(fc.get("bias_gain", 1.0))
        if not _math.isclose(float(fc.get("weight_gain", 0.0)), lr / _math.sqrt(w.shape[1]), rel_tol=1e-6):
            raise refuse(f"mapping.fc{i} weight_gain {fc.get('weight_gain')} is not lr_multiplier/√in")
        if f"mapping.fc{i}.bias" not in s:
            raise refuse(f"mapping.fc{i} has no bias")
        lrs.add(round(lr, 12))
    if len(lrs) != 1:
        raise refuse(f"mapping layers use different lr_multipliers {sorted(lrs)}")
    lr_mlp = lrs.pop()
    if not 0 < lr_mlp <= 1:
        raise refuse(f"lr_multiplier={lr_mlp} outside (0, 1]")
    if c_dim:
        emb = a.get("mapping.embed", {})
        if "mapping.embed.weight" not in s or tuple(s["mapping.embed.weight"].shape) != (w_dim, c_dim):
            raise refuse("conditional generator without a [w_dim, c_dim] mapping.embed")
        if emb.get("activation", "linear") != "linear" or float(emb.get("bias_gain", 1.0)) != 1.0:
            raise refuse("mapping.embed is not a plain linear layer with lr_multiplier 1")
    # -- synthesis ----------------------------------------------------------------------------------------
    blocks = _nv_blocks(s)
    want = [2**r for r in range(2, int(_math.log2(res)) + 1)] if res >= 4 else []
    if blocks != want:
        raise refuse(f"synthesis blocks {blocks} for img_resolution {res}")
    filt = make_kernel(_NV_FILTER)
    channels: dict[int, int] = {}
    clamps, fp16 = set(), []
    for r in blocks:
        b = f"synthesis.b{r}"
        arch = a[b].get("architecture", "skip")
        if arch != "skip":
            raise refuse(f"{b} architecture={arch!r} (only the default 'skip' generator)")
        if a[b].get("use_fp16"):
            fp16.append(r)
        layers = ["conv1"] if r == 4 else ["conv0", "conv1"]
        for name in layers:
            p, la = f"{b}.{name}", a.get(f"{b}.{name}", {})
            w = s[f"{p}.weight"]
            if w.shape[-1] != 3 or w.shape[-2] != 3:
                raise refuse(f"{p} kernel {tuple(w.shape[-2:])} (only 3×3)")
            if la.get("activation", "lrelu") != "lrelu" or not _math.isclose(
                float(la.get("act_gain", SQRT2_)), SQRT2_
            ):
                raise refuse(f"{p} activation {la.get('activation')!r} with gain {la.get('act_gain')}")
            if int(la.get("up", 2 if name == "conv0" else 1)) != (2 if name == "conv0" else 1):
                raise refuse(f"{p} up={la.get('up')}")
            clamps.add(la.get("conv_clamp"))
            aff = a.get(f"{p}.affine", {})
            if float(aff.get("bias_gain", 1.0)) != 1.0 or aff.get("activation", "linear") != "linear":
                raise refuse(f"{p}.affine is not a plain linear layer with lr_multiplier 1")
        for key in [k for k in s if k.startswith(b + ".") and k.endswith("resample_filter")]:
            if s[key].shape != filt.shape or not torch.allclose(s[key].float(), filt, atol=1e-7):
                raise refuse(f"{key} is not the [1,3,3,1] filter")
        t = f"{b}.torgb"
        if f"{t}.weight" not in s:
            raise refuse(f"{b} has no torgb (architecture 'orig'?)")
        tw = s[f"{t}.weight"]
        if tuple(tw.shape[:1]) != (3,) or tw.shape[-1] != 1:
            raise refuse(f"{t} weight {tuple(tw.shape)} (only 1×1 ToRGB to 3 channels)")
        clamps.add(a.get(t, {}).get("conv_clamp"))
        channels[r] = s[f"{b}.conv1.weight"].shape[0]
    if len(clamps) != 1:
        raise refuse(f"layers use different conv_clamp values {sorted(map(str, clamps))}")
    conv_clamp = clamps.pop()
    bm = _base_and_max(channels)
    if bm is None:
        raise refuse(f"channel table {channels} is not min(channel_base // res, channel_max)")
    config = dict(
        size=res,
        style_dim=w_dim,
        n_mlp=n_mlp,
        lr_mlp=lr_mlp,
        channel_base=bm[0],
        channel_max=bm[1],
        blur_kernel=list(_NV_FILTER),
        fused=None,
    )
    if c_dim:
        config["c_dim"] = c_dim
    try:
        validate_generator_config({k: v for k, v in config.items()}, where)
    except ValueError as err:
        raise refuse(str(err)) from None
    extras = dict(
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
        c_dim=c_dim,
        fp16_resolutions=fp16,
        init_kwargs=net.init_kwargs,
        persistence_version=net.persistence_version,
        module_src_sha256=net.module_src_sha256,
    )
    return config, extras


def _nv_layer_pairs(size: int) -> list[tuple[str, str, int | None]]:
    """(our StyledConv prefix, NVlabs SynthesisLayer prefix, noise index) and ToRGB pairs (noise index None)."""
    pairs: list[tuple[str, str, int | None]] = [
        ("conv1", "synthesis.b4.conv1", 0),
        ("to_rgb1", "synthesis.b4.torgb", None),
    ]
    for k, r in enumerate(range(3, int(_math.log2(size)) + 1)):
        b = f"synthesis.b{2**r}"
        pairs += [
            (f"convs.{2 * k}", f"{b}.conv0", 2 * k + 1),
            (f"convs.{2 * k + 1}", f"{b}.conv1", 2 * k + 2),
            (f"to_rgbs.{k}", f"{b}.torgb", None),
        ]
    return pairs


def nvlabs_to_rosinality_state(
    nv_state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """NVlabs ``G.state_dict()`` layout → this package's / rosinality's generator layout, plus ``w_avg`` ``[1, D]``.

    Exact re-indexing (no arithmetic except the class embedding, see below): every tensor keeps its values.
    The result loads with ``strict=True`` into ``Generator(**config)`` (``config`` from
    :func:`nvlabs_generator_config`; unconditional ones also into rosinality's ``Generator``). A conditional
    generator's ``mapping.embed`` becomes ``class_embed`` (gain ``1/√c_dim``, as NVlabs computes it).
    Architecture checks are :func:`nvlabs_generator_config`'s job; missing keys raise ``KeyError`` here.
    """
    s = {k: v.detach().float().cpu() for k, v in strip_module_prefix(nv_state).items()}
    size = 2 ** int(_math.log2(max(_nv_blocks(s))))
    n_mlp = len({k for k in s if k.startswith("mapping.fc") and k.endswith(".weight")})
    cond = "mapping.embed.weight" in s
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        for p in ("weight", "bias"):
            out[f"style.{i + (0 if cond else 1)}.{p}"] = s[f"mapping.fc{i}.{p}"].clone()
    if cond:
        out["class_embed.weight"] = s["mapping.embed.weight"].clone()
        out["class_embed.bias"] = s["mapping.embed.bias"].clone()
        out["class_embed.gain"] = torch.tensor(1.0 / _math.sqrt(s["mapping.embed.weight"].shape[1]))
    out["input.input"] = s["synthesis.b4.const"].unsqueeze(0).clone()
    for ours, nv, j in _nv_layer_pairs(size):
        if j is None:  # ToRGB
            out[f"{ours}.conv.weight"] = s[f"{nv}.weight"].unsqueeze(0).clone()
            out[f"{ours}.bias"] = s[f"{nv}.bias"].view(1, -1, 1, 1).clone()
            if ours != "to_rgb1":
                out[f"{ours}.upsample.kernel"] = make_kernel(_NV_FILTER) * 4
        else:
            out[f"{ours}.conv.weight"] = s[f"{nv}.weight"].unsqueeze(0).clone()
            out[f"{ours}.activate.bias"] = s[f"{nv}.bias"].clone()
            if f"{nv}.noise_strength" in s:
                out[f"{ours}.noise.weight"] = s[f"{nv}.noise_strength"].reshape(1).clone()
                out[f"noises.noise_{j}"] = s[f"{nv}.noise_const"][None, None].clone()
            else:  # use_noise=False: a zero strength adds exactly nothing
                res = 2 ** ((j + 5) // 2)
                out[f"{ours}.noise.weight"] = torch.zeros(1)
                out[f"noises.noise_{j}"] = torch.zeros(1, 1, res, res)
            if ours.startswith("convs.") and int(ours.split(".")[1]) % 2 == 0:
                out[f"{ours}.conv.blur.kernel"] = make_kernel(_NV_FILTER) * 4
        out[f"{ours}.conv.modulation.weight"] = s[f"{nv}.affine.weight"].clone()
        out[f"{ours}.conv.modulation.bias"] = s[f"{nv}.affine.bias"].clone()
    w_avg = s.get("mapping.w_avg")
    return out, (w_avg.reshape(1, -1).clone() if w_avg is not None else None)


def rosinality_to_nvlabs_state(
    state: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """This package's / rosinality's generator state dict → NVlabs ``G.state_dict()`` layout (e.g. for CDC models).

    The inverse of :func:`nvlabs_to_rosinality_state`: loads with ``strict=True`` into NVlabs'
    ``Generator(z_dim=D, w_dim=D, c_dim=C, img_resolution=size, img_channels=3,
    mapping_kwargs={'num_layers': n_mlp, 'lr_multiplier': lr_mlp}, synthesis_kwargs={'channel_base': ...,
    'channel_max': ...})`` with the channel table of :func:`infer_generator_config` and ``conv_clamp=None``
    (rosinality's networks never clamp). ``latent_avg`` ``[D]``/``[1, D]`` becomes ``mapping.w_avg`` (zeros
    when not given — pass the checkpoint's ``latent_avg`` so NVlabs truncation works). A conditional state
    whose ``class_embed.gain`` is not ``1/√c_dim`` (classes added with ``add_class``) is folded exactly into
    the embedding weights, since NVlabs always uses ``1/√c_dim``.
    """
    s = {k: v.detach().float().cpu() for k, v in strip_module_prefix(state).items()}
    cond = "class_embed.weight" in s
    if not cond and "style.1.weight" not in s:
        raise ValueError("Not a StyleGAN2 generator state dict (no style.1.weight / class_embed.weight).")
    n_mlp = len({k.split(".")[1] for k in s if k.startswith("style.") and k.endswith(".weight")})
    size = 2 ** (len({k.split(".")[1] for k in s if k.startswith("to_rgbs.")}) + 2)
    out: dict[str, torch.Tensor] = {}
    filt = make_kernel(_NV_FILTER)
    for i in range(n_mlp):
        for p in ("weight", "bias"):
            out[f"mapping.fc{i}.{p}"] = s[f"style.{i + (0 if cond else 1)}.{p}"].clone()
    if cond:
        weight = s["class_embed.weight"]
        gain = float(s.get("class_embed.gain", torch.tensor(1.0 / _math.sqrt(weight.shape[1]))))
        out["mapping.embed.weight"] = weight * (gain * _math.sqrt(weight.shape[1]))
        out["mapping.embed.bias"] = s["class_embed.bias"].clone()
    dim = out["mapping.fc0.weight"].shape[0]
    out["mapping.w_avg"] = (
        latent_avg.detach().float().reshape(-1).cpu().clone() if latent_avg is not None else torch.zeros(dim)
    )
    out["synthesis.b4.const"] = s["input.input"][0].clone()
    for r in range(2, int(_math.log2(size)) + 1):
        out[f"synthesis.b{2**r}.resample_filter"] = filt.clone()
    for ours, nv, j in _nv_layer_pairs(size):
        out[f"{nv}.weight"] = s[f"{ours}.conv.weight"][0].clone()
        out[f"{nv}.affine.weight"] = s[f"{ours}.conv.modulation.weight"].clone()
        out[f"{nv}.affine.bias"] = s[f"{ours}.conv.modulation.bias"].clone()
        if j is None:
            out[f"{nv}.bias"] = s[f"{ours}.bias"].reshape(-1).clone()
        else:
            out[f"{nv}.bias"] = s[f"{ours}.activate.bias"].clone()
            out[f"{nv}.noise_strength"] = s[f"{ours}.noise.weight"].reshape(()).clone()
            out[f"{nv}.noise_const"] = s[f"noises.noise_{j}"][0, 0].clone()
            out[f"{nv}.resample_filter"] = filt.clone()
    return out


def _head(path: Path, n: int = 4) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


@dataclass
class NVlabsCheckpoint:
    """What :func:`load_nvlabs` returns: the converted generator (eval mode, ``latent_avg`` = NVlabs' ``w_avg``,
    ``conv_clamp`` applied), its config, NVlabs details (``info``) and the path of the saved copy, if any."""

    g_ema: Generator
    config: dict[str, Any]
    info: dict[str, Any]
    latent_avg: torch.Tensor | None
    saved: Path | None = None


def load_nvlabs(
    path: str | os.PathLike,
    save_to: str | os.PathLike | None = None,
    which: str = "G_ema",
    device: str | torch.device = "cpu",
    half: bool = False,
) -> NVlabsCheckpoint:
    """Load an NVlabs stylegan2-ada-pytorch generator ``.pkl`` **without executing code from it**.

    The pickle is read by :func:`read_nvlabs_pickle` (restricted unpickler, inert stand-ins), checked and
    converted (:func:`nvlabs_generator_config`, :func:`nvlabs_to_rosinality_state`) and loaded with
    ``strict=True``. The result, for the same z (and class: NVlabs' one-hot ``c`` ↔ index here) with
    ``randomize_noise=False``, gives the image of NVlabs' ``G(z, c, noise_mode='const', force_fp32=True)``
    within float tolerance; ``truncation=ψ`` uses NVlabs' ``w_avg``.

    Args:
        path: the ``.pkl`` — or a file written by this function's ``save_to`` (then it is read with
            ``weights_only=True``).
        save_to: also write the converted generator there in this package's export format
            (``{"g_ema", "config", "latent_avg", "info"}``, tensors only, loadable with ``weights_only=True``
            by :func:`load_generator`; ``conv_clamp`` is part of its config).
        which: ``"G_ema"`` (default; the generator to sample from) or ``"G"``.
        half: store fp16 in ``save_to`` (half the size, no longer bit-exact).
    """
    path = Path(path)
    if path.is_file() and _head(path) == b"PK\x03\x04":  # our own converted copy
        ck = load_checkpoint(path)
        nv = (ck.get("info") or {}).get("nvlabs") if isinstance(ck, dict) else None
        if not isinstance(nv, dict):
            raise NVlabsPickleError(
                f"{path} is a torch.save file without NVlabs info; for exported or rosinality "
                "files use load_generator() / load_rosinality()."
            )
        G = load_generator(path, device)
        G.set_conv_clamp(nv.get("conv_clamp"))  # (copies saved before conv_clamp was part of the config)
        return NVlabsCheckpoint(g_ema=G, config=G.config, info=dict(ck["info"]), latent_avg=G.latent_avg)
    snapshot = read_nvlabs_pickle(path)
    if which not in snapshot:
        raise NVlabsPickleError(f"{path} has no {which!r} network (entries: {sorted(map(str, snapshot))}).")
    where = f"{path.name}[{which!r}]"
    net = nvlabs_network(snapshot[which], where)
    bad = next(
        (k for k, v in net.state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None
    )
    if bad is not None:
        raise NVlabsPickleError(
            f"{where}: tensor {bad!r} holds NaN or infinite values (a diverged snapshot?)."
        )
    config, extras = nvlabs_generator_config(net, where)
    state, w_avg = nvlabs_to_rosinality_state(net.state)
    G = Generator(**config, conv_clamp=extras["conv_clamp"])
    load_state_strict(G, state, where)
    G = G.to(device).eval()
    G.latent_avg = w_avg.to(device) if w_avg is not None else None
    info = {
        "format": NVLABS_FORMAT,
        "source": path.name,
        "network": which,
        "nvlabs": {k: v for k, v in extras.items()},
    }
    if extras["fp16_resolutions"]:
        log.info(
            "%s ran resolutions %s in fp16 on GPU; converted to float32 (= NVlabs force_fp32=True).",
            where,
            extras["fp16_resolutions"],
        )
    saved = None
    if save_to is not None:
        saved = save_atomic(
            {
                "g_ema": _shipping_state(G, half),
                "config": G.config,
                "latent_avg": None if w_avg is None else w_avg.float().cpu(),
                "info": info,
            },
            save_to,
        )
    return NVlabsCheckpoint(g_ema=G, config=G.config, info=info, latent_avg=G.latent_avg, saved=saved)


# -- discriminators (unconditional, architecture 'resnet': what CDC fine-tunes beside the generator) ----------
#
# NVlabs D ↔ this package's / rosinality's Discriminator: b{size}.fromrgb → convs.0; b{r}.conv0 / conv1 / skip →
# convs.{i}.conv1 / conv2 / skip (the same blur-then-stride-2 resampling and (main + skip)/√2 sum: NVlabs
# multiplies both branches by √0.5); b4.mbstd (group_size → stddev_group, 1 channel) → minibatch_stddev;
# b4.conv / fc / out → final_conv / final_linear.0 / final_linear.1. conv_clamp clamps each activated conv
# (NVlabs clamps conv1 at clamp·√0.5 after its √0.5 gain, which is the same). Conditional NVlabs Ds are
# refused: their class mapping is an 8-layer MLP where this package's D has an embedding + 2 layers.


def nvlabs_discriminator_config(
    net: NVlabsNetwork, where: str = "discriminator"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check that an NVlabs ``Discriminator`` maps exactly onto :class:`Discriminator`; ``(config, extras)``."""

    def refuse(msg: str) -> NVlabsPickleError:
        return NVlabsPickleError(
            f"{where}: {msg}; this package cannot reproduce it exactly, so it is not loaded."
        )

    s, a = net.state, net.attrs
    if net.class_name != "Discriminator" or "b4" not in a:
        raise NVlabsPickleError(f"{where} is a {net.class_name}, not an NVlabs Discriminator.")
    root = a[""]
    res, c_dim, img_ch = (
        int(root.get("img_resolution", 0)),
        int(root.get("c_dim", 0)),
        int(root.get("img_channels", 0)),
    )
    if c_dim:
        raise refuse(
            f"a conditional discriminator (c_dim={c_dim}; NVlabs maps classes with an MLP of "
            f"{a.get('mapping', {}).get('num_layers', '?')} layers, this package with an embedding and 2)"
        )
    if img_ch != 3:
        raise refuse(f"img_channels={img_ch}")
    blocks = [2**r for r in range(int(_math.log2(max(res, 8))), 2, -1)]
    channels: dict[int, int] = {}
    clamps = set()
    filt = make_kernel(_NV_FILTER)
    for r in blocks:
        b = f"b{r}"
        if a.get(b, {}).get("architecture") != "resnet" or f"{b}.skip.weight" not in s:
            raise refuse(f"{b} architecture={a.get(b, {}).get('architecture')!r} (only the default 'resnet')")
        if (f"{b}.fromrgb.weight" in s) != (r == res):
            raise refuse(f"{b} has a fromrgb layer where a 'resnet' D has none (or lacks the first one)")
        for name, k, act in (
            ("fromrgb", 1, "lrelu"),
            ("conv0", 3, "lrelu"),
            ("conv1", 3, "lrelu"),
            ("skip", 1, "linear"),
        ):
            if name == "fromrgb" and r != res:
                continue
            la = a.get(f"{b}.{name}", {})
            if s[f"{b}.{name}.weight"].shape[-1] != k or la.get("activation") != act:
                raise refuse(
                    f"{b}.{name}: kernel {s[f'{b}.{name}.weight'].shape[-1]}, "
                    f"activation {la.get('activation')!r}"
                )
            if name != "skip":
                clamps.add(la.get("conv_clamp"))
        for key in [k for k in s if k.startswith(b + ".") and k.endswith("resample_filter")]:
            if s[key].shape != filt.shape or not torch.allclose(s[key].float(), filt, atol=1e-7):
                raise refuse(f"{key} is not the [1,3,3,1] filter")
        channels[r] = s[f"{b}.conv0.weight"].shape[0]
    epi, mb = a.get("b4", {}), a.get("b4.mbstd")
    if epi.get("architecture") != "resnet" or epi.get("cmap_dim", 0):
        raise refuse(f"epilogue architecture={epi.get('architecture')!r}, cmap_dim={epi.get('cmap_dim')}")
    if mb is None or int(mb.get("num_channels", 0)) != 1:
        raise refuse("minibatch-stddev with other than 1 channel")
    group = mb.get("group_size")
    if not isinstance(group, int) or group < 1:
        raise refuse(f"mbstd group_size={group!r} (only a fixed integer)")
    channels[4] = s["b4.conv.weight"].shape[0]
    clamps.add(a.get("b4.conv", {}).get("conv_clamp"))
    if len(clamps) != 1:
        raise refuse(f"layers use different conv_clamp values {sorted(map(str, clamps))}")
    if s["b4.out.weight"].shape[0] != 1:
        raise refuse("the output layer has more than one unit")
    bm = _base_and_max(channels)
    if bm is None:
        raise refuse(f"channel table {channels} is not min(channel_base // res, channel_max)")
    config = dict(size=res, channel_base=bm[0], channel_max=bm[1], stddev_group=group)
    try:
        validate_discriminator_config(dict(config), where)
    except ValueError as err:
        raise refuse(str(err)) from None
    conv_clamp = clamps.pop()
    return config, dict(
        conv_clamp=None if conv_clamp is None else float(conv_clamp), init_kwargs=net.init_kwargs
    )


def _nv_d_pairs(size: int) -> list[tuple[str, str]]:
    """(our key, NVlabs key) for every weight and bias of an unconditional discriminator."""
    pairs = [("convs.0.0.weight", f"b{size}.fromrgb.weight"), ("convs.0.1.bias", f"b{size}.fromrgb.bias")]
    for i, r in enumerate(range(int(_math.log2(size)), 2, -1), start=1):
        b = f"b{2**r}"
        pairs += [
            (f"convs.{i}.conv1.0.weight", f"{b}.conv0.weight"),
            (f"convs.{i}.conv1.1.bias", f"{b}.conv0.bias"),
            (f"convs.{i}.conv2.1.weight", f"{b}.conv1.weight"),
            (f"convs.{i}.conv2.2.bias", f"{b}.conv1.bias"),
            (f"convs.{i}.skip.1.weight", f"{b}.skip.weight"),
        ]
    pairs += [
        ("final_conv.0.weight", "b4.conv.weight"),
        ("final_conv.1.bias", "b4.conv.bias"),
        ("final_linear.0.weight", "b4.fc.weight"),
        ("final_linear.0.bias", "b4.fc.bias"),
        ("final_linear.1.weight", "b4.out.weight"),
        ("final_linear.1.bias", "b4.out.bias"),
    ]
    return pairs


def nvlabs_to_rosinality_d_state(nv_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs ``D.state_dict()`` (unconditional, 'resnet') → this package's / rosinality's discriminator layout
    (exact re-indexing; loads with ``strict=True`` into ``Discriminator(**config)``)."""
    s = {k: v.detach().float().cpu() for k, v in strip_module_prefix(nv_state).items()}
    size = max(int(k.split(".")[0][1:]) for k in s if k.startswith("b"))
    out = {ours: s[nv].clone() for ours, nv in _nv_d_pairs(size)}
    for i in range(1, int(_math.log2(size)) - 1):
        out[f"convs.{i}.conv2.0.kernel"] = make_kernel(_NV_FILTER)
        out[f"convs.{i}.skip.0.kernel"] = make_kernel(_NV_FILTER)
    return out


def rosinality_to_nvlabs_d_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This package's / rosinality's discriminator state dict → NVlabs ``D.state_dict()`` layout (unconditional,
    ``architecture='resnet'``, ``conv_clamp=None``); MixDL's ``sim_linear`` head and a conditional D's class
    layers are not part of NVlabs' D and raise ``ValueError``."""
    s = {k: v.detach().float().cpu() for k, v in strip_module_prefix(state).items()}
    extra = sorted(k for k in s if k.startswith(("sim_linear.", "class_embed.", "cmap.")))
    if extra:
        raise ValueError(
            f"discriminator keys {extra[:3]} have no NVlabs counterpart (a MixDL head or a "
            "conditional D); remove them or convert the unconditional part only."
        )
    size = max(infer_discriminator_channels(s))
    out = {nv: s[ours].clone() for ours, nv in _nv_d_pairs(size)}
    filt = make_kernel(_NV_FILTER)
    for r in range(int(_math.log2(size)), 2, -1):
        b = f"b{2**r}"
        for name in ["", "conv0.", "conv1.", "skip."] + (["fromrgb."] if 2**r == size else []):
            out[f"{b}.{name}resample_filter"] = filt.clone()
    out["b4.conv.resample_filter"] = filt.clone()
    return out


def load_nvlabs_discriminator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Discriminator:
    """The ``D`` of an NVlabs snapshot ``.pkl`` (read without running code) as this package's
    :class:`Discriminator` (unconditional, 'resnet', NVlabs' ``conv_clamp``). ``D(x)`` equals NVlabs'
    ``D(x, c=empty, force_fp32=True)`` within float tolerance. To hand it to rosinality-based code (CDC), write
    ``save_rosinality(out, g_ema=load_nvlabs(path).g_ema, d=D, latent_avg=...)`` — rosinality's networks have no
    clamp, which matters only where activations exceed it (±256 in NVlabs' configs)."""
    path = Path(path)
    snapshot = read_nvlabs_pickle(path)
    if "D" not in snapshot or snapshot["D"] is None:
        raise NVlabsPickleError(f"{path} has no 'D' network (entries: {sorted(map(str, snapshot))}).")
    where = f"{path.name}['D']"
    net = nvlabs_network(snapshot["D"], where)
    config, extras = nvlabs_discriminator_config(net, where)
    D = Discriminator(**config, conv_clamp=extras["conv_clamp"])
    load_state_strict(D, nvlabs_to_rosinality_d_state(net.state), where)
    return D.to(device).eval()
