"""optimizers.apply_adam_fused: Keras Adam's update with its scalars computed once, bitwise Keras' own."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")


def _net(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_fused_adam_is_bitwise_keras_adam():
    import tensorflow as tf

    from ddmlflow.optimizers import apply_adam_fused, fusable_adam

    nets = [_net(0), _net(0)]
    opts = [keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)]
    for net, opt in zip(nets, opts):
        opt.build(net.trainable_variables)
    assert fusable_adam(opts[0])
    assert not fusable_adam(keras.optimizers.Adam(1e-3, amsgrad=True))
    assert not fusable_adam(keras.optimizers.SGD(1e-3))
    rng = np.random.default_rng(0)

    @tf.function
    def step(x, y):
        for k, (net, opt) in enumerate(zip(nets, opts)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(net(x, training=True) - y))
            grads = tape.gradient(loss, net.trainable_variables)
            if k == 0:
                opt.apply_gradients(zip(grads, net.trainable_variables))
            else:
                apply_adam_fused(opt, grads, net.trainable_variables)

    for _ in range(5):
        step(rng.random((4, 6, 6, 2), dtype=np.float32), rng.random((4, 3), dtype=np.float32))
    state = [[v.numpy() for v in net.weights + opt.variables] for net, opt in zip(nets, opts)]
    assert any(np.any(w != 0) for w in state[1][len(nets[1].weights) :]), "the moments moved"
    for a, b in zip(*state):
        np.testing.assert_array_equal(a, b)
    assert int(opts[1].iterations.numpy()) == 5
