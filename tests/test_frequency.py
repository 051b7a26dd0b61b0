"""Fourier heat map and perturbation spectrum (Yin et al. 2019) against closed forms: an affine
classifier whose weight is one Fourier atom is perturbed only at that frequency and its mirror."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geomrobust as gr
from geomrobust.measures import (
    fourier_basis,
    fourier_heat_map,
    frequency_radius,
    perturbation_spectrum,
)

H = W = 8
A, B = 2, 3  # the classifier's frequency
SCALE = 2.0


def _affine(dtype, channels=1):
    u = fourier_basis((H, W), A, B, dtype=dtype)
    w = jnp.zeros((H, W, channels), dtype).at[..., 0].set(SCALE * u)

    def f(x):
        g = jnp.sum(x * w, axis=(1, 2, 3)) + 0.1
        return jnp.stack([jnp.zeros_like(g), g], axis=-1)

    return f, w


def _data(dtype, n, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, H, W, channels)) * 0.6
    x = jnp.asarray(x, dtype)
    return x


def test_fourier_basis_is_a_unit_real_atom_supported_on_the_frequency_and_its_mirror(dtype):
    for i, j in ((0, 0), (A, B), (4, 4), (7, 1)):
        u = np.asarray(fourier_basis((H, W), i, j, dtype=dtype))
        assert u.dtype == dtype and abs(np.linalg.norm(u) - 1) < 1e-6
        spec = np.abs(np.fft.fft2(u))
        support = {tuple(p) for p in np.argwhere(spec > 1e-5 * spec.max())}
        assert support == {(i % H, j % W), ((-i) % H, (-j) % W)}


def test_heat_map_of_an_atom_classifier_is_its_closed_form(dtype):
    f, w = _affine(dtype)
    x = _data(dtype, 2000)
    g = np.asarray(jnp.sum(x * w, axis=(1, 2, 3)) + 0.1)
    keep = np.abs(g) > 1e-3  # no example within rounding of the boundary
    x, g = x[keep], g[keep]
    rng = np.random.default_rng(1)
    y = (g + 0.3 * rng.normal(size=g.shape) > 0).astype(np.int32)  # some are misclassified
    eps = 0.8
    hm = fourier_heat_map(f, x, y, eps=eps, key=jax.random.key(0), chunk_size=256)
    assert hm.error.shape == (H * W,) and hm.grid.shape == (H, W) and hm.n_invalid == 0
    clean = np.mean((g > 0) != y)
    assert abs(hm.clean_error - clean) < 1e-12
    err = np.asarray(hm.error)
    freqs = np.asarray(hm.frequencies)
    at = np.array([tuple(fr) in {(A, B), (H - A, W - B)} for fr in freqs])
    assert at.sum() == 2
    np.testing.assert_array_equal(err[~at], clean)  # orthogonal atoms change nothing
    shift = eps * SCALE  # <w, ε U_ab> = ε · SCALE
    expected = np.mean((((g + shift) > 0) != y) + (((g - shift) > 0) != y)) / 2
    near = np.abs(g) < shift  # only these examples can flip, each with probability 1/2
    tol = 5 * 0.5 * np.sqrt(near.sum()) / len(g)
    assert np.all(np.abs(err[at] - expected) < tol), (err[at], expected, tol)
    assert np.all(err[at] > clean + 0.05)
    # the grid is in fftshift order: the zero frequency at the centre
    grid = np.asarray(hm.grid)
    assert grid[(A + H // 2) % H, (B + W // 2) % W] == err[at][0]
    assert grid[H // 2, W // 2] == err[(freqs[:, 0] == 0) & (freqs[:, 1] == 0)][0]


def test_heat_map_signs_do_not_depend_on_chunks_and_follow_the_key():
    f, _ = _affine(jnp.float32)
    x = _data(jnp.float32, 300)
    y = np.asarray(jnp.argmax(f(x), -1))
    kw = dict(eps=0.8, key=jax.random.key(3), frequencies=[(A, B), (1, 1)])
    a = fourier_heat_map(f, x, y, chunk_size=64, **kw)
    b = fourier_heat_map(f, x, y, chunk_size=300, **kw)
    np.testing.assert_array_equal(np.asarray(a.error), np.asarray(b.error))
    c = fourier_heat_map(f, x, y, chunk_size=64, **{**kw, "key": jax.random.key(4)})
    assert float(c.error[0]) != float(a.error[0])  # other signs, other flips
    assert float(a.error[1]) == 0.0  # (1, 1) is orthogonal to the weight


def test_heat_map_per_channel_and_clipping():
    f, _ = _affine(jnp.float32, channels=2)  # the weight lives on channel 0 only
    x = _data(jnp.float32, 400, channels=2)
    y = np.asarray(jnp.argmax(f(x), -1))
    kw = dict(eps=0.8, key=jax.random.key(0), frequencies=[(A, B)])
    assert float(fourier_heat_map(f, x, y, channel=1, **kw).error[0]) == 0.0
    assert float(fourier_heat_map(f, x, y, channel=0, **kw).error[0]) > 0.05
    # clipping to a box that contains the data and the perturbation changes nothing;
    # a box that clips everything to one value leaves one prediction for every example
    wide = fourier_heat_map(f, x, y, bounds=(-10.0, 10.0), **kw)
    np.testing.assert_array_equal(wide.error, fourier_heat_map(f, x, y, **kw).error)
    flat = fourier_heat_map(f, x, y, bounds=(0.0, 0.0), **kw)  # x̃ = 0: g = 0.1 > 0
    assert abs(float(flat.error[0]) - float(np.mean(y != 1))) < 1e-12


def test_heat_map_accepts_any_classifier_and_checks_its_input():
    f, _ = _affine(jnp.float32)
    clf = gr.Classifier(lambda p, x: f(x) * p, jnp.float32(1.0))
    x = _data(jnp.float32, 50)
    y = np.asarray(jnp.argmax(f(x), -1))
    kw = dict(eps=0.5, key=jax.random.key(0), stride=4)
    a, b = fourier_heat_map(f, x, y, **kw), fourier_heat_map(clf, x, y, **kw)
    np.testing.assert_array_equal(a.error, b.error)
    assert a.frequencies.shape == (4, 2)
    with pytest.raises(ValueError, match="eps"):
        fourier_heat_map(f, x, y, eps=0.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="channel"):
        fourier_heat_map(f, x, y, eps=0.5, key=jax.random.key(0), channel=1)
    with pytest.raises(ValueError, match="y"):
        fourier_heat_map(f, x, y[:-1], eps=0.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"NaN|finite"):
        fourier_heat_map(f, x.at[0, 0, 0, 0].set(jnp.nan), y, eps=0.5, key=jax.random.key(0))


def test_perturbation_spectrum_of_atoms(dtype):
    rng = np.random.default_rng(0)
    u = np.asarray(fourier_basis((H, W), A, B, dtype=dtype))
    r = rng.normal(size=(16, 1, 1, 1)) * u[None, :, :, None]
    spec = np.asarray(perturbation_spectrum(jnp.asarray(r, dtype)))
    assert spec.shape == (H, W)
    peaks = {tuple(p) for p in np.argwhere(spec > 0.5 * spec.max())}
    assert peaks == {((A + H // 2) % H, (B + W // 2) % W), ((-A + H // 2) % H, (-B + W // 2) % W)}
    # a unit cosine atom: by Parseval its two coefficients share sum |U|^2 = HW equally,
    # |DFT| = sqrt(HW / 2) at each, 0 elsewhere
    np.testing.assert_allclose(spec.max(), np.sqrt(H * W / 2), rtol=1e-5)
    assert np.sort(spec.ravel())[-3] < 1e-5
    # zero perturbations are left out of the normalised mean
    spec0 = perturbation_spectrum(jnp.concatenate([jnp.asarray(r, dtype), jnp.zeros_like(r)]))
    np.testing.assert_allclose(np.asarray(spec0), spec, rtol=1e-6, atol=1e-5)


def test_frequency_radius_is_the_distance_to_the_zero_frequency():
    r = frequency_radius([(0, 0), (1, 0), (7, 0), (3, 4), (-1, -1), (4, 4)], (8, 8))
    np.testing.assert_allclose(r, [0, 1, 1, 5, np.sqrt(2), np.sqrt(32)])
