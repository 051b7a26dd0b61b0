"""``gr.as_classifier((apply, params))``: the pair in one argument, as a Linen user has it
(``module.apply`` and its variables), means ``gr.as_classifier(apply, params)``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _forms import LinenCNN

import geomrobust as gr


def test_a_linen_apply_params_pair_is_a_classifier():
    module = LinenCNN()
    x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
    variables = module.init(jax.random.key(1), x)
    want = module.apply(variables, x)
    for pair in ((module.apply, variables), (module, variables)):
        clf = gr.as_classifier(pair)
        assert isinstance(clf, gr.Classifier)
        np.testing.assert_allclose(clf(x), want, rtol=1e-6)
    r = gr.deepfool((module.apply, variables), x)  # entry points take the pair as well
    assert r.margin.shape == (3,)
    with pytest.raises(TypeError):
        gr.as_classifier((jnp.ones(3), variables))  # not an apply function
