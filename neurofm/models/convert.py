"""Import other projects' weights onto neurofm's :class:`~neurofm.models.Encoder`.

- :func:`from_labram`: LaBraM, in its original ``labram-*.pth`` layout or braindecode's
  ``Labram``;
- :func:`from_cbramod`: CBraMod, in its original layout or braindecode's ``CBraMod``
  (the same names).

Each converter maps every tensor to the encoder and checks that nothing is left over, so
a checkpoint of another architecture fails loudly instead of loading half its weights.
Both are registered as weights by name (``labram-base``, ``cbramod``): braindecode's
published copies on the Hugging Face Hub are downloaded on first use, converted here and
cached as a neurofm checkpoint (:func:`neurofm.models.hub.import_weights`).

What changes in LaBraM's move:

- LaBraM's position table has a row per name in its 128-name list (plus [CLS]); each
  row goes to the neurofm vocabulary id of that name. Rows for old aliases (T3/T4/T5/T6,
  whose channels neurofm names T7/T8/P7/P8) and for names outside the 10-05 vocabulary
  (CFC*, CB*, O9/O10, CCP7/8) are dropped and reported; the [CLS] row is folded into
  the [CLS] token (LaBraM adds it there and nowhere else).
- The time table becomes ``time_embed="table"``; no coordinate embedding
  (``coord_frequencies=0``), so the imported model computes exactly what LaBraM computes
  on the channels it knows, and refuses channels it has no row for.
- LaBraM's GroupNorm statistics over a whole sample are kept (``conv_norm="sample"``),
  with padded tokens left out of them.

What changes in CBraMod's move (``cbramod-base``: ``attention="criss-cross"``,
``patch_embed="cbramod"``, ``pos_embed="conv"``, no final norm):

- each criss-cross half's ``nn.MultiheadAttention`` becomes an :class:`Attention` of half
  the width (``blocks.i.attn.space`` / ``.time``): ``in_proj_weight`` is its ``qkv``,
  the q and v thirds of ``in_proj_bias`` its ``q_bias``/``v_bias``. The k third is
  dropped: it adds ``q . b_k`` to every score of a query, the same for all its keys, which
  softmax ignores (the features are unchanged, as the parity test shows);
- ``proj_out`` (the pretraining head that reconstructs patches; CBraMod's fine-tuning
  replaces it by ``nn.Identity``) and a classifier's ``final_layer`` are left out: the
  features are the last block's output, as CBraMod's;
- ``mask_encoding`` (CBraMod's masked patch, all zeros and never trained) is left out:
  neurofm's ``hidden`` tokens get the learned [MASK] embedding instead (zeros after the
  import; train it before masked modelling).

Original checkpoints are pickles: they are read with ``torch.load(weights_only=True)``,
which loads tensors and refuses code; braindecode's Hub copies are safetensors.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..channels import eeg_vocabulary, map_channels
from ..errors import CheckpointError, NeurofmError, logger, validate_type
from ..preprocess.recipe import EEGRecipe
from .encoder import Encoder, EncoderConfig, _recipe_for
from .layers import cbramod_out_len
from .layers.embeddings import CBRAMOD_CONVS
from .registry import Weights, register_weights

#: LaBraM's channel list (its ``utils.standard_1020``; braindecode's LABRAM_CHANNEL_ORDER)
LABRAM_CHANNELS = (
    "FP1 FPZ FP2 AF9 AF7 AF5 AF3 AF1 AFZ AF2 AF4 AF6 AF8 AF10 F9 F7 F5 F3 F1 FZ F2 F4 F6 F8 F10 "
    "FT9 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 FT10 T9 T7 C5 C3 C1 CZ C2 C4 C6 T8 T10 TP9 TP7 "
    "CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 TP10 P9 P7 P5 P3 P1 PZ P2 P4 P6 P8 P10 PO9 PO7 PO5 PO3 "
    "PO1 POZ PO2 PO4 PO6 PO8 PO10 O1 OZ O2 O9 CB1 CB2 IZ O10 T3 T5 T4 T6 M1 M2 A1 A2 CFC1 "
    "CFC2 CFC3 CFC4 CFC5 CFC6 CFC7 CFC8 CCP1 CCP2 CCP3 CCP4 CCP5 CCP6 CCP7 CCP8 T1 T2 FTT9h "
    "TTP7h TPP9h FTT10h TPP8h TPP10h FP1-F7 F7-T7 T7-P7 P7-O1 FP2-F8 F8-T8 T8-P8 P8-O2"
).split()

#: LaBraM's sizes by embedding dim: heads (head dim is not in the weights without QK-norm)
LABRAM_HEADS = {200: 10, 400: 16, 800: 16}
_SIZE_NAMES = {200: "base", 400: "large", 800: "huge"}

# original name -> neurofm name (regex on the original layout; braindecode's is mapped first)
_BRAINDECODE = [
    (r"^position_embedding$", "pos_embed"),
    (r"^temporal_embedding$", "time_embed"),
    (r"^patch_embed\.temporal_conv\.", "patch_embed."),
    (r"\.mlp\.0\.", ".mlp.fc1."),
    (r"\.mlp\.2\.", ".mlp.fc2."),
    (r"^final_layer\.", "head."),
]
_TO_NEUROFM = [
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"blocks.\1.mlp.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"blocks.\1.mlp.2."),
    (r"^fc_norm\.", "norm."),
]
_IGNORED = re.compile(r"^(head|lm_head)\.|relative_position_index$")


def labram_rows() -> dict[int, int]:
    """LaBraM position-table row (1-based; 0 is [CLS]) -> neurofm vocabulary id."""
    vocab = eeg_vocabulary()
    report = map_channels(list(LABRAM_CHANNELS))
    rows = {}
    for i, info in enumerate(report.channels, start=1):
        if info.status in ("kept", "renamed") and info.name in vocab:
            rows[i] = vocab.id(info.name)
    return rows


def _read(source, what: str = "LaBraM") -> dict[str, torch.Tensor]:
    if isinstance(source, torch.nn.Module):
        return dict(source.state_dict())
    if isinstance(source, dict):
        return dict(source)
    validate_type(source, "path-like", "source", "a path, a state dict or a torch.nn.Module")
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"no {what} checkpoint at {path}: give the path of its .pth, .bin "
                              "or .safetensors file")  # fmt: skip
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} could not be read as tensors with torch.load(weights_only=True) "
            f"({type(err).__name__}: {str(err)[:200]}): it is damaged or holds objects other "
            "than tensors. neurofm will not unpickle it; re-save its state_dict() as safetensors"
        ) from err
    for key in ("model", "module", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    return {re.sub(r"^(module\.)+", "", k): v for k, v in obj.items()}  # DataParallel's


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or a bare pickle
            raise CheckpointError(
                f"{path} is a PyTorch pickle (torch.save), not a safetensors file: rename it "
                "to .pth and pass that to the importer (from_labram, from_cbramod), which "
                "reads its tensors with torch.load(weights_only=True)"
            ) from err
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}): it is damaged or of another "
            "format; download or convert it again"
        ) from err


def _normalise(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Any layout -> the original LaBraM names, and which layout it was."""
    if any(k.startswith("student.") for k in state):  # a pretraining checkpoint
        state = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
    layout = "braindecode" if "position_embedding" in state else "labram"
    if layout == "braindecode":
        renamed = {}
        for key, value in state.items():
            for pattern, repl in _BRAINDECODE:
                key = re.sub(pattern, repl, key)
            renamed[key] = value
        state = renamed
    if "cls_token" not in state or "patch_embed.conv1.weight" not in state:
        raise NeurofmError(
            "not a LaBraM encoder state dict (no cls_token / patch_embed.conv1): import the "
            "neural Transformer's weights, not the VQ tokenizer's or a classifier's only"
        )
    return state, layout


