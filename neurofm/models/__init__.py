"""Models: the spatio-temporal encoder, its building blocks, registry and weight import.

>>> model = neurofm.models.create_model("eeg-base")        # LaBraM-base geometry
>>> model = neurofm.models.from_labram("labram-base.pth")  # LaBraM's weights
>>> model = neurofm.load_model("runs/my-model")            # config.json + model.safetensors
"""

from .attention import Attention, attend
from .convert import from_labram
from .encoder import Block, Encoder, EncoderConfig, EncoderOutput
from .registry import (
    MODELS,
    create_model,
    list_models,
    load_model,
    model_config,
    push_to_hub,
    save_model,
)

__all__ = [
    "MODELS",
    "Attention",
    "Block",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "attend",
    "create_model",
    "from_labram",
    "list_models",
    "load_model",
    "model_config",
    "push_to_hub",
    "save_model",
]
