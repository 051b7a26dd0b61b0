"""Any PyTorch module through torchax (``gr.models.from_torch_module``, the ``torch`` extra).

Real architectures with small random weights (randomized BatchNorm statistics) on two 32x32x3
inputs: torchvision's ResNet-18, a timm ViT-tiny (its width, 192 and 3 heads, with 2 of its
12 blocks, patch 8 at 32x32) and RobustBench's DMWideResNet with its custom-autograd Swish
(depth 10, width 1), small to keep the file's compile time short. Each is compared with
PyTorch itself in float32 and float64: logits, the cross-entropy's input gradients and its
Hessian-vector products (PyTorch's double backward), and per-example logits and gradients
under ``vmap``, all in one jitted program; a second model of the same architecture then runs
that program without compiling anything.

Skipped cleanly where PyTorch or torchax is missing, or where torchax cannot import with the
installed PyTorch (every torchax release needs torch <= 2.12; the extra pins the pair).
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import compilations

from geomrobust.models import Classifier, CustomAutogradWarning, from_torch_module
from geomrobust.models.torch._module import _import

try:
    torch, torchax = _import()
except ImportError as e:  # no torch, no torchax, or a torchax that cannot import with it
    pytest.skip(str(e), allow_module_level=True)


SHAPE = (32, 32, 3)
# max |JAX - PyTorch| / max |PyTorch|, per quantity (float32 HVPs go through two backward
# passes of a deep network: their rounding is larger)
TOL = {
    "float32": {"logits": 1e-5, "grad": 1e-5, "hvp": 1e-4},
    "float64": {"logits": 1e-12, "grad": 1e-12, "hvp": 1e-11},
}


def _randomize_batchnorm(net, seed):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return net


def _resnet18(seed):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(seed)
    return _randomize_batchnorm(torchvision.models.resnet18(num_classes=10), seed)


def _vit_tiny(seed):
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        num_classes=10,
        depth=2,
    )  # ViT-tiny's width (192, 3 heads), 2 of its 12 blocks: 16 patches of 8x8


@functools.cache
def _dm_wide_resnet_module():
    """RobustBench's architecture file alone (the package's ``__init__`` needs its data and
    download dependencies, which ``pip install --no-deps robustbench`` leaves out), loaded
    once: a class loaded twice is two classes, two architectures."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("robustbench is not installed (pip install --no-deps robustbench)")
    root = pathlib.Path(next(iter(spec.submodule_search_locations)))
    path = root / "model_zoo" / "architectures" / "dm_wide_resnet.py"
    spec = importlib.util.spec_from_file_location("_robustbench_dm_wide_resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dm_wide_resnet(seed):
    dm = _dm_wide_resnet_module()
    torch.manual_seed(seed)
    net = dm.DMWideResNet(num_classes=10, depth=10, width=1, activation_fn=dm.Swish)
    return _randomize_batchnorm(net, seed)


MODELS = {"resnet18": _resnet18, "vit_tiny": _vit_tiny, "dm_wide_resnet": _dm_wide_resnet}


def _convert(net):
    with_swish = any(type(m).__name__ == "Swish" for m in net.modules())
    if with_swish:
        with pytest.warns(CustomAutogradWarning, match="_Swish"):
            return from_torch_module(net, SHAPE)
    return from_torch_module(net, SHAPE)


def _ce(logits, y):
    return jnp.sum(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


@jax.jit
def _everything(clf, x, y, v):
    """Logits, the cross-entropy's input gradient and its Hessian-vector product (forward
    mode over reverse mode), and per-example logits and input gradients by ``vmap``: one
    program."""

    def loss(z, t):
        logits = clf(z)
        return _ce(logits, t), logits

    (grad, logits), (hvp, _) = jax.jvp(lambda z: jax.grad(loss, has_aux=True)(z, y), (x,), (v,))
    one = lambda xi, yi: jax.grad(loss, has_aux=True)(xi[None], yi[None])  # noqa: E731
    vgrad, vlogits = jax.vmap(one)(x, y)
    return {"logits": logits, "grad": grad, "hvp": hvp, "vmap_logits": vlogits[:, 0],
            "vmap_grad": vgrad[:, 0]}  # fmt: skip


def _torch_reference(net, x, y, v):
    nchw = lambda a: torch.from_numpy(np.moveaxis(np.asarray(a), -1, -3).copy())  # noqa: E731
    nhwc = lambda t: np.moveaxis(t.detach().numpy(), -3, -1)  # noqa: E731
    # PyTorch's fused attention kernel has no double backward: its reference HVP takes the
    # explicit softmax(q k^T) v path, the same function (the classifier keeps the fused one)
    fused = [m for m in net.modules() if getattr(m, "fused_attn", False)]
    for m in fused:
        m.fused_attn = False
    try:
        xt = nchw(x).requires_grad_(True)
        logits = net(xt)
        yt = torch.from_numpy(np.asarray(y, np.int64))
        loss = torch.nn.functional.cross_entropy(logits, yt, reduction="sum")
        (g,) = torch.autograd.grad(loss, xt, create_graph=True)
        (hv,) = torch.autograd.grad((g * nchw(v)).sum(), xt)
    finally:
        for m in fused:
            m.fused_attn = True
    return {"logits": logits.detach().numpy(), "grad": nhwc(g), "hvp": nhwc(hv)}


def _err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(2, *SHAPE)).astype(dtype)
    v = rng.normal(size=x.shape).astype(dtype)
    return x, np.array([3, 7], np.int32), v


def _check(net, clf, dtype):
    x, y, v = _data(dtype)
    out = jax.tree.map(np.asarray, _everything(clf, x, y, v))
    ref = _torch_reference(net, x, y, v)
    errs = {k: _err(out[k], ref[k.removeprefix("vmap_")]) for k in out}
    for k, e in errs.items():
        assert e <= TOL[dtype][k.removeprefix("vmap_")], (k, errs)
    assert np.max(np.abs(ref["hvp"])) > 0  # the cross-entropy has curvature
    return errs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.filterwarnings("ignore:.saved_variables. is deprecated")
def test_real_architectures_match_pytorch(arch, dtype):
    net = MODELS[arch](0).eval()
    if dtype == "float64":
        net = net.double()
    clf = _convert(net)
    assert isinstance(clf, Classifier)
    assert all(leaf.dtype == np.dtype(dtype) for leaf in jax.tree.leaves(clf))
    _check(net, clf, dtype)

    # a second model of the same architecture: other weights, the same compiled program
    net2 = MODELS[arch](1).eval()
    if dtype == "float64":
        net2 = net2.double()
    clf2 = _convert(net2)
    assert clf2.apply == clf.apply and hash(clf2.apply) == hash(clf.apply)
    x, y, v = _data(dtype, seed=1)
    with compilations() as c:
        out = _everything(clf2, x, y, v)
        jax.block_until_ready(out)
    assert c.names == []
    with torch.no_grad():
        ref = net2(torch.from_numpy(np.moveaxis(x, -1, 1).copy())).numpy()
    assert _err(out["logits"], ref) <= TOL[dtype]["logits"]
    assert _err(out["logits"], np.asarray(clf(x))) > 1e-3  # the other weights were used


# ------------------------------------------------------------------------ small modules


class _Cube(torch.autograd.Function):
    """``x**3`` with a masking backward (zero gradient), as gradient-masking defences do."""

    @staticmethod
    def forward(ctx, x):
        return x**3

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class _CubeNet(torch.nn.Module):
    def __init__(self, masked: bool):
        super().__init__()
        self.a = torch.nn.Linear(4, 5)
        self.b = torch.nn.Linear(5, 3)
        self.masked = masked

    def forward(self, x):
        h = self.a(x)
        return self.b(_Cube.apply(h) if self.masked else h**3)


def test_custom_autograd_function_warns_and_differentiates_the_forward():
    torch.manual_seed(0)
    net = _CubeNet(masked=True).double().eval()
    with pytest.warns(CustomAutogradWarning, match="_Cube"):
        clf = from_torch_module(net, (4,))
    plain = _CubeNet(masked=False).double().eval()
    plain.load_state_dict(net.state_dict())
    assert not [w for w in _warnings_of(lambda: from_torch_module(plain, (4,)))]
    x = np.random.default_rng(0).normal(size=(3, 4))
    g = jax.grad(lambda z: clf(z)[:, 1].sum())(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    (ref,) = torch.autograd.grad(plain(xt)[:, 1].sum(), xt)  # the forward's derivative
    (masked,) = torch.autograd.grad(net(xt)[:, 1].sum(), xt)
    assert np.all(masked.numpy() == 0)  # PyTorch's hand-written backward masks it
    assert _err(g, ref.numpy()) < 1e-12


def _warnings_of(fn):
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    return [x for x in w if issubclass(x.category, CustomAutogradWarning)]


def _small(act=None, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        act if act is not None else torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    return _randomize_batchnorm(net, seed).double().eval()


def _nchw(x):
    return torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1).copy())


def test_training_mode_is_refused():
    net = _small()
    net[1].train()
    with pytest.raises(ValueError, match=r"training mode \(1\).*module.eval\(\)"):
        from_torch_module(net, (6, 6, 3))
    with pytest.raises(ValueError, match=r"module\.eval"):
        from_torch_module(_small().train(), (6, 6, 3))


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        from_torch_module(lambda x: x, (6, 6, 3))
    with pytest.raises(ValueError, match="input_shape"):
        from_torch_module(_small(), (6, -6, 3))
    with pytest.raises(ValueError, match="both mean and std"):
        from_torch_module(_small(), (6, 6, 3), mean=0.5)
    with pytest.raises(ValueError, match="std"):
        from_torch_module(_small(), (6, 6, 3), mean=0.5, std=0.0)
    with pytest.raises(ValueError, match="does not run"):
        from_torch_module(_small(), (6, 6, 5))  # 5 channels for a 3-channel convolution
    clf = from_torch_module(_small(), (6, 6, 3))
    with pytest.raises(ValueError, match="NHWC"):
        clf(np.zeros((2, 6, 6)))


def test_returns_logits_only():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.l(x), x

    with pytest.raises(ValueError, match=r"must return logits \(N, K\)"):
        from_torch_module(Two().eval(), (4,))


def test_integer_buffers_are_not_leaves_and_weights_are_differentiable():
    net = _small()
    net[1].num_batches_tracked.fill_(17)
    clf = from_torch_module(net, (6, 6, 3))
    assert "1.num_batches_tracked" not in clf.params and "1.running_mean" in clf.params
    assert all(jnp.issubdtype(a.dtype, jnp.floating) for a in jax.tree.leaves(clf))
    x = np.random.default_rng(1).uniform(size=(2, 6, 6, 3))
    # the gradient with respect to the weights (the classifier is a pytree of them) = PyTorch's
    g = jax.grad(lambda c: c(x)[:, 0].sum())(clf)
    net.zero_grad()
    net(_nchw(x))[:, 0].sum().backward()
    assert _err(g.params["0.weight"], net[0].weight.grad.numpy()) < 1e-12
    assert _err(g.params["5.bias"], net[5].bias.grad.numpy()) < 1e-12
    # a cast of every leaf (a float32 copy) keeps working: no integer leaf to break
    clf32 = jax.tree.map(lambda a: a.astype(np.float32), clf)
    with torch.no_grad():
        ref = net(_nchw(x)).numpy()
    assert _err(np.asarray(clf32(x.astype(np.float32)), np.float64), ref) < 1e-5
    # num_batches_tracked is never read in evaluation mode: it does not split the cache
    other = _small(seed=1)
    other[1].num_batches_tracked.fill_(3)
    assert from_torch_module(other, (6, 6, 3)).apply == clf.apply


def test_architecture_key_separates_what_changes_the_function():
    x = np.random.default_rng(2).uniform(size=(2, 6, 6, 3))
    a = _small(torch.nn.LeakyReLU(0.1))
    b = _small(torch.nn.LeakyReLU(0.3))  # same parameter shapes, another function
    b.load_state_dict(a.state_dict())
    ca, cb = from_torch_module(a, (6, 6, 3)), from_torch_module(b, (6, 6, 3))
    assert ca.apply != cb.apply
    assert from_torch_module(_small(torch.nn.LeakyReLU(0.1), seed=3), (6, 6, 3)).apply == ca.apply
    f = jax.jit(lambda c, z: c(z))
    for net, clf in ((a, ca), (b, cb)):
        with torch.no_grad():
            assert _err(f(clf, x), net(_nchw(x)).numpy()) < 1e-12

    class Permute(torch.nn.Module):  # an integer buffer: a constant of the program
        def __init__(self, perm):
            super().__init__()
            self.register_buffer("perm", torch.tensor(perm))
            self.l = torch.nn.Linear(3, 2).double()

        def forward(self, z):
            return self.l(z[:, self.perm])

    p, q = Permute([0, 1, 2]).eval(), Permute([2, 0, 1]).eval()
    q.l.load_state_dict(p.l.state_dict())
    cp, cq = from_torch_module(p, (3,)), from_torch_module(q, (3,))
    assert cp.apply != cq.apply and sorted(cp.params) == ["l.bias", "l.weight"]
    z = np.random.default_rng(3).normal(size=(4, 3))
    for net, clf in ((p, cp), (q, cq)):
        with torch.no_grad():
            assert _err(f(clf, z), net(torch.from_numpy(z)).numpy()) < 1e-12


def test_normalisation_inside_the_classifier():
    net = _small()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    clf = from_torch_module(net, (6, 6, 3), mean=mean, std=std)
    assert isinstance(clf, Classifier)
    x = np.random.default_rng(4).uniform(size=(2, 6, 6, 3))
    with torch.no_grad():
        ref = net(_nchw((x - np.array(mean)) / np.array(std))).numpy()
    assert _err(jax.jit(lambda c, z: c(z))(clf, x), ref) < 1e-12
    # normalised classifiers of the same architecture share programs too
    other = from_torch_module(_small(seed=5), (6, 6, 3), mean=0.5, std=0.25)
    assert jax.tree.structure(other) == jax.tree.structure(clf)


def test_float32_input_with_a_float64_module_computes_in_float64():
    net = _small()
    clf = from_torch_module(net, (6, 6, 3))
    x = np.random.default_rng(5).uniform(size=(2, 6, 6, 3))
    out = clf(x.astype(np.float32))
    assert out.dtype == np.float64
    with torch.no_grad():
        ref = net(_nchw(x.astype(np.float32).astype(np.float64))).numpy()
    assert _err(out, ref) < 1e-12


class _Convs(torch.nn.Module):
    """Every convolution form: strided, dilated, grouped, without bias, string padding
    (torchax's own lowering), transposed and 1-D (torchax's own lowering)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.b = torch.nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3, bias=False)
        self.c = torch.nn.Conv2d(6, 4, (3, 1), padding="same")
        self.d = torch.nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.e = torch.nn.Conv1d(4, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2 * 64, 3)

    def forward(self, x):
        x = torch.tanh(self.c(torch.tanh(self.b(torch.tanh(self.a(x))))))
        x = torch.tanh(self.d(x))  # (N, 4, 8, 8)
        x = torch.tanh(self.e(x.flatten(2)))  # (N, 2, 64)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_convolution_form_matches_pytorch(dtype):
    """The channels-last lowering of 2-D convolutions (and torchax's own for the rest):
    logits, gradient and HVP against PyTorch."""
    torch.manual_seed(0)
    net = _Convs().to(getattr(torch, dtype)).eval()
    clf = from_torch_module(net, (8, 8, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 8, 8, 3)).astype(dtype)
    v = rng.normal(size=x.shape).astype(dtype)
    y = np.array([0, 2], np.int32)
    out = jax.tree.map(np.asarray, _everything(clf, x, y, v))
    ref = _torch_reference(net, x, y, v)
    for k in out:
        assert _err(out[k], ref[k.removeprefix("vmap_")]) <= TOL[dtype][k.removeprefix("vmap_")]


def test_convolutions_inside_a_loop_are_channels_last():
    """XLA's CPU backend canonicalizes convolutions (to NHWC, HWIO: its fast path) only at
    the top level of a program; an NCHW convolution inside a loop body runs a naive loop
    nest, tens of times slower. The module's 2-D convolutions are emitted channels-last, so
    inside a ``fori_loop`` of Hessian-vector products (Lanczos) every forward convolution and
    its JVP stays canonical: ``b01f_01io->b01f``; only the transposed (input-gradient)
    convolutions of JAX's own autodiff keep the kernel's swapped form ``b01f_01oi->b01f``,
    as for a native Flax model."""
    import re

    clf = from_torch_module(_small(), (6, 6, 3))
    z = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 6, 3)))

    def hvps(c, z):
        F = lambda p: c(p[None])[0, 1] - c(p[None])[0, 0]  # noqa: E731
        _, op = jax.linearize(jax.grad(F), z)
        return jax.lax.fori_loop(0, 3, lambda i, u: op(u) / jnp.linalg.norm(op(u)), z)

    hlo = jax.jit(hvps).lower(clf, z).compile().as_text()
    labels = set(re.findall(r"dim_labels=([^ ,}]*)", hlo))
    assert "b01f_01io->b01f" in labels
    assert labels <= {"b01f_01io->b01f", "b01f_01oi->b01f"}, labels
