"""geomrobust.analyses: every ``compute`` gives what the library functions give when called
directly, its summary accounts for every example (valid + excluded = N), and a chunk store
resumes with the same results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import mlp

import geomrobust as gr
from geomrobust import analyses
from geomrobust._deprecation import upgrade_record
from geomrobust.analyses import (
    CurvatureSettings,
    DiagnoseSettings,
    MarginSettings,
    NADSettings,
    SliceSettings,
)
from geomrobust.io import open_chunk_store

N, SHAPE, K = 7, (4, 4, 1), 3


@pytest.fixture(scope="module")
def setup():
    """A smooth (tanh) MLP on 4x4 images in [0, 1], float32, with labels that the model
    gets partly wrong (so the clean mask matters)."""
    f = mlp(jax.random.key(0), SHAPE, K, width=8)
    x = jax.random.uniform(jax.random.key(1), (N, *SHAPE), jnp.float32)
    pred = np.asarray(jnp.argmax(f(x), -1))
    y = pred.copy()
    y[:2] = (pred[:2] + 1) % K  # two misclassified examples
    return f, x, jnp.asarray(y, jnp.int32)


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_deepfool_equals_the_library_and_counts_every_example(setup):
    f, x, y = setup
    arrays, s = analyses.margins.compute(f, (x, y), MarginSettings(chunk_size=N))
    ref = gr.deepfool_dataset(f, x, y, chunk_size=N, bounds=(0.0, 1.0))  # images: the box
    assert s["box"] == [0.0, 1.0]
    for k in ("margin", "converged", "adv_label", "iterations", "perturbation", "status"):
        _same(arrays[k], getattr(ref, k))
    assert s["status"] == gr.Status.describe(ref.status)
    clean = np.asarray(y) == np.asarray(jnp.argmax(f(x), -1))
    assert s["clean_accuracy"] == pytest.approx(clean.mean()) and s["n"] == N
    ok = np.asarray(ref.converged) & clean
    assert (
        s["margin"]["n_valid"] == ok.sum()
        and s["margin"]["n_valid"] + s["margin"]["n_excluded"] == N
    )
    assert s["margin"]["median"] == pytest.approx(np.median(np.asarray(ref.margin)[ok]))
    # unconverged examples (one DeepFool step is not enough for all) are counted, not averaged
    arrays, s = analyses.margins.compute(f, (x, y), MarginSettings(deepfool_steps=1, chunk_size=3))
    assert s["n_unconverged"] == int((~arrays["converged"]).sum()) > 0
    assert s["margin"]["n_excluded"] >= s["n_unconverged"]
    # each one is counted by why it ended (here mostly the budget)
    assert s["status"] == gr.Status.describe(arrays["status"])
    assert N - s["status"].get("SUCCESS", 0) == s["n_unconverged"]
    assert s["status"].get("MAX_STEPS", 0) > 0


def test_chunked_deepfool_matches_one_chunk(setup):
    f, x, y = setup
    one, _ = analyses.margins.compute(f, (x, y), MarginSettings(chunk_size=N))
    three, _ = analyses.margins.compute(f, (x, y), MarginSettings(chunk_size=3))
    _same(three["converged"], one["converged"])
    np.testing.assert_allclose(three["margin"], one["margin"], rtol=1e-6)


def test_dct_random_pgd_sparsefool_equal_the_library(setup):
    f, x, y = setup
    arrays, s = analyses.margins.compute(
        f, (x, y), MarginSettings(subspaces="dct", block=2, stride=2, chunk_size=N)
    )
    ref = gr.subspace_margins(
        f, x, y, gr.dct_subspaces(SHAPE, 2, 2, dtype=np.float32), bounds=(0.0, 1.0)
    )
    _same(arrays["margin"], ref.margin)
    _same(arrays["status"], ref.status)
    assert s["status"] == gr.Status.describe(ref.status)
    bands = s["bands"]
    assert s["n_bands"] == 2 and np.all(bands["n_converged"] + bands["n_unconverged"] == N)
    # unconverged inside the box: no boundary inside it, counted as such
    assert (
        s["n_no_boundary_in_box"]
        == (~arrays["converged"] & (np.asarray(y) == np.asarray(jnp.argmax(f(x), -1)))[None])
        .sum(1)
        .tolist()
    )

    arrays, s = analyses.margins.compute(
        f, (x, y), MarginSettings(subspaces="random", subspace_dim=4, draws=2, chunk_size=N)
    )
    ref = gr.random_subspace_margins(
        f, x, y, dim=4, key=jax.random.key(0), num_draws=2, bounds=(0.0, 1.0)
    )
    _same(arrays["ratio"], ref.ratio)
    _same(arrays["status"], ref.status)
    _same(arrays["minimal_status"], ref.minimal_status)
    np.testing.assert_array_equal(ref.converged, ref.status == gr.Status.SUCCESS)
    np.testing.assert_array_equal(ref.minimal_converged, ref.minimal_status == gr.Status.SUCCESS)
    assert s["dim"] == 4 and s["ratio_n_valid"] + s["ratio_n_excluded"] == 2 * N

    eps = (0.05, 0.2)
    arrays, s = analyses.margins.compute(
        f, (x, y), MarginSettings(method="pgd", eps=eps, steps=3, chunk_size=3)
    )
    ref = gr.robust_accuracy(
        f, x, y, eps, key=jax.random.key(0), norm=2.0, steps=3, chunk_size=3, bounds=(0.0, 1.0)
    )
    _same(arrays["success"], ref.success)
    np.testing.assert_allclose(arrays["accuracy"], ref.accuracy)
    assert list(s["robust_accuracy"]) == ["0.05", "0.2"]
    _same(arrays["status"] == gr.Status.SUCCESS, ref.success)
    assert list(s["status"]) == ["0.05", "0.2"]

    arrays, s = analyses.margins.compute(f, (x, y), MarginSettings(method="sparsefool"))
    ref = gr.sparsefool(f, x, y, bounds=(0.0, 1.0))
    _, s0 = analyses.margins.compute(f, (x, y), MarginSettings(bounds=None))
    assert s0["box"] is None
    _same(arrays["converged"], ref.converged)
    np.testing.assert_allclose(arrays["l1"], ref.l1, rtol=1e-5)
    assert s["l1"]["n_valid"] + s["l1"]["n_excluded"] == N


def test_boundary_points_is_deepfool_then_bisection(setup):
    f, x, _ = setup
    bs = analyses.boundary_points(f, x)
    pred = jnp.argmax(f(x), -1)
    df = gr.deepfool_dataset(f, x, pred)
    bp = gr.refine_boundary(f, x, x + df.perturbation, pred)
    _same(bs.z, bp.z)
    _same(bs.margin, df.margin)
    _same(bs.valid, bp.converged & df.converged & (df.margin > 0))
    # a DeepFool result already at hand is reused, not searched again
    again = analyses.boundary_points(f, x, pred, deepfool=df)
    _same(again.z, bs.z)


def test_curvature_equals_the_library_and_counts(setup, tmp_path):
    f, x, y = setup
    settings = CurvatureSettings(num=3, fooling_samples=4, shared_dim=2, loss_eigs=2, chunk_size=3)
    arrays, s = analyses.curvature.compute(f, (x, y), settings)
    bs = analyses.boundary_points(f, x, bounds=(0.0, 1.0))
    idx = np.flatnonzero(np.asarray(bs.valid))
    _same(arrays["index"], idx)
    ref = gr.principal_curvatures(
        f, bs.z[idx], bs.y[idx], bs.k[idx], num=3, key=jax.random.key(0), ids=idx
    )
    np.testing.assert_allclose(arrays["values"], ref.values, rtol=1e-5, atol=1e-6)
    assert s["num_boundary_points"] + s["num_no_boundary_point"] == N
    assert s["num_converged"] + s["num_unconverged"] == s["num_boundary_points"] == idx.size
    assert 0 <= s["fooling_rate_isotropic"] <= 1 and s["fooling_subspace_dim"] == 2
    le = gr.loss_hessian_eigs(f, x, y, num=2, key=jax.random.fold_in(jax.random.key(0), 2))
    np.testing.assert_allclose(arrays["loss_eigs"], le.values, rtol=1e-5, atol=1e-6)
    assert s["loss_eigs_n_converged"] + s["loss_eigs_n_unconverged"] == N
    # through a chunk store: the second run reads every chunk back, with the same results
    store = open_chunk_store(tmp_path / "chunks", {"test": 1})
    first, _ = analyses.curvature.compute(f, (x, y), settings, store=store)
    assert store.completed() == [0, 1, 2]
    again, _ = analyses.curvature.compute(f, (x, y), settings, store=store)
    for k in first:
        _same(again[k], first[k])
    with pytest.raises(ValueError, match=r"settings\.key"):
        analyses.curvature.compute(f, x, settings, store=store, key=jax.random.key(1))


def test_slices_equal_the_library(setup):
    f, x, _ = setup
    settings = SliceSettings(index=(1,), planes=("adversarial", "tangent"), resolution=5)
    arrays, s = analyses.slices.compute(f, x, settings)
    bs = analyses.boundary_points(f, x[1:2])
    u = bs.perturbation[0] / jnp.linalg.norm(bs.perturbation[0])
    kj = jax.random.fold_in(jax.random.key(0), 1)
    extent = 3.0 * max(float(bs.margin[0]), 1e-3)
    cls = (int(bs.y[0]), int(bs.k[0]))
    ref = gr.boundary_slice(
        f, x[1], u, gr.measures.random_orthogonal(u, key=kj), extent, 5, classes=cls
    )
    _same(arrays["labels_1_adversarial"], ref.labels)
    _same(arrays["logit_diff_1_adversarial"], ref.logit_diff)
    assert s["n_slices"] == 2 and s["n_no_boundary_point"] == 0
    assert [r["plane"] for r in s["slices"]] == ["adversarial", "tangent"]
    with pytest.raises(ValueError, match="outside"):
        SliceSettings(index=(N,)).check(N)


def test_diagnose_equals_the_library(setup):
    f, x, y = setup
    settings = DiagnoseSettings(what=("thickness", "signature", "rho"), grid=32)
    arrays, s = analyses.diagnose.compute(f, (x, y), settings)
    t = gr.measures.thickness(f, x, y, num_points=32)
    _same(arrays["thickness_valid"], t.valid)
    np.testing.assert_array_equal(arrays["thickness"], np.asarray(t.thickness))
    assert s["thickness"]["n_valid"] + s["thickness"]["n_excluded"] == N
    assert s["thickness"]["mean"] == pytest.approx(t.mean)
    r = gr.deepfool_dataset(f, x, y, norm=2)
    assert s["rho"]["rho"] == pytest.approx(gr.normalized_robustness(r.margin, x, r.converged))
    sig = gr.margin_signature(f, x, y)
    np.testing.assert_allclose(s["signature"]["input"]["stats"], sig.layer("input").stats)
    with pytest.raises(ValueError, match="need --eps"):
        analyses.diagnose.compute(f, (x, y), DiagnoseSettings(what=("linearity",)))


def test_diagnose_reuses_a_deepfool_result(setup):
    """``deepfool=``: the thickness endpoints, rho and the noise prediction come from the
    given search (the report's thickness stage passes the margins stage's), with the
    numbers of a diagnose run that searches itself; a search that did not converge or has
    margin 0 leaves its example not valid."""
    f, x, _ = setup
    settings = DiagnoseSettings(what=("thickness", "rho"), grid=16, chunk_size=N)
    own, s_own = analyses.diagnose.compute(f, x, settings)
    r = gr.deepfool_dataset(f, x, norm=2, chunk_size=N)
    given, s_given = analyses.diagnose.compute(f, x, settings, deepfool=r)
    for k in own:
        _same(given[k], own[k])
    assert s_given == s_own
    i, j = np.flatnonzero(own["thickness_valid"])[:2]  # two valid examples
    conv, margin = np.asarray(r.converged).copy(), np.asarray(r.margin).copy()
    conv[i], margin[j] = False, 0.0
    a, _ = analyses.diagnose.compute(
        f, x, settings, deepfool=r._replace(converged=conv, margin=margin)
    )
    assert not a["thickness_valid"][i] and not a["thickness_valid"][j]
    assert np.isnan(a["thickness"][[i, j]]).all()
    assert a["thickness_valid"].sum() == own["thickness_valid"].sum() - 2


def test_diagnose_alignment_and_noise_equal_the_library(setup):
    f, x, y = setup
    settings = DiagnoseSettings(what=("alignment", "noise"), noise_sigmas=(0.1, 0.5),
                                noise_samples=8, chunk_size=N)  # fmt: skip
    arrays, s = analyses.diagnose.compute(f, (x, y), settings)
    a = gr.measures.gradient_alignment(f, x, y)
    np.testing.assert_array_equal(arrays["alignment"], np.asarray(a.alignment))
    assert s["alignment"]["n_valid"] + s["alignment"]["n_excluded"] == N
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 3), 0)
    res = gr.measures.gaussian_noise_errors(f, x, y, (0.1, 0.5), key=key, samples=8)
    np.testing.assert_array_equal(arrays["noise_error"], np.asarray(res.example_error))
    assert s["noise"]["error"] == pytest.approx(np.asarray(res.error).tolist())
    assert s["noise"]["n_valid"] + s["noise"]["n_excluded"] == N
    with pytest.raises(ValueError, match="noise_sigmas"):
        DiagnoseSettings(what=("noise",), noise_sigmas=(0.1, -1.0)).validate()


def test_nads_and_accuracy_map_equal_the_library(tmp_path):
    arch = analyses.Architecture("mlp", {"widths": [4]}, SHAPE)
    settings = NADSettings(
        num_networks=6,
        batch=3,
        num=3,
        accuracy_map=True,
        map_stride=2,
        map_train=16,
        map_test=16,
        map_steps=2,
        map_chunk=3,
    )
    store = open_chunk_store(tmp_path / "chunks", {"test": 1})
    arrays, s = analyses.nads.compute(arch, None, settings, store=store)
    ref = gr.nads(
        lambda k: gr.as_classifier(arch.create(k)),
        SHAPE,
        num_networks=6,
        key=jax.random.key(0),
        chunk_size=3,
        num=3,
        output="difference",
    )
    _same(arrays["eigenvalues"], ref.eigenvalues)
    from geomrobust.measures import fourier_accuracy_map

    key = jax.random.fold_in(jax.random.key(0), 1)
    amap = fourier_accuracy_map(
        lambda k: gr.pure_apply(arch.create(k))[1],
        gr.pure_apply(arch.create(key))[0],
        SHAPE,
        key=key,
        frequencies=[(0, 0), (0, 2), (2, 0), (2, 2)],
        n_train=16,
        n_test=16,
        steps=2,
        chunk_size=3,
    )
    _same(arrays["map_accuracy"], amap.accuracy)
    np.testing.assert_array_equal(arrays["map_grid"], np.asarray(amap.grid))
    assert s["map_directions"] == 4 and store.completed() == [0, 1]
    assert s["architecture"] == "mlp" and len(s["eigenvalues"]) == 3


def test_summarize_and_predict():
    s = analyses.summarize([1.0, 2.0, np.inf, np.nan, 4.0], [True, True, True, True, False])
    assert s == {
        "n_valid": 2,
        "n_excluded": 3,
        "median": 1.5,
        "q25": 1.25,
        "q75": 1.75,
        "mean": 1.5,
    }
    assert analyses.summarize([np.nan]) == {"n_valid": 0, "n_excluded": 1}
    f = mlp(jax.random.key(0), SHAPE, K)
    x = jax.random.uniform(jax.random.key(2), (5, *SHAPE))
    _same(analyses.predict(f, x, chunk_size=2), jnp.argmax(f(x), -1))


@pytest.mark.parametrize(
    "cls, old, new",
    [
        (CurvatureSettings, "max_iter", "deepfool_steps"),
        (CurvatureSettings, "max_restarts", "restarts"),
        (MarginSettings, "max_iter", "deepfool_steps"),
        (SliceSettings, "max_iter", "deepfool_steps"),
    ],
)
def test_settings_accept_their_old_field_names_one_release(cls, old, new):
    """docs/api.md section 6: the old field name sets the new field, with a warning naming it;
    both at once is an error; the record of an older run translates to the same settings."""
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated.*use {new}="):
        s = cls(**{old: 7})
    assert getattr(s, new) == 7 and s == cls(**{new: 7})
    assert not hasattr(s, old)
    with pytest.raises(TypeError, match=f"both {old}="):
        cls(**{old: 7, new: 7})
    record = analyses.settings_record(s)
    saved = {old if k == new else k: v for k, v in record.items()}  # an older release's record
    assert upgrade_record(saved, cls.__renamed__) == record


class _Entries:
    """Counts, during one command, the engine's chunk loops (top level and nested inside
    another call's chunk) and the ``as_classifier`` calls (all, and those that convert
    something that is not yet a ``Classifier``), by patching every module's reference."""

    def __init__(self, monkeypatch):
        import sys

        from geomrobust.engine import _executor
        from geomrobust.engine._processes import _INSIDE_CHUNK
        from geomrobust.models import Classifier, as_classifier

        self.loops = self.nested = self.calls = self.conversions = 0
        real_loop = _executor._run_local

        def loop(*a, **kw):
            if _INSIDE_CHUNK.get():
                self.nested += 1
            else:
                self.loops += 1
            return real_loop(*a, **kw)

        def convert(obj, *a, **kw):
            self.calls += 1
            self.conversions += not isinstance(obj, Classifier)
            return as_classifier(obj, *a, **kw)

        monkeypatch.setattr(_executor, "_run_local", loop)
        for name, mod in list(sys.modules.items()):
            if (
                name.startswith("geomrobust")
                and getattr(mod, "as_classifier", None) is as_classifier
            ):
                monkeypatch.setattr(mod, "as_classifier", convert)

    def counts(self):
        return dict(loops=self.loops, nested=self.nested, calls=self.calls,
                    conversions=self.conversions)  # fmt: skip


