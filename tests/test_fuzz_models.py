"""Property-based bad input for models: Tokens into the encoder, damaged checkpoints.

Each case must give correct data, a neurofm error, or a named warning (``fuzz.outcome``).
Where features come back they are compared with those of the same tokens in canonical
form (float32 signal, zeros where ``mask`` is False), so NaN in padding or another dtype
can never change a result; where a checkpoint loads, its weights equal the saved ones.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from fuzz import outcome
from hypothesis import given
from hypothesis import strategies as st

from neurofm.errors import CheckpointError
from neurofm.models import create_model, from_labram, load_model
from neurofm.tokens import Tokens

torch.manual_seed(0)
MODEL = create_model("eeg-tiny").eval()
VOCAB = MODEL.config.vocab_size
P = MODEL.recipe.patch_len

# ---------------------------------------------------------------------- Tokens
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
specials = st.sampled_from((float("nan"), float("inf"), float("-inf"), 1e30, 0.0, -2.5))


BAD = ("x-value", "x-int", "space-id", "space-float", "pos-value", "t-value", "t-epoch",
       "shape", "numpy", "patch-len", "mask-int")  # fmt: skip


@st.composite
def token_fields(draw):
    """Tokens' fields: well formed in any dtype, with up to three kinds of damage."""
    B, S, N = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    bad = draw(st.sets(st.sampled_from(BAD), max_size=3))
    x = torch.randn(B, S, N, P, generator=g)
    ids = st.sampled_from((1, 2, 17, VOCAB - 1))  # UNK: placed by its position
    space = torch.tensor(draw(st.lists(ids, min_size=S, max_size=S))).expand(B, S).clone()
    pos = torch.randn(B, S, 3, generator=g) * 60
    t = draw(st.sampled_from((0.0, 30.0, 1e5))) + torch.arange(N, dtype=torch.float64)
    t = t.expand(B, N).clone()
    mask = torch.rand(B, S, N, generator=g) < draw(st.sampled_from((0.0, 0.5, 1.0)))

    def anywhere(shape):
        return tuple(draw(st.integers(0, n - 1)) for n in shape)

    for _ in range(draw(st.integers(1, 3)) if "x-value" in bad else 0):  # masked or not
        x[anywhere(x.shape)] = draw(specials)
    if "space-id" in bad:
        space[anywhere(space.shape)] = draw(st.sampled_from((VOCAB, -1, 10**6)))
    if "pos-value" in bad:  # NaN is "unknown" (fine where the id has a row), inf never is
        pos[anywhere(pos.shape)] = draw(st.sampled_from((float("nan"), float("inf"), 5e3)))
    if "t-value" in bad:
        t[anywhere(t.shape)] = draw(specials)
    if "t-epoch" in bad:
        t += 1.7e9  # Unix time: fine in float64, unresolvable in float32
    fields = dict(
        x=x.to(draw(st.sampled_from(FLOATS))),
        space=space.to(torch.float32 if "space-float" in bad else
                       draw(st.sampled_from((torch.long, torch.int32, torch.uint8)))),
        pos=pos, t=t.to(draw(st.sampled_from((torch.float32, torch.float64, torch.int64)))),
        mask=mask.to(torch.int64) if "mask-int" in bad else mask,
    )  # fmt: skip
    if "x-int" in bad:
        fields["x"] = fields["x"].to(torch.int16)
    if "patch-len" in bad:
        fields["x"] = fields["x"][..., : P // 2]
    name = draw(st.sampled_from(sorted(fields)))
    if "shape" in bad:
        fields[name] = draw(st.sampled_from((fields[name][..., :0], fields[name][None])))
    if "numpy" in bad:
        fields[name] = fields[name].numpy() if fields[name].dtype != torch.bfloat16 else 0.5
    if draw(st.booleans()):  # names, possibly fewer than units (collate pads without names)
        k = draw(st.integers(0, S))
        fields["names"] = [tuple(f"unit{i}" for i in range(k))] * draw(st.sampled_from((B, B + 1)))
    return fields


def _encode(fields):
    with torch.no_grad():
        return MODEL(Tokens(**fields))


@given(fields=token_fields())
def test_bad_tokens_give_exact_features_or_an_error(fields):
    result = outcome(_encode, fields)
    if not result.ok:
        return
    out, mask = result.value, fields["mask"]
    # the same tokens, canonical: float32 signal, zeros in padding, long ids, float times
    x = torch.where(mask[..., None], fields["x"].float(), 0.0)
    with torch.no_grad():
        ref = MODEL(Tokens(x=x, space=fields["space"].long(), pos=fields["pos"].float(),
                           t=fields["t"], mask=mask))  # fmt: skip
    assert out.tokens.shape == (*mask.shape, MODEL.dim) and out.tokens.dtype == torch.float32
    assert torch.isfinite(out.tokens[mask]).all() and torch.isfinite(out.pooled).all()
    torch.testing.assert_close(out.tokens[mask], ref.tokens[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.pooled, ref.pooled, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = MODEL.save_pretrained(tmp_path_factory.mktemp("fuzz_models") / "ckpt")
    return path, {k: v.clone() for k, v in MODEL.state_dict().items()}


FILES = ("config.json", "model.safetensors")
CONFIG_KEYS = (
    ("format",), ("format_version",), ("neurofm_version",), ("model",), ("recipe",),
    ("weights_sha256",), ("config_sha256",), ("model", "pooling"), ("model", "dim"),
    ("model", "modality"), ("model", "vocab_size"), ("model", "name"), ("recipe", "sfreq"),
    ("recipe", "patch_seconds"), ("recipe", "modality"), ("extra",),
)  # fmt: skip
json_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.text(max_size=6),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.lists(st.integers(0, 3), max_size=2), st.just("same"))  # fmt: skip
damage = st.one_of(
    st.tuples(st.just("flip"), st.sampled_from(FILES), st.integers(0, 10**7), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0, 1)),
    st.tuples(st.just("delete"), st.sampled_from((*FILES, ""))),
    st.tuples(st.just("append"), st.sampled_from(FILES), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("replace"), st.sampled_from(FILES), st.binary(max_size=64)),
    st.tuples(st.just("edit"), st.sampled_from(CONFIG_KEYS), json_values),
    st.tuples(st.just("drop-key"), st.sampled_from(CONFIG_KEYS)),
    st.tuples(st.just("reformat"), st.integers(0, 4), st.booleans()),  # layout only: a no-op
)


def _apply(path: Path, op) -> None:
    kind, *args = op
    if kind == "delete":
        shutil.rmtree(path, True) if not args[0] else (path / args[0]).unlink(missing_ok=True)
        return
    if kind in ("edit", "drop-key", "reformat"):
        target = path / "config.json"
        try:
            config = json.loads(target.read_bytes())
        except (OSError, ValueError):
            return  # already unreadable or gone
        if kind == "reformat":
            target.write_text(json.dumps(config, indent=args[0], sort_keys=args[1]))
            return
        *parents, leaf = args[0]
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if kind == "drop-key":
                node.pop(leaf, None)
            elif args[1] != "same":
                node[leaf] = args[1]
        target.write_text(json.dumps(config, indent=2))
        return
    target = path / args[0]
    if not target.is_file():
        return
    data = bytearray(target.read_bytes())
    if kind == "flip" and data:
        data[args[1] % len(data)] ^= 1 << args[2]
    elif kind == "truncate":
        data = data[: int(len(data) * args[1])]
    elif kind == "append":
        data += args[1]
    elif kind == "replace":
        data = bytearray(args[1])
    target.write_bytes(bytes(data))


@given(ops=st.lists(damage, max_size=3))
def test_damaged_checkpoints_are_refused_or_exact(saved, ops):
    clean, state = saved
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt"
        shutil.copytree(clean, path)
        for op in ops:
            _apply(path, op)
        result = outcome(load_model, path)
    if result.kind == "error":
        assert isinstance(result.error, CheckpointError), result.error
        return
    loaded = result.value.state_dict()  # a no-op damage (reformatted JSON, same value)
    assert loaded.keys() == state.keys() and result.value.config == MODEL.config
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@given(head=st.sampled_from((b"", b"PK\x03\x04", b"\x80\x02", b"\x08\x00\x00\x00\x00\x00\x00\x00{}")),
       body=st.binary(max_size=64), suffix=st.sampled_from((".safetensors", ".pth", ".bin")))  # fmt: skip
def test_garbage_weight_files_are_refused_by_name(head, body, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"labram{suffix}"
        path.write_bytes(head + body)
        for fn in (from_labram, load_model):
            result = outcome(fn, path)
            assert result.kind == "error" and isinstance(result.error, CheckpointError)
            assert str(path) in str(result.error)  # the file given, not its folder
