"""Pure render functions of the latent explorer: state in → images and numbers out.

Nothing here knows about widgets. Every function takes a :class:`LatentSpace` (a generator plus caches) and
plain values (seeds, ψ, a layer range, slider positions) and returns a :class:`Render` — ``uint8`` images
``[N, H, W, 3]``, the per-layer latents that produced them ``[N, L, D]`` and a one-line caption — so the
widgets, the notebook and the tests call exactly the same code.

**Layers.** A ``size``-px StyleGAN2 consumes ``L = 2·log2(size) − 2`` latents (8 at 32 px): ``w[0]`` the 4×4
conv, ``w[1]`` the 4×4 ToRGB and the first 8×8 conv, and so on towards the finest layers. A *layer range*
``(lo, hi)`` means the half-open set ``lo ≤ ℓ < hi``; ``(k, k)`` is empty. Coarse layers (low ℓ) set layout
and shape, fine layers colour and texture.

**Directions** (one slider each, ``α`` in units of the standard deviation of mapped latents along it):

* GANSpace (Härkönen et al., 2020): principal components of ``w = mapping(z)`` over many ``z`` —
  the directions in which *the data of W* varies most.
* SeFa (Shen & Zhou, 2021): closed form, no sampling — the top eigenvectors of ``AᵀA`` where ``A`` stacks
  the affine (modulation) weights that turn ``w`` into styles in the chosen layers: the directions that
  *change the styles* the most per unit of ``w``.

Both are orthonormal and sorted by their eigenvalue. :func:`label_directions` asks the emoji network what
changes along each (style and subcategory probabilities) and keeps a label only when that probability moves
monotonically for most seeds.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..projector import project

MAX_SEEDS = 32  # at most this many images per grid
MAX_UPLOAD_BYTES = 4 * 2**20  # a user image larger than this is refused (uploads and paths alike)


class ExploreInputError(ValueError):
    """A user-facing problem with an explorer input; its message is shown in the widget as it is."""


# ---------------------------------------------------------------------------------------------------------
# Results and images
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Render:
    """What a render function returns. ``images`` ``[N, H, W, 3]`` uint8; ``latents`` ``[N, L, D]`` (W+);
    ``nrow`` how many images per row in a grid; ``numbers`` anything numeric worth printing."""

    images: np.ndarray
    latents: torch.Tensor
    caption: str = ""
    nrow: int = 8
    numbers: dict[str, Any] = field(default_factory=dict)

    def grid(self, pad: int = 1) -> np.ndarray:
        return image_grid(self.images, self.nrow, pad)

    def png(self, upscale: int = 3) -> bytes:
        return png_bytes(self.grid(), upscale=upscale)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in ``[-1, 1]`` → ``[N, H, W, 3]`` uint8 (clamped, rounded)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: np.ndarray, nrow: int = 8, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 → one ``[rows·(H+pad)+pad, cols·(W+pad)+pad, 3]`` image (white gutters)."""
    n, h, w, c = images.shape
    cols = max(1, min(nrow, n))
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = (
            images[i]
        )
    return out


def png_bytes(image: np.ndarray, upscale: int = 1) -> bytes:
    """One ``[H, W, 3]`` uint8 image → PNG bytes, enlarged ``upscale``× with nearest neighbours (crisp pixels)."""
    from PIL import Image

    if upscale > 1:
        image = image.repeat(upscale, 0).repeat(upscale, 1)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Input parsing (every message names the input and what would be accepted)
