"""Pure render functions of the method explorers: CDC, LoFGAN, LSO. State in → images and numbers out.

Same contract as :mod:`.render` (a :class:`~.render.Render` of ``uint8`` images ``[N, H, W, 3]``, a caption,
numbers; bad input raises :class:`~.render.ExploreInputError` with a message for the page), for the three
method chapters:

* **CDC** (notebook 04): :class:`AdaptedGenerators` holds a source and the generators adapted from it, and
  CDC's anchor latents; :func:`render_adapted` sends *the same* ``z`` (and the same noise maps) through each
  of them, one row per generator. ``region="anchor"`` draws ``z = anchor + σ·ε`` near CDC's anchors — the
  small regions where CDC asked for whole images like the ten shots — and ``"elsewhere"`` ordinary
  ``z ~ N(0, I)``, where it asked only for realistic patches.
* **LoFGAN** (notebook 06): :func:`render_fusion` runs one local fusion of ``k`` shots of an unseen class with
  a chosen base shot, selection rate η and seed, and shows the shots, the fused sample, which base positions
  were selected, the cosine-similarity map of one base position on every reference (with its best match), and
  the fusion replayed on the shots' thumbnails (the local reconstruction target). :func:`similarity_images`
  draws the similarity maps alone (paper Fig. 4; notebook 06 section 8).
* **LSO** (notebook 07): :func:`render_magnitude` draws a class-conditional generator's samples at magnitude σ
  around a class's centroid ``w_c = mapping(0, c)``: σ = 0 is the centroid, σ = 1 ordinary sampling.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .render import ExploreInputError, Render, check_number, parse_seeds, to_uint8

REGIONS = ("anchor", "elsewhere")


def _seed_normal(seeds: Sequence[int], dim: int, offset: int = 0) -> torch.Tensor:
    """``[N, dim]``: one N(0, I) row per seed, each from its own CPU generator (seed s is s in any grid)."""
    return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(offset + s)) for s in seeds])


# ---------------------------------------------------------------------------------------------------------
# CDC: the same latent through the source and the adapted generators
# ---------------------------------------------------------------------------------------------------------


class AdaptedGenerators:
    """A source generator and the generators adapted from it (first entry = the source), plus CDC's anchors.

    ``generators``: ``{name: Generator}`` of one architecture (same size and style dim); ``anchors``
    ``[k, D]``: the anchor latents of a CDC run (``trainer.hook.anchors.anchors``, or :func:`read_anchors`
    from a saved run), ``None`` if unknown; ``anchor_sigma``: the neighbourhood's σ (CDC's 0.1).
    Every generator draws with the *source's* fixed noise maps, so a column differs between rows only by the
    weights. ``shots`` ``[n, 3, H, W]`` (optional): the target images, for the nearest-shot distance.
    """

    def __init__(
        self,
        generators: Mapping[str, torch.nn.Module],
        anchors: torch.Tensor | None = None,
        anchor_sigma: float = 0.1,
        shots: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
    ):
        if len(generators) < 1:
            raise ExploreInputError("no generators: give the source and at least one adapted generator.")
        self.device = torch.device(device)
        self.generators = {str(n): g.to(self.device).eval() for n, g in generators.items()}
        first = next(iter(self.generators.values()))
        self.size, self.style_dim, self.n_latent = first.size, first.style_dim, first.n_latent
        for name, g in self.generators.items():
            if (g.size, g.style_dim, g.n_latent) != (self.size, self.style_dim, self.n_latent):
                raise ExploreInputError(
                    f"generator {name!r} is {g.size} px with style dim {g.style_dim}; the source is "
                    f"{self.size} px with {self.style_dim}: only generators adapted from it can be compared."
                )
        if anchors is not None:
            anchors = torch.as_tensor(anchors).float().cpu()
            if anchors.ndim != 2 or anchors.shape[1] != self.style_dim or len(anchors) == 0:
                raise ExploreInputError(
                    f"anchors of shape {list(anchors.shape)}; this model needs [k, {self.style_dim}]."
                )
        self.anchors = anchors
        self.anchor_sigma = check_number("anchor σ", anchor_sigma, 0.0, 10.0)
        self.shots = None if shots is None else to_uint8(shots).astype(np.float32)  # [n, H, W, 3]
        self._noise = [n.to(self.device) for n in first.noises.as_list()]
        self._w_avg: dict[str, torch.Tensor] = {}

    @property
    def names(self) -> list[str]:
        return list(self.generators)

    def z(self, seeds: Any, region: str = "elsewhere") -> tuple[torch.Tensor, list[int] | None]:
        """``([N, D] latents, anchor index per column or None)``. Anchor region: column ``i`` (seed ``s``) sits
        near anchor ``s mod k`` at ``anchor + σ·ε_s``; elsewhere: ``z = ε_s``. ``ε_s`` is seed ``s``'s normal."""
        seeds = parse_seeds(seeds)
        region = str(region).lower()
        if region not in REGIONS:
            raise ExploreInputError(f"region {region!r}: choose 'anchor' or 'elsewhere'.")
        eps = _seed_normal(seeds, self.style_dim)
        if region == "elsewhere":
            return eps.to(self.device), None
        if self.anchors is None:
            raise ExploreInputError(
                "anchor region: these generators came without CDC's anchors; pass the CDC run's anchors "
                "(trainer.hook.anchors.anchors, or read_anchors(<checkpoint>)) or choose 'elsewhere'."
            )
        idx = [s % len(self.anchors) for s in seeds]
        return (self.anchors[idx] + self.anchor_sigma * eps).to(self.device), idx

    @torch.inference_mode()
    def w_avg(self, name: str) -> torch.Tensor:
        """``[1, D]``: the generator's stored mean latent, else the mean of 4,096 mapped latents (cached)."""
        if name not in self._w_avg:
            g = self.generators[name]
            if getattr(g, "latent_avg", None) is not None:
                self._w_avg[name] = g.latent_avg.reshape(1, -1).to(self.device).float()
            else:
                z = torch.randn(4096, self.style_dim, generator=torch.Generator().manual_seed(0))
                self._w_avg[name] = g.mapping(z.to(self.device)).mean(0, keepdim=True)
        return self._w_avg[name]

    @torch.inference_mode()
    def images(self, z: torch.Tensor, psi: float = 1.0) -> dict[str, np.ndarray]:
        """``z`` ``[N, D]`` through every generator (its own mapping, truncation to its own mean, the source's
        noise) → ``{name: uint8 [N, H, W, 3]}``."""
        psi = check_number("truncation ψ", psi, 0.0, 2.0)
        out = {}
        for name, g in self.generators.items():
            w = g.mapping(z)
            if psi != 1.0:
                avg = self.w_avg(name)
                w = avg + psi * (w - avg)
            out[name] = to_uint8(g(w, input_is_latent=True, noise=self._noise)[0])
        return out

    def nearest_shot_distance(self, images: np.ndarray) -> float:
        """Mean over images of the RMS pixel distance (grey levels) to the nearest target shot."""
        if self.shots is None:
            return float("nan")
        x = images.astype(np.float32).reshape(len(images), 1, -1)
        d = np.sqrt(((x - self.shots.reshape(1, len(self.shots), -1)) ** 2).mean(-1))  # [N, n_shots]
        return float(d.min(1).mean())


