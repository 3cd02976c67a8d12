"""The names a prepared split's files share with every module that reads them."""

TEXT, LABEL = "text", "label"
TEXT_PAIR = "text_pair"  # the second text of a sentence pair (``data.text_pair_column``), when configured
SPLITS = ("train", "validation", "test")
AUGMENTED = "augmented"  # marks the rows augmentation added to train
PREPARE_ROWS = 100_000  # rows per chunk while preparing: bounds memory whatever the file's size
