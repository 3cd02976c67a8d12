"""Data on disk: reading files (``readers``), chunked Parquet access (``chunks``), preparing the
splits (``prepare``), augmentation, drift profiles and dated snapshots for retraining."""
