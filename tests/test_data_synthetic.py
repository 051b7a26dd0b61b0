"""Synthetic datasets: the defining geometric properties, exactly where they are exact."""

import jax
import numpy as np
import pytest
from conftest import rtol_for

from geomrobust.data import (
    concentric_spheres,
    dct2,
    dct_band_dataset,
    dct_band_direction,
    dct_direction,
    directional_dataset,
    fourier_direction,
)

SHAPE = (8, 8, 3)


def _flat(x):
    return np.asarray(x, np.float64).reshape(x.shape[0], -1)


@pytest.mark.parametrize("i, j", [(0, 0), (1, 2), (4, 4), (7, 3)])
def test_fourier_direction(dtype, i, j):
    v = fourier_direction(SHAPE, i, j, dtype=dtype)
    assert v.shape == SHAPE and v.dtype == dtype
    np.testing.assert_allclose(np.linalg.norm(v.astype(np.float64)), 1.0, rtol=rtol_for(dtype))
    # its 2-D DFT lives on the frequencies (i, j) and (-i, -j) only, in every channel
    spec = np.abs(np.fft.fft2(v.astype(np.float64), axes=(0, 1)))
    support = np.zeros(SHAPE[:2], bool)
    support[i % 8, j % 8] = support[-i % 8, -j % 8] = True
    assert spec[~support].max() < 1e-6 * spec.max()
    np.testing.assert_allclose(v[..., 0], v[..., 2], rtol=0, atol=0)


@pytest.mark.parametrize("i, j", [(0, 0), (2, 5), (7, 7)])
def test_dct_direction(dtype, i, j):
    v = dct_direction(SHAPE, i, j, dtype=dtype)
    assert v.shape == SHAPE and v.dtype == dtype
    c = np.asarray(dct2(v), np.float64)
    expected = np.zeros(SHAPE)
    expected[i, j, :] = 1 / np.sqrt(3)
    np.testing.assert_allclose(c, expected, atol=10 * rtol_for(dtype))


def test_direction_errors():
    with pytest.raises(ValueError, match="DCT frequency"):
        dct_direction((8, 8), 8, 0)
    with pytest.raises(ValueError, match="band must be"):
        dct_band_direction((8, 8), (4, 4))
    with pytest.raises(ValueError, match="shape must be"):
        fourier_direction((8,), 0, 0)


def test_directional_dataset(dtype, key):
    n, eps, sigma = 600, 1.0, 3.0
    v = fourier_direction(SHAPE, 2, 3, dtype=dtype)
    ds = directional_dataset(v, n, key=key, eps=eps, sigma=sigma)
    assert ds.images.shape == (n, *SHAPE) and ds.images.dtype == dtype
    assert ds.labels.dtype == np.int32 and set(np.unique(ds.labels)) == {0, 1}
    assert ds.num_classes == 2
    x, vf = _flat(ds.images), v.reshape(-1).astype(np.float64)
    proj = x @ vf
    y = np.where(ds.labels == 1, 1.0, -1.0)
    # the projection on v is exactly ±ε/2, with the sign of the label
    np.testing.assert_allclose(proj, y * eps / 2, rtol=0, atol=50 * rtol_for(dtype))
    # the orthogonal part is N(0, σ²) in the D-1 dimensional complement
    orth = x - proj[:, None] * vf[None, :]
    var = (orth**2).sum() / (n * (vf.size - 1))
    assert abs(var / sigma**2 - 1) < 0.03, var
    assert abs(orth.mean()) < 0.05 * sigma
    # roughly balanced classes, deterministic given the key, different for another key
    assert 0.4 < ds.labels.mean() < 0.6
    again = directional_dataset(v, n, key=key, eps=eps, sigma=sigma)
    np.testing.assert_array_equal(again.images, ds.images)
    other = directional_dataset(v, n, key=jax.random.fold_in(key, 1))
    assert not np.array_equal(other.images, ds.images)


def test_directional_dataset_errors(key):
    with pytest.raises(ValueError, match="unit vector"):
        directional_dataset(2 * fourier_direction((4, 4), 1, 1), 10, key=key)
    with pytest.raises(TypeError, match="floating"):
        directional_dataset(np.eye(2, dtype=np.int32), 10, key=key)
    with pytest.raises(ValueError, match="n must be >= 1"):
        directional_dataset(fourier_direction((4, 4), 1, 1), 0, key=key)


@pytest.mark.parametrize("band", [(0, 3), (4, 8)])
def test_dct_band_dataset(dtype, key, band):
    n, eps = 200, 2.0
    ds = dct_band_dataset(n, SHAPE, band, key=key, eps=eps, dtype=dtype)
    assert ds.images.shape == (n, *SHAPE) and ds.images.dtype == dtype
    a, b = band
    inside = np.zeros(SHAPE, bool)
    inside[a:b, a:b, :] = True
    # same key, no class signal: the difference is the class signal alone, and it lives
    # only in the band (checked in the DCT domain)
    plain = dct_band_dataset(n, SHAPE, band, key=key, eps=0.0, dtype=dtype)
    np.testing.assert_array_equal(plain.labels, ds.labels)
    signal = np.asarray(dct2(ds.images.astype(np.float64) - plain.images), np.float64)
    tol = 50 * rtol_for(dtype)
    assert np.abs(signal[:, ~inside]).max() < tol
    y = np.where(ds.labels == 1, 1.0, -1.0)
    s = np.sqrt(inside.sum())
    np.testing.assert_allclose(
        signal[:, inside], np.broadcast_to((y * eps / 2 / s)[:, None], (n, inside.sum())), atol=tol
    )
    # the noise carries no class information outside the band: class means agree there
    c = np.asarray(dct2(ds.images.astype(np.float64)))
    gap = c[ds.labels == 1].mean(0) - c[ds.labels == 0].mean(0)
    assert np.abs(gap[~inside]).max() < 5 * 3.0 * np.sqrt(4 / n)


def test_concentric_spheres(dtype, key):
    n, radii = 400, (1.5, 4.0)
    ds = concentric_spheres(n, (6, 5), key=key, radii=radii, dtype=dtype)
    assert ds.images.shape == (n, 6, 5) and ds.images.dtype == dtype
    norms = np.linalg.norm(_flat(ds.images), axis=1)
    np.testing.assert_allclose(
        norms, np.where(ds.labels == 1, radii[1], radii[0]), rtol=10 * rtol_for(dtype)
    )
    assert 0.4 < ds.labels.mean() < 0.6
    # uniform on the sphere: mean direction ≈ 0 and second moment ≈ I / D
    u = _flat(ds.images) / norms[:, None]
    assert np.abs(u.mean(0)).max() < 4 / np.sqrt(n)
    second = u.T @ u / n
    assert np.abs(second - np.eye(30) / 30).max() < 5 * np.sqrt(2 / n) / 30
    np.testing.assert_array_equal(
        concentric_spheres(n, (6, 5), key=key, radii=radii, dtype=dtype).images, ds.images
    )
    flat = concentric_spheres(7, 3, key=key)
    assert flat.images.shape == (7, 3) and flat.images.dtype == np.float32
    with pytest.raises(ValueError, match="radii"):
        concentric_spheres(7, 3, key=key, radii=(2.0, 1.0))
