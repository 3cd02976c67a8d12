"""Numbers from model outputs: metrics by task, multilabel thresholds and metrics, temperature scaling
and calibration error, and the scoring of served predictions. Below training, serving and evaluation,
which all score outputs the same way."""
