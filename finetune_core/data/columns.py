"""The names a prepared split's files share with every module that reads them."""

TEXT, LABEL = "text", "label"
TEXT_PAIR = "text_pair"  # the second text of a sentence pair (``data.text_pair_column``), when configured
TEXTS = (TEXT, TEXT_PAIR)  # a prepared file's text columns, in tokenisation order; it has the first one or both
SPLITS = ("train", "validation", "test")
AUGMENTED = "augmented"  # marks the rows augmentation added to train
SOURCE = "source_row"  # once augmentation ran: the train row each row was made from (finetune_core.data.copies)
PREPARE_ROWS = 100_000  # rows per chunk while preparing: bounds memory whatever the file's size


def text_columns(text_column: str, text_pair_column: str | None = None) -> dict[str, str]:
    """The prepared text columns, in tokenisation order, each with the source column it is read
    from (``data.text_column``, ``data.text_pair_column``): ``text``, and ``text_pair`` for sentence
    pairs. Sentence pairs are resolved here, once; everything after iterates over these columns."""
    return dict(zip(TEXTS, [c for c in (text_column, text_pair_column) if c]))