# ---------------------------------------------------------------------------------------------------------

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_seeds(seeds: Any, max_n: int = MAX_SEEDS) -> list[int]:
    """Seeds as ints from an int, a list/tuple of ints, or text like ``"0-7"``, ``"3, 5, 11"``.

    Raises :class:`ExploreInputError` for anything else (floats, negative numbers, words, too many).
    """
    if isinstance(seeds, bool):
        raise ExploreInputError(f"seeds: got a bool ({seeds}); give whole numbers like 0-7 or 3, 5, 11.")
    if isinstance(seeds, (int, np.integer)):
        out = [int(seeds)]
    elif isinstance(seeds, str):
        text = seeds.strip()
        if not text:
            raise ExploreInputError("seeds: empty; give whole numbers like 0-7 or 3, 5, 11.")
        out = []
        for part in text.split(","):
            m = _RANGE.match(part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise ExploreInputError(f"seeds: range {part.strip()!r} runs backwards; write {b}-{a}.")
                if b - a + 1 > max_n:
                    raise ExploreInputError(
                        f"seeds: range {part.strip()!r} has {b - a + 1} seeds; at most {max_n}."
                    )
                out += list(range(a, b + 1))
            elif part.strip().isdigit():
                out.append(int(part.strip()))
            else:
                raise ExploreInputError(
                    f"seeds: {part.strip()!r} is not a whole number ≥ 0 or a range like 0-7."
                )
    elif isinstance(seeds, (list, tuple)) and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds
    ):
        out = [int(s) for s in seeds]
    else:
        raise ExploreInputError(
            f"seeds: unsupported type {type(seeds).__name__}; give an int, a list of ints "
            "or text like 0-7 or 3, 5, 11."
        )
    if not out:
        raise ExploreInputError("seeds: none given.")
    if any(s < 0 or s >= 2**63 for s in out):
        raise ExploreInputError(
            f"seeds: {[s for s in out if s < 0 or s >= 2**63][:3]} out of range; seeds are ≥ 0."
        )
    if len(out) > max_n:
        raise ExploreInputError(f"seeds: {len(out)} given; at most {max_n} per grid.")
    return out


def check_layers(layers: Sequence[int] | None, n_latent: int) -> tuple[int, int]:
    """A half-open layer range ``(lo, hi)`` with ``0 ≤ lo ≤ hi ≤ n_latent``; ``None`` = all layers."""
    if layers is None:
        return 0, n_latent
    try:
        lo, hi = (int(v) for v in layers)
    except (TypeError, ValueError):
        raise ExploreInputError(f"layers: {layers!r} is not a pair (first, end) of layer numbers.") from None
    if not 0 <= lo <= hi <= n_latent:
        raise ExploreInputError(
            f"layers: ({lo}, {hi}) is outside this model; it has layers 0…{n_latent - 1}, "
            f"so a range (first, end) needs 0 ≤ first ≤ end ≤ {n_latent}."
        )
    return lo, hi


