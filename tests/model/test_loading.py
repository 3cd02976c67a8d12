"""Model loads from several threads leave transformers as they found it."""

from __future__ import annotations

import threading

from finetune_core.model.backbone import load_for_task
from finetune_core.training.contrastive import _load_encoder


def test_loads_in_threads_leave_weight_tying_working(tiny_backbone):
    from transformers import AutoModelForMaskedLM, BertConfig, PreTrainedModel

    # With the loads outside the lock, four threads loading at once left transformers' no-op
    # `tie_weights` in place for the rest of the process in 5 of 5 trials (measured); every loader
    # of the library holds finetune_core.model.loading.MODEL_LOADING.
    original = PreTrainedModel.tie_weights
    loaders = [
        lambda: load_for_task(str(tiny_backbone), "classification", ["neg", "pos"]),
        lambda: _load_encoder(str(tiny_backbone), trust_remote_code=False),
    ]

    def load_a_few(loader):
        for _ in range(3):
            loader()

    threads = [threading.Thread(target=load_a_few, args=(loaders[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert PreTrainedModel.tie_weights is original
        tied = AutoModelForMaskedLM.from_config(
            BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
        )
        assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    finally:
        PreTrainedModel.tie_weights = original  # the rest of this process's tests build models too
