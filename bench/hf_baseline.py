"""The baseline: Hugging Face Trainer fine-tuning with run_glue defaults (AdamW, linear decay,
lr 5e-5), optionally with dynamic padding, length grouping and bf16."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pandas as pd


def hf_train(
    files,
    backbone_spec: str,
    epochs: int = 1,
    padding: str = "max_length",
    group_by_length: bool = False,
    bf16: bool = False,
    max_seconds: float | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 42,
) -> dict:
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        default_data_collator,
        set_seed,
    )

    from finetune_core.model.backbone import resolve_backbone

    backbone = resolve_backbone(backbone_spec)
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    read = lambda path: pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)  # noqa: E731
    pad = padding == "max_length"

    def tokenize(frame):
        encoded = tokenizer(
            frame["sentence"].tolist(), truncation=True, max_length=max_length, padding="max_length" if pad else False
        )
        return datasets.Dataset.from_dict({**encoded, "labels": frame["label"].tolist()})

    train, test = tokenize(read(files["train"])), tokenize(read(files["test"]))
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)

    class StopAtBudget(TrainerCallback):
        started = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if max_seconds and time.perf_counter() - self.started >= max_seconds:
                control.should_training_stop = True

    with tempfile.TemporaryDirectory() as out:
        args = run_glue_arguments(out, epochs, batch_size, bf16, seed, group_by_length)
        collator = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
        trainer = Trainer(
            model=model, args=args, train_dataset=train, data_collator=collator, callbacks=[StopAtBudget()]
        )
        started = time.perf_counter()
        output = trainer.train()
        train_seconds = time.perf_counter() - started
        steps = trainer.state.global_step
        predictions = trainer.predict(test)
    # label_ids come back in prediction order (a length-grouped eval sampler reorders rows)
    accuracy = float((np.argmax(predictions.predictions, axis=-1) == predictions.label_ids).mean())
    seen = min(steps * batch_size, len(train) * epochs)
    return {
        "samples_per_second": seen / output.metrics["train_runtime"],
        "trainer_reported_samples_per_second": output.metrics["train_samples_per_second"],
        "train_seconds": train_seconds,
        "accuracy": accuracy,
        "samples_seen": seen,
    }


def run_glue_arguments(out: str, epochs: int, batch_size: int, bf16: bool, seed: int, group_by_length: bool):
    """run_glue's defaults (AdamW lr 5e-5, linear decay, eval batch 128) on CPU, no saving or logging;
    shared by every HF Trainer baseline in bench/."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=128,
        num_train_epochs=epochs,
        learning_rate=5e-5,
        lr_scheduler_type="linear",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=bf16,
        seed=seed,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        disable_tqdm=True,
    )