def from_labram(source, *, heads: int | None = None, recipe=None,
                name: str | None = None, **removed) -> Encoder:  # fmt: skip
    """An :class:`Encoder` holding LaBraM weights.

    Parameters
    ----------
    source : path | dict | torch.nn.Module
        ``labram-base.pth`` (LaBraM's GitHub ``checkpoints/``, pretraining or fine-tuned),
        a ``.safetensors`` file, a state dict, or a braindecode ``Labram`` module.
    heads : int | None
        Attention heads; read from the QK-norm size when present, else LaBraM's for the
        width (base 10, large 16, huge 16).
    recipe : Recipe | None
        The recipe the weights were trained with (default ``Recipe()``: 200 Hz, 1 s
        patches of 200 samples, as LaBraM); the one source of patch geometry.

    Returns
    -------
    Encoder
        With ``model.conversion`` describing mapped and dropped rows and ignored tensors.
    """
    geometry = {k: removed.pop(k) for k in ("patch_len", "patch_seconds") if k in removed}
    if removed:
        raise TypeError(f"from_labram() got an unexpected keyword argument {next(iter(removed))!r}")
    if geometry:  # from_labram(patch_len=...) before patch geometry moved to the recipe
        given = ", ".join(f"{k}={v!r}" for k, v in geometry.items())
        raise NeurofmError(
            f"from_labram({given}): patch geometry comes from the recipe: pass recipe="
            "neurofm.Recipe(sfreq=..., patch_seconds=...) (default: LaBraM's 200 Hz, 1 s)"
        )
    state, layout = _normalise(_read(source))
    dim = state["cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    qk_norm = "blocks.0.attn.q_norm.weight" in state
    if heads is None:
        heads = dim // state["blocks.0.attn.q_norm.weight"].shape[0] if qk_norm else (
            LABRAM_HEADS.get(dim))  # fmt: skip
        if heads is None:
            raise NeurofmError(f"cannot tell the number of heads for dim={dim}: pass heads=")
    pooling = "mean" if "fc_norm.weight" in state else "cls"
    if "norm.weight" not in state and "fc_norm.weight" not in state:
        raise NeurofmError("the checkpoint has neither norm nor fc_norm: not a LaBraM encoder")
    time_rows = state["time_embed"].shape[1]
    conv_c = state["patch_embed.conv1.weight"].shape[0]
    config = EncoderConfig(
        name=name or f"labram-{_SIZE_NAMES.get(dim, dim)}", modality="eeg", dim=dim,
        depth=depth, heads=heads, patch_embed="conv", conv_channels=conv_c, conv_norm="sample",
        coord_frequencies=0, time_embed="table", time_rows=time_rows,
        qkv_bias="blocks.0.attn.q_bias" in state, qk_norm=qk_norm,
        layer_scale=0.1 if "blocks.0.gamma_1" in state else None,
        cls_token=True, pooling=pooling, attention="full",
    )  # fmt: skip
    model = Encoder(config, recipe=recipe)

    new = {}
    ignored = []
    vocab_rows = labram_rows()
    pos = state.pop("pos_embed", None)
    time = state.pop("time_embed")
    cls = state.pop("cls_token")
    table = torch.zeros_like(model.space_embed.table.weight)
    learned = torch.zeros_like(model.space_embed.learned)
    if pos is not None:
        cls = cls + pos[:, :1]
        for row, vid in vocab_rows.items():
            if row < pos.shape[1]:
                table[vid] = pos[0, row]
                learned[vid] = True
    new["cls_token"] = cls
    new["space_embed.table.weight"] = table
    new["space_embed.learned"] = learned
    new["time_embed.table"] = time[0]
    if "mask_token" in state:
        new["mask_token"] = state.pop("mask_token").reshape(-1)
    for key, value in state.items():
        if _IGNORED.search(key):
            ignored.append(key)
            continue
        target = key
        for pattern, repl in _TO_NEUROFM:
            target = re.sub(pattern, repl, target)
        new[target] = value
    own = model.state_dict()
    for key in own:  # buffers and the [MASK] token LaBraM fine-tuning checkpoints lack
        if key not in new and (key.endswith(("freqs",)) or key == "mask_token"):
            new[key] = own[key]
    model.load_weights(new, source=f"LaBraM ({layout} layout)")
    dropped = [LABRAM_CHANNELS[r - 1] for r in range(1, len(LABRAM_CHANNELS) + 1)
               if r not in vocab_rows]  # fmt: skip
    model.conversion = {
        "layout": layout,
        "mapped_channels": len(vocab_rows),
        "dropped_channels": dropped,
        "ignored_tensors": ignored,
        "pooling": pooling,
    }
    logger.info(
        "imported LaBraM (%s layout, dim %d, depth %d): %d of %d channel rows mapped; "
        "dropped %s; ignored %s", layout, dim, depth, len(vocab_rows), len(LABRAM_CHANNELS),
        dropped, ignored,
    )  # fmt: skip
    return model


