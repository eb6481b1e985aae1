"""The composed CNN-DNN as an MLflow pyfunc, and its place in the model registry.

The pyfunc takes whole images (N, H, W, C) or volumes (N, H, W, D, C), float32,
and returns a table: ``label`` (the class name) and one probability column per
class, named after the class (``named_output``; the signature says so). It is logged as "models from code"
(``pyfunc_model.py``): the networks travel as Keras ``.keras`` archives loaded
with ``safe_mode``; nothing is unpickled. Bad input raises
``MlflowException(INVALID_PARAMETER_VALUE)``, which ``mlflow models serve``
answers with HTTP 400 and the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel  # not mlflow.pyfunc.PythonModel: mlflow binds pyfunc lazily, mypy sees no module
from mlflow.tracking import MlflowClient

from .console import hushed
from .decomposition import Decomposition
from .models import register_layers
from .tags import MODEL_URI_TAG, VAL_ACCURACY_TAG
from .tracking import retry

PACKAGE_DIR = Path(__file__).parent


class CNNDNNModel(PythonModel):
    """Whole images in, class probabilities out: the locals and the coarse net run as ONE Keras
    program (crop -> N locals -> concat -> coarse, ``build_coherent``), built once at load,
    so a batch costs one call instead of N + 1 ``predict`` loops."""

    def load_context(self, context):
        import keras

        from .models.cnn_dnn import build_coherent  # lazy: Keras; loaded with the model, not with ddmlflow.serving

        register_layers()
        art = context.artifacts
        self.decomposition = Decomposition.from_json(Path(art["decomposition"]).read_text())
        meta = json.loads(Path(art["meta"]).read_text())
        self.class_names = meta["class_names"]
        self.locals = [
            keras.saving.load_model(art[f"local_{i:02d}"], safe_mode=True) for i in range(self.decomposition.n)
        ]
        self.coarse = keras.saving.load_model(art["coarse"], safe_mode=True)
        self.program = build_coherent(self.locals, self.coarse, self.decomposition, name="cnn_dnn")

    def predict(self, context, model_input: np.ndarray, params: dict | None = None):
        """``np.ndarray``: a type hint MLflow infers no schema from, so the logged signature (and
        ``check_input``'s HTTP-400 answers) stay in charge of validation."""
        from .inference import predict_probs  # lazy: Keras; loaded with the model, not with ddmlflow.serving

        x = check_input(model_input, self.decomposition.image_shape)
        return named_output(predict_probs(self.program, x, batch_size=256), self.class_names)


def named_output(probs: np.ndarray, class_names: list[str]):
    """Class probabilities (n, K) as a DataFrame: ``label`` (the most probable class), one column per class.

    The caller needs no label order: every column is named after its class.
    """
    import pandas as pd

    names = [str(c) for c in class_names]
    if len(set(names)) != len(names) or "label" in names or len(names) != probs.shape[1]:
        raise MlflowException(f"class names {names} must be {probs.shape[1]} distinct names other than 'label'")
    out = pd.DataFrame(np.asarray(probs, dtype="float64"), columns=names)
    out.insert(0, "label", [names[k] for k in np.asarray(probs).argmax(axis=1)])
    return out


def check_input(model_input, image_shape: tuple) -> np.ndarray:
    """Whole images of the right shape, finite float values; else an HTTP-400 error."""
    if isinstance(model_input, dict) and len(model_input) == 1:
        model_input = next(iter(model_input.values()))
    if hasattr(model_input, "to_numpy"):
        model_input = model_input.to_numpy()
    try:
        x = np.asarray(model_input, dtype="float32")
    except (TypeError, ValueError):
        raise MlflowException(
            f"input: expected a float32 array of shape (n, {', '.join(map(str, image_shape))})", INVALID_PARAMETER_VALUE
        ) from None
    want = tuple(image_shape)
    if x.shape[1:] != want:
        raise MlflowException(
            f"input: shape {tuple(x.shape)} does not match (n, {', '.join(map(str, want))}); "
            "pass whole images, batch first",
            INVALID_PARAMETER_VALUE,
        )
    if x.shape[0] == 0:
        raise MlflowException("input: empty batch", INVALID_PARAMETER_VALUE)
    if not np.all(np.isfinite(x)):
        raise MlflowException("input: contains NaN or infinite values", INVALID_PARAMETER_VALUE)
    return x


def log_cnn_dnn(
    local_paths: list[Path],
    coarse_path: Path,
    decomposition,
    class_names: list[str],
    x_example: np.ndarray,
    work: Path,
    params: dict | None = None,
    tags: dict | None = None,
) -> str:
    """Log the composed model in the active run; returns its ``models:/`` URI."""
    from mlflow.models import infer_signature

    (work / "decomposition.json").write_text(decomposition.to_json())
    (work / "meta.json").write_text(json.dumps({"class_names": class_names}))
    artifacts = {
        "decomposition": str(work / "decomposition.json"),
        "meta": str(work / "meta.json"),
        "coarse": str(coarse_path),
    }
    artifacts.update({f"local_{i:02d}": str(p) for i, p in enumerate(local_paths)})
    example = x_example[:2].astype("float32")
    # The output's schema follows from the class names alone; MLflow itself loads the model and
    # predicts the input example while logging it (so the archives are proven to load, safe_mode on).
    uniform = np.full((len(example), len(class_names)), 1 / len(class_names), dtype="float32")
    signature = infer_signature(example, named_output(uniform, class_names))
    info = mlflow.pyfunc.log_model(
        name="cnn_dnn",
        python_model=str(PACKAGE_DIR / "pyfunc_model.py"),
        artifacts=artifacts,
        code_paths=[str(PACKAGE_DIR)],
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
        params=params,
        tags=tags,
    )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def register(model_uri: str, name: str, val_accuracy: float, description: str = "", tags: dict | None = None) -> dict:
    """Register a version; alias ``champion`` unless it is worse than the current champion.

    ``model_uri`` is the logged model's ``models:/<model_id>``, so the version links to
    it (and through it to its run); ``description`` and ``tags`` go on the version and,
    the newest winning, on the registered model.

    MLflow reserves the alias name ``latest``: the newest version is always
    ``models:/NAME/latest``, so no alias is needed (or allowed) for it.
    """
    client = MlflowClient()
    with hushed():  # our own line says it (evaluate)
        mv = retry(mlflow.register_model, model_uri, name)
    # repr, not rounded: a champion stored as 0.666667 would make an equal 2/3 look worse
    retry(client.set_model_version_tag, name, mv.version, VAL_ACCURACY_TAG, repr(float(val_accuracy)))
    for k, v in (tags or {}).items():
        retry(client.set_model_version_tag, name, mv.version, k, str(v))
        retry(client.set_registered_model_tag, name, k, str(v))
    if description:
        retry(client.update_model_version, name, mv.version, description=description)
        retry(client.update_registered_model, name, description=description)
    try:
        champ = client.get_model_version_by_alias(name, "champion")
        best = float(champ.tags.get(VAL_ACCURACY_TAG, "-1"))
    except MlflowException:
        champ, best = None, -1.0
    promoted = val_accuracy >= best
    if promoted:
        retry(client.set_registered_model_alias, name, "champion", mv.version)
    return {
        "name": name,
        "version": int(mv.version),
        "champion": promoted,
        "previous_champion": None if champ is None else int(champ.version),
    }


# -- packaging of single Keras models ---------------------------------------------------------


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model (MLflow would otherwise infer them in a slow subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "keras", "numpy", "scipy", "nibabel", "pillow"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pass
    try:
        reqs.append(f"tensorflow=={version('tensorflow')}")
    except PackageNotFoundError:
        reqs.append(f"tensorflow-cpu=={version('tensorflow-cpu')}")
    return reqs


class _KerasFlavor:
    """``mlflow.keras`` as a flavor for ``Model.log``, taking ``validate_serving_input`` (the Keras
    flavor's ``log_model`` does not pass it on). The input example is still saved; the check
    that a logged net loads and predicts is the composition step's (``evaluate``) and the tests'."""

    @staticmethod
    def save_model(validate_serving_input=True, **kwargs):
        return mlflow.keras.save_model(**kwargs)


def log_keras_model(model, example, name: str = "model", params: dict | None = None, tags: dict | None = None) -> str:
    """``mlflow.keras.log_model`` with signature and input example; returns the ``models:/`` URI.

    MLflow 3.17's Keras flavor writes the input example before it creates the
    model folder (FileNotFoundError); we create the folder first.
    """
    import mlflow.keras.save as keras_save
    from mlflow.models import Model, infer_signature

    from .inference import predict  # lazy: Keras; loaded with the model, not with ddmlflow.serving

    original = keras_save._save_example

    def save_example(mlflow_model, input_example, path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        return original(mlflow_model, input_example, path, *args, **kwargs)

    signature = infer_signature(example, predict(model, example))
    keras_save._save_example = save_example
    try:  # mlflow.keras.log_model, without re-loading the saved model to predict its example (~0.5 s a model)
        info = retry(
            Model.log,
            None,
            flavor=_KerasFlavor,
            flavor_name=mlflow.keras.__name__,
            model=model,
            name=name,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            params=params,
            tags=tags,
            validate_serving_input=False,
        )
    finally:
        keras_save._save_example = original
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def model_id(uri: str) -> str:
    """The logged model's id in its ``models:/<id>`` URI (the run's ``model_uri`` tag)."""
    return uri.split("/", 1)[1]
