"""Contextual replacements for EDA's synonym replacement and random insertion, from a masked
language model (no offline synonym dictionary ships in a package we can install here)."""

from __future__ import annotations

import numpy as np

from finetune_core.errors import ConfigError
from finetune_core.model.loading import MODEL_LOADING

_ANCHOR = "a"  # a word every tokenizer keeps whole: what follows it is tokenised as a word after a space


class MaskedLmReplacer:
    """Contextual replacements from a masked LM: the top whole-word predictions for a masked slot.

    Vocabulary entries are decoded through the tokenizer, so a byte-level BPE entry ('Ġdull') and
    a SentencePiece entry ('▁dull') both give the word 'dull'; an entry counts as a whole word only
    if the tokenizer spells that word with it alone after a space, which rules out word pieces
    ('##ing', a BPE piece without 'Ġ'), punctuation, numbers and special tokens. All the slots
    of one text go through the model in one batch."""

    def __init__(self, model: str, top_k: int = 10, max_length: int = 256):
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from finetune_core.model.backbone import resolve_backbone

        path = resolve_backbone(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        with MODEL_LOADING:
            self.model = AutoModelForMaskedLM.from_pretrained(path).eval()
        self.top_k, self.max_length, self.torch = top_k, max_length, torch
        if self.tokenizer.mask_token is None:
            raise ConfigError(f"augmentation.masked_lm {model!r}: the tokenizer has no mask token")
        if self.tokenizer.pad_token is None:  # batches need padding; the attention mask hides it
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        self.mask = self.tokenizer.mask_token
        self._special = set(self.tokenizer.all_special_ids)
        self._anchor = len(self.tokenizer.tokenize(_ANCHOR))
        self._words: dict[int, str | None] = {}

    def word_of(self, token_id: int) -> str | None:
        """The whole word a vocabulary entry stands for, or None (a piece, a symbol, a special token)."""
        if token_id not in self._words:
            word = None
            if token_id not in self._special:
                text = self.tokenizer.decode([token_id]).strip()
                token = self.tokenizer.convert_ids_to_tokens(token_id)
                if text.isalpha() and self.tokenizer.tokenize(f"{_ANCHOR} {text}")[self._anchor :] == [token]:
                    word = text
            self._words[token_id] = word
        return self._words[token_id]

    def candidates(self, variants: list[list[str]]) -> list[list[str]]:
        """For each word list holding one mask token, the model's whole-word predictions for that
        slot, best first (among its ``3 * top_k`` most likely entries); one forward pass for all."""
        if not variants:
            return []
        encoded = self.tokenizer(
            [" ".join(words) for words in variants],
            return_tensors="pt",
            truncation=True,
            max_length=self.max_length,
            padding=True,
        )
        with self.torch.inference_mode():
            logits = self.model(**encoded).logits
        found = []
        for row, ids in enumerate(encoded["input_ids"]):
            slots = (ids == self.tokenizer.mask_token_id).nonzero()
            if len(slots) == 0:  # truncated away
                found.append([])
                continue
            top = logits[row, int(slots[0])].topk(min(self.top_k * 3, logits.shape[-1])).indices.tolist()
            found.append([word for word in map(self.word_of, top) if word])
        return found

    def pick(self, options: list[str], rng: np.random.Generator, instead_of: str | None = None) -> str | None:
        """One of the ``top_k`` best options (never the word being replaced), drawn with ``rng``."""
        usable = [w for w in options if w.lower() != (instead_of or "").lower()][: self.top_k]
        return str(rng.choice(usable)) if usable else None