def read_anchors(path: Any) -> torch.Tensor | None:
    """CDC's anchors ``[k, D]`` stored with a run: a trainer checkpoint's ``hook["anchors"]`` or an exported
    generator's ``info["cdc_anchors"]``; ``None`` if the file holds none. Loaded with ``weights_only=True``."""
    from ..checkpoint import load_checkpoint

    try:
        ck = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes a message
        raise ExploreInputError(f"{path}: cannot be read for anchors: {e}") from None
    if not isinstance(ck, dict):
        return None
    found = (ck.get("hook") or {}).get("anchors") if isinstance(ck.get("hook"), dict) else None
    if found is None and isinstance(ck.get("info"), dict):
        found = ck["info"].get("cdc_anchors")
    return None if found is None else torch.as_tensor(found).float()


@torch.inference_mode()
def render_adapted(
    adapted: AdaptedGenerators, seeds: Any = "0-7", region: str = "elsewhere", psi: float = 1.0
) -> Render:
    """One row per generator (the source first), one column per seed: the same ``z`` through each.

    ``numbers``: ``anchor_index`` (per column, anchor region), ``pixel_spread`` (per row: std over the columns,
    grey levels — how different the columns are), ``nearest_shot`` (per row: RMS distance to the closest target
    shot, when shots were given), ``change_from_source`` (per row: mean |pixel difference| to the source row).
    """
    seeds = parse_seeds(seeds, max_n=16)
    z, idx = adapted.z(seeds, region)
    rows = adapted.images(z, psi)
    src = rows[adapted.names[0]].astype(np.float32)
    numbers = {
        "seeds": seeds,
        "region": str(region).lower(),
        "anchor_index": idx,
        "psi": float(psi),
        "pixel_spread": {n: float(r.astype(np.float32).std(0).mean()) for n, r in rows.items()},
        "nearest_shot": {n: adapted.nearest_shot_distance(r) for n, r in rows.items()},
        "change_from_source": {n: float(np.abs(r.astype(np.float32) - src).mean()) for n, r in rows.items()},
    }
    where = (
        f"near CDC's anchors {sorted(set(idx))} (σ = {adapted.anchor_sigma:g})"
        if idx is not None
        else "ordinary z (elsewhere)"
    )
    images = np.concatenate(list(rows.values()))
    latents = z.cpu().unsqueeze(1).repeat(len(rows), adapted.n_latent, 1)  # [R·N, L, D]: the z of each image
    return Render(
        images,
        latents,
        f"rows: {', '.join(adapted.names)}; {len(seeds)} seeds {where}, ψ = {float(psi):.2f}",
        nrow=len(seeds),
        numbers=numbers,
    )


