"""Predicting with a trained net the way every step and the served CNN-DNN do: one traced forward pass.

(The engine's ``set_precision`` drops a net's traced pass when its compute dtype changes.)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from .models import to_probabilities


def forget_traced(model: keras.Model) -> None:
    """Drop ``model``'s traced forward pass (its layers' dtype policies changed)."""
    _PREDICT.pop(model, None)


def predict_probs(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (n, K), also for the one-sigmoid binary nets."""
    return to_probabilities(predict(model, x, batch_size))


_PREDICT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # model -> its traced forward pass


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model.predict(x)`` without its per-call input pipeline: one function traced per model
    (any batch size), fed array batches. For nets this small, ``predict``'s tf.data pipeline and
    step machinery cost more than the net: at batch 256 on the 2-core CPU this ran the global
    VGG3 ~1.7x and the CNN-DNN program ~1.8x faster, with the same outputs."""
    import tensorflow as tf

    try:
        (spec,) = model.inputs
    except (AttributeError, ValueError):  # several inputs, or a subclassed model: Keras' own loop
        probs: np.ndarray = model.predict(x, batch_size=batch_size, verbose=0)
        return probs
    fn = _PREDICT.get(model)
    if fn is None:
        net: Callable[[], Any] = weakref.ref(model)  # the cache must not keep the model alive
        fn = _PREDICT[model] = tf.function(
            lambda a: net()(a, training=False), input_signature=[tf.TensorSpec((None, *spec.shape[1:]), spec.dtype)]
        )
    if len(x) == 0:  # (Keras' predict fails here; an empty conv batch fails on oneDNN)
        return np.zeros((0, *model.output_shape[1:]), dtype="float32")
    return np.concatenate(
        [fn(np.asarray(x[i : i + batch_size], dtype=spec.dtype)).numpy() for i in range(0, len(x), batch_size)]
    )


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(y)))