# ---------------------------------------------------------------------- CBraMod
#: CBraMod's recipe: 200 Hz, 1 s patches of 200 samples, 0.3-75 Hz, volts / 100 uV (its
#: paper's TUEG preprocessing; the line frequency's notch is detected)
CBRAMOD_RECIPE = EEGRecipe(sfreq=200.0, l_freq=0.3, h_freq=75.0, unit_scale=1e-4,
                           patch_seconds=1.0)  # fmt: skip
CBRAMOD_HEADS = 8  # not in the weights (nn.MultiheadAttention keeps heads in its code)

_CBRAMOD_PATCH = {"proj_in.0": "convs.0", "proj_in.1": "norms.0", "proj_in.3": "convs.1",
                  "proj_in.4": "norms.1", "proj_in.6": "convs.2", "proj_in.7": "norms.2",
                  "spectral_proj.0": "spectral"}  # fmt: skip
_CBRAMOD_LAYER = {"norm1": "norm1", "norm2": "norm2", "linear1": "mlp.0", "linear2": "mlp.2",
                  "self_attn_s.out_proj": "attn.space.proj",
                  "self_attn_t.out_proj": "attn.time.proj"}  # fmt: skip
_CBRAMOD_IGNORED = re.compile(r"^(proj_out|final_layer)\.|^patch_embedding\.mask_encoding$")


