"""Prefect flows (the pipeline's DAG) and the `finetune` command line."""
