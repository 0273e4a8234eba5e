"""Thin ipywidgets wiring: controls → a pure render function (:mod:`.render`) → an image and a message.

Every explorer follows the same rules:

* **Latest state wins.** Sliders use ``continuous_update=False`` (they report when released); every change
  only *schedules* a render, and a single worker thread renders the controls' *current* values after a short
  debounce, again if something changed meanwhile. Ten quick changes cost at most two renders, never ten.
* **No traceback in the page.** A render that raises shows one line in red under the image
  (:class:`~.render.ExploreInputError` messages as they are, anything else as ``type: message``); the image
  keeps the last good state.
* **A picture without a front-end.** :meth:`Explorer.show` first displays a PNG of the default state, then
  the widget, so papermill, nbval, GitHub and the run report show what the explorer looks like.
"""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Sequence

import ipywidgets as W
import numpy as np

from .render import (
    MAX_UPLOAD_BYTES,
    DirectionLabel,
    ExploreInputError,
    LatentSpace,
    Render,
    export_latent,
    label_directions,
    load_any_generator,
    png_bytes,
    project_image,
    read_image,
    render_edit,
    render_interpolation,
    render_mixing,
    render_seeds,
)
from .render_methods import AdaptedGenerators, episode_shots, render_adapted, render_fusion, render_magnitude

log = logging.getLogger(__name__)

# Crisp pixels; and where the widget is live (JupyterLab, Voilà), hide the static PNG shown just before it.
PIXELATED_CSS = W.HTML(
    "<style>.fewshot-pixelated{image-rendering:pixelated;align-self:flex-start}"
    ".jp-OutputArea-child:has(+ .jp-OutputArea-child .fewshot-explorer){display:none}</style>"
)
SHOW_SCALE = 3  # on-screen pixels per image pixel


def _slider(cls, **kw):
    kw.setdefault("continuous_update", False)
    kw.setdefault("style", {"description_width": "initial"})
    return cls(**kw)


def _typed_path(text: str) -> Path:
    """A typed path: absolute as given, relative ones from the repository root (where ``data/`` lives)."""
    from ..config import data_dir

    p = Path(text.strip()).expanduser()
    return p if p.is_absolute() else data_dir().parent / p


def error_html(message: str) -> str:
    import html

    return f'<span class="fewshot-error" style="color:#b00020">⚠ {html.escape(message)}</span>'


class Session:
    """What the explorers share: the current :class:`LatentSpace`, direction labels, where files may be read.

    ``allowed_roots``: folders a typed path may point into (default: the data folder and this session's upload
    folder, a fresh temporary directory). Loading another checkpoint swaps the space and refreshes every
    explorer built on this session.
    """

    def __init__(
        self,
        space: LatentSpace,
        extractor: Any = None,
        allowed_roots: Sequence[str | Path] | None = None,
        label_kwargs: dict | None = None,
        k: int = 8,
    ):
        from ..config import data_dir

        self.space, self.extractor, self.k = space, extractor, k
        self.upload_dir = Path(tempfile.mkdtemp(prefix="fewshot-explore-"))
        weakref.finalize(self, shutil.rmtree, self.upload_dir, ignore_errors=True)  # removed with the session
        self.allowed_roots = [Path(r) for r in (allowed_roots or [data_dir()])] + [self.upload_dir]
        self.label_kwargs = dict(label_kwargs or {})
        self._labels: dict[str, list[DirectionLabel]] = {}
        self.explorers: list["Explorer"] = []

    def set_labels(self, method: str, labels: list[DirectionLabel]) -> None:
        self._labels[method] = labels

    def labels(self, method: str) -> list[str]:
        """Slider captions for ``method``'s directions: the kept labels, else ``d<i>``."""
        if method not in self._labels and self.extractor is not None:
            self._labels[method] = label_directions(
                self.space, self.space.directions(method, self.k), self.extractor, **self.label_kwargs
            )
        texts = {lab.index: lab.text for lab in self._labels.get(method, [])}
        return [texts.get(i, f"d{i}") for i in range(self.k)]

    def load(self, path: str | Path) -> str:
        """Swap in the generator stored at ``path`` (inside ``allowed_roots``); returns a one-line summary."""
        p = _typed_path(str(path))
        if not any(p.resolve().is_relative_to(r.resolve()) for r in self.allowed_roots):
            raise ExploreInputError(
                f"checkpoint path {str(path)!r} is outside the folders this explorer may read."
            )
        G = load_any_generator(p, device=self.space.device)
        self.space = LatentSpace(G, self.space.device, self.space.n_samples, self.space.seed, name=p.stem)
        self._labels.clear()
        for e in self.explorers:
            e.on_model_changed()
        return f"loaded {p.name}: {G.size} px, {self.space.n_latent} layers, style dim {self.space.style_dim}"


