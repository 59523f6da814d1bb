"""Names of models: architectures, their sizes, and trained weights.

Three kinds of name, as timm tells models from their pretrained tags:

- an **architecture** (``"encoder"``; later ``"tokenizer"``, ``"classifier"``,
  ``"forecaster"``) is a class and its config class. Every checkpoint's ``config.json``
  names one, so :func:`~neurofm.models.load_model` builds whatever the file holds.
- a **model** (``"eeg-base"``) is an architecture at a size: a config, random weights.
  :func:`list_models` lists them, :func:`create_model` builds one.
- **weights** (``"labram-base"``) are trained tensors for a model: where the file comes
  from and a model card. :func:`list_weights` lists them; ``load_model(name)`` loads them.

Model files register themselves (``register_architecture`` and ``register_model`` at the
bottom of ``encoder.py``); this module imports none of them. Architectures defined outside
:mod:`neurofm.models` (the tokenizer, which builds on the encoder) are named in
:data:`PROVIDERS` and imported on first need: looking up an architecture or a model name
this registry does not know yet, or listing models. ``neurofm.models`` cannot import them
itself: they import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..errors import ConfigError, NeurofmError, did_you_mean


@dataclass(frozen=True)
class Architecture:
    """A model class and its config class; ``cls(config, recipe=...)`` builds one."""

    name: str
    cls: type
    config_cls: type


@dataclass(frozen=True)
class Weights:
    """Trained weights for a registered model: where they come from, what they are.

    ``source`` is where the tensors come from: ``'hf://owner/repo'`` (a neurofm checkpoint
    on the Hugging Face Hub), ``'package:<name>'`` (shipped), or another project's files,
    which ``importer`` (the name of a function in :mod:`neurofm.models.convert`, e.g.
    ``from_labram``) turns into a checkpoint: with an ``hf://`` source they are downloaded
    on first use and converted (:func:`neurofm.models.hub.import_weights`), otherwise the
    user imports them once. ``card`` is the model card: data, licence, paper.
    """

    name: str
    model: str
    source: str
    card: str
    importer: str | None = None

    @property
    def shipped(self) -> bool:
        """Inside the installed package (``source`` ``'package:<name>'``): always there."""
        return self.source.startswith(PACKAGE)


PACKAGE = "package:"  # Weights.source of weights shipped in neurofm/resources/weights/
ARCHITECTURES: dict[str, Architecture] = {}
_MODELS: dict[str, dict] = {}  # model name -> config fields
_ARCHITECTURE_OF: dict[str, str] = {}  # model name -> architecture name
WEIGHTS: dict[str, Weights] = {}

#: architecture name -> the module that registers it (imported on first need)
PROVIDERS: dict[str, str] = {"tokenizer": "neurofm.tokenizer.model"}
_imported: set[str] = set()


def _import_providers() -> None:
    """Import every provider module not imported yet (each registers itself once)."""
    for module in PROVIDERS.values():
        if module not in _imported:
            _imported.add(module)  # first: a provider's own registry calls do not recurse
            importlib.import_module(module)


class _Models(Mapping):
    """Model name -> its config fields: a read-only view that holds the providers' too."""

    def __getitem__(self, name: str) -> dict:
        if name not in _MODELS:
            _import_providers()
        return _MODELS[name]

    def __iter__(self) -> Iterator[str]:
        _import_providers()
        return iter(dict(_MODELS))

    def __len__(self) -> int:
        _import_providers()
        return len(_MODELS)

    def __contains__(self, name) -> bool:
        if name not in _MODELS:
            _import_providers()
        return name in _MODELS

    def __repr__(self) -> str:
        return f"MODELS({dict(self)!r})"


#: model name -> its config fields (a read-only view; ``register_model`` adds to it)
MODELS = _Models()


def register_architecture(name: str, cls: type, config_cls: type) -> None:
    """Map ``config.json``'s ``architecture`` to a class: ``("encoder", Encoder, EncoderConfig)``."""
    ARCHITECTURES[name] = Architecture(name, cls, config_cls)


def register_model(name: str, architecture: str, **config) -> None:
    """A named size of a registered architecture (its config fields, random weights)."""
    get_architecture(architecture)
    _MODELS[name], _ARCHITECTURE_OF[name] = config, architecture


