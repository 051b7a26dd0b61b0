"""Importing PyTorch weights (RobustBench WideResNet / PreActResNet-18, torchvision ResNet-18/50).

The fixtures in ``tests/fixtures/torch`` were written by ``scripts/make_torch_fixtures.py`` in
a separate environment with PyTorch: state dicts (``.safetensors``, one ``.pt``), images (NCHW)
and the PyTorch models' eval-mode logits in float32 and float64, and the key names, shapes and
parameter counts of the full-size definitions (``torch_keys.json``). These tests need no
PyTorch (the one ``.pt`` round trip runs only where it is installed).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import geomrobust as gr
from geomrobust.io import CorruptFileError
from geomrobust.models import torch as archs
from geomrobust.models.torch import from_torch, read_state_dict, torch_state_dict_keys
from geomrobust.ops import batch_logit_difference_grads

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
NUMERIC = sorted(p.name[: -len("_io.npz")] for p in FIXTURES.glob("*_io.npz"))
SAFETENSORS = [n for n in NUMERIC if (FIXTURES / f"{n}.safetensors").exists()]
TORCH_KEYS = json.loads((FIXTURES / "torch_keys.json").read_text())

# sum(p.numel() for p in model.parameters()) of the PyTorch definitions (also in
# torch_keys.json, written by the fixture script from the PyTorch models)
PARAM_COUNTS = {
    "wrn_28_10": 36_479_194,
    "wrn_28_10_sub_block1": 38_119_866,
    "wrn_34_10": 46_160_474,
    "wrn_70_16": 266_796_506,
    "wrn_70_16_cifar100": 266_888_756,
    "preact_resnet18": 11_171_146,
    "preact_resnet18_bn": 11_172_170,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet50_cifar10": 23_528_522,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
    "dm_wrn_28_10_swish": 36_479_194,
    "dm_preact_resnet18": 12_548_426,
    "dm_preact_resnet34_cifar100": 22_702_756,
}

# max |JAX - PyTorch| / max |PyTorch| over the fixture logits
TOL = {"float32": 1e-4, "float64": 1e-9}


def _io(name):
    with np.load(FIXTURES / f"{name}_io.npz", allow_pickle=False) as z:
        spec = json.loads(str(z["spec"]))
        return spec, z["images"], z["logits"], z["logits64"]


def _load(source, spec, **kw):
    return from_torch(source, spec["architecture"], num_classes=spec["num_classes"], **kw)


def _logits(model, images_nchw, dtype=jnp.float32):
    x = jnp.asarray(np.transpose(images_nchw, (0, 2, 3, 1)), dtype)
    return np.asarray(jax.jit(lambda v: model(v))(x))


def _rel(out, ref) -> float:
    return float(np.abs(np.float64(out) - ref).max() / np.abs(ref).max())


def _param_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def wrn():
    """The WRN-16-1 fixture: (state dict, spec, images, float32 logits)."""
    spec, images, logits, _ = _io("wrn_16_1")
    return read_state_dict(FIXTURES / "wrn_16_1.safetensors"), spec, images, logits


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", SAFETENSORS)
def test_logits_equal_pytorch(name, dtype):
    """NHWC logits of the imported model equal PyTorch's NCHW logits (BatchNorm statistics,
    paddings, strides, shortcuts and the classifier all checked by the numbers)."""
    spec, images, logits32, logits64 = _io(name)
    model = _load(FIXTURES / f"{name}.safetensors", spec, dtype=dtype, **spec["config"])
    out = _logits(model, images, jnp.dtype(dtype))
    assert out.dtype == np.dtype(dtype)
    ref = logits32 if dtype == "float32" else logits64
    assert out.shape == ref.shape
    assert _rel(out, ref) <= TOL[dtype], f"{name} {dtype}: {_rel(out, ref):.3g}"


@pytest.mark.parametrize("name", SAFETENSORS)
def test_input_gradients_equal_pytorch(name):
    """The geometry differentiates the classifier: the float64 input gradient of
    ``logit_1 - logit_0`` equals PyTorch's autograd (ReLU and max-pooling subgradients
    included), through the package's batched gradient operator."""
    spec, images, _, _ = _io(name)
    with np.load(FIXTURES / f"{name}_io.npz", allow_pickle=False) as z:
        ref = np.transpose(z["grad64"], (0, 2, 3, 1))
    model = _load(FIXTURES / f"{name}.safetensors", spec, dtype="float64", **spec["config"])
    x = jnp.asarray(np.transpose(images, (0, 2, 3, 1)), jnp.float64)
    n = x.shape[0]
    _, g = jax.jit(batch_logit_difference_grads)(
        gr.as_classifier(model), x, jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32)
    )
    assert _rel(np.asarray(g), ref) <= 1e-9, f"{name}: {_rel(np.asarray(g), ref):.3g}"


