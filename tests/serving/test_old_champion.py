"""A champion logged by the layout before the subpackages still loads where the gates re-measure it:
in a process that already imported ``finetune_core``. Its entry point (copied into the model as
the code wrote it then) imports ``finetune_core.predict``; MLflow only puts the model's own code
directory first on ``sys.path``, so with ``finetune_core`` already imported that name resolves in
this checkout's package, which is why ``finetune_core/predict.py`` stays as a shim."""

from __future__ import annotations

import mlflow
import pandas as pd

import finetune_core
from finetune_core.serving.predictor import ModelMeta, save_model_dir

# tasks/serving_model.py as logged before finetune_core was split into subpackages (git b797245^).
OLD_ENTRY_POINT = """
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class FinetunedTextModel(PythonModel):
    def load_context(self, context):
        from finetune_core.predict import Predictor

        self.predictor = Predictor.load(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.predictor.predict_frame(model_input)


mlflow.models.set_model(FinetunedTextModel())
"""


def test_a_champion_logged_by_the_old_layout_loads_beside_this_package(tiny_backbone, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=2)
    meta = ModelMeta(task="classification", text_column="sentence", max_length=32, labels=["0", "1"])
    model_dir = save_model_dir(model, AutoTokenizer.from_pretrained(tiny_backbone), meta, tmp_path / "model_dir")
    entry_point = tmp_path / "serving_model.py"
    entry_point.write_text(OLD_ENTRY_POINT, encoding="utf-8")
    # the old register's call: the entry point from code, the model directory, the whole package as code
    mlflow.pyfunc.save_model(
        tmp_path / "champion",
        python_model=str(entry_point),
        artifacts={"model_dir": str(model_dir)},
        code_paths=[str(finetune_core.__path__[0])],
    )

    champion = mlflow.pyfunc.load_model(str(tmp_path / "champion"))
    served = champion.predict(pd.DataFrame({"sentence": ["a gorgeous, witty film", "a dull mess"]}))

    assert list(served.columns) == ["label", "probability_0", "probability_1"] and len(served) == 2
