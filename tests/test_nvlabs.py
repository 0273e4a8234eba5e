"""NVlabs stylegan2-ada-pytorch ``.pkl`` generators: restricted unpickling, conversion, rosinality ↔ NVlabs layout.

The pickles here are **synthetic**: this file writes them itself, with inert stand-in classes whose module and
class names are the ones NVlabs' ``pickle.dump`` of a training snapshot records (``torch_utils.persistence.
_reconstruct_persistent_obj`` with a ``meta`` dict per network module, ``dnnlib.util.EasyDict`` init kwargs,
tensors as torch pickles them, numpy float64 gains) and the key layout of their ``Generator.state_dict()``.
No NVlabs code, and nothing produced by it, is used or committed.

Verified once against the real code (NVlabs/stylegan2-ada-pytorch d72cc7d, in a throwaway directory under /tmp,
CPU, torch 2.14): random generators built with their ``training.networks.Generator`` (biases, noise strengths
and ``w_avg`` randomised), pickled as their training loop does (``copy.deepcopy(G).eval().requires_grad_(False)``
inside ``{'G', 'D', 'G_ema', 'training_set_kwargs'}``), loaded with :func:`load_nvlabs`, images compared with
their ``G(z, c, noise_mode='const', force_fp32=True)`` for 6 z's (max abs difference, scaled / grouped
modulated-conv paths; image max abs in brackets):

* 32 px unconditional, 2 mapping layers, conv_clamp 256, num_fp16_res 2: 8.3e-6 / 4.3e-6 (11.7);
  with truncation ψ = 0.6 (their ``w_avg``): 5.7e-6 / 3.8e-6;
* 16 px conditional (c_dim 5, one-hot c ↔ index), 8 mapping layers: 3.2e-6 / 2.4e-6 (5.1);
* 16 px, conv_clamp 0.5 (so that the clamp binds) and lr_multiplier 0.05: 7.7e-7 / 6.1e-7 (1.4); the same
  weights *without* the clamp differ by 7.09 — the clamp is reproduced, not ignored;
* reloading the saved weights_only copy with ``load_nvlabs``: identical figures;
* a full snapshot (G, D, G_ema, an ``AugmentPipe`` with all 'bgc' + colour augmentations, 16 px, num_fp16_res 4,
  conv_clamp 256) pickled with protocols 2, 3 and 4: 2.6e-6 each;
* discriminators (their ``training.networks.Discriminator``, 'resnet'): 32 px, conv_clamp 256, mbstd group 2,
  num_fp16_res 2: 3.6e-7 (logits up to 0.44); 16 px with conv_clamp 0.3 (binding): 1.2e-7 (logits up to 0.33;
  0.83 off without the clamp); our random D converted with :func:`rosinality_to_nvlabs_d_state` into theirs: 4.8e-7;
  D state dicts round-trip bit-identically;
* their state dict → :func:`nvlabs_to_rosinality_state` → :func:`rosinality_to_nvlabs_state` gave back every
  key and bit-identical tensors (3 models); our random generators (unconditional, and conditional after
  ``add_class`` so that the embedding gain had to be folded) converted with :func:`rosinality_to_nvlabs_state`
  loaded with ``strict=True`` into their Generator and matched with ψ = 0.7: 4.5e-6 and 3.7e-6.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot_lib.models.conditional import normalize_2nd_moment
from fewshot_lib.models.stylegan2 import Discriminator, Generator
from fewshot_lib.models.stylegan2_io import (
    NVlabsPickleError,
    UnsafePickleError,
    load_generator,
    load_nvlabs,
    load_nvlabs_discriminator,
    nvlabs_network,
    nvlabs_to_rosinality_d_state,
    nvlabs_to_rosinality_state,
    read_nvlabs_pickle,
    rosinality_to_nvlabs_d_state,
    rosinality_to_nvlabs_state,
)

W = 16  # z_dim = w_dim of the synthetic networks
FILTER = torch.tensor([1.0, 3.0, 3.0, 1.0])
FILTER2D = (FILTER[:, None] * FILTER[None, :]) / FILTER.sum() ** 2


# --- a synthetic pickle in NVlabs' format, written with inert stand-ins -----------------------------------


def _reconstruct_persistent_obj(meta):  # never called here: only its name is pickled
    raise AssertionError("a stand-in; the loader must not call it")


class EasyDict(dict):
    """Pickles under dnnlib.util.EasyDict, as NVlabs' init kwargs do."""


