"""The strict pydantic base every configuration section derives from: unknown keys are
rejected and assignments are validated, so a typo never passes silently."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
