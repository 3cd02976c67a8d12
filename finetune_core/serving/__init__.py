"""What the logged MLflow pyfunc model needs to load and predict, and nothing more: the model
directory's metadata, the post-processing both runtimes share, the PyTorch and the ONNX Runtime
predictors and the choice between them. Every logged model ships the modules in
``SHIPPED_MODULES`` as its code (no Great Expectations, no Prefect, no training code, no export)."""

# Paths relative to the directory holding the ``finetune_core`` package. A test loads a logged
# model in a fresh process, so a module missing here fails there.
SHIPPED_MODULES = (
    "finetune_core/__init__.py",
    "finetune_core/batch_plan.py",
    "finetune_core/predict.py",
    "finetune_core/serving/__init__.py",
    "finetune_core/serving/predictor.py",
    "finetune_core/serving/outputs.py",
    "finetune_core/serving/onnx_predictor.py",
    "finetune_core/serving/runtime.py",
    "finetune_core/model/__init__.py",
    "finetune_core/model/batching.py",
    "finetune_core/model/heads.py",
    "finetune_core/model/inference.py",
    "finetune_core/model/loading.py",
)
