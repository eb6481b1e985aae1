"""The optimizers a training may use, by name (KLW use Adam throughout; SGD and RMSprop for studies).

The names are read by the config check without importing Keras.
"""

from __future__ import annotations

from typing import Any

OPTIMIZERS: dict[str, str] = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def make_optimizer(name: str, learning_rate: float):
    import keras

    return getattr(keras.optimizers, OPTIMIZERS[name])(learning_rate=learning_rate)


def fusable_adam(optimizer: Any) -> bool:
    """True for a plain Keras Adam (no amsgrad, weight decay, clipping, EMA, accumulation, loss scaling,
    schedule): what ``apply_adam_fused`` reproduces. A wrapped one (mixed precision) is not."""
    import keras

    o = optimizer
    return (
        type(o) is keras.optimizers.Adam
        and not o.amsgrad
        and not o.weight_decay
        and o.clipnorm is None
        and o.clipvalue is None
        and o.global_clipnorm is None
        and not o.use_ema
        and not o.gradient_accumulation_steps
        and o.loss_scale_factor is None
        and not callable(o._learning_rate)
    )


def apply_adam_fused(optimizer: Any, grads: list[Any], variables: list[Any]) -> None:
    """Keras Adam's ``apply_gradients`` (``fusable_adam`` ones, in a tf.function) with a third of its ops.

    Keras' ``update_step`` recomputes the step's scalars (learning rate, beta powers, ``alpha``) for
    every variable, ~45 ops each: with many small locals in one graph those dominate the op count
    (tracing time, graph memory, executor work per step; benchmarks/README.md has the figures). Here
    the scalars are computed once per optimizer and each variable gets Keras' elementwise update op
    for op with the same constants and Keras' in-place assigns, so weights and moments are bitwise
    Keras' (tests/test_fused_adam.py). TensorFlow's fused ``ResourceApplyAdam`` is not: it rounds
    ``1 - beta`` in float32, and Adam amplifies that past the packed tests' tolerance in one epoch.
    """
    import tensorflow as tf

    dtype = tf.float32
    lr = tf.cast(optimizer.learning_rate, dtype)
    local_step = tf.cast(optimizer.iterations + 1, dtype)
    beta_1_power = tf.pow(tf.cast(optimizer.beta_1, dtype), local_step)
    beta_2_power = tf.pow(tf.cast(optimizer.beta_2, dtype), local_step)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    c1, c2, eps = (tf.constant(c, dtype) for c in (1 - optimizer.beta_1, 1 - optimizer.beta_2, optimizer.epsilon))
    for g, var in zip(grads, variables):
        i = optimizer._get_variable_index(var)
        m, v = optimizer._momentums[i], optimizer._velocities[i]
        g = tf.cast(g, dtype)
        optimizer.assign_add(m, tf.multiply(tf.subtract(g, m.value), c1))  # Keras' own assigns (in place)
        optimizer.assign_add(v, tf.multiply(tf.subtract(tf.square(g), v.value), c2))
        optimizer.assign_sub(var, tf.divide(tf.multiply(m.value, alpha), tf.add(tf.sqrt(v.value), eps)))
    optimizer.iterations.assign_add(1)