def test_fixtures_cover_every_architecture():
    archs_seen = {_io(n)[0]["architecture"] for n in SAFETENSORS}
    assert archs_seen == set(archs.ARCHITECTURES)
    total = sum(f.stat().st_size for f in FIXTURES.iterdir())
    assert total < 8 * 2**20, f"fixtures take {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", sorted(TORCH_KEYS))
def test_full_size_keys_shapes_and_parameter_counts(name):
    """Every key and shape of the full-size PyTorch definitions; parameter counts of the NNX
    models built abstractly with ``nnx.eval_shape``."""
    e = TORCH_KEYS[name]
    ref = {k: tuple(v) for k, v in e["keys"].items() if not k.endswith(".num_batches_tracked")}
    keys = torch_state_dict_keys(e["architecture"], num_classes=e["num_classes"], **e["config"])
    assert keys == ref
    assert e["num_params"] == PARAM_COUNTS[name]
    model = nnx.eval_shape(
        lambda: archs.build(e["architecture"], e["num_classes"], rngs=nnx.Rngs(0), **e["config"])
    )
    assert _param_count(model) == PARAM_COUNTS[name]


def test_named_full_size_models_build_abstractly():
    cases = [
        (lambda: archs.WideResNet(28, 10, rngs=nnx.Rngs(0)), 36_479_194),
        (lambda: archs.WideResNet(70, 16, rngs=nnx.Rngs(0)), 266_796_506),
        (lambda: archs.resnet50(1000, rngs=nnx.Rngs(0)), 25_557_032),
        (lambda: archs.resnet18(1000, rngs=nnx.Rngs(0)), 11_689_512),
        (lambda: archs.PreActResNet18(10, rngs=nnx.Rngs(0)), 11_171_146),
    ]
    for make, count in cases:
        model = nnx.eval_shape(make)
        assert _param_count(model) == count
        x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
        out = jax.eval_shape(lambda x, make=make: make()(x), x)
        assert out.shape == (2, dict(model.config)["num_classes"]) and out.dtype == jnp.float32


# ----------------------------------------------------------------------------- graphdefs


def test_graphdefs_are_hashable_and_equal_across_keys(wrn):
    sd, spec, images, logits = wrn
    a = archs.build("wide_resnet", 10, rngs=nnx.Rngs(0), depth=16, widen_factor=1)
    b = archs.build("wide_resnet", 10, rngs=nnx.Rngs(1), depth=16, widen_factor=1)
    c = _load(sd, spec, **spec["config"])
    (ga, sa), (gb, sb), (gc, _) = nnx.split(a), nnx.split(b), nnx.split(c)
    assert ga == gb == gc
    assert hash(ga) == hash(gb) == hash(gc)
    assert not np.allclose(sa["conv1"]["kernel"][...], sb["conv1"]["kernel"][...])
    for m in (a, c):
        for _, module in nnx.iter_modules(m):
            if hasattr(module, "config"):
                assert isinstance(module.config, tuple)
                hash(module.config)
    assert dict(c.config)["depth"] == 16

    # the graphdef as a jit cache key: one compilation serves both parameter sets
    @jax.jit
    def f(state, x):
        return nnx.merge(ga, state)(x)

    x = jnp.asarray(np.transpose(images, (0, 2, 3, 1)))
    assert _rel(f(nnx.state(c), x), logits) <= 1e-4
    f(sb, x)
    assert f._cache_size() == 1


# ----------------------------------------------------------------------------- key checks


