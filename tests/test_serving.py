"""ddmlflow.serving without a server: the input check, and the registry's champion rule on real versions."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from ddmlflow.serving import check_input, register

SHAPE = (16, 16, 3)


def test_check_input_passes_whole_images_as_float32():
    x = np.random.default_rng(0).random((2, *SHAPE))
    for given in (x, x.tolist(), {"inputs": x}, x.astype("float16")):
        got = check_input(given, SHAPE)
        assert got.dtype == np.float32 and got.shape == (2, *SHAPE)
        np.testing.assert_allclose(got, x, atol=1e-3)


@pytest.mark.parametrize(
    "given,message",
    [
        (
            np.zeros((1, 8, 8, 3)),
            "input: shape (1, 8, 8, 3) does not match (n, 16, 16, 3); pass whole images, batch first",
        ),
        (np.zeros(SHAPE), "input: shape (16, 16, 3) does not match (n, 16, 16, 3)"),  # one image without its batch axis
        (np.zeros((1, 16, 16, 1)), "input: shape (1, 16, 16, 1) does not match (n, 16, 16, 3)"),
        (np.zeros((0, *SHAPE)), "input: empty batch"),
        (np.full((1, *SHAPE), np.nan), "input: contains NaN or infinite values"),
        (np.full((1, *SHAPE), np.inf), "input: contains NaN or infinite values"),
        (np.concatenate([np.zeros((1, *SHAPE)), np.full((1, *SHAPE), -np.inf)]), "input: contains NaN or infinite"),
        ([[["x"] * 3] * 16] * 16, "input: expected a float32 array of shape (n, 16, 16, 3)"),
    ],
)
def test_check_input_rejects_with_its_reason_as_http_400(given, message):
    with pytest.raises(MlflowException) as e:
        check_input(given, SHAPE)
    assert message in e.value.message
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and e.value.get_http_status_code() == 400


CONSTANT_MODEL = '''
import mlflow
import numpy as np


class Constant(mlflow.pyfunc.PythonModel):
    """Answers every row with the number in its model_config: tells versions apart."""

    def load_context(self, context):
        self.value = float(context.model_config["value"])

    def predict(self, context, model_input: np.ndarray, params=None):
        return np.full(len(model_input), self.value)


mlflow.models.set_model(Constant())
'''


def _log_constant(tmp_path, value: int) -> str:
    import mlflow

    code = tmp_path / "constant_model.py"
    code.write_text(CONSTANT_MODEL)
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(
            name="m", python_model=str(code), model_config={"value": value}, pip_requirements=["mlflow"]
        ).model_uri


def _answer(uri: str) -> int:
    import mlflow

    return int(mlflow.pyfunc.load_model(uri).predict(np.zeros((1, 2)))[0])


def test_champion_moves_only_when_the_new_version_is_not_worse(mlflow_env, tmp_path):
    import mlflow

    client = mlflow.MlflowClient()
    # (validation accuracy of version v, champion after registering it); version v's model answers v
    # 2/3 is an accuracy of 32 of 48 images: stored rounded, an equal version would count as worse
    history = [(0.5, 1), (0.25, 1), (0.5, 3), (2 / 3, 4), (2 / 3 - 1e-9, 4), (2 / 3, 6)]
    for v, (acc, champion) in enumerate(history, start=1):
        previous = None if v == 1 else history[v - 2][1]
        reg = register(_log_constant(tmp_path, v), "rule", acc)
        assert reg == {"name": "rule", "version": v, "champion": champion == v, "previous_champion": previous}
        assert int(client.get_model_version_by_alias("rule", "champion").version) == champion
        assert _answer("models:/rule/latest") == v
    assert _answer("models:/rule@champion") == 6
    assert float(client.get_model_version("rule", "4").tags["val_accuracy"]) == 2 / 3  # stored unrounded
