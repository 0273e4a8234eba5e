"""Feature extractors: the "eyes" every generation metric looks through.

FID, KID, precision/recall and LPIPS never compare pixels; they compare what a *pretrained network* sees. The
papers use ImageNet networks (Inception-v3 pool3 for FID, AlexNet/VGG for LPIPS). Their weights cannot be
downloaded here and no installable package ships them, so this module offers three families behind one
interface, and every metric result records which one produced it:

=====================  ==========================================================  ===================
name                   what it is                                                  availability
=====================  ==========================================================  ===================
``emoji``              :class:`EmojiFeatureNet`, a small CNN trained by this       always (shipped in
                       project on the embedded emoji (``scripts/train_feature_net  ``data/checkpoints``)
                       .py``) to recognise *what* an emoji shows (its concept)
                       and *how* it is drawn (its style)
``emoji-random``       the same architecture with random weights (a control: what  always
                       a metric measures when the eyes have learned nothing)
``inception``          pytorch-fid's FID Inception-v3 (pool3, 2048-d)              only with local weights
``lpips-alex/vgg``     the ``lpips`` package (ImageNet backbone + calibration)     only with local weights
=====================  ==========================================================  ===================

**Nothing is downloaded, ever.** The ImageNet extractors look for their weight file (an explicit path, an
environment variable, or the standard torch hub cache) and raise :class:`FileNotFoundError` explaining how to
obtain it when it is absent. Numbers from ``emoji`` are internally consistent (compare methods with each
other) but are *not* comparable with published FID/LPIPS values.

The interface (:class:`FeatureExtractor`):

* ``features(images [N,3,H,W] in [-1,1]) -> [N, D]``: one global vector per image (FID, KID, P/R, D/C).
* ``perceptual_distance(x [N,3,H,W], y [N,3,H,W]) -> [N]``: an LPIPS-style distance between paired images.
* ``distance_embedding(images) -> [N, P]``: a vector per image such that the perceptual distance is the
  *squared Euclidean distance* between embeddings. LPIPS has exactly this form (see below), which lets the
  diversity metrics compute all pairwise distances with one matrix product instead of one network call per pair.

**LPIPS as a squared distance.** LPIPS (Zhang et al., 2018) unit-normalises the feature vector at every
spatial position of layer ``l`` (``f̂ = f / ‖f‖`` over channels), takes the weighted squared difference, averages
over the ``H_l·W_l`` positions and sums over layers:

    d(x, y) = Σ_l (1 / H_l W_l) Σ_{h,w} Σ_c w_{l,c} (f̂_{l,chw}(x) - f̂_{l,chw}(y))²
            = ‖e(x) - e(y)‖²   with   e(x) = concat_l( sqrt(w_l / (H_l W_l)) ⊙ f̂_l(x) ).

The emoji network uses *uniform* weights ``w_{l,c} = 1 / L`` (L = number of layers; there is no human
perceptual-judgement data to calibrate them), so its distance is the mean over layers of ``‖f̂(x)-f̂(y)‖²``
per position, each in ``[0, 4]`` (``2 - 2·cos``). Typical values between different emoji: 0.5–1.5.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import artifacts
from ..checkpoint import file_sha256, load_checkpoint  # noqa: F401  (scripts/train_feature_net.py imports file_sha256 here)
from ..progress import progress

log = logging.getLogger(__name__)

EMOJI_CHECKPOINT = "checkpoints/emoji_features.pt"
EMOJI_MANIFEST = "checkpoints/emoji_features.manifest.json"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
EXTRACTOR_NAMES = ("emoji", "emoji-random", "inception", "lpips-alex", "lpips-vgg")


def _check_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"{what} must be a torch.Tensor [N, 3, H, W] in [-1, 1], got {type(images).__name__}"
        )
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} must have shape [N, 3, H, W], got {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError(f"{what} is empty")
    return images


def unit_normalise(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each spatial position's channel vector by its length: ``[N, C, H, W] -> [N, C, H, W]``."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


# ---------------------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------------------
class FeatureExtractor:
    """Base class: subclasses implement :meth:`_features` and :meth:`_distance_embedding` on one batch.

    The public methods split the input into batches, move each batch to ``self.device``, run without
    gradients, and return CPU float32 tensors, so metrics never care where the network lives.
    """

    name: str = "abstract"
    batch_size: int = 256

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    # -- to implement ----------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> torch.Tensor:  # [B,3,H,W] on device -> [B,D]
        raise NotImplementedError

    def _distance_embedding(self, x: torch.Tensor) -> torch.Tensor:  # [B,3,H,W] -> [B,P]
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------------------
    def _batched(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        desc: str,
        show_progress: bool | None,
    ) -> torch.Tensor:
        images = _check_images(images)
        starts = range(0, len(images), self.batch_size)
        if show_progress is None:
            show_progress = len(starts) > 4
        out = []
        with torch.no_grad():
            for s in progress(starts, desc=f"{desc} [{self.name}]", disable=not show_progress):
                batch = images[s : s + self.batch_size].to(self.device, torch.float32)
                out.append(fn(batch).float().cpu())
        return torch.cat(out)

    def features(self, images: torch.Tensor, show_progress: bool | None = None) -> torch.Tensor:
        """Global feature vectors: ``[N, 3, H, W]`` in ``[-1, 1]`` → ``[N, D]`` float32 on the CPU."""
        return self._batched(self._features, images, "features", show_progress)

    def distance_embedding(self, images: torch.Tensor, show_progress: bool | None = None) -> torch.Tensor:
        """``[N, 3, H, W]`` → ``[N, P]`` with ``perceptual_distance(x, y) = ‖e(x) − e(y)‖²``."""
        return self._batched(self._distance_embedding, images, "embedding", show_progress)

    def perceptual_distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS-style distance between paired images: ``[N,3,H,W], [N,3,H,W] → [N]``."""
        _check_images(x, "x")
        _check_images(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        ex, ey = self.distance_embedding(x), self.distance_embedding(y)
        return (ex - ey).pow(2).sum(dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"


# ---------------------------------------------------------------------------------------------------------
# The project's emoji feature network
# ---------------------------------------------------------------------------------------------------------
def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 conv → BatchNorm → ReLU (``[B, c_in, H, W] → [B, c_out, H, W]``)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class EmojiFeatureNet(nn.Module):
    """A small VGG-style CNN for 32×32 emoji with a concept head and a style head.

    Four stages, each ending in a tapped activation (the "layers" of the LPIPS-style distance)::

        x      [B,   3, 32, 32]
        stage1 [B,  32, 32, 32]   conv                        (edges, colours)
        stage2 [B,  64, 16, 16]   pool, conv, conv            (parts: eyes, outlines)
        stage3 [B, 128,  8,  8]   pool, conv, conv            (shapes)
        stage4 [B, 256,  4,  4]   pool, conv                  (objects)
        embed  [B, 256]           global average pool of stage4  -> the FID/KID/PR feature vector
        heads  concept [B, n_concepts], style [B, n_styles], subcategory [B, n_subcategories]

    Trained by ``scripts/train_feature_net.py`` with cross-entropy on all heads, so the embedding has to
    encode both *what* is drawn and *how*. Only the trunk and the small style/subcategory heads are
    shipped; the large concept head (1906 classes) is dropped after training to keep the checkpoint small.
    """

    widths = (32, 64, 128, 256)

    def __init__(self, n_concepts: int = 0, n_styles: int = 0, n_subcategories: int = 0):
        super().__init__()
        w1, w2, w3, w4 = self.widths
        self.stage1 = _conv_block(3, w1)
        self.stage2 = nn.Sequential(nn.AvgPool2d(2), _conv_block(w1, w2), _conv_block(w2, w2))
        self.stage3 = nn.Sequential(nn.AvgPool2d(2), _conv_block(w2, w3), _conv_block(w3, w3))
        self.stage4 = nn.Sequential(nn.AvgPool2d(2), _conv_block(w3, w4))
        self.concept_head = nn.Linear(w4, n_concepts) if n_concepts else None
        self.style_head = nn.Linear(w4, n_styles) if n_styles else None
        self.subcategory_head = nn.Linear(w4, n_subcategories) if n_subcategories else None

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four tapped activations, shapes in the class docstring (input ``[B, 3, 32, 32]``)."""
        h1 = self.stage1(x)
        h2 = self.stage2(h1)
        h3 = self.stage3(h2)
        h4 = self.stage4(h3)
        return [h1, h2, h3, h4]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] → [B, 256]``: global average of the last stage (the metric feature vector)."""
        return self.layers(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, 3, 32, 32] → {"embed": [B, 256], "concept": [B, n_c], "style": [B, n_s], ...}`` (heads present)."""
        e = self.embed(x)
        out = {"embed": e}
        for name in ("concept", "style", "subcategory"):
            head = getattr(self, f"{name}_head")
            if head is not None:
                out[name] = head(e)
        return out


def emoji_checkpoint_path() -> Path:
    return artifacts.get("emoji_features").path


def load_emoji_feature_net(
    path: str | os.PathLike | None = None, verify: bool = True
) -> tuple[EmojiFeatureNet, dict]:
    """Load the shipped (or a given) emoji feature network; returns ``(net in eval mode, metadata)``.

    ``verify`` checks the file's sha256 against ``emoji_features.manifest.json`` when that manifest sits next
    to the checkpoint (``fewshot_lib.artifacts``), so a silently changed network cannot produce silently
    changed metrics.
    """
    entry = artifacts.get("emoji_features")
    entry = entry.at(path) if path else entry
    if not entry.path.is_file():
        raise FileNotFoundError(
            f"No emoji feature network at {entry.path}. It ships with the repository (data/{EMOJI_CHECKPOINT}); "
            f"restore it with git or retrain it with `{entry.rebuild}`."
        )
    if verify and entry.manifest_path.is_file():
        entry.check()
    return read_emoji_feature_net(entry.path)


def read_emoji_feature_net(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[EmojiFeatureNet, dict]:
    """Read a checkpoint of ``scripts/train_feature_net.py`` (no check) → ``(net in eval mode, metadata)``.

    The registry's loader for ``emoji_features`` (``fewshot_lib.artifacts.load("emoji_features")``).
    """
    ckpt = load_checkpoint(path)
    for key in ("state_dict", "meta"):
        if key not in ckpt:
            raise ValueError(f"{path} is not an emoji feature-network checkpoint (missing {key!r}).")
    meta = ckpt["meta"]
    net = EmojiFeatureNet(0, len(meta.get("styles", [])), len(meta.get("subcategories", [])))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return net.eval().to(device), meta


class EmojiFeatures(FeatureExtractor):
    """The offline default extractor built on :class:`EmojiFeatureNet`.

    ``features`` is the 256-d embedding; the perceptual distance uses the four stages with uniform weights
    (module docstring). Inputs of another size are resized to 32×32 (bilinear, antialiased) first.
    """

    def __init__(
        self,
        net: EmojiFeatureNet,
        name: str = "emoji",
        device: str | torch.device = "cpu",
        meta: dict | None = None,
    ):
        super().__init__(device)
        self.net = net.eval().to(self.device)
        self.name = name
        self.meta = meta or {}

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (32, 32):
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        return x

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(self._prepare(x))

    def features_and_subcategories(
        self, images: torch.Tensor, show_progress: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: ``[N, 3, H, W]`` → features ``[N, 256]`` and the subcategory head's softmax
        ``[N, n_subcategories]`` (names in ``meta["subcategories"]``)."""
        if self.net.subcategory_head is None:
            raise ValueError(
                f"extractor {self.name!r} has no subcategory head (the untrained control and "
                "networks saved without heads cannot classify); use the shipped 'emoji' extractor."
            )

        def both(x: torch.Tensor) -> torch.Tensor:
            out = self.net(self._prepare(x))
            return torch.cat([out["embed"], out["subcategory"].softmax(dim=1)], dim=1)

        joined = self._batched(both, images, "classify", show_progress)
        return joined[:, : self.net.feature_dim], joined[:, self.net.feature_dim :]

    def _distance_embedding(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.net.layers(self._prepare(x))
        n_layers = len(feats)
        parts = [unit_normalise(f).flatten(1) / (f.shape[2] * f.shape[3] * n_layers) ** 0.5 for f in feats]
        return torch.cat(parts, dim=1)  # [B, Σ_l C_l·H_l·W_l]


def emoji_extractor(
    device: str | torch.device = "cpu", path: str | os.PathLike | None = None
) -> EmojiFeatures:
    net, meta = load_emoji_feature_net(path)
    return EmojiFeatures(net, name=meta.get("name", "emoji"), device=device, meta=meta)


def random_emoji_extractor(seed: int = 0, device: str | torch.device = "cpu") -> EmojiFeatures:
    """The emoji architecture with random (untrained) weights — a control for "does the extractor matter"."""
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        net = EmojiFeatureNet()
    return EmojiFeatures(net, name=f"emoji-random(seed={seed})", device=device)


# ---------------------------------------------------------------------------------------------------------
# ImageNet extractors: only with weights the user already has
# ---------------------------------------------------------------------------------------------------------
def _find_weights(filename: str, explicit: str | os.PathLike | None, env_var: str, how_to: str) -> Path:
    """Locate a weight file without any network access, or raise ``FileNotFoundError`` explaining how to get it.

    Looks at ``explicit``, then ``$env_var``, then ``<torch hub dir>/checkpoints/<filename>``.
    """
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get(env_var):
        candidates.append(Path(os.environ[env_var]))
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    for c in candidates:
        if c.is_file():
            return c
    if explicit:
        raise FileNotFoundError(f"Weight file {explicit} does not exist. {how_to}")
    raise FileNotFoundError(
        f"{filename} was not found (looked in: {', '.join(str(c) for c in candidates)}). fewshot_lib never "
        f"downloads weights. {how_to} Then pass weights=<path>, set {env_var}=<path>, or place the file in the "
        "torch hub cache shown above. Without it, use the offline extractor: get_extractor('emoji')."
    )


class InceptionFeatures(FeatureExtractor):
    """pytorch-fid's FID Inception-v3: pool3 features ``[N, 2048]`` (images bilinearly resized to 299).

    Needs the ``pytorch-fid`` package and its weight file ``pt_inception-2015-12-05-6726825d.pth``.
    Perceptual distances are not defined for Inception; use an LPIPS extractor or ``emoji``.
    """

    name = "inception"
    batch_size = 50

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
        super().__init__(device)
        how_to = (
            "Download it on a machine with internet access from the pytorch-fid release 'fid_weights' "
            f"({INCEPTION_FILE}) and copy it here."
        )
        path = _find_weights(INCEPTION_FILE, weights, "FEWSHOT_INCEPTION_WEIGHTS", how_to)
        try:
            from pytorch_fid import inception as pf_inception
        except ImportError as err:
            raise ImportError("The 'inception' extractor needs `pip install pytorch-fid`.") from err
        self.weights_path = path
        state = torch.load(path, map_location="cpu", weights_only=True)

        # pytorch-fid's builder fetches the weights with `load_state_dict_from_url`; hand it the local file's
        # state dict instead, so the architecture is pytorch-fid's own and nothing touches the network.
        original = pf_inception.load_state_dict_from_url
        pf_inception.load_state_dict_from_url = lambda *args, **kwargs: state
        try:
            # normalize_input=False: our images are already in [-1, 1], the range the FID Inception expects.
            self.model = pf_inception.InceptionV3([3], resize_input=True, normalize_input=False).eval()
        finally:
            pf_inception.load_state_dict_from_url = original
        self.model.to(self.device)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0].flatten(1)  # [B, 2048, 1, 1] -> [B, 2048]

    def _distance_embedding(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "The inception extractor defines no perceptual distance; use 'emoji' or "
            "'lpips-alex'/'lpips-vgg' for LPIPS-style metrics."
        )


class LPIPSFeatures(FeatureExtractor):
    """LPIPS (Zhang et al., 2018) from the ``lpips`` package with a locally available ImageNet backbone.

    The package ships only the small calibration layers; the AlexNet/VGG16 backbone normally comes from a
    torchvision download, which we never trigger: the backbone state dict is loaded from a local file.
    ``resize`` (default ``None`` = native resolution) resizes inputs first, e.g. ``resize=256`` for the
    CDC/MixDL protocol (memory-hungry for pairwise metrics). ``features`` is the global average of the
    last unit-normalised layer.
    """

    batch_size = 64

    def __init__(
        self,
        net: str = "alex",
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        resize: int | None = None,
    ):
        super().__init__(device)
        if net not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"LPIPS backbone must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
        filename = LPIPS_BACKBONE_FILES[net]
        tv_name = {"alex": "alexnet", "vgg": "vgg16"}[net]
        how_to = (
            f"Get torchvision's ImageNet {net} weights ({filename}) on a machine with internet access "
            f"(`torchvision.models.{tv_name}(weights='IMAGENET1K_V1')` saves it in the torch hub cache) and copy it."
        )
        path = _find_weights(filename, weights, f"FEWSHOT_LPIPS_{net.upper()}_WEIGHTS", how_to)
        import lpips  # lazy: heavy import

        self.name = f"lpips-{net}"
        self.resize = resize
        self.weights_path = path
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # random backbone ...
        backbone = torch.load(path, map_location="cpu", weights_only=True)
        for slice_module in model.net.children():  # ... replaced by the local ImageNet weights
            for index, layer in slice_module.named_children():
                for pname, param in layer.named_parameters(recurse=False):
                    key = f"features.{index}.{pname}"
                    if key not in backbone:
                        raise ValueError(f"{path} lacks {key}; is it torchvision's {net} state dict?")
                    param.data.copy_(backbone[key])
        self.model = model.eval().to(self.device)

    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        x = self.model.scaling_layer(x)
        return list(self.model.net(x))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return unit_normalise(self._layers(x)[-1]).mean(dim=(2, 3))

    def _distance_embedding(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for f, lin in zip(self._layers(x), self.model.lins):
            w = lin.model[-1].weight.clamp(min=0).view(1, -1, 1, 1)  # [1, C, 1, 1] learned channel weights
            parts.append((unit_normalise(f) * w.sqrt()).flatten(1) / (f.shape[2] * f.shape[3]) ** 0.5)
        return torch.cat(parts, dim=1)


# ---------------------------------------------------------------------------------------------------------
def get_extractor(
    name: str = "emoji",
    device: str | torch.device = "cpu",
    weights: str | os.PathLike | None = None,
    **kwargs,
) -> FeatureExtractor:
    """The extractor called ``name`` (one of ``EXTRACTOR_NAMES``); ``emoji`` is the offline default.

    ``weights`` points the ImageNet extractors (or ``emoji``) at a local file; nothing is downloaded.
    """
    if isinstance(name, FeatureExtractor):
        return name
    if name == "emoji":
        return emoji_extractor(device=device, path=weights)
    if name == "emoji-random":
        return random_emoji_extractor(seed=kwargs.get("seed", 0), device=device)
    if name == "inception":
        return InceptionFeatures(weights=weights, device=device)
    if name in ("lpips-alex", "lpips-vgg"):
        return LPIPSFeatures(
            net=name.split("-")[1], weights=weights, device=device, resize=kwargs.get("resize")
        )
    raise ValueError(f"Unknown feature extractor {name!r}; choose one of {EXTRACTOR_NAMES}.")