class _Persistent:
    """Pickles exactly as an NVlabs @persistent_class module does: REDUCE of _reconstruct_persistent_obj(meta)."""

    def __init__(self, class_name: str, state: dict, module_src: str = "# training/networks.py source\n"):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


@contextlib.contextmanager
def _nvlabs_names():
    """Let pickle find the stand-ins under NVlabs' module names while the test writes a file."""
    names = {
        "torch_utils": None,
        "torch_utils.persistence": _reconstruct_persistent_obj,
        "dnnlib": None,
        "dnnlib.util": EasyDict,
    }
    added = []
    try:
        for mod, obj in names.items():
            assert mod not in sys.modules, f"{mod} unexpectedly importable"
            m = types.ModuleType(mod)
            if obj is not None:
                setattr(m, obj.__name__, obj)
                obj.__module__ = mod
            sys.modules[mod] = m
            added.append(mod)
        yield
    finally:
        for mod in added:
            sys.modules.pop(mod, None)
        _reconstruct_persistent_obj.__module__ = EasyDict.__module__ = __name__


def _module(class_name, params=(), buffers=(), children=(), **attrs):
    """The ``__dict__`` of a torch module as NVlabs' persistence records it, wrapped as a persistent object."""
    state = dict(
        training=False,
        _parameters=OrderedDict((k, torch.nn.Parameter(v, requires_grad=False)) for k, v in params),
        _buffers=OrderedDict(buffers),
        _non_persistent_buffers_set=set(),
        _backward_hooks=OrderedDict(),
        _forward_hooks=OrderedDict(),
        _forward_pre_hooks=OrderedDict(),
        _state_dict_hooks=OrderedDict(),
        _load_state_dict_pre_hooks=OrderedDict(),
        _modules=OrderedDict(children),
        _init_args=(),
        _init_kwargs=EasyDict(attrs.pop("init_kwargs", {})),
        **attrs,
    )
    return _Persistent(class_name, state)


def _fc(g, n_in, n_out, lr=1.0, activation="linear", bias_init=0.0):
    weight = torch.randn(n_out, n_in, generator=g) / lr
    bias = torch.randn(n_out, generator=g) * 0.2 + bias_init
    return _module(
        "FullyConnectedLayer",
        [("weight", weight), ("bias", bias)],
        activation=activation,
        weight_gain=np.float64(lr / np.sqrt(n_in)),
        bias_gain=lr,
    ), {"weight": weight, "bias": bias}