_COMMANDS = {
    "deepfool": lambda f, d: analyses.margins.compute(f, d, MarginSettings(chunk_size=3)),
    "dct": lambda f, d: analyses.margins.compute(
        f, d, MarginSettings(subspaces="dct", block=2, stride=2, chunk_size=3)
    ),
    "random": lambda f, d: analyses.margins.compute(
        f, d, MarginSettings(subspaces="random", draws=2, subspace_dim=4, chunk_size=3)
    ),
    "best": lambda f, d: analyses.margins.compute(
        f,
        d,
        MarginSettings(method="best", fmn_steps=5, cw_steps=5, cw_binary_steps=1, chunk_size=3),
    ),
    "curvature": lambda f, d: analyses.curvature.compute(
        f, d, CurvatureSettings(num=2, restarts=2, fooling_samples=0, chunk_size=3)
    ),
    "diagnose": lambda f, d: analyses.diagnose.compute(
        f, d, DiagnoseSettings(what=("thickness", "rho"), grid=8, chunk_size=3)
    ),
}


@pytest.mark.parametrize("command", list(_COMMANDS))
def test_a_command_enters_the_chunk_loop_once_per_pass(setup, monkeypatch, command):
    """docs/api.md section 4: one host chunker, entered once per measurement. A command
    hands the whole dataset to its driver: the engine's chunk loop runs once per pass over
    the data (the labels, then the search), never again inside a chunk, however many chunks
    there are; the classifier is converted once at most (not at all when it is already a
    ``gr.Classifier``), and a single-driver command calls
    ``as_classifier`` a fixed number of times (a pipeline of searches, ``best`` or the
    curvature, calls them as the work of each chunk; before this, the analyses wrapped the
    drivers in a chunk loop of their own: one more loop and conversion per chunk)."""
    f, x, y = setup
    seen = []
    for n in (3, 6):  # one chunk, then two chunks of the same shape
        with monkeypatch.context() as m:
            entries = _Entries(m)
            _COMMANDS[command](f, (x[:n], y[:n]))
            seen.append(entries.counts())
    for c in seen:
        assert c["nested"] == 0, (command, seen)
        assert c["conversions"] == (not isinstance(f, gr.Classifier)), (command, seen)
    assert seen[0]["loops"] == seen[1]["loops"] <= 3, (command, seen)
    if command in ("deepfool", "dct", "random"):  # pipelines run their searches per chunk
        assert seen[0]["calls"] == seen[1]["calls"], (command, seen)


