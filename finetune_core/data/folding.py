"""Validation rows folded back into train, where every labelled row is worth more than a held-out
estimate: `auto`'s contrastive recipe on few rows (``training.recipe``), and a run asked to train on
them (``data.train_on_validation``: a sweep's winner under ``search.refit_on: train+validation``)."""

from __future__ import annotations

from pathlib import Path

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.columns import AUGMENTED, SOURCE
from finetune_core.data.fingerprint import files_fingerprint
from finetune_core.data.prepare import PreparedData

FOLDED_TRAIN = "train_with_validation.parquet"


def held_out_rows(prepared: PreparedData) -> bool:
    """Whether ``prepared`` has validation rows that do not train yet: what a fold would add."""
    return not prepared.validation_in_train and prepared.rows.get("validation", 0) > 0


def train_on_validation(config: FinetuneConfig, prepared: PreparedData) -> PreparedData:
    """``prepared`` with its validation rows in train when ``data.train_on_validation`` asks (before
    augmentation, so they get copies as train's rows do); as it is otherwise."""
    if not (config.data.train_on_validation and held_out_rows(prepared)):
        return prepared
    return fold_validation_into_train(prepared)


def fold_validation_into_train(prepared: PreparedData) -> PreparedData:
    """``prepared`` with its validation rows appended to train (a new file beside train's; the
    validation split stays as it is, now rows that also train: ``validation_in_train``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    train, validation = (pq.read_table(prepared.paths[split]) for split in ("train", "validation"))
    if AUGMENTED in train.column_names and AUGMENTED not in validation.column_names:
        validation = validation.append_column(AUGMENTED, pa.array([False] * validation.num_rows))
    if SOURCE in train.column_names:  # each validation row its own source, after train's
        first = pc.max(train.column(SOURCE)).as_py() + 1 if train.num_rows else 0
        sources = pa.array(range(first, first + validation.num_rows), type=train.schema.field(SOURCE).type)
        validation = validation.append_column(SOURCE, sources)
    folded = pa.concat_tables([train, validation.select(train.column_names).cast(train.schema)])
    path = Path(prepared.paths["train"]).with_name(FOLDED_TRAIN)
    pq.write_table(folded, path)
    paths = {**prepared.paths, "train": str(path)}
    return prepared.model_copy(
        update={
            "paths": paths,
            "rows": {**prepared.rows, "train": folded.num_rows},
            "fingerprint": files_fingerprint(paths),
            "validation_in_train": True,
        }
    )
