"""The steps of the method, one module each; ``full`` chains them under one parent run.

Every step is a plain function taking a ``RunConfig`` and the ids of its inputs,
logging into the MLflow run whose id it is given.
"""