# ---------------------------------------------------------------------------------------------------------
# LoFGAN: one local fusion, its similarity maps
# ---------------------------------------------------------------------------------------------------------

BASE_COLOUR = (230, 25, 25)  # the base shot and the chosen base position
MATCH_COLOUR = (255, 255, 255)  # the best match in a reference


def _frame(img: np.ndarray, box: tuple[int, int, int, int], colour: Sequence[int], width: int = 1) -> None:
    """Draw a rectangle outline ``(top, left, bottom, right)`` (exclusive ends) into ``img`` in place."""
    t, left, b, r = box
    c = np.asarray(colour, np.uint8)
    img[t : t + width, left:r] = c
    img[b - width : b, left:r] = c
    img[t:b, left : left + width] = c
    img[t:b, r - width : r] = c


def _cell_box(position: int, feature_size: int, image_size: int) -> tuple[int, int, int, int]:
    """Pixel box of feature-map cell ``position`` (row-major over ``feature_size²``) in an image."""
    cell = image_size // feature_size
    y, x = divmod(int(position), feature_size)
    return y * cell, x * cell, (y + 1) * cell, (x + 1) * cell


def heat_overlay(
    image: np.ndarray, values: np.ndarray, lo: float = -1.0, hi: float = 1.0, alpha: float = 0.55
):
    """``image`` ``[H, W, 3]`` uint8 under a jet-coloured map of ``values`` ``[h, w]`` (nearest-upsampled,
    ``lo``…``hi`` → blue…red) mixed at ``alpha`` → ``[H, W, 3]`` uint8."""
    from matplotlib import colormaps

    size = image.shape[0]
    v = np.clip((np.asarray(values, np.float32) - lo) / (hi - lo), 0, 1)
    rep = size // v.shape[0]
    v = v.repeat(rep, 0).repeat(rep, 1)
    colour = colormaps["jet"](v)[..., :3] * 255
    return np.clip((1 - alpha) * image.astype(np.float32) + alpha * colour, 0, 255).round().astype(np.uint8)


