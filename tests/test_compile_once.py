"""Compile-once: dataset-level measurements trace their classifier once per program.

A classifier counts how often JAX TRACES it inside a compiled program (a side effect runs at
trace time only, never when a compiled program is executed). Traces with the full batch
``(N, ...)`` are input validation (``jax.eval_shape`` of the classifier, no compilation) and
are not counted; the chunked programs see ``chunk_size`` / ``slots`` rows, chosen != N.

Each test runs a measurement over many chunks, again with the same shapes, and again with a
different N (more chunks, other data): the count must not move after the first call, so the
first call compiled its program(s) once for all its chunks and no later call retraces.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geomrobust.data import resize_images
from geomrobust.measures import (
    boundary_thickness,
    dct_subspaces,
    first_order_margins,
    fourier_accuracy_map,
    margin_signature,
    principal_curvatures,
    subspace_margins,
)
from geomrobust.search import (
    cw_l2,
    deepfool_dataset,
    fmn,
    margin_along,
    masking_checks,
    robust_accuracy,
    universal_perturbation,
)
from geomrobust.train import robustness_monitor


class Counted:
    """``x -> logits`` of a fixed tanh MLP, counting traces whose batch is not ``self.n``."""

    def __init__(self, d, k=3, seed=0):
        k1, k2 = jax.random.split(jax.random.key(seed))
        self.w1 = jax.random.normal(k1, (d, 8), jnp.float32) / np.sqrt(d)
        self.w2 = jax.random.normal(k2, (8, k), jnp.float32)
        self.traces = 0
        self.n = None

    def __call__(self, x):
        if isinstance(x, jax.core.Tracer) and x.shape[0] != self.n:
            self.traces += 1
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ self.w1.astype(x.dtype))
        return h @ self.w2.astype(x.dtype)

    def run(self, fn, n):
        self.n = n
        out = fn()
        jax.block_until_ready(out)
        return self.traces


def _data(n, shape, seed):
    return jax.random.normal(jax.random.key(seed), (n, *shape), jnp.float32)


def test_deepfool_dataset_compiles_once():
    f = Counted(16)
    # slots=2: the working set never shrinks (the tail ladder starts at 16 slots), so the driver
    # is exactly one program; chunk_size=4 with N=10 gives 3 chunks, the last one padded.
    run = lambda x: deepfool_dataset(f, x, chunk_size=4, slots=2)  # noqa: E731
    x10, x15 = _data(10, (4, 4), 0), _data(15, (4, 4), 1)
    first = f.run(lambda: run(x10).margin, 10)
    assert first >= 1
    assert f.run(lambda: run(x10).margin, 10) == first  # same shapes: no retrace
    assert f.run(lambda: run(x15).margin, 15) == first  # more chunks, other data
    assert np.all(np.isfinite(np.asarray(run(x15).margin)))


def test_deepfool_dataset_repeat_call_with_tail_ladder():
    f = Counted(16, seed=1)
    x = _data(40, (4, 4), 2)  # 16 slots shrink to 4 (MIN_SLOTS)
    first = f.run(lambda: deepfool_dataset(f, x, chunk_size=32, slots=16).margin, 40)
    assert f.run(lambda: deepfool_dataset(f, x, chunk_size=32, slots=16).margin, 40) == first


@pytest.mark.parametrize("loop", ["host", "device"])
def test_deepfool_dataset_first_chunk_compiles_the_whole_tail(loop):
    """Which working-set sizes a chunk's tail reaches depends on its data. Every size's
    program runs (on idle slots) in every chunk anyway, so all compile in the first chunk
    whatever N (docs/performance.md: a compilation late in a long run set its peak memory):
    a first call in which no search runs (every example misclassified: no tail at all)
    leaves nothing for a second call whose stragglers shrink the working set to compile."""
    f = Counted(16, seed=3)
    x = _data(40, (4, 4), 5)
    pred = jnp.argmax(f(x), -1).astype(jnp.int32)
    wrong = (pred + 1) % 3
    kw = dict(chunk_size=32, slots=16, loop=loop)  # 2 chunks; the tail shrinks to 4 slots
    first = f.run(lambda: deepfool_dataset(f, x, wrong, **kw).margin, 40)
    assert f.run(lambda: deepfool_dataset(f, x, pred, **kw).margin, 40) == first


def test_subspace_margins_one_compilation_for_all_bands():
    f = Counted(64, seed=2)
    x = _data(10, (8, 8), 3)
    y = jnp.argmax(f(x), -1)
    bands = dct_subspaces((8, 8), 4, 2)  # 3 bands of dimension 16
    assert len(bands) == 3
    kw = dict(chunk_size=4, slots=2)
    one = f.run(lambda: subspace_margins(f, x, y, bands[:1], **kw).margin, 10)
    assert f.run(lambda: subspace_margins(f, x, y, bands, **kw).margin, 10) == one
    x2 = _data(13, (8, 8), 4)
    y2 = jnp.argmax(f(x2), -1)
    assert f.run(lambda: subspace_margins(f, x2, y2, bands, **kw).margin, 13) == one


@pytest.mark.parametrize(("method", "loop"), [("dense", "auto"), ("lanczos", "host"),
                                             ("lanczos", "device")])  # fmt: skip
def test_principal_curvatures_compile_once(method, loop):
    f = Counted(12, seed=3)
    kw = dict(num=3, key=jax.random.key(0), method=method, loop=loop, chunk_size=4)

    def run(n, seed):
        z = _data(n, (12,), seed)
        return principal_curvatures(f, z, jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32), **kw)

    first = f.run(lambda: run(10, 5).values, 10)
    assert first >= 1
    assert f.run(lambda: run(10, 5).values, 10) == first
    assert f.run(lambda: run(17, 6).values, 17) == first


@pytest.mark.parametrize("per_example", [False, True])
def test_margin_along_compiles_once(per_example):
    f = Counted(16, seed=4)

    def run(n, seed, max_dist=4.0, tol=1e-3):
        x = _data(n, (16,), seed)
        d = jax.random.normal(jax.random.key(seed + 100), ((n,) if per_example else ()) + (3, 16))
        d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
        return margin_along(f, x, d, max_dist=max_dist, tol=tol, chunk_size=4).margin

    first = f.run(lambda: run(10, 0), 10)
    assert first >= 1
    assert f.run(lambda: run(10, 0), 10) == first
    assert f.run(lambda: run(9, 1), 9) == first
    assert f.run(lambda: run(9, 1, max_dist=2.0, tol=1e-4), 9) == first  # traced settings


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "apgd-ce", "square"])
def test_robust_accuracy_compiles_once(attack):
    f = Counted(16, seed=5)
    kw = {"pgd": dict(steps=2, step_size=0.05), "fgsm": {}, "apgd-ce": dict(steps=3),
          "square": dict(steps=3)}[attack]  # fmt: skip

    def run(n, seed, eps=(0.0, 0.1, 0.3), **more):
        x = jnp.clip(_data(n, (16,), seed), -2.0, 2.0)  # inside the box
        y = jnp.argmax(f(x), -1)
        key = jax.random.key(seed)
        return robust_accuracy(
            f, x, y, eps, key=key, attack=attack, chunk_size=4, bounds=(-2.0, 2.0), **kw, **more
        ).success

    first = f.run(lambda: run(10, 0), 10)
    assert first >= 1
    assert f.run(lambda: run(10, 0), 10) == first
    assert f.run(lambda: run(10, 1, eps=(0.2, 0.05, 1.0)), 10) == first  # key, epsilons traced
    assert f.run(lambda: run(15, 2), 15) == first  # more chunks, other data


def test_robust_accuracy_array_settings_are_traced():
    f = Counted(16, seed=6)

    def run(n, seed, lo, step):
        x = jnp.clip(_data(n, (16,), seed), lo, 3.0)  # inside the box
        y = jnp.argmax(f(x), -1)
        bounds = (jnp.full((16,), lo), 3.0)
        return robust_accuracy(
            f, x, y, [0.1, 0.2], key=jax.random.key(seed), steps=2, chunk_size=4,
            bounds=bounds, step_size=jnp.float32(step), target=(y + 1) % 3,
        ).success  # fmt: skip

    first = f.run(lambda: run(10, 0, -3.0, 0.05), 10)
    assert first >= 1
    assert f.run(lambda: run(10, 1, -2.5, 0.1), 10) == first
    assert f.run(lambda: run(13, 2, -2.0, 0.02), 13) == first


@pytest.mark.parametrize("search", ["fmn", "cw", "masking"])
def test_minimal_norm_searches_compile_once(search):
    f = Counted(16, seed=8)

    def run(n, seed, **more):
        x = _data(n, (16,), seed)
        if search == "fmn":
            return fmn(f, x, steps=3, chunk_size=4, **more).margin
        if search == "cw":
            return cw_l2(f, x, steps=3, binary_steps=2, chunk_size=4, **more).margin
        y = jnp.argmax(f(x), -1)
        return masking_checks(f, x, y, [0.1, 0.2], key=jax.random.key(seed), steps=2,
                              square_steps=2, chunk_size=4, **more).worst_case  # fmt: skip

    first = f.run(lambda: run(10, 0), 10)
    assert first >= 1
    assert f.run(lambda: run(10, 1), 10) == first
    assert f.run(lambda: run(15, 2), 15) == first  # more chunks, other data


def test_universal_perturbation_compiles_once():
    # not chunked (one scan over the data per pass): a new N retraces, same shapes must not
    f = Counted(16, seed=7)

    def run(seed, xi, lo):
        x = jnp.clip(_data(10, (16,), seed), lo, 3.0)  # inside the box
        kw = dict(key=jax.random.key(seed), eps=xi, delta=0.0, steps=2, deepfool_steps=3)
        return universal_perturbation(f, x, bounds=(lo, 3.0), **kw).perturbation

    first = f.run(lambda: run(0, 0.5, -3.0), 10)
    assert first >= 1
    assert f.run(lambda: run(0, 0.5, -3.0), 10) == first
    assert f.run(lambda: run(1, 0.3, -2.0), 10) == first  # data, key, radius, box values


def test_boundary_thickness_compiles_once():
    f = Counted(16, seed=8)

    def run(n, seed, alpha=0.0, beta=0.75):
        x = _data(n, (16,), seed)
        xa = x + _data(n, (16,), seed + 50)
        kw = dict(alpha=alpha, beta=beta, num_points=5, chunk_size=4)
        return boundary_thickness(f, x, xa, **kw).thickness

    first = f.run(lambda: run(10, 0), 10)
    assert first >= 1
    assert f.run(lambda: run(10, 0), 10) == first
    assert f.run(lambda: run(13, 1, alpha=-0.5, beta=0.5), 13) == first


class Flatten(Counted):
    """``x -> x.reshape(N, -1)`` (a layer's features), counting traces as :class:`Counted`."""

    def __call__(self, x):
        if isinstance(x, jax.core.Tracer) and x.shape[0] != self.n:
            self.traces += 1
        return x.reshape(x.shape[0], -1)


def test_margin_signature_compiles_once():
    f, flat = Counted(16, seed=9), Flatten(16)
    splits = {"flat": (flat, f)}

    def run(n, seed):
        flat.n = n
        x = _data(n, (4, 4), seed)
        y = jnp.argmax(f(x), -1)
        sig = margin_signature(f, x, y, splits=splits, chunk_size=4)
        return sig.layer("flat").margins, first_order_margins(f, x, y, chunk_size=4)[0]

    first = f.run(lambda: run(10, 0), 10)
    features = flat.traces
    assert first >= 1 and features >= 1
    assert f.run(lambda: run(10, 0), 10) == first
    assert f.run(lambda: run(13, 1), 13) == first
    assert flat.traces == features


def test_fourier_accuracy_map_compiles_once():
    traces = []

    def init_params(k):
        return {"w": 0.01 * jax.random.normal(k, (16, 2)), "b": jnp.zeros(2)}

    def apply(p, x):
        traces.append(x.shape)
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]

    def run(seed, freqs):
        kw = dict(n_train=8, n_test=4, steps=2, batch_size=4, chunk_size=2)
        key = jax.random.key(seed)
        return fourier_accuracy_map(init_params, apply, (4, 4), key=key, frequencies=freqs, **kw)

    jax.block_until_ready(run(0, [(0, 0), (1, 1), (2, 2)]).accuracy)
    first = len(traces)
    assert first >= 1
    jax.block_until_ready(run(1, [(0, 1), (1, 2), (3, 3), (2, 0), (1, 0)]).accuracy)
    assert len(traces) == first  # other key, more chunks


