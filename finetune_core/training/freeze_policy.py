"""Which blocks of the encoder train at each epoch of stage 2: one object built once from the config
(``training.unfrozen.freeze_layers``, ``freeze_after_epochs``, ``gradual``, ``freeze_word_embeddings``),
in the style of Lightning's ``BaseFinetuning`` callback: ``freeze_before_training`` once, then
``on_epoch_start`` at the start of every epoch, and a ``state_dict`` a resumed stage restores.

Modes (docs/concepts/freezing.md):

- ``none``: every block trains throughout;
- ``from-start``: the embeddings and the lowest N blocks never train (their outputs come from the layer cache);
- ``after-epochs``: they train with the rest for ``after_epochs`` epochs, then freeze;
- ``gradual``: top-down unfreezing, a slice more each epoch (above the N frozen blocks, if any).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.errors import ConfigError
from finetune_core.model.embedding_and_dropout import freeze_word_embeddings
from finetune_core.model.encoder_split import freeze_lower, resolve_freeze_layers
from finetune_core.training.optim import apply_trainable_depths, unfrozen_depths


@dataclass
class FreezePolicy:
    frozen: int  # blocks (with the embeddings) frozen at some point of the stage; 0: none
    after_epochs: int  # 0: frozen from the start; N: they freeze after epoch N
    gradual: bool
    epochs: int  # the stage's epochs; 0: stage 2 does not run
    word_embeddings: bool  # the token-embedding matrix kept frozen throughout
    frozen_names: set[str] = field(default_factory=set)  # frozen before training: in no optimizer group
    epoch: int = 0  # state: the epoch last started (0: none yet)
    _lower_applied: bool = False  # the lowest blocks frozen on this process's model

    @classmethod
    def from_config(cls, config: FinetuneConfig, model) -> FreezePolicy:
        """The policy for ``model`` (the settings resolved against its blocks; an unsupported family or
        too many blocks is a ConfigError, checked in stage 1 too, so a bad value fails before any training)."""
        training, stage = config.training, config.training.unfrozen
        epochs = 0 if training.strategy == "linear-probe" else stage.epochs
        frozen = resolve_freeze_layers(stage.freeze_layers, model) if epochs > 0 else 0
        after = stage.freeze_after_epochs if frozen else 0
        if after >= epochs:  # they never freeze: every block trains throughout, as with freeze_layers 0
            frozen = after = 0
        if after and stage.gradual:
            raise ConfigError("training.unfrozen.freeze_after_epochs: not with gradual unfreezing (gradual: true)")
        return cls(frozen, after, stage.gradual, epochs, stage.freeze_word_embeddings and epochs > 0)

    @property
    def mode(self) -> str:
        if self.gradual:
            return "gradual"
        if not self.frozen:
            return "none"
        return "after-epochs" if self.after_epochs else "from-start"

    @property
    def frozen_from_start(self) -> int:
        """Blocks frozen before the first epoch (0 when they freeze later, or never)."""
        return 0 if self.after_epochs else self.frozen

    @property
    def runs(self) -> bool:
        return self.epochs > 0

    def freeze_before_training(self, model) -> set[str]:
        """requires_grad off for what never trains in this stage; returns those parameters' names."""
        self.frozen_names = freeze_lower(model, self.frozen_from_start)
        self._lower_applied = self.frozen_from_start > 0
        if self.word_embeddings:
            self.frozen_names |= freeze_word_embeddings(model)
        return self.frozen_names

    @property
    def lower_frozen(self) -> bool:
        """Whether the lowest ``frozen`` blocks have stopped training by the epoch last started."""
        return bool(self.frozen) and (not self.after_epochs or self.epoch > self.after_epochs)

    def freezes_lower_at(self, epoch: int) -> bool:
        """Whether the lowest blocks freeze on this process's model at the start of ``epoch``: at
        epoch ``after_epochs + 1``, or at the first epoch of a resume past it."""
        return bool(self.frozen) and not self._lower_applied and epoch > self.after_epochs

    def on_epoch_start(self, epoch: int, network, model, depths: dict[str, int], top: int) -> bool:
        """Apply ``epoch``'s freezing: the lowest blocks of ``network`` freeze when their time has come
        (returns True then: the caller moves to their cached outputs); with gradual unfreezing, the
        depths of ``model`` that train this epoch."""
        freezes, self.epoch = self.freezes_lower_at(epoch), epoch
        if freezes:
            freeze_lower(network, self.frozen)  # no gradient: the optimizer skips them from the next step
            self._lower_applied = True
        if self.gradual:
            apply_trainable_depths(model, depths, self.trainable_depths(epoch, top), self.frozen_names)
        return freezes

    def trainable_depths(self, epoch: int, top: int) -> set[int]:
        """Gradual unfreezing's depths for ``epoch`` (0: the embeddings, block i: depth i + 1): the
        top slice first, all of them by the last epoch; above the frozen blocks when some are."""
        if not self.frozen:
            return unfrozen_depths(epoch, self.epochs, top)
        return {d + self.frozen + 1 for d in unfrozen_depths(epoch, self.epochs, top - self.frozen - 1)}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """A resumed stage's state; the next ``on_epoch_start`` applies it to the freshly loaded model."""
        self.epoch = int(state["epoch"])
