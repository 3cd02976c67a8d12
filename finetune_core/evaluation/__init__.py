"""Evaluation: the test metrics, the trivial baseline, the gates, the label review, and the files
reviewers read (plots, model card). The metrics themselves live in ``finetune_core.metrics``."""
