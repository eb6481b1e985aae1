"""ddmlflow: domain-decomposition training of CNNs, tracked in MLflow.

Reference implementation of Klawonn, Lanser & Weber (CNN-DNN, SISC 2024; transfer
learning follow-up) and Gu, Zhang, Liu & Cai (ETNA 2022).
"""

from .devices import use_onednn as _use_onednn

__version__ = "0.1.0"
_use_onednn()  # before anything here imports TensorFlow