def _check_shots(g: torch.nn.Module, shots: torch.Tensor) -> tuple[torch.Tensor, int]:
    if not isinstance(shots, torch.Tensor) or shots.ndim != 4 or shots.shape[1:] != (3, g.size, g.size):
        got = list(shots.shape) if isinstance(shots, torch.Tensor) else type(shots).__name__
        raise ExploreInputError(f"shots of shape {got}; this LoFGAN needs [k, 3, {g.size}, {g.size}].")
    if len(shots) < 2:
        raise ExploreInputError(
            f"{len(shots)} shot(s): local fusion needs a base and at least one reference."
        )
    return shots, len(shots)


def _check_position(position: Any, feature_size: int) -> int:
    try:
        y, x = (int(v) for v in position)
    except (TypeError, ValueError):
        raise ExploreInputError(f"base position {position!r} is not a pair (row, column).") from None
    if not (0 <= y < feature_size and 0 <= x < feature_size):
        raise ExploreInputError(
            f"base position ({y}, {x}) is outside the {feature_size}×{feature_size} feature map "
            f"(rows and columns 0…{feature_size - 1})."
        )
    return y * feature_size + x


@torch.inference_mode()
def lofgan_similarity(g: torch.nn.Module, shots: torch.Tensor, base: int, positions: Sequence[int]):
    """Cosine similarity of base positions to every position of every reference, on G's encoder (eval mode).

    ``shots`` ``[k, 3, S, S]``; ``base`` the base shot; ``positions`` flat indices into the ``h·w`` map →
    ``[k-1, P, h·w]``, references in their original order without the base (the LFM's order).
    """
    from ..models.lofgan import cosine_similarity_maps

    shots, k = _check_shots(g, shots)
    was = g.training
    g.eval()
    try:
        feats = g.encode(shots.to(next(g.parameters()).device)[None]).flatten(3).cpu()  # [1, k, C, N]
    finally:
        g.train(was)
    refs = [j for j in range(k) if j != base]
    pos = torch.as_tensor(list(positions), dtype=torch.long)[None]  # [1, P]
    return cosine_similarity_maps(feats[:, base], feats[:, refs], pos)[0]  # [k-1, P, N]


def similarity_images(
    shots: torch.Tensor, base: int, similarity: torch.Tensor, positions: Sequence[int], feature_size: int
) -> np.ndarray:
    """Paper Fig. 4 as images: one row per base position, ``[P, k, H, W, 3]`` uint8 — the base shot with the
    position framed in red, then each reference under its cosine-similarity map (jet, −1…1) with its best
    match framed in white. ``similarity`` ``[k-1, P, h·w]`` from :func:`lofgan_similarity`."""
    imgs = to_uint8(shots)  # [k, H, W, 3]
    k, size = len(imgs), imgs.shape[1]
    refs = [j for j in range(k) if j != base]
    rows = []
    for p_i, p in enumerate(positions):
        b = imgs[base].copy()
        _frame(b, _cell_box(p, feature_size, size), BASE_COLOUR)
        row = [b]
        for r_i, j in enumerate(refs):
            sim = similarity[r_i, p_i].reshape(feature_size, feature_size).numpy()
            over = heat_overlay(imgs[j], sim)
            _frame(over, _cell_box(int(sim.argmax()), feature_size, size), MATCH_COLOUR)
            row.append(over)
        rows.append(np.stack(row))
    return np.stack(rows)