def synthetic_generator(
    res=16, c_dim=0, n_map=2, lr=0.01, ch=(16, 16, 8), conv_clamp=256.0, seed=0, architecture="skip", z_dim=W
):
    """An NVlabs-layout Generator module tree (persistent stand-ins) and its flat state ``{name: tensor}``."""
    g = torch.Generator().manual_seed(seed)
    flat: dict[str, torch.Tensor] = {}
    blocks = [2**r for r in range(2, int(math.log2(res)) + 1)]
    channels = dict(zip(blocks, ch))
    # mapping
    kids = []
    if c_dim:
        m, t = _fc(g, c_dim, W)
        kids.append(("embed", m))
        flat.update({f"mapping.embed.{k}": v for k, v in t.items()})
    for i in range(n_map):
        m, t = _fc(g, (z_dim + (W if c_dim else 0)) if i == 0 else W, W, lr=lr, activation="lrelu")
        kids.append((f"fc{i}", m))
        flat.update({f"mapping.fc{i}.{k}": v for k, v in t.items()})
    w_avg = torch.randn(W, generator=g)
    flat["mapping.w_avg"] = w_avg
    num_ws = 2 * len(blocks)
    mapping = _module(
        "MappingNetwork",
        buffers=[("w_avg", w_avg)],
        children=kids,
        z_dim=z_dim,
        c_dim=c_dim,
        w_dim=W,
        num_ws=num_ws,
        num_layers=n_map,
        w_avg_beta=0.995,
    )
    # synthesis
    syn_kids = []
    for r in blocks:
        b, bk = f"synthesis.b{r}", []
        params = []
        if r == 4:
            params.append(("const", torch.randn(channels[4], 4, 4, generator=g)))
        layer_names = ["conv1"] if r == 4 else ["conv0", "conv1"]
        for name in layer_names:
            cin = channels[r] if name == "conv1" else channels[r // 2]
            aff, ta = _fc(g, W, cin, bias_init=1.0)
            lp = [
                ("weight", torch.randn(channels[r], cin, 3, 3, generator=g)),
                ("noise_strength", torch.randn((), generator=g)),
                ("bias", torch.randn(channels[r], generator=g)),
            ]
            lb = [("resample_filter", FILTER2D.clone()), ("noise_const", torch.randn(r, r, generator=g))]
            bk.append(
                (
                    name,
                    _module(
                        "SynthesisLayer",
                        lp,
                        lb,
                        [("affine", aff)],
                        resolution=r,
                        up=2 if name == "conv0" else 1,
                        use_noise=True,
                        activation="lrelu",
                        conv_clamp=conv_clamp,
                        padding=1,
                        act_gain=np.float64(np.sqrt(2)),
                    ),
                )
            )
            flat.update({f"{b}.{name}.{k}": v for k, v in lp + lb})
            flat.update({f"{b}.{name}.affine.{k}": v for k, v in ta.items()})
        aff, ta = _fc(g, W, channels[r], bias_init=1.0)
        tp = [
            ("weight", torch.randn(3, channels[r], 1, 1, generator=g)),
            ("bias", torch.randn(3, generator=g)),
        ]
        bk.append(
            (
                "torgb",
                _module(
                    "ToRGBLayer",
                    tp,
                    children=[("affine", aff)],
                    conv_clamp=conv_clamp,
                    weight_gain=np.float64(1 / np.sqrt(channels[r])),
                ),
            )
        )
        flat.update({f"{b}.torgb.{k}": v for k, v in tp})
        flat.update({f"{b}.torgb.affine.{k}": v for k, v in ta.items()})
        flat.update({f"{b}.{k}": v for k, v in params})
        flat[f"{b}.resample_filter"] = FILTER2D.clone()
        syn_kids.append(
            (
                f"b{r}",
                _module(
                    "SynthesisBlock",
                    params,
                    [("resample_filter", FILTER2D.clone())],
                    bk,
                    in_channels=0 if r == 4 else channels[r // 2],
                    w_dim=W,
                    resolution=r,
                    img_channels=3,
                    is_last=r == res,
                    architecture=architecture,
                    use_fp16=r == res,
                    num_conv=len(layer_names),
                    num_torgb=1,
                ),
            )
        )
    syn = _module(
        "SynthesisNetwork",
        children=syn_kids,
        w_dim=W,
        img_resolution=res,
        img_channels=3,
        block_resolutions=blocks,
        num_ws=num_ws,
    )
    init_kwargs = dict(
        z_dim=z_dim,
        w_dim=W,
        mapping_kwargs=EasyDict(num_layers=n_map),
        synthesis_kwargs=EasyDict(channel_base=256, channel_max=16, num_fp16_res=1, conv_clamp=conv_clamp),
        c_dim=c_dim,
        img_resolution=res,
        img_channels=3,
    )
    G = _module(
        "Generator",
        children=[("synthesis", syn), ("mapping", mapping)],
        z_dim=z_dim,
        c_dim=c_dim,
        w_dim=W,
        img_resolution=res,
        img_channels=3,
        init_kwargs=init_kwargs,
    )
    return G, flat, init_kwargs


def synthetic_discriminator(
    res=16, ch=(16, 16, 8), conv_clamp=256.0, group=2, c_dim=0, architecture="resnet", seed=0
):
    """An NVlabs-layout Discriminator module tree and its flat state."""
    g = torch.Generator().manual_seed(seed)
    channels = dict(zip([2**r for r in range(2, int(math.log2(res)) + 1)], ch))
    flat, kids = {}, []

    def conv(prefix, cin, cout, k, act, down=1, bias=True, clamp=conv_clamp):
        p = [("weight", torch.randn(cout, cin, k, k, generator=g))] + (
            [("bias", torch.randn(cout, generator=g) * 0.3)] if bias else []
        )
        b = [("resample_filter", FILTER2D.clone())]
        flat.update({f"{prefix}.{n}": v for n, v in p + b})
        return _module(
            "Conv2dLayer",
            p,
            b,
            activation=act,
            up=1,
            down=down,
            conv_clamp=clamp,
            padding=k // 2,
            weight_gain=np.float64(1 / np.sqrt(cin * k * k)),
            act_gain=np.float64(np.sqrt(2)),
        )

    for r in sorted(channels, reverse=True)[:-1]:
        b, bk = f"b{r}", []
        if r == res:
            bk.append(("fromrgb", conv(f"{b}.fromrgb", 3, channels[r], 1, "lrelu")))
        bk.append(("conv0", conv(f"{b}.conv0", channels[r], channels[r], 3, "lrelu")))
        bk.append(("conv1", conv(f"{b}.conv1", channels[r], channels[r // 2], 3, "lrelu", down=2)))
        bk.append(
            (
                "skip",
                conv(f"{b}.skip", channels[r], channels[r // 2], 1, "linear", down=2, bias=False, clamp=None),
            )
        )
        flat[f"{b}.resample_filter"] = FILTER2D.clone()
        kids.append(
            (
                b,
                _module(
                    "DiscriminatorBlock",
                    buffers=[("resample_filter", FILTER2D.clone())],
                    children=bk,
                    in_channels=0 if r == res else channels[r],
                    resolution=r,
                    img_channels=3,
                    architecture=architecture,
                ),
            )
        )
    c4 = channels[4]
    epi = [
        ("mbstd", _module("MinibatchStdLayer", group_size=group, num_channels=1)),
        ("conv", conv("b4.conv", c4 + 1, c4, 3, "lrelu")),
    ]
    for name, n_in, n_out, act in (("fc", c4 * 16, c4, "lrelu"), ("out", c4, 1, "linear")):
        m, t = _fc(g, n_in, n_out, activation=act)
        epi.append((name, m))
        flat.update({f"b4.{name}.{k}": v for k, v in t.items()})
    kids.append(
        (
            "b4",
            _module(
                "DiscriminatorEpilogue",
                children=epi,
                in_channels=c4,
                cmap_dim=0,
                resolution=4,
                img_channels=3,
                architecture="resnet",
            ),
        )
    )
    D = _module(
        "Discriminator",
        children=kids,
        c_dim=c_dim,
        img_resolution=res,
        img_channels=3,
        init_kwargs=dict(c_dim=c_dim, img_resolution=res, img_channels=3),
    )
    return D, flat


def write_snapshot(path: Path, G, extra: dict | None = None, protocol: int = 4) -> Path:
    snap = {
        "training_set_kwargs": EasyDict(path="data.zip", use_labels=False),
        "G": G,
        "D": None,
        "G_ema": G,
        "augment_pipe": None,
        **(extra or {}),
    }
    with _nvlabs_names(), open(path, "wb") as f:
        pickle.dump(snap, f, protocol=protocol)
    return path


# --- tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4])  # 2021-era pickles (Python 3.7) are protocol 3
def test_tensors_and_init_kwargs_are_extracted(tmp_path, protocol):
    G, flat, kwargs = synthetic_generator()
    snap = read_nvlabs_pickle(write_snapshot(tmp_path / "net.pkl", G, protocol=protocol))
    assert snap["training_set_kwargs"] == {"path": "data.zip", "use_labels": False}
    net = nvlabs_network(snap["G_ema"])
    assert net.class_name == "Generator" and net.persistence_version == 6 and len(net.module_src_sha256) == 64
    assert set(net.state) == set(flat)
    assert all(torch.equal(net.state[k], flat[k]) for k in flat)
    assert net.init_kwargs == {
        **kwargs,
        "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": dict(kwargs["synthesis_kwargs"]),
    }
    assert (
        net.attrs["synthesis.b8.conv0"]["conv_clamp"] == 256.0 and net.attrs["synthesis.b8.conv0"]["up"] == 2
    )
    assert isinstance(net.attrs["mapping.fc0"]["weight_gain"], float)  # numpy float64 → float
    assert net.classes["synthesis.b16.torgb"] == "ToRGBLayer"


def test_conversion_gives_the_expected_architecture_and_places_every_tensor(tmp_path):
    G_nv, flat, _ = synthetic_generator(res=16, n_map=3, lr=0.05, ch=(16, 16, 8))
    out = tmp_path / "converted.pt"
    ck = load_nvlabs(write_snapshot(tmp_path / "net.pkl", G_nv), save_to=out)
    G = ck.g_ema
    assert ck.config == dict(
        size=16,
        style_dim=W,
        n_mlp=3,
        lr_mlp=0.05,
        channel_base=128,
        channel_max=16,
        blur_kernel=[1, 3, 3, 1],
        fused=None,
        channel_multiplier=2,
        conv_clamp=256.0,  # NVlabs' clamp is part of the architecture, so the saved copy rebuilds it
    )
    assert G.channels == {4: 16, 8: 16, 16: 8}
    assert ck.info["nvlabs"]["conv_clamp"] == 256.0 and ck.info["nvlabs"]["fp16_resolutions"] == [16]
    assert torch.equal(G.input.input[0], flat["synthesis.b4.const"])
    assert torch.equal(G.convs[0].conv.weight[0], flat["synthesis.b8.conv0.weight"])
    assert torch.equal(G.convs[3].conv.modulation.bias, flat["synthesis.b16.conv1.affine.bias"])
    assert torch.equal(G.convs[3].activate.bias, flat["synthesis.b16.conv1.bias"])
    assert float(G.convs[2].noise.weight.detach()) == float(flat["synthesis.b16.conv0.noise_strength"])
    assert torch.equal(G.noises.noise_2[0, 0], flat["synthesis.b8.conv1.noise_const"])
    assert torch.equal(G.to_rgbs[1].bias.view(3), flat["synthesis.b16.torgb.bias"])
    assert torch.equal(G.style[3].weight, flat["mapping.fc2.weight"])
    assert torch.equal(ck.latent_avg.view(-1), flat["mapping.w_avg"])
    # the mapping, computed by hand from the NVlabs tensors: normalise, then lrelu(x Wᵀ·lr/√in + b·lr)·√2
    z = torch.randn(4, W, generator=torch.Generator().manual_seed(1))
    x = normalize_2nd_moment(z)
    for i in range(3):
        w, b = flat[f"mapping.fc{i}.weight"], flat[f"mapping.fc{i}.bias"]
        x = torch.nn.functional.leaky_relu(x @ w.t() * (0.05 / math.sqrt(W)) + b * 0.05, 0.2) * math.sqrt(2)
    torch.testing.assert_close(G.mapping(z), x, rtol=1e-5, atol=1e-5)
    img, _ = G(z, randomize_noise=False)
    assert img.shape == (4, 3, 16, 16) and torch.isfinite(img).all()
    # the saved copy is tensors only (weights_only) and reloads to the same network, clamp included
    saved = torch.load(out, weights_only=True)
    assert saved["info"]["nvlabs"]["conv_clamp"] == 256.0 and saved["config"] == ck.config
    again = load_nvlabs(out)
    assert again.g_ema.conv_clamp == 256.0
    torch.testing.assert_close(
        again.g_ema(z, randomize_noise=False, truncation=0.5)[0],
        G(z, randomize_noise=False, truncation=0.5)[0],
        rtol=0,
        atol=1e-6,
    )
    assert torch.equal(load_generator(out).latent_avg, ck.latent_avg)


def test_conditional_generator_embeds_one_hot_classes_like_nvlabs(tmp_path):
    G_nv, flat, _ = synthetic_generator(res=8, c_dim=3, n_map=2, ch=(16, 8))
    ck = load_nvlabs(write_snapshot(tmp_path / "cond.pkl", G_nv))
    G = ck.g_ema
    assert G.c_dim == 3 and ck.config["c_dim"] == 3
    z, c = torch.randn(3, W, generator=torch.Generator().manual_seed(2)), torch.tensor([2, 0, 1])
    one_hot = torch.nn.functional.one_hot(c, 3).float()
    y = one_hot @ flat["mapping.embed.weight"].t() / math.sqrt(3) + flat["mapping.embed.bias"]
    x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(y)], 1)
    for i in range(2):
        w, b = flat[f"mapping.fc{i}.weight"], flat[f"mapping.fc{i}.bias"]
        x = torch.nn.functional.leaky_relu(
            x @ w.t() * (0.01 / math.sqrt(w.shape[1])) + b * 0.01, 0.2
        ) * math.sqrt(2)
    torch.testing.assert_close(G.mapping(z, c), x, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_conv_clamp_bounds_every_layer_like_nvlabs():
    G = Generator(16, style_dim=W, n_mlp=1, channel_base=128, channel_max=8).eval()
    z = torch.randn(2, W, generator=torch.Generator().manual_seed(0))
    free, _, feats = G(z, randomize_noise=False, return_features=True)
    G.set_conv_clamp(1e9)
    torch.testing.assert_close(G(z, randomize_noise=False)[0], free, rtol=0, atol=1e-6)
    c = 0.5 * min(float(f.abs().max()) for f in feats)
    G.set_conv_clamp(c)
    assert G.config["conv_clamp"] == c and Generator(**G.config).conv_clamp == c  # exports rebuild it
    rgb = []

    def own_rgb(mod, inputs, out):  # ToRGB's conv + bias: its output less the up-sampled skip
        rgb.append(out - mod.upsample(inputs[2]) if len(inputs) > 2 else out)

    hooks = [m.register_forward_hook(own_rgb) for m in [G.to_rgb1, *G.to_rgbs]]
    _, _, feats = G(z, randomize_noise=False, return_features=True)
    assert max(float(f.abs().max()) for f in feats) <= c + 1e-6
    assert max(float(r.abs().max()) for r in rgb) <= c + 1e-5  # ToRGB's own conv + bias, before the skip sum
    for h in hooks:
        h.remove()
    G.set_conv_clamp(None)
    assert "conv_clamp" not in G.config  # unclamped models keep the config they always had
    torch.testing.assert_close(G(z, randomize_noise=False)[0], free, rtol=0, atol=0)


class _WritesMarker:
    def __init__(self, marker: Path, how: str = "open"):
        self.marker, self.how = marker, how

    def __reduce__(self):  # what a malicious pickle does: make the unpickler call a function
        if self.how == "eval":
            return (eval, (f"open({str(self.marker)!r}, 'w').close()",))
        if self.how == "system":
            import os

            return (os.system, (f"touch {str(self.marker)!r}",))
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how, name", [("eval", r"builtins\.eval"), ("system", r"(posix|os|nt)\.system")])
def test_eval_and_system_payloads_are_refused(tmp_path, how, name):
    marker = tmp_path / "marker"
    G, _, _ = synthetic_generator(res=8, ch=(8, 8))
    bad = write_snapshot(tmp_path / f"{how}.pkl", G, extra={"G_ema": _WritesMarker(marker, how)})
    with pytest.raises(UnsafePickleError, match=rf"{how}\.pkl was refused.*{name}"):
        load_nvlabs(bad)
    assert not marker.exists()


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    G, _, _ = synthetic_generator(res=8, ch=(8, 8))
    bad = write_snapshot(tmp_path / "evil.pkl", G, extra={"augment_pipe": _WritesMarker(marker)})
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(builtins|io)\.open"):
        load_nvlabs(bad)
    assert not marker.exists()
    # the same object hidden deep inside a network's attributes
    G, _, _ = synthetic_generator(res=8, ch=(8, 8))
    G.meta["state"]["_modules"]["mapping"].meta["state"]["payload"] = _WritesMarker(marker)
    with pytest.raises(UnsafePickleError, match="deep.pkl"):
        load_nvlabs(write_snapshot(tmp_path / "deep.pkl", G))
    assert not marker.exists()
    # sanity: the payload does run under plain pickle, so the checks above can fail
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_WritesMarker(marker), f)
    pickle.loads((tmp_path / "plain.pkl").read_bytes()).close()
    assert marker.exists()


def test_persistence_source_code_is_never_executed(tmp_path):
    marker = tmp_path / "from_module_src"
    G, _, _ = synthetic_generator(res=8, ch=(8, 8))
    G.meta["module_src"] = f"open({str(marker)!r}, 'w').close()\n"  # NVlabs' own loader would exec this
    ck = load_nvlabs(write_snapshot(tmp_path / "src.pkl", G))
    assert not marker.exists() and ck.g_ema.size == 8


def test_truncated_empty_and_foreign_files_give_clear_errors(tmp_path):
    G, _, _ = synthetic_generator(res=8, ch=(8, 8))
    good = write_snapshot(tmp_path / "good.pkl", G).read_bytes()
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(NVlabsPickleError, match=r"cut\.pkl is truncated or corrupt"):
        load_nvlabs(tmp_path / "cut.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(NVlabsPickleError, match=r"empty\.pkl is empty"):
        load_nvlabs(tmp_path / "empty.pkl")
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(NVlabsPickleError, match="not a pickle"):
        load_nvlabs(tmp_path / "text.pkl")
    torch.save({"g_ema": {}}, tmp_path / "plain.pt")
    with pytest.raises(NVlabsPickleError, match="without NVlabs info"):
        load_nvlabs(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError):
        load_nvlabs(tmp_path / "missing.pkl")


def test_tensorflow_pickles_are_refused_with_advice(tmp_path):
    body = b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01."
    (tmp_path / "tf.pkl").write_bytes(body)
    with pytest.raises(UnsafePickleError, match="TensorFlow-era.*legacy.py"):
        load_nvlabs(tmp_path / "tf.pkl")


@pytest.mark.parametrize(
    "kind, match",
    [("resnet", "architecture='resnet'"), ("zdim", "z_dim=8 differs"), ("filter", "resample_filter")],
)
def test_architectures_this_package_cannot_reproduce_are_refused(tmp_path, kind, match):
    G, _, _ = synthetic_generator(
        res=8,
        ch=(8, 8),
        architecture="resnet" if kind == "resnet" else "skip",
        z_dim=8 if kind == "zdim" else W,
    )
    if kind == "filter":
        blk = G.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]["b8"]
        blk.meta["state"]["_buffers"]["resample_filter"] = torch.ones(4, 4) / 16
    with pytest.raises(NVlabsPickleError, match=match):
        load_nvlabs(write_snapshot(tmp_path / f"{kind}.pkl", G))


@pytest.mark.parametrize("c_dim", [0, 3])
def test_rosinality_nvlabs_state_dict_round_trip(c_dim):
    G = Generator(16, style_dim=W, n_mlp=2, channel_base=128, channel_max=16, c_dim=c_dim).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias") or "noise" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.3)
    if c_dim:
        G.add_class(torch.Generator().manual_seed(0))  # gain stays 1/√3 while NVlabs would use 1/√4
    lat = G.mean_latent(64, generator=torch.Generator().manual_seed(0))
    nv = rosinality_to_nvlabs_state(G.state_dict(), lat)
    # the NVlabs key layout of the synthetic writer (the real one, observed): same keys and shapes
    _, flat, _ = synthetic_generator(res=16, c_dim=G.c_dim, ch=(16, 16, 8))
    assert {k: tuple(v.shape) for k, v in nv.items()} == {k: tuple(v.shape) for k, v in flat.items()}
    back, w_avg = nvlabs_to_rosinality_state(nv)
    G2 = Generator(**G.config).eval()
    G2.load_state_dict(back, strict=True)
    assert torch.equal(w_avg, lat)
    z = torch.randn(4, W, generator=torch.Generator().manual_seed(5))
    c = torch.tensor([0, 1, 2, 3]) if c_dim else None
    torch.testing.assert_close(
        G2(z, c=c, randomize_noise=False)[0], G(z, c=c, randomize_noise=False)[0], rtol=1e-5, atol=1e-5
    )
    if not c_dim:  # unconditional: an exact re-indexing both ways
        assert set(back) == set(G.state_dict()) and all(
            torch.equal(back[k], v) for k, v in G.state_dict().items()
        )


def test_non_finite_weights_are_refused_by_name(tmp_path):
    G, _, _ = synthetic_generator(res=8, ch=(8, 8))
    torgb = (
        G.meta["state"]["_modules"]["synthesis"]
        .meta["state"]["_modules"]["b8"]
        .meta["state"]["_modules"]["torgb"]
    )
    torgb.meta["state"]["_parameters"]["bias"] = torch.nn.Parameter(torch.tensor([0.0, float("nan"), 0.0]))
    with pytest.raises(NVlabsPickleError, match=r"synthesis\.b8\.torgb\.bias.*NaN"):
        load_nvlabs(write_snapshot(tmp_path / "nan.pkl", G))


def test_discriminator_conversion_places_every_tensor_and_clamps(tmp_path):
    G, _, _ = synthetic_generator(res=16)
    D_nv, flat = synthetic_discriminator(res=16, ch=(16, 16, 8), group=2)
    D = load_nvlabs_discriminator(write_snapshot(tmp_path / "gd.pkl", G, extra={"D": D_nv}))
    assert D.config["size"] == 16 and D.config["stddev_group"] == 2 and D.channels == {4: 16, 8: 16, 16: 8}
    assert torch.equal(D.convs[0][0].weight, flat["b16.fromrgb.weight"])
    assert torch.equal(D.convs[1].conv2[1].weight, flat["b16.conv1.weight"])
    assert torch.equal(D.convs[2].skip[1].weight, flat["b8.skip.weight"])
    assert torch.equal(D.final_linear[1].bias, flat["b4.out.bias"]) and D.conv_clamp == 256.0
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert D(x).shape == (4, 1)
        _, feats = D(x, return_features=True)
        c = 0.5 * min(float(feats[0].abs().max()), float(feats[-2].abs().max()))
        D.set_conv_clamp(c)  # fromrgb and final_conv outputs (activated convs) are clamped
        _, clamped = D(x, return_features=True)
        assert float(clamped[0].abs().max()) <= c + 1e-6 and float(clamped[-2].abs().max()) <= c + 1e-6
        D.set_conv_clamp(None)
        assert torch.equal(D(x, return_features=True)[1][-1], feats[-1])
    # the inverse layout is NVlabs' (same keys and shapes as the synthetic writer) and round-trips exactly
    nv = rosinality_to_nvlabs_d_state(D.state_dict())
    assert {k: tuple(v.shape) for k, v in nv.items()} == {k: tuple(v.shape) for k, v in flat.items()}
    back = nvlabs_to_rosinality_d_state(nv)
    assert set(back) == set(D.state_dict()) and all(
        torch.equal(back[k], v) for k, v in D.state_dict().items()
    )


@pytest.mark.parametrize(
    "kind, match", [("cond", "conditional discriminator"), ("skip", "architecture='skip'")]
)
def test_discriminators_this_package_cannot_reproduce_are_refused(tmp_path, kind, match):
    G, _, _ = synthetic_generator(res=8, ch=(8, 8))
    D_nv, _ = synthetic_discriminator(
        res=8,
        ch=(8, 8),
        c_dim=3 if kind == "cond" else 0,
        architecture="skip" if kind == "skip" else "resnet",
    )
    with pytest.raises(NVlabsPickleError, match=match):
        load_nvlabs_discriminator(write_snapshot(tmp_path / f"{kind}.pkl", G, extra={"D": D_nv}))


def test_discriminator_state_round_trip_from_this_package():
    D = Discriminator(16, channel_base=128, channel_max=16, stddev_group=2).eval()
    back = nvlabs_to_rosinality_d_state(rosinality_to_nvlabs_d_state(D.state_dict()))
    assert set(back) == set(D.state_dict()) and all(
        torch.equal(back[k], v) for k, v in D.state_dict().items()
    )
    with pytest.raises(ValueError, match="no NVlabs counterpart"):
        rosinality_to_nvlabs_d_state({**D.state_dict(), "sim_linear.0.weight": torch.zeros(2, 2)})
