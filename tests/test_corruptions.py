"""Common corruptions (after Hendrycks & Dietterich 2019): deterministic per key, shapes, dtypes
and ranges kept, severity monotone (PSNR decreasing), and the closed forms where they exist."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from geomrobust.data import CORRUPTIONS, SEVERITIES, corrupt, jpeg_table

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise")


def _images(channels=1, n=24):
    d = load_digits().images[:n] / 16.0  # 8x8 in [0, 1]
    x = np.repeat(np.kron(d, np.ones((2, 2)))[..., None], channels, axis=-1)  # 16x16
    if channels == 3:  # colour: a different tint per channel
        x = x * np.array([1.0, 0.7, 0.4]) + np.array([0.0, 0.1, 0.3])
    return jnp.asarray(np.clip(x, 0, 1), jnp.float32)


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(1 / mse)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_keeps_shape_dtype_range_and_gets_worse_with_severity(name, channels):
    x = _images(channels)
    key = jax.random.key(0)
    psnr = []
    for s in range(1, 6):
        out = corrupt(x, name, s, key=key)
        assert out.shape == x.shape and out.dtype == x.dtype
        v = np.asarray(out)
        assert v.min() >= 0 and v.max() <= 1
        again = corrupt(x, name, s, key=key)
        np.testing.assert_array_equal(np.asarray(again), v)  # deterministic per key
        psnr.append(_psnr(out, x))
    assert all(np.isfinite(psnr)), psnr
    assert all(a > b for a, b in itertools.pairwise(psnr)), (name, psnr)


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_follow_the_key_and_not_the_chunks(name):
    x = _images()
    a = corrupt(x, name, 3, key=jax.random.key(0))
    b = corrupt(x, name, 3, key=jax.random.key(1))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    part = corrupt(x[5:9], name, 3, key=jax.random.key(0), ids=np.arange(5, 9))
    np.testing.assert_array_equal(np.asarray(part), np.asarray(a[5:9]))
    with pytest.raises(ValueError, match="key"):
        corrupt(x, name, 3)


def test_closed_forms():
    grey = jnp.full((64, 16, 16, 1), 0.5, jnp.float32)
    z = np.asarray(corrupt(grey, "gaussian_noise", 5, key=jax.random.key(0))) - 0.5
    assert abs(z.std() - 0.10) < 0.003 and abs(z.mean()) < 0.003
    shot = np.asarray(corrupt(grey, "shot_noise", 5, key=jax.random.key(0)))  # Poisson(25)/50
    assert abs(shot.mean() - 0.5) < 0.005 and abs(shot.var() - 0.5 / 50) < 0.001
    imp = np.asarray(corrupt(grey, "impulse_noise", 5, key=jax.random.key(0)))
    hit = imp != 0.5
    assert abs(hit.mean() - 0.07) < 0.005 and set(np.unique(imp[hit])) <= {0.0, 1.0}
    x = _images()
    m = np.asarray(x).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(
        np.asarray(corrupt(x, "contrast", 2)), (np.asarray(x) - m) * 0.5 + m, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(corrupt(x, "brightness", 1)), np.clip(np.asarray(x) + 0.05, 0, 1), atol=1e-6
    )
    rgb = _images(3)
    out = np.asarray(corrupt(rgb, "brightness", 3))  # hue and saturation kept: rgb ∝ value
    v, v2 = np.asarray(rgb).max(-1), out.max(-1)
    np.testing.assert_allclose(v2, np.clip(v + 0.15, 0, 1), atol=1e-6)
    lit = v > 0.05
    np.testing.assert_allclose((out / v2[..., None])[lit], (np.asarray(rgb) / v[..., None])[lit],
                               atol=1e-5)  # fmt: skip
    # blur keeps constant images and the image mean away from the border
    np.testing.assert_allclose(np.asarray(corrupt(grey, "gaussian_blur", 5)), 0.5, atol=1e-6)
    # JPEG of a constant image: only the DC coefficient, quantised by table[0, 0]
    q = jpeg_table(40)[0, 0]
    dc = (0.5 * 255 - 128) * 8
    expected = (np.round(dc / q) * q / 8 + 128) / 255
    np.testing.assert_allclose(np.asarray(corrupt(grey, "jpeg", 5)), expected, atol=1e-5)
    assert jpeg_table(50)[0, 0] == 16 and jpeg_table(100).max() == 1


def test_bad_arguments():
    x = _images()
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "contrast", 6)
    with pytest.raises(TypeError, match="severity"):
        corrupt(x, "contrast", 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(x * 255, "contrast", 1)
    with pytest.raises(ValueError, match="NHWC"):
        corrupt(x[..., 0], "contrast", 1)
    assert set(SEVERITIES) == set(CORRUPTIONS)
