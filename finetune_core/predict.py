"""A shim kept for champions logged before ``finetune_core`` was split into subpackages: their
pyfunc entry point imports ``finetune_core.predict.Predictor``. MLflow only puts a model's own code
directory first on ``sys.path``, so when such a champion is loaded in a process that already
imported this package (the gates re-measure it in a new run's flow), the import resolves here;
without this file it fails (tests/serving/test_old_champion.py). New models import
``finetune_core.serving.predictor``. Imported by nothing in the library: the top of its layers."""

from finetune_core.serving.predictor import ModelMeta, Predictor, outputs_to_frame

__all__ = ["ModelMeta", "Predictor", "outputs_to_frame"]
