"""The run directory's layout, owned here alone: every path a run writes under its directory.
Flows create one ``RunLayout`` and hand it to tasks, which never spell a file name themselves.

    RUN_DIR/
      run.json                    config hash and MLflow run id (resume)
      raw/  validation/  data/    read files, validation reports (Data Docs), prepared splits
      selection/                  candidates' sample features (backbone selection)
      frozen/  model/             stage-1 model, final model (logged to MLflow)
      checkpoints/<stage>/        per-epoch training state
      test_predictions.parquet    served predictions on the test split (gates, review)
      champion_predictions.parquet
      review/                     plots, reports and worst examples for reviewers
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def selection(self) -> Path:
        return self.root / "selection"

    @property
    def frozen(self) -> Path:
        return self.root / "frozen"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def test_predictions(self) -> Path:
        return self.root / "test_predictions.parquet"

    @property
    def champion_predictions(self) -> Path:
        return self.root / "champion_predictions.parquet"

    @property
    def review(self) -> Path:
        return self.root / "review"
