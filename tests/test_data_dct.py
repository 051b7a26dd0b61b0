"""The orthonormal 2-D DCT of ``_dct.py`` against SciPy, and its frequency-domain edits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from conftest import rel_err, rtol_for

from geomrobust.data import dct2, dct_flip, dct_matrix, high_pass, idct2, low_pass


@pytest.mark.parametrize("n", [1, 2, 7, 8, 28])
def test_dct_matrix_matches_scipy(n):
    c = dct_matrix(n)
    np.testing.assert_allclose(c, scipy.fft.dct(np.eye(n), norm="ortho", axis=0), atol=1e-13)
    np.testing.assert_allclose(c @ c.T, np.eye(n), atol=1e-13)
    assert dct_matrix(n, np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="DCT size"):
        dct_matrix(0)


@pytest.fixture
def images(dtype, key):
    return jax.random.uniform(key, (3, 8, 6, 2), dtype)


def test_dct2_matches_scipy_and_inverts(images, dtype):
    ref = scipy.fft.dctn(np.asarray(images, np.float64), axes=(1, 2), norm="ortho")
    y = dct2(images)
    assert y.dtype == dtype and y.shape == images.shape
    assert rel_err(y, ref) < 10 * rtol_for(dtype)
    back = idct2(y)
    assert back.dtype == dtype
    assert rel_err(back, images) < 10 * rtol_for(dtype)
    ref_inv = scipy.fft.idctn(np.asarray(images, np.float64), axes=(1, 2), norm="ortho")
    assert rel_err(idct2(images), ref_inv) < 10 * rtol_for(dtype)
    # HWC and HW layouts: the same transform of each image / channel
    assert rel_err(dct2(images[0]), ref[0]) < 10 * rtol_for(dtype)
    assert rel_err(dct2(images[0, ..., 1]), ref[0, ..., 1]) < 10 * rtol_for(dtype)
    # orthonormal: Parseval
    np.testing.assert_allclose(jnp.sum(y**2), jnp.sum(images**2), rtol=10 * rtol_for(dtype))


def test_dct_flip_is_an_involution(images, dtype):
    f = dct_flip(images)
    assert f.dtype == dtype
    assert rel_err(dct_flip(f), images) < 10 * rtol_for(dtype)
    # it reverses both frequency axes
    assert rel_err(dct2(f), np.asarray(dct2(images))[:, ::-1, ::-1]) < 10 * rtol_for(dtype)


@pytest.mark.parametrize("cutoff", [0, 3, 8])
def test_low_plus_high_pass(images, dtype, cutoff):
    lo, hi = low_pass(images, cutoff), high_pass(images, cutoff)
    assert lo.dtype == dtype and hi.dtype == dtype
    assert rel_err(lo + hi, images) < 10 * rtol_for(dtype)
    c = np.asarray(dct2(lo), np.float64)
    band = np.zeros((8, 6), bool)
    band[:cutoff, :cutoff] = True
    assert np.abs(c[:, ~band]).max(initial=0) <= 10 * rtol_for(dtype)
    assert np.abs(np.asarray(dct2(hi))[:, band]).max(initial=0) <= 10 * rtol_for(dtype)


def test_dct_errors(images):
    with pytest.raises(ValueError, match="HW, HWC or a batch NHWC"):
        dct2(images[None])
    with pytest.raises(ValueError, match="cutoff"):
        low_pass(images, 9)
