"""Training: the epoch loop, the frozen and unfrozen stages, optimisation, checkpoints,
device and precision, data parallelism and calibration."""
