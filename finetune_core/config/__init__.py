"""Configuration: the strict base, sections by concern, the one model with its cross-field checks
(``finetune``), and loading from YAML with overrides (``loading``)."""
