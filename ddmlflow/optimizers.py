"""The optimizers a training may use, by name (KLW use Adam throughout; SGD and RMSprop for studies).

The names are read by the config check without importing Keras.
"""

from __future__ import annotations

OPTIMIZERS: dict[str, str] = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def make_optimizer(name: str, learning_rate: float):
    import keras

    return getattr(keras.optimizers, OPTIMIZERS[name])(learning_rate=learning_rate)
