"""neurofm: EEG and fMRI brain foundation models.

Public API::

    raw = neurofm.read_eeg("recording.edf")        # any MNE format, canonical channels
    tokens = neurofm.tokenize(raw, neurofm.Recipe())  # Tokens (windows, channels, patches, samples)
    for batch in neurofm.iter_tokens(raw, batch_size=64): ...   # constant memory
    series = neurofm.read_fmri("bold.nii.gz", "power2011")    # (time, parcel), prepared
    tokens = neurofm.tokenize(series, neurofm.FMRIRecipe(t_r=2.0))  # the same Tokens
    model = neurofm.load_model("checkpoint/")         # or neurofm.models.create_model("eeg-base")
    features = model(tokens).pooled                    # (windows, dim)
    feats = neurofm.encode("recording.edf", "eeg-tiny.sample")  # xarray (window, feature)
    online = neurofm.StreamEncoder("eeg-tiny.sample", ch_names, sfreq)  # push(chunk) per hop
"""

from .channels import ChannelReport, ChannelTable, eeg_vocabulary, map_channels
from .encode import encode
from .io import read_eeg, read_fmri
from .models import load_model
from .preprocess import FMRIRecipe, Recipe, preprocess
from .stream import StreamEncoder
from .tokens import Tokens, collate
from .windows import iter_tokens, tokenize, tokenize_fmri

__version__ = "0.1.0.dev0"
__all__ = [
    "FMRIRecipe",
    "ChannelReport",
    "ChannelTable",
    "Recipe",
    "StreamEncoder",
    "Tokens",
    "collate",
    "eeg_vocabulary",
    "encode",
    "iter_tokens",
    "load_model",
    "map_channels",
    "preprocess",
    "read_eeg",
    "read_fmri",
    "tokenize",
    "tokenize_fmri",
]
