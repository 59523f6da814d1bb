"""Configuration models: strict, frozen pydantic models whose typos get suggestions.

Every config a user writes (a :class:`~neurofm.Recipe`, a model config, later the YAML
recipes of ``neurofm pretrain``/``finetune``) derives from :class:`StrictConfig`, so an
unknown key fails with the closest valid key instead of being silently ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from .utils import did_you_mean


class StrictConfig(BaseModel):
    """Frozen, no extra keys; ``Model(smaple=1)`` says "did you mean 'sample'?"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _suggest(cls, data):
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(
                        f"unknown {cls.__name__} field {key!r}{did_you_mean(key, cls.model_fields)}"
                    )
        return data

    def replace(self, **changes):
        """A validated copy with some fields changed."""
        return type(self)(**{**self.model_dump(), **changes})