class Explorer:
    """An image, a message line and controls wired to ``render(state) -> Render``.

    ``session``: the :class:`Session` whose model the explorer draws (it re-renders when the session loads
    another checkpoint); ``None`` for explorers that hold their own models (CDC, LoFGAN, LSO)."""

    def __init__(
        self,
        session: Session | None,
        title: str,
        controls: dict[str, W.Widget],
        render: Callable[[dict], Render],
        extra: Sequence[W.Widget] = (),
        debounce_s: float = 0.05,
        sync: bool = False,
    ):
        self.session, self.title, self.controls, self._render = session, title, controls, render
        self.debounce_s, self.sync = debounce_s, sync
        self.image = W.Image(format="png")
        self.image.add_class("fewshot-pixelated")
        self.message = W.HTML()
        self.current: Render | None = None
        self.renders = 0
        self._lock = threading.Lock()
        self._version = 0
        self._busy = False
        self._idle = threading.Event()
        self._idle.set()
        for c in controls.values():
            c.observe(self._changed, names="value")
        self.widget = W.VBox(
            [
                PIXELATED_CSS,
                W.HTML(f"<b>{title}</b>"),
                W.HBox([self.image, W.VBox(list(controls.values()) + list(extra))]),
                self.message,
            ]
        )
        self.widget.add_class("fewshot-explorer")
        if session is not None:  # the method explorers bring their own models and need no session
            session.explorers.append(self)
        self.refresh()

    # -- state -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {k: c.value for k, c in self.controls.items()}

    def refresh(self) -> bool:
        """Render the current state now; on failure show the message and keep the last image. True if ok."""
        try:
            r = self._render(self.state())
        except ExploreInputError as e:
            self.message.value = error_html(str(e))
            return False
        except Exception as e:  # noqa: BLE001 - the page must never show a traceback
            log.exception("explorer %r failed", self.title)
            self.message.value = error_html(f"{type(e).__name__}: {e}")
            return False
        self.current = r
        self.renders += 1
        grid = r.grid()
        self.image.value = png_bytes(grid)
        self.image.layout.width = f"{grid.shape[1] * SHOW_SCALE}px"
        self.image.layout.height = f"{grid.shape[0] * SHOW_SCALE}px"
        self.message.value = r.caption
        return True

    def _changed(self, _change=None) -> None:
        if self.sync:
            self.refresh()
            return
        with self._lock:
            self._version += 1
            if self._busy:
                return  # the running worker will see the newer state
            self._busy = True
            self._idle.clear()
        threading.Thread(target=self._work, daemon=True).start()

    def _work(self) -> None:
        while True:
            time.sleep(self.debounce_s)
            with self._lock:
                seen = self._version
            self.refresh()
            with self._lock:
                if self._version == seen:
                    self._busy = False
                    self._idle.set()
                    return

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until no render is pending (tests and scripted use)."""
        return self._idle.wait(timeout)

    def on_model_changed(self) -> None:
        self._changed()

    # -- display ---------------------------------------------------------------------------------------
    def static_png(self, upscale: int = SHOW_SCALE) -> bytes:
        if self.current is None:
            raise RuntimeError(f"{self.title}: the default state did not render: {self.message.value}")
        return self.current.png(upscale)

    def show(self) -> "Explorer":
        """Display a PNG of the current (default) state under its title and caption (which say what the rows
        and columns are: the PNG alone has no labels, and it is all a static copy of the notebook shows), then the
        live widget."""
        from IPython.display import Image, display

        png = self.static_png()
        print(f"{self.title} — {self.current.caption}" if self.current.caption else self.title)
        display(Image(data=png))
        display(self.widget)
        return self


# ---------------------------------------------------------------------------------------------------------
# The explorers
# ---------------------------------------------------------------------------------------------------------


def _psi(value: float = 1.0) -> W.FloatSlider:
    return _slider(W.FloatSlider, value=value, min=0.0, max=1.5, step=0.05, description="truncation ψ")


def seeds_explorer(session: Session, seeds: str = "0-7", psi: float = 1.0, **kw: Any) -> Explorer:
    """A grid of seeds at truncation ψ."""
    controls = {
        "seeds": W.Text(
            value=seeds, description="seeds", continuous_update=False, placeholder="0-7 or 3, 5, 11"
        ),
        "psi": _psi(psi),
    }
    return Explorer(
        session,
        "Seeds and truncation",
        controls,
        lambda s: render_seeds(session.space, s["seeds"], s["psi"]),
        **kw,
    )


def interpolation_explorer(
    session: Session, seed_a: int = 0, seed_b: int = 1, steps: int = 8, **kw: Any
) -> Explorer:
    """From seed A to seed B in W (linear) or Z (spherical)."""
    controls = {
        "seed_a": W.IntText(value=seed_a, description="seed A"),
        "seed_b": W.IntText(value=seed_b, description="seed B"),
        "kind": W.Dropdown(
            options=[("W (linear)", "w"), ("Z (spherical)", "z")], value="w", description="space"
        ),
        "steps": _slider(W.IntSlider, value=steps, min=2, max=16, description="steps"),
        "psi": _psi(),
    }
    return Explorer(
        session,
        "Interpolation",
        controls,
        lambda s: render_interpolation(
            session.space, s["seed_a"], s["seed_b"], s["steps"], s["kind"], s["psi"]
        ),
        **kw,
    )


def _layers(session: Session, value: tuple[int, int] | None = None, description: str = "layers [first, end)"):
    n = session.space.n_latent
    return _slider(W.IntRangeSlider, value=value or (0, n), min=0, max=n, step=1, description=description)


def mixing_explorer(
    session: Session, seed_a: int = 0, seeds_b: str = "1-6", layers: tuple[int, int] = (0, 4), **kw: Any
) -> Explorer:
    """Seed A with layers ``[first, end)`` taken from each B (coarse layers = layout, fine = colour)."""
    controls = {
        "seed_a": W.IntText(value=seed_a, description="seed A"),
        "seeds_b": W.Text(value=seeds_b, description="seeds B", continuous_update=False),
        "layers": _layers(session, layers, "from B: layers [first, end)"),
        "psi": _psi(),
    }
    return Explorer(
        session,
        "Style mixing",
        controls,
        lambda s: render_mixing(session.space, s["seed_a"], s["seeds_b"], s["layers"], s["psi"]),
        **kw,
    )


def _download_link(data: bytes, filename: str, mime: str) -> str:
    b64 = base64.b64encode(data).decode()
    return f'<a download="{filename}" href="data:{mime};base64,{b64}">{filename}</a>'


class _DirectionControls:
    """Method dropdown, layer range and one slider per direction (captions = the emoji network's labels)."""

    def __init__(self, session: Session, k: int):
        self.session, self.k = session, k
        self.method = W.Dropdown(
            options=[("GANSpace (PCA of W)", "pca"), ("SeFa (closed form)", "sefa")],
            value="pca",
            description="directions",
        )
        self.layers = _layers(session)
        self.sliders = [
            _slider(W.FloatSlider, value=0.0, min=-3, max=3, step=0.25, description=f"d{i}") for i in range(k)
        ]
        self.method.observe(lambda _: self.relabel(), names="value")
        self.relabel()

    def relabel(self) -> None:
        try:
            labels = self.session.labels(self.method.value)
        except Exception:  # noqa: BLE001 - labels are a nicety; sliders work without them
            log.exception("labelling directions failed")
            labels = [f"d{i}" for i in range(self.k)]
        for s, text in zip(self.sliders, labels):
            s.description = text

    def controls(self) -> dict[str, W.Widget]:
        return {
            "method": self.method,
            "layers": self.layers,
            **{f"a{i}": s for i, s in enumerate(self.sliders)},
        }

    def alphas(self, state: dict) -> list[float]:
        return [state[f"a{i}"] for i in range(self.k)]


def _export_row(explorer_ref: list, kinds: Sequence[str] = ("w", "w+")) -> tuple[W.Widget, W.HTML]:
    """Buttons that turn the last image of the explorer's grid (in the projection explorer: the edited
    projection) and its latent into download links."""
    links = W.HTML()
    buttons = [W.Button(description=f"export {k.upper()}", layout=W.Layout(width="auto")) for k in kinds]
    img_button = W.Button(description="export PNG", layout=W.Layout(width="auto"))

    def export(kind: str):
        e = explorer_ref[0]
        try:
            if e.current is None:
                raise ExploreInputError("nothing rendered yet.")
            if kind == "png":
                links.value = _download_link(png_bytes(e.current.images[-1], 4), "explorer.png", "image/png")
            else:
                data = export_latent(e.current.latents[-1:], kind, model=e.session.space.name)
                links.value = _download_link(
                    data, f"latent_{kind.replace('+', 'plus')}.npz", "application/octet-stream"
                )
        except ExploreInputError as err:
            links.value = error_html(str(err))
        except Exception as err:  # noqa: BLE001
            links.value = error_html(f"{type(err).__name__}: {err}")

    for b, k in zip(buttons, kinds):
        b.on_click(lambda _b, k=k: export(k))
    img_button.on_click(lambda _b: export("png"))
    return W.HBox(buttons + [img_button]), links


def directions_explorer(session: Session, seeds: str = "0-7", **kw: Any) -> Explorer:
    """Walk along GANSpace / SeFa directions, one slider each, in a layer range; export the latent."""
    dc = _DirectionControls(session, session.k)
    controls = {
        "seeds": W.Text(value=seeds, description="seeds", continuous_update=False),
        "psi": _psi(),
        **dc.controls(),
    }
    ref: list = []
    row, links = _export_row(ref)
    e = Explorer(
        session,
        "Directions (GANSpace / SeFa)",
        controls,
        lambda s: render_edit(
            session.space, s["seeds"], s["method"], dc.alphas(s), s["layers"], s["psi"], k=session.k
        ),
        extra=[row, links],
        **kw,
    )
    ref.append(e)
    e.directions = dc
    return e


def projection_explorer(
    session: Session,
    steps: int = 200,
    example: str | Path | None = None,
    feature_loss: Callable | None = None,
    initial: Render | None = None,
    **kw: Any,
) -> Explorer:
    """Upload an image (or give a path inside the allowed folders), project it into W or W+, then edit it with
    the direction sliders and export the latent. ``example``: an image path projected at start, or shown
    with ``initial`` (a :func:`~.render.project_image` result for it) without projecting again."""
    upload = W.FileUpload(accept="image/*", multiple=False, description="upload image")
    path = W.Text(
        value="" if initial is not None else str(example or ""),
        description="or path",
        continuous_update=False,
        placeholder="a file inside the data or upload folder",
    )
    kind = W.Dropdown(options=[("W", "w"), ("W+", "w+")], value="w", description="project into")
    n_steps = _slider(W.IntSlider, value=steps, min=10, max=1000, step=10, description="steps")
    button = W.Button(description="project", button_style="primary")
    status = W.HTML()
    dc = _DirectionControls(session, session.k)
    projected: dict[str, Any] = {}

    def source():
        if upload.value:
            item = upload.value[0]
            size = item.get("size", len(item["content"]))
            if size > MAX_UPLOAD_BYTES:
                raise ExploreInputError(
                    f"the uploaded file is {size / 2**20:.1f} MiB; at most "
                    f"{MAX_UPLOAD_BYTES / 2**20:.0f} MiB."
                )
            return bytes(item["content"]), item.get("name", "upload")
        if path.value.strip():
            return _typed_path(path.value), Path(path.value.strip()).name
        raise ExploreInputError("upload an image or type a path first.")

    def do_project(_=None):
        try:
            src, name = source()
            img = read_image(src, session.space.size, allowed_roots=session.allowed_roots)
            status.value = f"projecting {name} into {kind.value.upper()} ({n_steps.value} steps)…"
            r = project_image(session.space, img, kind.value, n_steps.value, feature_loss=feature_loss)
            projected.update(base=r.latents[1:], target=r.images[:1], name=name, render=r)
            status.value = r.caption
        except ExploreInputError as err:
            status.value = error_html(str(err))
            return
        except Exception as err:  # noqa: BLE001
            log.exception("projection failed")
            status.value = error_html(f"{type(err).__name__}: {err}")
            return
        e.refresh()

    def render(s: dict) -> Render:
        if "base" not in projected:
            raise ExploreInputError(
                "no image projected yet: upload one (or type a path) and press 'project'."
            )
        r = render_edit(
            session.space, None, s["method"], dc.alphas(s), s["layers"], base=projected["base"], k=session.k
        )
        r.images = np.concatenate([projected["target"], r.images])
        r.latents = r.latents.repeat(2, 1, 1)  # the target has no latent of its own: export uses the last
        r.nrow = 2
        r.caption = (
            f"{projected['name']}: target | edited {projected['render'].numbers['kind'].upper()} projection"
        )
        return r

    button.on_click(do_project)
    ref: list = []
    row, links = _export_row(ref)
    e = Explorer(
        session,
        "Your own image: project, then edit",
        dc.controls(),
        render,
        extra=[upload, path, kind, n_steps, button, status, row, links],
        **kw,
    )
    ref.append(e)
    e.directions, e.project = dc, do_project
    e.upload, e.path, e.kind, e.steps_slider, e.status = upload, path, kind, n_steps, status
    if example and initial is not None:
        projected.update(
            base=initial.latents[1:], target=initial.images[:1], name=Path(example).name, render=initial
        )
        kind.value = initial.numbers.get("kind", "w")
        status.value = initial.caption
        e.refresh()
    elif example:
        do_project()
    return e


def model_loader(session: Session, **kw: Any) -> Explorer:
    """A path field and a button that load another checkpoint (this package's export or rosinality's); the
    image previews seeds 0–7 of the model now loaded (every explorer of the session switches to it)."""
    path = W.Text(
        description="checkpoint",
        placeholder="a .pt inside the data folder",
        continuous_update=False,
        layout=W.Layout(width="95%"),
    )
    button = W.Button(description="load")
    status = W.HTML(f"current model: {session.space.name}")

    def load(_=None):
        try:
            status.value = session.load(path.value.strip())
        except ExploreInputError as err:
            status.value = error_html(str(err))
        except Exception as err:  # noqa: BLE001
            log.exception("loading a checkpoint failed")
            status.value = error_html(f"{type(err).__name__}: {err}")

    button.on_click(load)
    e = Explorer(
        session,
        "Load your own checkpoint",
        {},
        lambda s: render_seeds(session.space, "0-7"),
        extra=[path, button, status],
        **kw,
    )
    e.path, e.button, e.status, e.load = path, button, status, load
    return e


# ---------------------------------------------------------------------------------------------------------
# The method explorers (notebooks 04, 06, 07): they hold their own models, no session needed
# ---------------------------------------------------------------------------------------------------------


def cdc_explorer(
    adapted: AdaptedGenerators,
    seeds: str = "0-7",
    region: str = "elsewhere",
    session: Session | None = None,
    **kw: Any,
) -> Explorer:
    """The same latents through the source and each adapted generator, one row each; the toggle draws them near
    CDC's anchors (where CDC asked for whole images like the shots) or elsewhere (only patches had to look real).
    Without anchors the toggle stays on "elsewhere"."""
    controls = {
        "seeds": W.Text(value=seeds, description="seeds", continuous_update=False, placeholder="0-7"),
        "region": W.ToggleButtons(
            options=[("anchor region", "anchor"), ("elsewhere", "elsewhere")],
            value=region if adapted.anchors is not None else "elsewhere",
            description="latents",
            disabled=adapted.anchors is None,
            tooltips=["z = anchor + σ·ε near one of CDC's anchors", "ordinary z ~ N(0, I)"],
            style={"button_width": "auto"},
        ),
        "psi": _psi(),
    }
    return Explorer(
        session,
        "CDC: one latent, every generator",
        controls,
        lambda s: render_adapted(adapted, s["seeds"], s["region"], s["psi"]),
        **kw,
    )


def lofgan_explorer(
    g: Any,
    conditioning: dict[str, Any],
    k: int = 3,
    class_name: str | None = None,
    base: int = 0,
    eta: float = 0.5,
    seed: int = 0,
    session: Session | None = None,
    **kw: Any,
) -> Explorer:
    """One local fusion of an unseen-class episode: class, episode (k shots of its conditioning pool), base shot,
    η, seed, and the feature-map position whose similarity maps are shown."""
    if not conditioning:
        raise ExploreInputError("no classes: give the unseen classes' conditioning pools.")
    names = list(conditioning)
    n_episodes = max(1, min(len(x) for x in conditioning.values()) // k)
    fs = g.feature_size
    controls = {
        "cls": W.Dropdown(options=names, value=class_name or names[0], description="unseen class"),
        "episode": _slider(W.IntSlider, value=0, min=0, max=n_episodes - 1, description="episode"),
        "base": _slider(W.IntSlider, value=base, min=0, max=k - 1, description="base shot"),
        "eta": _slider(
            W.FloatSlider, value=eta, min=0.0, max=1.0, step=0.05, description="η (selection rate)"
        ),
        "seed": W.IntText(value=seed, description="seed"),
        "row": _slider(W.IntSlider, value=fs // 2, min=0, max=fs - 1, description="position row"),
        "col": _slider(W.IntSlider, value=fs // 2, min=0, max=fs - 1, description="position column"),
    }
    legend = W.HTML(
        "<small>row 1: shots (base in red), fused sample · row 2: fused positions (red) and the chosen one "
        "(yellow), its cosine similarity on each reference (blue −1 … red +1, best match in white), the "
        "fusion replayed on thumbnails</small>"
    )
    return Explorer(
        session,
        "LoFGAN: one local fusion",
        controls,
        lambda s: render_fusion(
            g,
            episode_shots(conditioning[s["cls"]], s["episode"], k),
            s["base"],
            s["eta"],
            s["seed"],
            (s["row"], s["col"]),
            name=f"{s['cls']}, episode {s['episode']}",
        ),
        extra=[legend],
        **kw,
    )


def magnitude_explorer(
    G: Any,
    class_names: Sequence[str],
    class_name: str | None = None,
    sigma: float = 0.7,
    seeds: str = "0-7",
    session: Session | None = None,
    **kw: Any,
) -> Explorer:
    """A class-conditional generator's class: its centroid and samples at magnitude σ around it (LSO)."""
    names = list(class_names)
    controls = {
        "cls": W.Dropdown(options=names, value=class_name or names[0], description="class"),
        "sigma": _slider(W.FloatSlider, value=sigma, min=0.0, max=1.5, step=0.05, description="magnitude σ"),
        "seeds": W.Text(value=seeds, description="seeds", continuous_update=False, placeholder="0-7"),
    }
    return Explorer(
        session,
        "LSO: magnitude around a class centroid",
        controls,
        lambda s: render_magnitude(G, s["cls"], s["sigma"], s["seeds"], names),
        **kw,
    )
