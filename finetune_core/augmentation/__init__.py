"""Augmentation of the prepared training split: EDA operations, with replacements drawn from a masked
language model. Above ``model`` (it loads one), so ``data`` stays below every model."""
