"""Evaluation: the metric table (one owner), metrics, served-prediction scoring, gates, and the
files reviewers read (plots, model card)."""
