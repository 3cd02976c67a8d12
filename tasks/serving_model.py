"""MLflow pyfunc entry point (MLflow "models from code"): this file is copied into every
logged model and loaded by ``mlflow.pyfunc.load_model`` and ``mlflow models serve``.

Prediction logic lives in ``finetune_core.serving``; the model ships only the modules it needs
(``finetune_core.serving.SHIPPED_MODULES``).
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class FinetunedTextModel(PythonModel):
    def load_context(self, context):
        from finetune_core.serving.predictor import Predictor

        self.predictor = Predictor.load(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.predictor.predict_frame(model_input)


mlflow.models.set_model(FinetunedTextModel())
