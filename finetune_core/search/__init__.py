"""Hyperparameter search without Prefect or MLflow: the space, a trial's overrides, the pruning callback and
the study's storage (docs/how-to/tune.md)."""