def _cbramod_layout(state: dict[str, torch.Tensor]) -> None:
    """Refuse what is not a CBraMod encoder, naming what is missing."""
    needed = ("patch_embedding.proj_in.0.weight", "patch_embedding.spectral_proj.0.weight",
              "patch_embedding.positional_encoding.0.weight",
              "encoder.layers.0.self_attn_s.in_proj_weight")  # fmt: skip
    missing = [k for k in needed if k not in state]
    if missing:
        hint = (" (this is a LaBraM state dict: use from_labram)"
                if "cls_token" in state or "position_embedding" in state else "")  # fmt: skip
        raise NeurofmError(f"not a CBraMod encoder state dict: no {', '.join(missing)}{hint}")
    kernels = tuple(state[f"patch_embedding.proj_in.{i}.weight"].shape[-1] for i in (0, 3, 6))
    if kernels != tuple(k for k, _, _ in CBRAMOD_CONVS):
        raise NeurofmError(
            f"this CBraMod's patch convolutions have kernels {kernels}; neurofm's CBraMod patch "
            f"embedding has {tuple(k for k, _, _ in CBRAMOD_CONVS)} (the published model's)"
        )


def from_cbramod(source, recipe=None, *, heads: int | None = None, conv_groups: int = 5,
                 name: str = "cbramod-base") -> Encoder:  # fmt: skip
    """An :class:`Encoder` holding CBraMod weights (Wang et al., ICLR 2025).

    Parameters
    ----------
    source : path | dict | torch.nn.Module
        braindecode's ``CBraMod`` (a module, or its Hub file ``model.safetensors`` /
        ``pytorch_model.bin``), CBraMod's original ``pretrained_weights.pth``, or a state
        dict of either (the same names).
    recipe : Recipe | None
        The recipe the weights were trained with (default :data:`CBRAMOD_RECIPE`: 200 Hz,
        1 s patches, 0.3-75 Hz, 100 uV); its ``patch_len`` must be the weights' (200).
    heads : int | None
        Attention heads, half over space and half over time (default CBraMod's 8; the
        weights do not record them).
    conv_groups : int
        GroupNorm groups of the patch embedding (CBraMod's 5; not in the weights either).

    Returns
    -------
    Encoder
        The ``cbramod-base`` architecture, with ``model.conversion`` listing the tensors
        left out. Its ``out.tokens`` are CBraMod's encoder features (before ``proj_out``);
        channels are placed by their order in the grid, not by name.
    """
    state = {re.sub(r"^(module\.)+", "", k): v for k, v in _read(source, "CBraMod").items()}
    _cbramod_layout(state)
    spectral = state["patch_embedding.spectral_proj.0.weight"]
    dim, bins = spectral.shape
    depth = 1 + max(int(m.group(1)) for k in state
                    if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))  # fmt: skip
    hidden = state["encoder.layers.0.linear1.weight"].shape[0]
    conv_c = state["patch_embedding.proj_in.0.weight"].shape[0]
    recipe = _recipe_for(EncoderConfig(), CBRAMOD_RECIPE if recipe is None else recipe)
    if conv_c * cbramod_out_len(recipe.patch_len) == dim:
        conv_c = None  # the default: dim // conv output length
    config = EncoderConfig(
        name=name, modality="eeg", dim=dim, depth=depth, heads=heads or CBRAMOD_HEADS,
        mlp_ratio=hidden / dim, patch_embed="cbramod", conv_channels=conv_c,
        conv_groups=conv_groups, conv_norm="sample", pos_embed="conv", coord_frequencies=0,
        attention="criss-cross", qkv_bias=True, qk_norm=False, layer_scale=None,
        norm_eps=1e-5, final_norm=False, cls_token=False, pooling="mean",
    )  # fmt: skip
    P = recipe.patch_len
    if P // 2 + 1 != bins or conv_c is not None:
        raise NeurofmError(
            f"these CBraMod weights take patches of {2 * (bins - 1)} samples (their spectral "
            f"map has {bins} inputs) but the recipe makes patches of {P}: pass the recipe "
            "they were trained with (CBraMod: 200 Hz, patch_seconds=1)"
        )
    model = Encoder(config, recipe=recipe)

    new, ignored = {}, []
    half = dim // 2
    for key, value in state.items():
        if _CBRAMOD_IGNORED.search(key):
            ignored.append(key)
            continue
        if m := re.match(r"patch_embedding\.(proj_in\.\d|spectral_proj\.0)\.(\w+)$", key):
            new[f"patch_embed.{_CBRAMOD_PATCH[m.group(1)]}.{m.group(2)}"] = value
        elif m := re.match(r"patch_embedding\.positional_encoding\.0\.(\w+)$", key):
            new[f"pos_embed.conv.{m.group(1)}"] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn_([st])\.in_proj_(\w+)$", key):
            i, side, what = m.groups()
            prefix = f"blocks.{i}.attn.{'space' if side == 's' else 'time'}"
            if what == "weight":
                new[f"{prefix}.qkv.weight"] = value
            else:  # q, k, v biases: k's only shifts each query's scores (softmax ignores it)
                new[f"{prefix}.q_bias"], new[f"{prefix}.v_bias"] = value[:half], value[2 * half :]
        elif m := re.match(r"encoder\.layers\.(\d+)\.([\w.]+?)\.(weight|bias)$", key):
            i, module, what = m.groups()
            if module not in _CBRAMOD_LAYER:
                raise NeurofmError(f"unexpected CBraMod tensor {key!r}: not a CBraMod encoder")
            new[f"blocks.{i}.{_CBRAMOD_LAYER[module]}.{what}"] = value
        else:
            raise NeurofmError(f"unexpected CBraMod tensor {key!r}: not a CBraMod encoder")
    new["mask_token"] = torch.zeros(dim)
    model.load_weights(new, source="CBraMod")
    model.conversion = {"layout": "cbramod", "ignored_tensors": ignored,
                        "dropped": "the k third of each in_proj_bias (softmax-invariant)"}  # fmt: skip
    logger.info("imported CBraMod (dim %d, depth %d, %d heads): ignored %s", dim, depth,
                config.heads, ignored)  # fmt: skip
    return model


