"""One model load at a time in a process.

transformers' ``from_pretrained`` swaps ``PreTrainedModel.tie_weights`` for a no-op, process-wide,
while it builds the model (``transformers.initialization.no_tie_weights``), then puts back what it
found. Two loads in different threads can put back each other's no-op, and a model built in one
thread while another loads is left untied: an output layer that should share the token matrix
gets its own copy, silently. The library's model loads hold this lock (candidates are scored by a
thread pool; a user's code may call the loaders from threads too). Reentrant: a caller may hold it
around a loader that takes it again."""

from __future__ import annotations

import threading

MODEL_LOADING = threading.RLock()