@torch.inference_mode()
def render_fusion(
    g: torch.nn.Module,
    shots: torch.Tensor,
    base: int = 0,
    eta: float = 0.5,
    seed: int = 0,
    position: Sequence[int] | None = None,
    name: str = "",
) -> Render:
    """One local fusion of ``shots`` ``[k, 3, S, S]`` by LoFGAN ``g`` (eval mode), base shot ``base``, selection
    rate ``eta``, randomness (α, selected positions) from ``seed``.

    Two rows of ``k + 1`` images. Row 1: the shots (the base framed in red) and the fused sample. Row 2: the base
    with the selected positions tinted and the chosen ``position`` ``(row, col)`` of the feature map framed
    (default: the centre), each reference under that position's cosine-similarity map with its best match
    framed, and the fusion replayed on ``s×s`` thumbnails (the local reconstruction target, upscaled).
    ``numbers``: ``selected`` (how many of ``h·w`` positions were fused), ``position_selected``, ``best_match``
    and ``best_similarity`` per reference, ``alpha`` (base first).
    """
    from ..methods.lofgan import local_target

    shots, k = _check_shots(g, shots)
    if isinstance(base, bool) or not isinstance(base, (int, np.integer)) or not 0 <= int(base) < k:
        raise ExploreInputError(f"base shot {base!r}: choose 0…{k - 1}.")
    base = int(base)
    eta = check_number("η (selection rate)", eta, 0.0, 1.0)
    seed = parse_seeds(seed)[0]
    fs = g.feature_size
    if position is None:
        position = (fs // 2, fs // 2)
    p = _check_position(position, fs)
    dev = next(g.parameters()).device
    was = g.training
    g.eval()
    try:
        fake, rec = g(
            shots.to(dev)[None],
            rate=eta,
            base_index=torch.tensor([base]),
            generator=torch.Generator().manual_seed(seed),
        )  # [1, 3, S, S]
    finally:
        g.train(was)
    if rec.positions is None:
        raise ExploreInputError(
            "this generator fuses globally (no base, no positions): load a LoFGAN (local)."
        )
    selected = rec.positions[0].cpu().tolist()
    sim = lofgan_similarity(g, shots, base, [p])  # [k-1, 1, N]
    imgs = to_uint8(shots)
    size = imgs.shape[1]
    top = [im.copy() for im in imgs]
    _frame(top[base], (0, 0, size, size), BASE_COLOUR)
    top.append(to_uint8(fake.cpu())[0])
    b = imgs[base].astype(np.float32)
    for q in selected:  # tint the fused positions red
        t, left, bo, r = _cell_box(q, fs, size)
        b[t:bo, left:r] = 0.55 * b[t:bo, left:r] + 0.45 * np.asarray(BASE_COLOUR, np.float32)
    b = b.round().astype(np.uint8)
    _frame(b, _cell_box(p, fs, size), (255, 255, 0))
    refs_row = list(similarity_images(shots, base, sim, [p], fs)[0, 1:])
    target = to_uint8(local_target(shots[None].cpu(), _record_cpu(rec)))[0]  # [s, s, 3]
    target = target.repeat(size // fs, 0).repeat(size // fs, 1)
    images = np.stack(top + [b] + refs_row + [target])
    refs = [j for j in range(k) if j != base]
    best = [int(sim[r, 0].argmax()) for r in range(len(refs))]
    numbers = {
        "base": base,
        "eta": eta,
        "seed": seed,
        "selected": len(selected),
        "positions": fs * fs,
        "selected_positions": selected,
        "position": p,
        "position_selected": p in selected,
        "best_match": {j: divmod(m, fs) for j, m in zip(refs, best)},
        "best_similarity": {j: float(sim[r, 0].max()) for r, j in enumerate(refs)},
        "alpha": rec.alpha[0].cpu().tolist(),
    }
    y, x = divmod(p, fs)
    return Render(
        images,
        torch.zeros(len(images), 1, 1),  # LoFGAN has no latent: nothing to export
        f"{name + ': ' if name else ''}base shot {base}, η = {eta:g} ({len(selected)} of {fs * fs} positions "
        f"fused), seed {seed}; position ({y}, {x}) {'was' if p in selected else 'was not'} selected",
        nrow=k + 1,
        numbers=numbers,
    )


def _record_cpu(rec):
    from dataclasses import replace

    return replace(
        rec,
        order=rec.order.cpu(),
        alpha=rec.alpha.cpu(),
        positions=rec.positions.cpu(),
        ref_positions=rec.ref_positions.cpu(),
    )


def episode_shots(pool: torch.Tensor, episode: int, k: int = 3) -> torch.Tensor:
    """Episode ``e`` of a class's conditioning pool ``[n, 3, S, S]``: images ``e·k … e·k + k − 1`` → ``[k, 3, S, S]``
    (episode 0 = the first ``k``, as notebook 06 shows them; ``n // k`` disjoint episodes)."""
    n_ep = len(pool) // k
    if (
        isinstance(episode, bool)
        or not isinstance(episode, (int, np.integer))
        or not 0 <= int(episode) < n_ep
    ):
        raise ExploreInputError(
            f"episode {episode!r}: this class has {n_ep} episodes of {k} shots (0…{n_ep - 1})."
        )
    return pool[int(episode) * k : (int(episode) + 1) * k]


# ---------------------------------------------------------------------------------------------------------
# LSO: samples at magnitude σ around a class's centroid
# ---------------------------------------------------------------------------------------------------------


def check_class(G: torch.nn.Module, class_index: Any, class_names: Sequence[str] | None = None) -> int:
    """A class index of a class-conditional ``G`` from an index or a class name; clear messages otherwise."""
    n = getattr(G, "c_dim", 0) or 0
    if not n:
        raise ExploreInputError(
            "this generator is unconditional: the magnitude explorer needs a class-conditional one "
            "(Generator(c_dim=...), e.g. stylegan2_cond_seen32)."
        )
    if isinstance(class_index, str):
        if not class_names or class_index not in class_names:
            raise ExploreInputError(f"class {class_index!r} is not one of this model's {n} classes.")
        class_index = list(class_names).index(class_index)
    if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
        raise ExploreInputError(f"class {class_index!r}: give a class name or an index 0…{n - 1}.")
    if not 0 <= int(class_index) < n:
        raise ExploreInputError(f"class index {class_index}: this model has classes 0…{n - 1}.")
    return int(class_index)


@torch.inference_mode()
def render_magnitude(
    G: torch.nn.Module,
    class_index: Any = 0,
    sigma: float = 0.7,
    seeds: Any = "0-7",
    class_names: Sequence[str] | None = None,
) -> Render:
    """Class ``class_index`` (an index or a name from ``class_names``) of a class-conditional ``G``: its centroid
    (``z = 0``), then one sample per seed at magnitude ``sigma``: ``w = mapping(z_s, c, magnitude=σ)``, drawn
    with G's fixed noise maps so that a seed's image moves only with σ and the class.

    ``numbers``: ``w_distance`` — the mean distance in W of the samples from the centroid (0 at σ = 0);
    ``pixel_spread`` — the std over the samples, grey levels.
    """
    c = check_class(G, class_index, class_names)
    sigma = check_number("magnitude σ", sigma, 0.0, 2.0)
    seeds = parse_seeds(seeds, max_n=15)
    dev = next(G.parameters()).device
    z = torch.cat([torch.zeros(1, G.style_dim), _seed_normal(seeds, G.style_dim)]).to(dev)  # [1 + N, D]
    cls = torch.full((len(z),), c, dtype=torch.long, device=dev)
    mags = torch.tensor([0.0] + [sigma] * len(seeds), device=dev)  # the centroid at σ = 0
    w = G.mapping(z, cls, magnitude=mags)  # [1 + N, D]
    noise = [n.to(dev) for n in G.noises.as_list()]
    images = to_uint8(G(w, input_is_latent=True, noise=noise)[0])
    name = list(class_names)[c] if class_names and c < len(class_names) else f"class {c}"
    wp = w.cpu().unsqueeze(1).repeat(1, G.n_latent, 1)
    return Render(
        images,
        wp,
        f"{name}: centroid, then seeds {seeds[0]}…{seeds[-1]} at magnitude σ = {sigma:.2f}",
        nrow=min(len(images), 9),
        numbers={
            "class": name,
            "class_index": c,
            "sigma": sigma,
            "seeds": seeds,
            "w_distance": float((w[1:] - w[:1]).norm(dim=1).mean()),
            "pixel_spread": float(images[1:].astype(np.float32).std(0).mean()),
        },
    )