def test_resize_images_compiles_once(monkeypatch):
    traces = []
    resize = jax.image.resize

    def counted(image, shape, *args, **kw):
        traces.append(shape)
        return resize(image, shape, *args, **kw)

    monkeypatch.setattr(jax.image, "resize", counted)
    rng = np.random.default_rng(0)
    resize_images(rng.random((10, 8, 8, 1), np.float32), (4, 4), chunk_size=4)
    first = len(traces)
    assert first == 2  # the full chunks and the last, shorter one
    resize_images(2 * rng.random((10, 8, 8, 1), np.float32), (4, 4), chunk_size=4)
    assert len(traces) == first  # other data (and range): no retrace


def test_robustness_monitor_compiles_once_per_hook():
    f = Counted(16, seed=10)
    x = _data(8, (16,), 0)
    y = jnp.argmax(f(x), -1)

    def apply(scale, z):
        return f(z) * scale

    hook = robustness_monitor(apply, x, y, eps=0.1, key=jax.random.key(0), pgd_steps=2, warn=False)
    f.n = 0  # the held-out batch is not chunked: count every trace
    hook(0, jnp.float32(1.0), {})
    first = f.traces
    assert first >= 1
    for epoch in (1, 2):
        hook(epoch, jnp.float32(1.0 + epoch), {})
    assert f.traces == first