_DRIVERS = {
    "deepfool_dataset": lambda f, x, y, **kw: gr.deepfool_dataset(f, x, y, slots=2, **kw),
    "subspace_margins": lambda f, x, y, **kw: gr.subspace_margins(
        f, x, y, [jnp.eye(16)[:, :4], jnp.eye(16)[:, 4:12]], **kw
    ),
    "random_subspace_margins": lambda f, x, y, **kw: gr.random_subspace_margins(
        f, x, y, dim=4, key=jax.random.key(2), num_draws=2, **kw
    ),
    "minimal_margin": lambda f, x, y, **kw: gr.search.minimal_margin(
        f, x, y, fmn_kw=dict(steps=5), cw_kw=dict(steps=5, binary_steps=1), **kw
    ),
}


@pytest.mark.parametrize("driver", list(_DRIVERS))
def test_a_driver_with_a_store_resumes(setup, tmp_path, driver):
    """The drivers the analyses hand whole datasets to take the chunk store: a run through
    it equals a run without it, every chunk is written, and a second run reads the chunks
    back instead of computing them (an altered chunk on disk comes through)."""
    f, x, y = setup
    run = _DRIVERS[driver]
    ref = run(f, x, y, chunk_size=3)
    store = open_chunk_store(tmp_path / "chunks", {"driver": driver})
    first = run(f, x, y, chunk_size=3, store=store)
    assert store.completed() == [0, 1, 2]
    for name, v in first._asdict().items():
        if hasattr(v, "shape"):
            _same(v, getattr(ref, name))
    chunk = store.load(1)
    field = "minimal_margin" if "minimal_margin" in chunk else "margin"
    chunk[field] = chunk[field] + 1.0
    store.save(1, chunk)
    again = run(f, x, y, chunk_size=3, store=store)
    got, want = np.asarray(getattr(again, field)), np.asarray(getattr(first, field))
    _same(got[..., 3:6], want[..., 3:6] + 1.0)
    _same(got[..., :3], want[..., :3])
    _same(got[..., 6:], want[..., 6:])
