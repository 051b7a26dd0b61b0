"""Gradient-masking checks: raised on a model behind a gradient-free quantization (its
gradients are zero), not raised on a standard and a PGD-trained MLP on the digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.data import load_dataset
from geomrobust.models import create_model, pure_apply
from geomrobust.search._masking import monotone_flags
from geomrobust.train import fit, make_loss, make_optimizer, pgd_at_loss

EPS = [0.05, 0.1, 0.2]
KW = dict(key=jax.random.key(0), bounds=(0.0, 1.0), steps=20, square_steps=200)


@pytest.fixture(scope="module")
def models():
    tr = load_dataset("digits", "train")
    te = load_dataset("digits", "test")
    model = create_model("mlp", (8, 8, 1), 10, key=jax.random.key(3), widths=[64])
    apply, params = pure_apply(model)
    out = {}
    for name, loss_fn in (
        ("standard", make_loss("standard")),
        ("pgd", pgd_at_loss(0.2, steps=5, bounds=(0.0, 1.0))),
    ):
        opt = make_optimizer("adam", 3e-3, epochs=8, steps_per_epoch=len(tr.images) // 64)
        res = fit(apply, params, opt, tr.images, tr.labels, key=jax.random.key(4), epochs=8,
                  batch_size=64, loss_fn=loss_fn, progress=False)  # fmt: skip
        out[name] = lambda z, p=res.state.params: apply(p, z)
    return out, jnp.asarray(te.images[:200]), jnp.asarray(te.labels[:200])


def _quantized(f, levels=4):
    """A saturating, gradient-free preprocessing: ``round(x · levels) / levels`` has zero
    gradient everywhere (the masking of Athalye et al. 2018's "shattered gradients")."""
    return lambda z: f(jnp.round(z * levels) / levels)


@pytest.mark.parametrize("name", ["standard", "pgd"])
def test_no_flags_on_trained_models(models, name):
    fns, x, y = models
    r = gr.masking_checks(fns[name], x, y, EPS, **KW)
    assert r.flags == (), r.flags
    assert r.clean_accuracy > 0.75 and r.large_eps_accuracy == 0.0
    # the worst case is below every attack's accuracy, and monotone
    for a in ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square"):
        assert (r.worst_case <= r.accuracy[a] + 1e-12).all()
    assert (np.diff(r.worst_case) <= 0).all()


@pytest.mark.parametrize("name", ["standard", "pgd"])
def test_flags_on_a_gradient_free_preprocessing(models, name):
    fns, x, y = models
    f = _quantized(fns[name])
    r = gr.masking_checks(f, x, y, EPS, **KW)
    kinds = {s.split(":")[0] for s in r.flags}
    assert {"black-box-stronger", "large-eps"} <= kinds, r.flags
    assert r.large_eps_accuracy > 0.1
    # FGSM sees a zero gradient: it changes nothing
    assert np.allclose(r.accuracy["fgsm"], r.clean_accuracy)
    # robust_accuracy reports the same flags with checks=True, none without
    ra = gr.robust_accuracy(f, x, y, EPS, key=jax.random.key(0), steps=20, bounds=(0.0, 1.0),
                            checks=True)  # fmt: skip
    assert {"black-box-stronger", "large-eps"} <= {s.split(":")[0] for s in ra.flags}
    plain = gr.robust_accuracy(f, x, y, EPS, key=jax.random.key(0), steps=20, bounds=(0.0, 1.0))
    assert plain.flags == ()


def test_robust_accuracy_with_apgd_and_square(models):
    fns, x, y = models
    f = fns["standard"]
    kw = dict(key=jax.random.key(1), bounds=(0.0, 1.0))
    pgd = gr.robust_accuracy(f, x, y, EPS, steps=20, **kw)
    ce = gr.robust_accuracy(f, x, y, EPS, attack="apgd-ce", steps=20, **kw)
    dlr = gr.robust_accuracy(f, x, y, EPS, attack="apgd-dlr", steps=20, **kw)
    sq = gr.robust_accuracy(f, x, y, EPS, attack="square", steps=100, **kw)
    for r in (ce, dlr, sq):
        assert r.accuracy.shape == (3,) and r.flags == ()
        assert r.clean_accuracy == pgd.clean_accuracy
    assert (ce.accuracy <= pgd.accuracy + 0.02).all()
    assert (dlr.accuracy <= pgd.accuracy + 0.02).all()
    with pytest.raises(ValueError, match="attack must be one of"):
        gr.robust_accuracy(f, x, y, EPS, attack="apgd", **kw)


def test_monotone_flags():
    assert monotone_flags([0.1, 0.2, 0.3], [0.8, 0.5, 0.2], "pgd") == []
    flags = monotone_flags([0.3, 0.1, 0.2], [0.6, 0.8, 0.5], "pgd")  # unsorted radii
    assert len(flags) == 1 and "eps=0.2" in flags[0] and "eps=0.3" in flags[0]
    assert monotone_flags([0.1, 0.2], [0.5, 0.51], "pgd") == []  # within tol
