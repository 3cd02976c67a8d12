"""Compatibility for models logged before ``finetune_core`` was split into subpackages: their
pyfunc entry point imports ``finetune_core.predict.Predictor``. When such a champion is loaded
in a process that already imported this package (re-measuring it in a new run's flow), the
import resolves here. New models import ``finetune_core.serving.predictor``."""

from finetune_core.serving.predictor import ModelMeta, Predictor, outputs_to_frame

__all__ = ["ModelMeta", "Predictor", "outputs_to_frame"]
