"""Pure fine-tuning library: configuration, data, models, training, evaluation.

It imports neither Prefect nor MLflow; `tasks/` and `flows/` wrap it.
"""
