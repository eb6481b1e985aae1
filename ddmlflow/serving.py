"""The composed CNN-DNN as an MLflow pyfunc, and its place in the model registry.

The pyfunc takes whole images (N, H, W, C) or volumes (N, H, W, D, C), float32,
and returns class probabilities. It is logged as "models from code"
(``pyfunc_model.py``): the networks travel as Keras ``.keras`` archives loaded
with ``safe_mode``; nothing is unpickled. Bad input raises
``MlflowException(INVALID_PARAMETER_VALUE)``, which ``mlflow models serve``
answers with HTTP 400 and the reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient

from .tracking import pip_requirements, retry

PACKAGE_DIR = Path(__file__).parent


class CNNDNNModel(mlflow.pyfunc.PythonModel):
    """Whole images in, class probabilities out: the locals and the coarse net run as ONE Keras
    program (crop -> N locals -> concat -> coarse, ``build_coherent``), built once at load,
    so a batch costs one call instead of N + 1 ``predict`` loops."""

    def load_context(self, context):
        import keras

        from .decomposition import Decomposition
        from .models.cnn_dnn import build_coherent

        art = context.artifacts
        self.decomposition = Decomposition.from_json(Path(art["decomposition"]).read_text())
        meta = json.loads(Path(art["meta"]).read_text())
        self.class_names = meta["class_names"]
        self.locals = [keras.saving.load_model(art[f"local_{i:02d}"], safe_mode=True)
                       for i in range(self.decomposition.n)]
        self.coarse = keras.saving.load_model(art["coarse"], safe_mode=True)
        self.program = build_coherent(self.locals, self.coarse, self.decomposition, name="cnn_dnn")

    def predict(self, context, model_input, params=None):
        from .models import to_probabilities

        x = check_input(model_input, self.decomposition.image_shape)
        return to_probabilities(self.program.predict(x, batch_size=256, verbose=0))


def check_input(model_input, image_shape: tuple) -> np.ndarray:
    """Whole images of the right shape, finite float values; else an HTTP-400 error."""
    if isinstance(model_input, dict) and len(model_input) == 1:
        model_input = next(iter(model_input.values()))
    if hasattr(model_input, "to_numpy"):
        model_input = model_input.to_numpy()
    try:
        x = np.asarray(model_input, dtype="float32")
    except (TypeError, ValueError):
        raise MlflowException(f"input: expected a float32 array of shape (n, {', '.join(map(str, image_shape))})",
                              INVALID_PARAMETER_VALUE) from None
    want = tuple(image_shape)
    if x.shape[1:] != want:
        raise MlflowException(f"input: shape {tuple(x.shape)} does not match (n, {', '.join(map(str, want))}); "
                              "pass whole images, batch first", INVALID_PARAMETER_VALUE)
    if x.shape[0] == 0:
        raise MlflowException("input: empty batch", INVALID_PARAMETER_VALUE)
    if not np.all(np.isfinite(x)):
        raise MlflowException("input: contains NaN or infinite values", INVALID_PARAMETER_VALUE)
    return x


def log_cnn_dnn(local_paths: list[Path], coarse_path: Path, decomposition, class_names: list[str],
                x_example: np.ndarray, work: Path) -> str:
    """Log the composed model in the active run; returns its ``models:/`` URI."""
    from mlflow.models import infer_signature

    (work / "decomposition.json").write_text(decomposition.to_json())
    (work / "meta.json").write_text(json.dumps({"class_names": class_names}))
    artifacts = {"decomposition": str(work / "decomposition.json"), "meta": str(work / "meta.json"),
                 "coarse": str(coarse_path)}
    artifacts.update({f"local_{i:02d}": str(p) for i, p in enumerate(local_paths)})
    example = x_example[:2].astype("float32")
    model = CNNDNNModel()
    model.load_context(type("Ctx", (), {"artifacts": artifacts})())
    signature = infer_signature(example, model.predict(None, example))
    info = mlflow.pyfunc.log_model(
        name="cnn_dnn", python_model=str(PACKAGE_DIR / "pyfunc_model.py"), artifacts=artifacts,
        code_paths=[str(PACKAGE_DIR)], signature=signature, input_example=example,
        pip_requirements=pip_requirements())
    return info.model_uri


def register(model_uri: str, name: str, val_accuracy: float) -> dict:
    """Register a version; alias ``champion`` unless it is worse than the current champion.

    MLflow reserves the alias name ``latest``: the newest version is always
    ``models:/NAME/latest``, so no alias is needed (or allowed) for it.
    """
    client = MlflowClient()
    mv = retry(mlflow.register_model, model_uri, name)
    retry(client.set_model_version_tag, name, mv.version, "val_accuracy", f"{val_accuracy:.6f}")
    try:
        champ = client.get_model_version_by_alias(name, "champion")
        best = float(champ.tags.get("val_accuracy", "-1"))
    except MlflowException:
        champ, best = None, -1.0
    promoted = val_accuracy >= best
    if promoted:
        retry(client.set_registered_model_alias, name, "champion", mv.version)
    return {"name": name, "version": int(mv.version), "champion": promoted,
            "previous_champion": None if champ is None else int(champ.version)}
