"""MLflow pyfunc entry point (MLflow "models from code"): this file is copied into every
logged model and loaded by ``mlflow.pyfunc.load_model`` and ``mlflow models serve``.

Prediction logic lives in ``finetune_core.serving``; the model ships only the modules it needs
(``finetune_core.serving.SHIPPED_MODULES``). ``params={"runtime": "auto" | "onnx" | "torch"}``
chooses the runtime per request; ``auto``: ONNX Runtime when the model holds a graph that passed
parity, else PyTorch (docs/how-to/serving.md).
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class FinetunedTextModel(PythonModel):
    def load_context(self, context):
        from finetune_core.serving.runtime import ServedModel

        self.served = ServedModel(context.artifacts["model_dir"])
        self.served.predictor("auto")  # load errors at load time, not on the first request

    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.served.predict_frame(model_input, (params or {}).get("runtime") or "auto")


mlflow.models.set_model(FinetunedTextModel())