def register_weights(weights: Weights) -> None:
    """Trained weights under their own name (never a model's name)."""
    if weights.name in _MODELS:
        raise NeurofmError(f"{weights.name!r} names a model; weights need their own name "
                           f"(e.g. '{weights.name}.<tag>')")  # fmt: skip
    _architecture_of_model(weights.model)
    WEIGHTS[weights.name] = weights


def shipped_folder(name: str):
    """``neurofm/resources/weights/<name>``: the folder of weights shipped in the package."""
    from importlib import resources

    return resources.files("neurofm").joinpath("resources", "weights", name)


def _register_shipped() -> None:
    """Register every folder of ``neurofm/resources/weights`` under its name.

    Each holds ``config.json``, ``model.safetensors`` and a model card (``README.md``,
    whose first paragraph after the title is the card's summary here). The model name
    comes from ``config.json`` and is checked when the weights are loaded (the tokenizer
    sizes register late, see :data:`PROVIDERS`).
    """
    import json

    folder = shipped_folder("")
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        config = entry.joinpath("config.json")
        if not config.is_file():
            continue
        model = json.loads(config.read_text())["model"]["name"]
        card = entry.joinpath("README.md")
        text = card.read_text() if card.is_file() else ""
        paragraphs = [p.strip() for p in text.split("---", 2)[-1].split("\n\n") if p.strip()]
        summary = next((p for p in paragraphs if not p.startswith("#")), "")
        WEIGHTS[entry.name] = Weights(entry.name, model, PACKAGE + entry.name,
                                      " ".join(summary.split()))  # fmt: skip


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        _import_providers()
    if name not in ARCHITECTURES:
        raise NeurofmError(
            f"unknown architecture {name!r}{did_you_mean(name, ARCHITECTURES)}; this neurofm "
            f"knows {', '.join(sorted(ARCHITECTURES))}: a newer neurofm may know it"
        )
    return ARCHITECTURES[name]


def architecture_of(model) -> str:
    """The registered architecture name of a model instance (subclasses included)."""
    hits = [a for a in ARCHITECTURES.values() if isinstance(model, a.cls)]
    if not hits:
        raise NeurofmError(
            f"{type(model).__name__} is not a registered architecture (register it with "
            "neurofm.models.register_architecture(name, cls, config_cls))"
        )
    return max(hits, key=lambda a: len(a.cls.__mro__)).name  # the most specific class


def list_models(architecture: str | None = None) -> list[str]:
    """Registered model names (architectures at a size), optionally of one architecture."""
    _import_providers()
    return sorted(n for n, a in _ARCHITECTURE_OF.items() if architecture in (None, a))


def list_weights(model: str | None = None) -> list[str]:
    """Registered weights names, optionally those for one model."""
    return sorted(n for n, w in WEIGHTS.items() if model in (None, w.model))


def _architecture_of_model(name: str) -> str:
    if name not in _MODELS:
        _import_providers()
    if name not in _MODELS:
        weights = (
            f"; {name!r} names weights: neurofm.load_model({name!r})" if name in WEIGHTS else ""
        )
        raise NeurofmError(
            f"unknown model {name!r}{did_you_mean(name, _MODELS)}{weights}; known: "
            f"{', '.join(list_models())}"
        )
    return _ARCHITECTURE_OF[name]


def model_config(name: str, **overrides):
    """The config of a registered model, with ``overrides`` applied (validated)."""
    architecture = _architecture_of_model(name)
    return get_architecture(architecture).config_cls(name=name, **{**_MODELS[name], **overrides})


def create_model(name: str, *, recipe=None, **overrides):
    """A new model of a registered size (random weights); ``overrides`` edit its config.

    Patch geometry comes from ``recipe`` (default: the modality's default recipe), never
    from ``overrides``.

    >>> create_model("eeg-base", attention="divided", cls_token=False)
    >>> create_model("fmri-tiny", recipe=neurofm.FMRIRecipe(t_r=2.0, patch_trs=10))
    """
    architecture = _architecture_of_model(name)
    try:
        config = model_config(name, **overrides)
    except ConfigError as err:
        raise ConfigError(f"create_model({name!r}, ...): {err}") from None
    return get_architecture(architecture).cls(config, recipe=recipe)


# Moved to checkpoint.py; importable from here as they were (neurofm <= 85f7a23). Looked up
# on first use: checkpoint.py imports this module, so importing it here would be a cycle.
_MOVED = {"load_model": "checkpoint", "save_model": "checkpoint", "read_config": "checkpoint",
          "FORMAT": "checkpoint"}  # fmt: skip


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_register_shipped()