# ---------------------------------------------------------------------- weights by name
#: the original files behind registered weights, for placing them by hand offline
ORIGINALS = {
    "labram-base": "https://github.com/935963004/LaBraM/raw/main/checkpoints/labram-base.pth",
    "cbramod": "https://huggingface.co/weighting666/CBraMod (pretrained_weights.pth)",
}

register_weights(Weights(
    "labram-base", model="eeg-base", importer="from_labram",
    source="hf://braindecode/labram-pretrained",
    card="LaBraM-base (Jiang, Zhao and Lu, 'Large Brain Model for Learning Generic "
    "Representations with Tremendous EEG Data in BCI', ICLR 2024): the eeg-base geometry "
    "(d=200, 12 layers, 10 heads) pretrained by masked EEG modelling on about 2,500 hours "
    "of EEG from about 20 datasets; 200 Hz, 1 s patches, a learned table of 16 patch times "
    "and of 128 channel names (110 map onto neurofm's vocabulary), no coordinate embedding. "
    "braindecode's copy on the Hugging Face Hub, downloaded on first use and converted by "
    "from_labram. Code and original weights: github.com/935963004/LaBraM",
))  # fmt: skip
register_weights(Weights(
    "cbramod", model="cbramod-base", importer="from_cbramod",
    source="hf://braindecode/cbramod-pretrained",
    card="CBraMod (Wang et al., 'CBraMod: A Criss-Cross Brain Foundation Model for EEG "
    "Decoding', ICLR 2025): 4.9M parameters, criss-cross attention (d=200, 12 layers, "
    "4 + 4 heads), a conv + FFT patch embedding and convolutional positions over the "
    "channel x patch grid (any channel count; channel order matters); pretrained by masked "
    "patch reconstruction on the TUH EEG corpus (TUEG), 19 channels of the 10-20 system, "
    "200 Hz, 1 s patches. braindecode's copy on the Hugging Face Hub (BSD-3-Clause), "
    "downloaded on first use and converted by from_cbramod. Code and original weights: "
    "github.com/wjq-learning/CBraMod",
))  # fmt: skip