def check_number(name: str, value: Any, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ExploreInputError(f"{name}: {value!r} is not a number.") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ExploreInputError(f"{name}: {value!r} must lie in [{lo}, {hi}].")
    return v


# ---------------------------------------------------------------------------------------------------------
# The latent space of one generator, with caches
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Directions:
    """``vectors`` ``[K, D]`` orthonormal rows sorted by ``strength`` ``[K]`` (descending); ``scales`` ``[K]``:
    the standard deviation of mapped latents along each direction (one slider unit)."""

    method: str
    vectors: torch.Tensor
    strength: torch.Tensor
    scales: torch.Tensor
    layers: tuple[int, int]


def _modulation_layers(G: torch.nn.Module) -> list[tuple[int, torch.nn.Module]]:
    """``(latent index, EqualLinear)`` for every affine layer that turns a ``w`` into a style, in G's order."""
    out = [(0, G.conv1.conv.modulation), (1, G.to_rgb1.conv.modulation)]
    i = 1
    for k, to_rgb in enumerate(G.to_rgbs):
        out += [
            (i, G.convs[2 * k].conv.modulation),
            (i + 1, G.convs[2 * k + 1].conv.modulation),
            (i + 2, to_rgb.conv.modulation),
        ]
        i += 2
    return out


class LatentSpace:
    """A generator with what the explorer caches: ``w_avg``, mapped latents, directions, fixed noise.

    Images are made with G's fixed noise buffers, so a latent always gives the same picture.
    ``n_samples`` mapped latents (drawn from ``seed``) serve GANSpace and the slider units.
    """

    def __init__(
        self,
        G: torch.nn.Module,
        device: str | torch.device = "cpu",
        n_samples: int = 10_000,
        seed: int = 0,
        name: str = "generator",
    ):
        self.G = G.to(device).eval()
        self.device = torch.device(device)
        self.name = name
        self.size, self.style_dim, self.n_latent = G.size, G.style_dim, G.n_latent
        self.n_samples, self.seed = n_samples, seed
        self._w_samples: torch.Tensor | None = None
        self._directions: dict[tuple, Directions] = {}
        self._noise = [n.to(self.device) for n in G.noises.as_list()]
        with torch.inference_mode():
            if getattr(G, "latent_avg", None) is not None:
                self.w_avg = G.latent_avg.reshape(1, -1).to(self.device).float()
            else:
                self.w_avg = self.w_samples.mean(0, keepdim=True)

    # -- latents ---------------------------------------------------------------------------------------
    @property
    def w_samples(self) -> torch.Tensor:
        """``[n_samples, D]`` mapped latents (cached)."""
        if self._w_samples is None:
            with torch.inference_mode():
                z = torch.randn(
                    self.n_samples, self.style_dim, generator=torch.Generator().manual_seed(self.seed)
                )
                self._w_samples = torch.cat([self.G.mapping(c.to(self.device)) for c in z.split(2048)])
        return self._w_samples

    def z(self, seeds: Any) -> torch.Tensor:
        """``[N, D]``: one z per seed, each from its own seeded CPU generator (seed s is the same on any grid)."""
        seeds = parse_seeds(seeds)
        return torch.stack(
            [torch.randn(self.style_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
        ).to(self.device)

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """``w_avg + ψ·(w − w_avg)`` for ``[N, D]`` or ``[N, L, D]``."""
        psi = check_number("truncation ψ", psi, 0.0, 2.0)
        avg = self.w_avg if w.ndim == 2 else self.w_avg.unsqueeze(1)
        return avg + psi * (w - avg)

    @torch.inference_mode()
    def w(self, seeds: Any, psi: float = 1.0) -> torch.Tensor:
        """``[N, D]`` mapped (and truncated) latents of ``seeds``."""
        return self.truncate(self.G.mapping(self.z(seeds)), psi)

    def w_plus(self, w: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` → ``[N, L, D]`` (a W latent is the same ``w`` at every layer); ``[N, L, D]`` unchanged."""
        if w.ndim == 2:
            return w.unsqueeze(1).repeat(1, self.n_latent, 1)
        if w.ndim != 3 or w.shape[1:] != (self.n_latent, self.style_dim):
            raise ExploreInputError(
                f"latent of shape {list(w.shape)} does not fit this model "
                f"([N, {self.style_dim}] or [N, {self.n_latent}, {self.style_dim}])."
            )
        return w

    @torch.inference_mode()
    def synthesize(self, w: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """``[N, D]`` or ``[N, L, D]`` → images ``[N, 3, H, W]`` in about ``[-1, 1]`` (fixed noise)."""
        wp = self.w_plus(w.to(self.device))
        outs = [self.G(c, input_is_latent=True, noise=self._noise)[0] for c in wp.split(batch)]
        return torch.cat(outs)

    def render(self, w: torch.Tensor, caption: str = "", nrow: int = 8, **numbers: Any) -> Render:
        wp = self.w_plus(w.to(self.device))
        return Render(to_uint8(self.synthesize(wp)), wp.cpu(), caption, nrow, dict(numbers))

    # -- directions ------------------------------------------------------------------------------------
    def directions(self, method: str = "pca", k: int = 8, layers: Sequence[int] | None = None) -> Directions:
        """Top-``k`` GANSpace (``"pca"``) or SeFa (``"sefa"``) directions (cached). ``layers`` selects the
        modulation layers SeFa factorises (all by default); GANSpace ignores it."""
        method = str(method).lower()
        if method not in ("pca", "sefa"):
            raise ExploreInputError(f"direction method {method!r}: choose 'pca' (GANSpace) or 'sefa'.")
        k = int(check_number("number of directions", k, 1, self.style_dim))
        lo, hi = check_layers(layers, self.n_latent)
        key = (method, k, (lo, hi) if method == "sefa" else None)
        if key not in self._directions:
            with torch.inference_mode():
                if method == "pca":
                    vecs, strength = ganspace(self.w_samples, k)
                else:
                    if lo == hi:
                        raise ExploreInputError("SeFa needs at least one layer; the range is empty.")
                    vecs, strength = sefa(self.G, k, (lo, hi))
                centred = self.w_samples - self.w_samples.mean(0, keepdim=True)
                scales = (centred @ vecs.T).std(0)  # [K]
            self._directions[key] = Directions(method, vecs, strength, scales, (lo, hi))
        return self._directions[key]


def ganspace(w_samples: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of mapped latents ``[N, D]`` → ``(components [k, D] orthonormal, variances [k] descending)``."""
    x = (w_samples - w_samples.mean(0, keepdim=True)).double()
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # x = U diag(s) Vh, s descending
    var = s[:k] ** 2 / (len(x) - 1)
    return vh[:k].float(), var.float()


def sefa(
    G: torch.nn.Module, k: int, layers: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """SeFa: eigenvectors of ``AᵀA`` (``A`` = stacked run-time modulation weights ``[Σ I_ℓ, D]`` of the layers
    in ``layers``) → ``(directions [k, D] orthonormal, eigenvalues [k] descending)``."""
    lo, hi = layers if layers is not None else (0, G.n_latent)
    mods = [m for i, m in _modulation_layers(G) if lo <= i < hi]
    A = torch.cat([(m.weight * m.scale).detach().double() for m in mods])  # [Σ I, D]
    A = A / A.norm(dim=0, keepdim=True).clamp_min(1e-12)  # SeFa normalises each column (w coordinate)
    evals, evecs = torch.linalg.eigh(A.T @ A)  # ascending
    order = torch.argsort(evals, descending=True)[:k]
    return evecs[:, order].T.float().cpu(), evals[order].float().cpu()


# ---------------------------------------------------------------------------------------------------------
# Render functions (one per explorer)
# ---------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def render_seeds(space: LatentSpace, seeds: Any = "0-7", psi: float = 1.0) -> Render:
    """A grid of ``seeds`` at truncation ``ψ``."""
    seeds = parse_seeds(seeds)
    w = space.w(seeds, psi)
    return space.render(
        w,
        f"seeds {seeds[0]}…{seeds[-1]} at ψ = {float(psi):.2f}"
        if len(seeds) > 1
        else f"seed {seeds[0]} at ψ = {float(psi):.2f}",
        nrow=8,
        seeds=seeds,
        psi=float(psi),
    )


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of rows ``a``, ``b`` ``[D]`` at ``t`` ``[T]`` → ``[T, D]``; exact at t = 0, 1."""
    an, bn = a / a.norm(), b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1).to(a.dtype)
    out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    out[t.view(-1) == 0] = a
    out[t.view(-1) == 1] = b
    return out


@torch.inference_mode()
def render_interpolation(
    space: LatentSpace, seed_a: Any = 0, seed_b: Any = 1, steps: int = 8, kind: str = "w", psi: float = 1.0
) -> Render:
    """``steps`` images from seed A to seed B: linear in W, or spherical in Z then mapped. The first and last
    images are exactly those of the two seeds."""
    kind = str(kind).lower()
    if kind not in ("w", "z"):
        raise ExploreInputError(f"interpolation space {kind!r}: choose 'w' or 'z'.")
    steps = int(check_number("steps", steps, 2, MAX_SEEDS))
    a, b = parse_seeds(seed_a)[0], parse_seeds(seed_b)[0]
    t = torch.linspace(0, 1, steps)
    with torch.inference_mode():
        ends = space.w([a, b], psi)  # the two samples exactly as a grid of [a, b] makes them
        if kind == "w":
            tt = t.view(-1, 1).to(space.device)
            w = (1 - tt) * ends[:1] + tt * ends[1:]
        else:
            za, zb = space.z([a])[0], space.z([b])[0]
            w = space.truncate(space.G.mapping(slerp(za, zb, t.to(za.device))), psi)
        w[0], w[-1] = ends[0], ends[1]  # exact endpoints (batched matmuls differ in the last bit)
    return space.render(w, f"seed {a} → seed {b} in {kind.upper()} ({steps} steps)", nrow=steps, t=t.tolist())


def mix_latents(wa: torch.Tensor, wb: torch.Tensor, layers: tuple[int, int]) -> torch.Tensor:
    """W+ ``[N, L, D]``: ``wa``'s latent everywhere except layers ``lo ≤ ℓ < hi``, which take ``wb``'s."""
    lo, hi = layers
    out = wa.clone()
    out[:, lo:hi] = wb[:, lo:hi]
    return out


@torch.inference_mode()
def render_mixing(
    space: LatentSpace,
    seed_a: Any = 0,
    seeds_b: Any = "1-4",
    layers: Sequence[int] = (0, 4),
    psi: float = 1.0,
) -> Render:
    """Style mixing: row 1 the B seeds, row 2 each mixed with A — A's latent except layers ``[lo, hi)``
    taken from B. The first image of row 2 is A itself. An empty range gives A everywhere."""
    lo, hi = check_layers(layers, space.n_latent)
    a, bs = parse_seeds(seed_a)[0], parse_seeds(seeds_b, max_n=15)
    with torch.inference_mode():
        wa = space.w_plus(space.w([a], psi))  # [1, L, D]
        wb = space.w_plus(space.w(bs, psi))  # [B, L, D]
        mixed = mix_latents(wa.expand(len(bs), -1, -1), wb, (lo, hi))
        top = torch.cat([wa, wb])  # A, then the B's
        bottom = torch.cat([wa, mixed])
    span = f"layers {lo}…{hi - 1}" if hi > lo else "no layers"
    return space.render(
        torch.cat([top, bottom]),
        f"row 1: seed {a}, then B = {bs}; row 2: A with {span} from B",
        nrow=len(bs) + 1,
        layers=[lo, hi],
    )


@torch.inference_mode()
def edit_latents(
    space: LatentSpace,
    base: torch.Tensor,
    directions: Directions,
    alphas: Sequence[float],
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """``base`` (W ``[N, D]`` or W+ ``[N, L, D]``) moved by ``Σ_i α_i·scale_i·d_i`` in layers ``[lo, hi)`` → W+."""
    lo, hi = check_layers(layers, space.n_latent)
    alphas = [check_number(f"slider {i}", a, -10, 10) for i, a in enumerate(alphas)]
    if len(alphas) > len(directions.vectors):
        raise ExploreInputError(f"{len(alphas)} slider values for {len(directions.vectors)} directions.")
    wp = space.w_plus(base.to(space.device)).clone()
    if alphas:
        a = torch.tensor(alphas, dtype=wp.dtype, device=wp.device)
        k = len(alphas)
        delta = (a * directions.scales[:k].to(wp.device)) @ directions.vectors[:k].to(wp.device)  # [D]
        wp[:, lo:hi] += delta
    return wp


@torch.inference_mode()
def render_edit(
    space: LatentSpace,
    seeds: Any = "0-7",
    method: str = "pca",
    alphas: Sequence[float] = (),
    layers: Sequence[int] | None = None,
    psi: float = 1.0,
    k: int = 8,
    base: torch.Tensor | None = None,
) -> Render:
    """The seeds' latents (or ``base``, e.g. a projected image's) moved along the directions by the sliders."""
    d = space.directions(method, k)
    if base is None:
        base = space.w(parse_seeds(seeds), psi)
    wp = edit_latents(space, base, d, alphas, layers)
    lo, hi = check_layers(layers, space.n_latent)
    moved = ", ".join(f"{i}:{a:+.1f}" for i, a in enumerate(alphas) if a) or "none"
    return space.render(
        wp,
        f"{method.upper()} directions moved ({moved}) in layers {lo}…{hi - 1}"
        if hi > lo
        else f"{method.upper()}: empty layer range, nothing moves",
        nrow=8,
    )


@torch.inference_mode()
def render_walk(
    space: LatentSpace,
    seeds: Any,
    directions: Directions,
    index: int,
    alphas: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3),
    layers: Sequence[int] | None = None,
    psi: float = 1.0,
) -> Render:
    """Rows = seeds, columns = positions ``α`` along direction ``index`` (a static picture of one slider)."""
    seeds = parse_seeds(seeds)
    if not 0 <= index < len(directions.vectors):
        raise ExploreInputError(
            f"direction {index}: there are {len(directions.vectors)} (0…{len(directions.vectors) - 1})."
        )
    base = space.w(seeds, psi)
    rows = []
    for a in alphas:
        al = [0.0] * (index + 1)
        al[index] = float(a)
        rows.append(edit_latents(space, base, directions, al, layers))
    wp = torch.stack(rows, 1).flatten(0, 1)  # [S·A, L, D], seed-major
    return space.render(
        wp, f"{directions.method.upper()} direction {index}, α = {list(alphas)}", nrow=len(alphas)
    )


# ---------------------------------------------------------------------------------------------------------
# What changes along a direction: the emoji network's style / subcategory probabilities
# ---------------------------------------------------------------------------------------------------------


@dataclass
class DirectionLabel:
    """``attribute`` (e.g. ``"subcategory: face-smiling"``) whose probability changes along direction
    ``index``; ``sign`` +1 if it rises with α (chosen on the selection seeds), −1 if it falls; ``delta`` its mean
    change from the lowest to the highest α on the test seeds; ``rho`` per-seed Spearman correlations times
    ``sign``; ``kept``: monotonic (ρ ≥ ``min_rho``) on at least ``min_seeds`` test seeds."""

    index: int
    attribute: str
    sign: float
    delta: float
    rho: list[float]
    kept: bool

    @property
    def text(self) -> str:
        if not self.kept:
            return f"d{self.index}"
        return f"d{self.index}: {'+' if self.sign > 0 else '−'}{self.attribute.split(': ', 1)[-1]}"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def attribute_probabilities(extractor: Any, images: torch.Tensor) -> tuple[np.ndarray, list[str]]:
    """``[N, 3, H, W]`` → probabilities ``[N, S + C]`` of the style head then the subcategory head, and names."""
    net, meta = extractor.net, getattr(extractor, "meta", {}) or {}
    with torch.inference_mode():
        x = extractor._prepare(images.to(extractor.device))
        out = net(x)
        parts, names = [], []
        for head, key in (("style", "styles"), ("subcategory", "subcategories")):
            if head in out:
                parts.append(out[head].softmax(1).cpu())
                labels = meta.get(key) or [str(i) for i in range(out[head].shape[1])]
                names += [f"{head}: {n}" for n in labels]
    if not parts:
        raise ValueError("the extractor has no style or subcategory head; use the shipped emoji extractor.")
    return torch.cat(parts, 1).numpy(), names


def label_directions(
    space: LatentSpace,
    directions: Directions,
    extractor: Any,
    seeds: Sequence[int] = range(10),
    select_seeds: Sequence[int] = range(1000, 1010),
    alphas: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3),
    layers: Sequence[int] | None = None,
    min_rho: float = 0.8,
    min_seeds: int = 8,
    psi: float = 1.0,
    n_label: int | None = None,
    resolution: float = 0.01,
) -> list[DirectionLabel]:
    """Label the first ``n_label`` directions (all by default) with the attribute that changes along each.

    The attribute is *chosen* on ``select_seeds``: the style or subcategory probability with the largest
    ``|mean change| × mean sign-adjusted Spearman(α, p)`` (it must move, and move one way), and *tested* on
    other ``seeds``: kept when its Spearman correlation with α in the chosen sign is ≥ ``min_rho`` on
    ≥ ``min_seeds`` seeds, else the label is dropped (``kept=False``). Choosing and testing on the same seeds
    would flatter it. Probabilities are rounded to ``resolution`` first: a wobble of a fraction of a percentage
    point in a probability that sits at 0 or 1 is a tie, not a reversal.
    """
    from scipy.stats import rankdata

    alphas_np = np.asarray(alphas, float)
    if np.any(np.diff(alphas_np) <= 0):
        raise ExploreInputError("alphas must increase.")
    seeds, select_seeds = list(seeds), list(select_seeds)
    n = len(directions.vectors) if n_label is None else min(n_label, len(directions.vectors))
    with torch.inference_mode():
        base = {"select": space.w(select_seeds, psi), "test": space.w(seeds, psi)}
    a_rank = rankdata(alphas_np)
    a_c = (a_rank - a_rank.mean()) / a_rank.std()
    out = []
    for idx in range(n):
        probs = {}
        for which, w in base.items():
            lat = []
            for a in alphas_np:
                al = [0.0] * (idx + 1)
                al[idx] = float(a)
                lat.append(edit_latents(space, w, directions, al, layers))
            lat = torch.stack(lat, 1).flatten(0, 1)  # [S·A, L, D]
            p, names = attribute_probabilities(extractor, space.synthesize(lat))
            p = np.round(p / resolution) * resolution if resolution else p
            probs[which] = p.reshape(len(w), len(alphas_np), -1)  # [S, A, attributes]
        sel = probs["select"]
        change = (sel[:, -1] - sel[:, 0]).mean(0)  # [attributes]
        r = rankdata(sel, axis=1)  # ranks along α
        sd = r.std(1)
        rho_sel = np.where(
            sd > 0,
            ((r - r.mean(1, keepdims=True)) * a_c[None, :, None]).mean(1) / np.where(sd > 0, sd, 1),
            0.0,
        )  # [S, attributes]
        score = np.abs(change) * (np.sign(change)[None] * rho_sel).mean(0)
        j = int(score.argmax())
        sign = 1.0 if change[j] >= 0 else -1.0
        rho = [sign * spearman(alphas_np, probs["test"][s, :, j]) for s in range(len(seeds))]
        delta = float((probs["test"][:, -1, j] - probs["test"][:, 0, j]).mean())
        kept = sum(x >= min_rho - 1e-9 for x in rho) >= min_seeds  # ranks give exact values up to rounding
        out.append(DirectionLabel(idx, names[j], sign, delta, rho, bool(kept)))
    return out


# ---------------------------------------------------------------------------------------------------------
# Your own image: read it safely, project it, export latents and images, load checkpoints
# ---------------------------------------------------------------------------------------------------------


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    p = path.resolve()
    return any(p == r.resolve() or p.is_relative_to(r.resolve()) for r in roots)


def read_image(
    source: bytes | str | Path,
    size: int,
    allowed_roots: Sequence[str | Path] | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> torch.Tensor:
    """An uploaded file's bytes or a path → ``[1, 3, size, size]`` in ``[-1, 1]`` (transparency on white,
    centre-cropped to a square, resized with Lanczos).

    A path must lie inside one of ``allowed_roots`` (the data folder and the upload folder by default in the
    widgets); anything that is not a readable image, too large, or outside those folders raises
    :class:`ExploreInputError` naming the input.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        what = f"path {str(source)!r}"
        if allowed_roots is not None and not _inside(path, [Path(r) for r in allowed_roots]):
            raise ExploreInputError(
                f"{what} is outside the folders this explorer may read "
                f"({', '.join(Path(r).name or str(r) for r in allowed_roots)}); upload the file instead."
            )
        if not path.is_file():
            raise ExploreInputError(f"{what}: no such file.")
        if path.stat().st_size > max_bytes:
            raise ExploreInputError(
                f"{what} is {path.stat().st_size / 2**20:.1f} MiB; at most {max_bytes / 2**20:.0f} MiB."
            )
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data, what = bytes(source), "the uploaded file"
        if len(data) > max_bytes:
            raise ExploreInputError(
                f"{what} is {len(data) / 2**20:.1f} MiB; at most {max_bytes / 2**20:.0f} MiB."
            )
    else:
        raise ExploreInputError(
            f"image: unsupported input of type {type(source).__name__}; upload a file or give a path."
        )
    if not data:
        raise ExploreInputError(f"{what} is empty.")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise ExploreInputError(f"{what} is not an image (PNG, JPEG, WebP, GIF, BMP …).") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ExploreInputError(f"{what} could not be read as an image: {e}") from None
    if img.width * img.height > 50_000_000:
        raise ExploreInputError(f"{what} is {img.width}×{img.height} px; too large.")
    img = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(white, img).convert("RGB")
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1
    return x.unsqueeze(0)


def project_image(
    space: LatentSpace,
    image: torch.Tensor,
    kind: str = "w",
    steps: int = 200,
    seed: int = 0,
    feature_loss: Callable | None = None,
    show_progress: bool = False,
) -> Render:
    """Invert ``image`` ``[1, 3, H, W]`` into W (``kind="w"``) or W+ (``"w+"``) with the package's projector.
    ``numbers['mse']`` is the final pixel MSE. Row: target, reconstruction."""
    kind = str(kind).lower()
    if kind not in ("w", "w+"):
        raise ExploreInputError(f"projection space {kind!r}: choose 'w' or 'w+'.")
    steps = int(check_number("projection steps", steps, 1, 5000))
    if image.ndim != 4 or image.shape[1:] != (3, space.size, space.size):
        raise ExploreInputError(
            f"image of shape {list(image.shape)}; this model needs [1, 3, {space.size}, {space.size}]."
        )
    res = project(
        space.G,
        image.to(space.device),
        steps=steps,
        w_plus=kind == "w+",
        feature_loss=feature_loss,
        seed=seed,
        show_progress=show_progress,
    )
    wp = space.w_plus(res.latents)
    target = to_uint8(image)
    recon = to_uint8(space.synthesize(wp))  # with the explorer's fixed noise: what the sliders will edit
    mse = float(((torch.from_numpy(recon).float() - torch.from_numpy(target).float()) / 127.5).pow(2).mean())
    return Render(
        np.concatenate([target, recon]),
        torch.cat([wp.cpu(), wp.cpu()]),
        f"target | {kind.upper()} projection, {steps} steps (pixel MSE {mse:.4f})",
        nrow=2,
        numbers={"mse": mse, "kind": kind, "steps": steps},
    )


def export_latent(latent: torch.Tensor, kind: str = "w+", **meta: Any) -> bytes:
    """The current latent as ``.npz`` bytes: ``w`` ``[D]`` (kind ``"w"``, the mean over layers of a W+) or
    ``w_plus`` ``[L, D]``, plus string metadata. Load with ``np.load(io.BytesIO(b))``."""
    lat = latent.detach().float().cpu()
    if lat.ndim == 3:
        lat = lat[0]
    kind = str(kind).lower()
    arrays: dict[str, np.ndarray] = {}
    if kind == "w":
        arrays["w"] = (lat.mean(0) if lat.ndim == 2 else lat).numpy()
    elif kind == "w+":
        if lat.ndim != 2:
            raise ExploreInputError("export W+: the latent has no per-layer axis.")
        arrays["w_plus"] = lat.numpy()
    else:
        raise ExploreInputError(f"export kind {kind!r}: choose 'w' or 'w+'.")
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{f"meta_{k}": np.asarray(str(v)) for k, v in meta.items()})
    return buf.getvalue()


def load_any_generator(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A generator from this package's export format (``{"g_ema", "config", ...}``) or a rosinality /
    CDC / MixDL ``.pt`` (architecture read off the tensors). Errors name the file and what was expected."""
    try:
        from ..models import stylegan2_io as io_mod  # after the package's re-layering (issue 15)
    except ImportError:
        from ..models import stylegan2 as io_mod
    path = Path(path)
    if not path.is_file():
        raise ExploreInputError(f"checkpoint {path.name!r}: no such file.")
    try:
        ck = io_mod.read_torch_file(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes a message
        raise ExploreInputError(f"checkpoint {path.name!r} cannot be read as a torch file: {e}") from None
    try:
        if isinstance(ck, dict) and "config" in ck and "g_ema" in ck:
            return io_mod.load_generator(path, device=device)
        return io_mod.load_rosinality(path, device=device).g_ema
    except ValueError as e:
        raise ExploreInputError(f"checkpoint {path.name!r}: {e}") from None
