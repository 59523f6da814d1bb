"""Models: the spatio-temporal encoder, its layers, the registry, checkpoints and imports.

>>> model = neurofm.models.create_model("eeg-base")        # an architecture, random weights
>>> model = neurofm.models.from_labram("labram-base.pth")  # LaBraM's weights
>>> model = neurofm.load_model("cbramod")                  # CBraMod's (downloaded once)
>>> model = neurofm.load_model("runs/my-model")            # config.json + model.safetensors

- :mod:`.layers`: attention, norm, mlp, block, embeddings (one kind of layer each)
- :mod:`.encoder`: the encoder's wiring; registers the ``encoder`` architecture and sizes
- :mod:`.decoder`: :class:`TokenDecoder`, a light Transformer over the token grid (the
  tokenizer's and MAE's decoder)
- :mod:`.registry`: architectures, model sizes (:func:`list_models`), weights (:func:`list_weights`)
- :mod:`.checkpoint`: ``config.json`` + ``model.safetensors``, architecture-keyed
- :mod:`.hub`: the Hugging Face Hub (other projects' weights downloaded and converted on
  first use); :mod:`.convert`: LaBraM and CBraMod weights
"""

from . import attention, embeddings  # noqa: F401  (the old module paths, as attributes too)
from .checkpoint import (
    load_model,
    load_weights,
    push_to_hub,
    read_config,
    save_model,
    weights_folder,
)
from .convert import from_cbramod, from_labram
from .decoder import TokenDecoder
from .encoder import Encoder, EncoderConfig, EncoderOutput
from .layers import Attention, Block, attend
from .registry import (
    MODELS,
    WEIGHTS,
    Weights,
    create_model,
    list_models,
    list_weights,
    model_config,
    register_architecture,
    register_model,
    register_weights,
)

__all__ = [
    "MODELS",
    "WEIGHTS",
    "Attention",
    "Block",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "TokenDecoder",
    "Weights",
    "attend",
    "create_model",
    "from_cbramod",
    "from_labram",
    "list_models",
    "list_weights",
    "load_model",
    "load_weights",
    "model_config",
    "push_to_hub",
    "read_config",
    "register_architecture",
    "register_model",
    "register_weights",
    "save_model",
    "weights_folder",
]
