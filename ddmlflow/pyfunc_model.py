"""MLflow "models from code" entry: MLflow executes this file to build the served model."""

import mlflow

from ddmlflow.serving import CNNDNNModel

mlflow.models.set_model(CNNDNNModel())