def test_missing_unexpected_and_misshaped_keys_are_all_listed(wrn):
    sd, spec, _, _ = wrn
    bad = dict(sd)
    del bad["block2.layer.1.conv2.weight"], bad["bn1.running_var"]
    bad["block4.layer.0.conv1.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    bad["fc.weight"] = np.zeros((100, 64), np.float32)
    with pytest.raises(ValueError) as info:
        _load(bad, spec, **spec["config"])
    msg = str(info.value)
    assert "\n" not in msg
    for part in (
        "wide_resnet(num_classes=10, depth=16, widen_factor=1)",
        "2 missing keys: block2.layer.1.conv2.weight, bn1.running_var",
        "1 unexpected key: block4.layer.0.conv1.weight",
        "1 mis-shaped key: fc.weight (100, 64) (expected (10, 64))",
        "looks like depth=16, widen_factor=1, num_classes=100",
        "Check the architecture and its configuration",
    ):
        assert part in msg, (part, msg)


def test_wrong_depth_lists_the_first_ten_and_counts_the_rest(wrn):
    sd = wrn[0]
    with pytest.raises(ValueError, match=r"missing keys: .*\(and \d+ more\)") as info:
        from_torch(sd, "wide_resnet", depth=28, widen_factor=1)
    msg = str(info.value)
    assert "wide_resnet(num_classes=10, depth=28, widen_factor=1)" in msg
    assert "looks like depth=16, widen_factor=1" in msg
    listed = msg.split("missing keys: ")[1].split(" (and")[0].split(", ")
    assert len(listed) == 10
    with pytest.raises(ValueError, match=r"mis-shaped keys: .*looks like depth=16, widen_factor=1"):
        from_torch(sd, "wide_resnet", depth=16, widen_factor=2)


def test_preact_final_bn_hint():
    spec, _, _, _ = _io("preact18_w4_bn_outsc")
    sd = read_state_dict(FIXTURES / "preact18_w4_bn_outsc.safetensors")
    config = dict(spec["config"], bn_before_fc=False)
    with pytest.raises(ValueError, match=r"unexpected keys: bn\.bias.*bn_before_fc=True"):
        _load(sd, spec, **config)


def test_wrapper_prefixes_and_entries_are_accepted(wrn):
    sd, spec, images, logits = wrn
    variants = {
        "module.": {"module." + k: v for k, v in sd.items()},
        "model.": {"model." + k: v for k, v in sd.items()},
        "module.model.": {"module.model." + k: v for k, v in sd.items()},
        "state_dict": {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3},
        "jax arrays": {k: jnp.asarray(v) for k, v in sd.items()},
    }
    for what, source in variants.items():
        model = _load(source, spec, **spec["config"])
        assert _rel(_logits(model, images), logits) <= 1e-4, what
    assert any(k.endswith("num_batches_tracked") for k in sd)  # present and ignored


def test_objects_with_numpy_method_are_accepted(wrn):
    class Tensor:  # duck-typed like torch.Tensor: .detach(), .cpu(), .numpy()
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    sd, spec, images, logits = wrn
    model = _load({k: Tensor(v) for k, v in sd.items()}, spec, **spec["config"])
    assert _rel(_logits(model, images), logits) <= 1e-4


def test_unknown_prefix_gets_a_hint(wrn):
    sd, spec, _, _ = wrn
    with pytest.raises(ValueError, match=r"every key starts with 'net\.': strip that prefix"):
        _load({"net." + k: v for k, v in sd.items()}, spec, **spec["config"])


def test_strict_false_warns_and_keeps_the_initialisation(wrn):
    sd, spec, images, _ = wrn
    partial = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    partial["extra.weight"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"2 missing keys: fc\.bias, fc\.weight"):
        _load(partial, spec, **spec["config"])
    with pytest.warns(UserWarning) as record:
        model = _load(partial, spec, strict=False, **spec["config"])
    text = " ".join(str(w.message) for w in record)
    assert "missing keys: fc.bias, fc.weight" in text and "unexpected key: extra.weight" in text
    init = archs.build("wide_resnet", 10, rngs=nnx.Rngs(0), **spec["config"])
    np.testing.assert_array_equal(model.fc.kernel[...], init.fc.kernel[...])
    np.testing.assert_array_equal(model.conv1.kernel[...], sd["conv1.weight"].transpose(2, 3, 1, 0))
    assert np.isfinite(_logits(model, images)).all()
    misshaped = dict(sd, **{"conv1.weight": np.zeros((16, 3, 5, 5), np.float32)})
    with pytest.raises(ValueError, match=r"mis-shaped key: conv1\.weight"):
        _load(misshaped, spec, strict=False, **spec["config"])


def test_robustbench_normalisation_buffers(wrn):
    sd, spec, images, _ = wrn
    mu = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
    sigma = np.array([0.2471, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)
    plain = _load(sd, spec, **spec["config"])
    normed = _load(dict(sd, mu=mu, sigma=sigma), spec, **spec["config"])
    assert dict(normed.config)["mean"] == tuple(float(v) for v in mu.ravel())
    np.testing.assert_allclose(
        _logits(normed, images), _logits(plain, (images - mu) / sigma), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="do not pass mean/std as well"):
        _load(dict(sd, mu=mu, sigma=sigma), spec, mean=(0, 0, 0), std=(1, 1, 1), **spec["config"])


# ----------------------------------------------------------------------------- files


def test_pt_without_torch_gives_the_conversion_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    path = FIXTURES / "wrn_10_1_dataparallel.pt"
    with pytest.raises(ImportError) as info:
        from_torch(path, "wide_resnet", depth=10, widen_factor=1)
    msg = str(info.value)
    assert "PyTorch is not installed" in msg and "\n" not in msg
    assert "from safetensors.torch import save_file" in msg
    assert f"torch.load({str(path)!r}, map_location='cpu', weights_only=True)" in msg
    assert repr(str(path.with_suffix(".safetensors"))) in msg


def test_pt_with_torch_installed():
    pytest.importorskip("torch")
    spec, images, logits, _ = _io("wrn_10_1_dataparallel")
    model = _load(FIXTURES / "wrn_10_1_dataparallel.pt", spec, **spec["config"])
    assert _rel(_logits(model, images), logits) <= 1e-4


def test_pt_fixture_is_a_dataparallel_checkpoint():
    """The .pt fixture is a zip archive whose pickle names ``module.`` keys (checked without
    unpickling it)."""
    import zipfile

    with zipfile.ZipFile(FIXTURES / "wrn_10_1_dataparallel.pt") as z:
        pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
        data = z.read(pkl)
    assert b"state_dict" in data and b"module.block1.layer.0.conv1.weight" in data


def _truncate(p):
    os.truncate(p, p.stat().st_size // 2)


def _garbage(p):
    p.write_bytes(b"\x00\x01 definitely not safetensors")


def _empty(p):
    p.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _garbage, _empty])
def test_damaged_safetensors_gives_a_clear_error(damage, tmp_path):
    p = tmp_path / "weights.safetensors"
    shutil.copy(FIXTURES / "wrn_16_1.safetensors", p)
    damage(p)
    with pytest.raises(CorruptFileError, match="not a readable safetensors file") as info:
        from_torch(p, "wide_resnet", depth=16, widen_factor=1)
    assert str(p) in str(info.value)


def test_source_errors(tmp_path, wrn):
    sd = wrn[0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_torch(tmp_path / "nope.safetensors", "wide_resnet", depth=16, widen_factor=1)
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown checkpoint type '\.h5'"):
        from_torch(tmp_path / "w.h5", "wide_resnet", depth=16, widen_factor=1)
    with pytest.raises(TypeError, match="source must be"):
        from_torch(3, "wide_resnet")
    with pytest.raises(ValueError, match="architecture must be one of"):
        from_torch(sd, "vit")
    with pytest.raises(TypeError, match="bad configuration for architecture 'wide_resnet'"):
        from_torch(sd, "wide_resnet", depth=16, widen_factor=1, dropRate=0.3)
    with pytest.raises(TypeError, match="not a numeric array"):
        from_torch(dict(sd, extra="text"), "wide_resnet", depth=16, widen_factor=1)
    nan = dict(sd, **{"bn1.running_var": np.full(64, np.nan, np.float32)})
    with pytest.raises(ValueError, match=r"1 key: bn1\.running_var with non-finite"):
        from_torch(nan, "wide_resnet", depth=16, widen_factor=1)


# ----------------------------------------------------------------------------- DeepMind


@pytest.mark.parametrize("name", [n for n in SAFETENSORS if n.startswith("dm_")])
def test_deepmind_logits_to_1e5_in_float32(name):
    """DeepMind's models (RobustBench's own code made the fixtures): float32 logits within
    1e-5 relative (float64 and the input gradients: the general tests above, 1e-9)."""
    spec, images, logits32, _ = _io(name)
    model = _load(FIXTURES / f"{name}.safetensors", spec, **spec["config"])
    assert _rel(_logits(model, images), logits32) <= 1e-5


def test_deepmind_defaults_and_layout():
    """Without mean/std the DeepMind models normalise with CIFAR-10's statistics (their
    constructor's default; the state dict has none), rounded to float32 as PyTorch holds them."""
    spec = _io("dm_wrn_10_1_relu")[0]
    assert "mean" not in spec["config"]
    model = _load(FIXTURES / "dm_wrn_10_1_relu.safetensors", spec, **spec["config"])
    mean = dict(model.config)["mean"]
    assert mean == tuple(float(np.float32(v)) for v in (0.4914, 0.4822, 0.4465))
    keys = torch_state_dict_keys("dm_wide_resnet", depth=10, width=1)
    assert "layer.1.block.0.shortcut.weight" in keys and "logits.bias" in keys
    assert keys["layer.1.block.0.shortcut.weight"] == (32, 16, 1, 1)
    keys = torch_state_dict_keys("dm_preact_resnet", widths=(4, 8, 16, 32))
    assert keys["layer_1.0.shortcut.weight"] == (8, 4, 3, 3)  # a 3x3 projection
    assert "layer_0.0.shortcut.weight" not in keys
    with pytest.raises(ValueError, match="depth must be one of"):
        archs.DMPreActResNet(50, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation must be one of"):
        archs.DMWideResNet(10, 1, activation="gelu", rngs=nnx.Rngs(0))


def test_swish_curvature_is_exact_not_piecewise_linear():
    """DeepMind's Swish WideResNet is smooth: at a boundary point its exact principal
    curvatures (Lanczos on the Hessian) are finite and not flagged piecewise linear."""
    spec, images, _, _ = _io("dm_wrn_10_1_swish")
    model = _load(FIXTURES / "dm_wrn_10_1_swish.safetensors", spec, **spec["config"])
    clf = gr.as_classifier(model)
    x = jnp.asarray(np.transpose(images, (0, 2, 3, 1)))[:1]
    y = jnp.argmax(clf(x), -1)
    df = gr.deepfool(clf, x)
    assert np.all(np.asarray(df.converged))
    bp = gr.refine_boundary(clf, x, x + df.perturbation, y)
    c = gr.principal_curvatures(
        clf, bp.z, bp.y, bp.k, num=2, key=jax.random.key(0), method="lanczos", krylov_dim=8
    )
    status = np.asarray(c.status)
    assert np.all(status != int(gr.Status.PIECEWISE_LINEAR)), status
    assert np.all(np.isfinite(np.asarray(c.values))) and np.any(np.asarray(c.values) != 0)


# ----------------------------------------------------------------------------- import checks


def test_strict_false_with_no_matching_key_is_refused(wrn):
    sd, spec, _, _ = wrn
    dm = read_state_dict(FIXTURES / "dm_wrn_10_1_relu.safetensors")
    with pytest.raises(ValueError) as info:
        _load(dm, spec, strict=False, **spec["config"])
    msg = str(info.value)
    assert "not one of the" in msg and "nothing would be loaded" in msg
    assert "use architecture 'dm_wide_resnet' (--arch dm_wide_resnet)" in msg
    with pytest.raises(ValueError, match="DeepMind's WideResNet"):  # strict too
        _load(dm, spec, **spec["config"])
    with pytest.raises(ValueError, match="RobustBench's WideResNet: use architecture 'wide_"):
        from_torch(sd, "dm_wide_resnet", depth=16, width=1)


def test_bad_weight_values_are_refused(wrn):
    sd, spec, _, _ = wrn
    var = sd["block1.layer.0.bn1.running_var"].copy()
    var[3] = -0.5
    with pytest.raises(ValueError, match=r"1 BatchNorm running_var: block1\.layer\.0\.bn1"):
        _load(dict(sd, **{"block1.layer.0.bn1.running_var": var}), spec, **spec["config"])
    nan = sd["bn1.running_var"].copy()
    nan[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _load(dict(sd, **{"bn1.running_var": nan}), spec, **spec["config"])
    q = dict(sd, **{"conv1.weight": np.ones(sd["conv1.weight"].shape, np.int8)})
    with pytest.raises(ValueError, match=r"conv1\.weight \(int8\) with non-floating.*quantized"):
        _load(q, spec, **spec["config"])


def test_the_probe_forward_pass(wrn):
    """With an input_shape the model runs once at import: a shape it cannot take, and
    weights that give non-finite logits, fail there, not at the first analysis."""
    sd, spec, _, _ = wrn
    with pytest.raises(ValueError, match=r"cannot take input_shape \(16, 16, 3\).*8x8 window"):
        _load(sd, spec, input_shape=(16, 16, 3), **spec["config"])
    huge = dict(sd, **{"fc.weight": np.full(sd["fc.weight"].shape, 3e38, np.float32)})
    with pytest.raises(ValueError, match="non-finite logits on images in"):
        _load(huge, spec, input_shape=(32, 32, 3), **spec["config"])
    _load(huge, spec, **spec["config"])  # no input_shape: no probe


def test_normalisation_is_checked_at_construction(wrn):
    sd, spec, _, _ = wrn
    for mean, std in [((0, 0, 0), (1e-50, 1, 1)), ((0, 0, 0), (1e39, 1, 1)),
                      ((1e39, 0, 0), (1, 1, 1))]:  # fmt: skip
        with pytest.raises(ValueError, match="float32"):
            _load(sd, spec, mean=mean, std=std, **spec["config"])
        model = _load(sd, spec, input_shape=(32, 32, 3), **spec["config"])
        with pytest.raises(ValueError, match="float32"):
            gr.models.Normalized(model, mean, std)
    with pytest.raises(ValueError, match="need 3 entries"):
        _load(sd, spec, mean=(0.5, 0.5), std=(0.2, 0.2), **spec["config"])
    with pytest.raises(ValueError, match=r"does not broadcast to the classifier's input shape"):
        gr.models.Normalized(model, (0.5, 0.5), (0.2, 0.2))
    gr.models.Normalized(model, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))


# ----------------------------------------------------------------------------- model inputs


def test_input_conventions(wrn):
    sd, spec, images, logits = wrn
    model = _load(sd, spec, **spec["config"])
    with pytest.raises(ValueError, match="looks like NCHW"):
        model(jnp.asarray(images))
    with pytest.raises(ValueError, match="fixed 8x8 window"):
        model(jnp.zeros((1, 64, 64, 3)))
    flat = _load(sd, spec, input_shape=(32, 32, 3), **spec["config"])
    x = np.transpose(images, (0, 2, 3, 1)).reshape(len(images), -1)
    assert _rel(np.asarray(flat(jnp.asarray(x))), logits) <= 1e-4
    with pytest.raises(ValueError, match="give both mean and std"):
        archs.WideResNet(16, 1, mean=(0.5, 0.5, 0.5), rngs=nnx.Rngs(0))


@pytest.mark.parametrize(("dtype", "tol"), [("bfloat16", 5e-2), ("float16", 1e-2)])
def test_half_precision_parameters(wrn, dtype, tol):
    sd, spec, images, logits = wrn
    model = _load(sd, spec, dtype=dtype, **spec["config"])
    assert model.conv1.kernel[...].dtype == jnp.dtype(dtype)
    out = _logits(model, images, jnp.dtype(dtype))
    assert out.dtype == jnp.dtype(dtype)
    assert _rel(out.astype(np.float64), logits) <= tol


def test_precision_option(wrn):
    sd, spec, images, logits = wrn
    model = _load(sd, spec, precision="highest", **spec["config"])
    assert dict(model.config)["precision"] == "highest"
    assert _rel(_logits(model, images), logits) <= 1e-4
    with pytest.raises(ValueError, match="precision must be one of"):
        _load(sd, spec, precision="fast", **spec["config"])


def test_the_safetensors_path_needs_no_pytorch():
    """``geomrobust.models.torch`` imports no PyTorch: a ``.safetensors`` file loads and runs in
    a process where ``import torch`` fails."""
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from geomrobust.models.torch import from_torch\n"
        f"m = from_torch({str(FIXTURES / 'wrn_16_1.safetensors')!r}, 'wide_resnet', depth=16, "
        "widen_factor=1)\n"
        "print(np.asarray(m(np.zeros((1, 32, 32, 3), np.float32))).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 10)"
