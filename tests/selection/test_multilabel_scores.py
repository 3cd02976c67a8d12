"""Backbone selection on multilabel targets: LogME and the probe score the label matrix as multi-output
targets, and features that carry the labels score higher than features that do not."""

import numpy as np

from finetune_core.selection.transferability import logme, probe_score


def test_informative_features_score_higher_on_a_label_matrix():
    rng = np.random.default_rng(0)
    labels = (rng.random((300, 4)) < [0.5, 0.3, 0.2, 0.0]).astype(np.float64)  # the last label never occurs
    informative = np.hstack([labels * 2 + rng.normal(0, 0.5, labels.shape), rng.normal(size=(300, 12))])
    noise = rng.normal(size=(300, 16))
    assert logme(informative, labels, "multilabel") > logme(noise, labels, "multilabel")
    good, bad = probe_score(informative, labels, "multilabel"), probe_score(noise, labels, "multilabel")
    assert 0.8 < good <= 1.0 and bad < 0.5