# ---------------------------------------------------------------------------------------
# Weights are arguments: a second model of the same architecture, or a fresh adapter of the
# same model, compiles NOTHING (counted with jax.log_compiles, eager operations included).


def _entry_points():
    import geomrobust as gr
    from geomrobust.measures import nads

    x = jnp.clip(0.5 + 0.25 * jax.random.normal(jax.random.key(1), (10, 8, 8, 1)), 0, 1)
    x = x.astype(jnp.float32)
    d = jax.random.normal(jax.random.key(2), (3, 8, 8, 1), jnp.float32)
    d = d / jnp.linalg.norm(d.reshape(3, -1), axis=1).reshape(3, 1, 1, 1)
    key = jax.random.key(0)
    bands = gr.dct_subspaces((8, 8, 1), 4, 4, dtype=np.float32)

    def boundary(f):
        df = gr.deepfool_dataset(f, x, chunk_size=4, slots=2)
        y = jnp.argmax(gr.as_classifier(f)(x), -1)
        return (
            x + 0.999 * df.perturbation,
            y,
            jnp.where(df.adv_label == y, (y + 1) % 10, jnp.maximum(df.adv_label, 0)),
        )

    def nads_init(k):  # a fresh closure each time: the same code over the same settings
        shape = (8, 8, 1)
        return gr.as_classifier(gr.create_model("lenet", shape, 2, key=k, activation="tanh"))

    curv = dict(num=3, key=key, method="lanczos", krylov_dim=12, chunk_size=4)
    eigs = dict(num=2, key=key, method="lanczos", chunk_size=4)
    return {
        "deepfool": lambda f: gr.deepfool(f, x).margin,
        "deepfool_dataset": lambda f: gr.deepfool_dataset(f, x, chunk_size=4, slots=4).margin,
        "subspace_margins": lambda f: gr.subspace_margins(f, x, None, bands, chunk_size=4).margin,
        "margin_along": lambda f: gr.margin_along(f, x, d, max_dist=4.0, chunk_size=4).margin,
        "refine_boundary": lambda f: (
            gr.refine_boundary(f, x, boundary(f)[0] * 1.001, boundary(f)[1], chunk_size=4).z
        ),
        "principal_curvatures": lambda f: (
            gr.principal_curvatures(
                f, *boundary(f), num=3, key=key, method="lanczos", krylov_dim=12, chunk_size=4
            ).values
        ),
        "principal_curvatures_device": lambda f: (
            gr.principal_curvatures(f, *boundary(f), **curv, loop="device").values
        ),
        "loss_hessian_eigs": lambda f: (
            gr.loss_hessian_eigs(
                f, x, jnp.zeros(10, jnp.int32), num=2, key=key, method="lanczos", chunk_size=4
            ).values
        ),
        "loss_hessian_eigs_device": lambda f: (
            gr.loss_hessian_eigs(f, x, jnp.zeros(10, jnp.int32), **eigs, loop="device").values
        ),
        "pgd": lambda f: gr.pgd(f, x, jnp.zeros(10, jnp.int32), key=key, eps=0.1, steps=2),
        "robust_accuracy": lambda f: (
            gr.robust_accuracy(
                f, x, jnp.zeros(10, jnp.int32), [0.05, 0.1], key=key, steps=2, chunk_size=4
            ).success
        ),
        "nads": lambda f: (
            nads(
                lambda k: nads_init(k), (8, 8, 1), num_networks=4, key=key, chunk_size=2
            ).eigenvalues
        ),
    }


@pytest.mark.parametrize("name", list(_entry_points()))
def test_second_model_and_fresh_adapter_compile_nothing(name):
    from _compiles import compilations

    import geomrobust as gr

    run = _entry_points()[name]
    models = [
        gr.create_model("lenet", (8, 8, 1), 10, key=jax.random.key(s), activation="tanh")
        for s in (0, 1)
    ]
    jax.block_until_ready(run(models[0]))  # compiles
    with compilations() as c:
        jax.block_until_ready(run(models[1]))  # another model of the same architecture
        jax.block_until_ready(run(gr.as_classifier(models[0])))  # a fresh adapter
        jax.block_until_ready(run(gr.as_classifier(models[1])))
    assert c.names == [], f"{name} compiled {c.names}"
