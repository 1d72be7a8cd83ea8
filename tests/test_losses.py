import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import losses


def _nt_xent_reference(z1, z2, temperature):
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    similarity = z @ z.T / temperature
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [similarity[i, j] for j in range(2 * n) if j != i]
        total += -similarity[i, positive] + np.log(np.sum(np.exp(others)))
    return total / (2 * n)


def _barlow_reference(z1, z2, weight):
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + 1e-5)
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + 1e-5)
    c = a.T @ b / len(z1)
    off = c - np.diag(np.diag(c))
    return np.sum((1 - np.diag(c)) ** 2) + weight * np.sum(off**2)


def test_nt_xent_matches_reference():
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((2, 6, 5)).astype("float32")
    value = float(losses.nt_xent(z1, z2, temperature=0.3))
    np.testing.assert_allclose(value, _nt_xent_reference(z1, z2, 0.3), rtol=1e-4)


def test_nt_xent_prefers_aligned_views():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((16, 8)).astype("float32")
    aligned = float(losses.nt_xent(z, z + 0.01 * rng.standard_normal(z.shape).astype("float32")))
    shuffled = float(losses.nt_xent(z, z[::-1].copy()))
    assert aligned < shuffled


def test_barlow_twins_matches_reference():
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal((2, 32, 6)).astype("float32")
    value = float(losses.barlow_twins(z1, z2, off_diagonal_weight=0.01))
    np.testing.assert_allclose(value, _barlow_reference(z1, z2, 0.01), rtol=1e-4)


@pytest.mark.parametrize("loss", [losses.nt_xent, losses.barlow_twins])
def test_loss_falls_under_gradient_descent(loss):
    rng = np.random.default_rng(0)
    z1 = tf.Variable(rng.standard_normal((16, 8)).astype("float32"))
    z2 = tf.constant(rng.standard_normal((16, 8)).astype("float32"))
    start = float(loss(z1, z2))
    for _ in range(100):
        with tf.GradientTape() as tape:
            value = loss(z1, z2)
        z1.assign_sub(0.5 * tape.gradient(value, z1))
    assert float(loss(z1, z2)) < 0.8 * start
