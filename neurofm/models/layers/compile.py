"""``torch.compile`` with an eager fallback that triggers on compilation failures only.

A compiled callable is built lazily: dynamo traces and inductor (or another backend)
generates kernels at the first call. Failures of that machinery (no C++ compiler, an
unsupported backend, a kernel Triton cannot build) are :class:`TorchDynamoException`s
(``BackendCompilerFailed``, ``InductorError``, ``Unsupported`` ...): those switch to eager
for good, logged once. Anything else, an out-of-memory error first of all (also when a
backend failure wraps one) or an ordinary runtime error of the traced code
(``TorchRuntimeError``), is the caller's problem and is raised unchanged, with the
compiled callable kept.
"""

from __future__ import annotations

import torch

from ...errors import logger


def is_compile_error(err: BaseException) -> bool:
    """True for a failure of the compiler itself, not of the code or the device memory."""
    from torch._dynamo.exc import TorchDynamoException, TorchRuntimeError

    if not isinstance(err, TorchDynamoException) or isinstance(err, TorchRuntimeError):
        return False
    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:  # OOM while autotuning, say
        if isinstance(cause, torch.OutOfMemoryError | MemoryError):
            return False
        seen.add(id(cause))
        cause = getattr(cause, "inner_exception", None) or cause.__cause__ or cause.__context__
    return True


def describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


class CompiledOrEager:
    """``torch.compile(fn, **kwargs)`` that reverts to ``fn`` when compilation fails."""

    def __init__(self, fn, **kwargs):
        self.eager, self.compiled = fn, None
        try:
            self.compiled = torch.compile(fn, **kwargs)
        except Exception as err:  # e.g. an unknown backend; nothing has run yet
            logger.warning("torch.compile unavailable (%s); running eagerly", describe(err))

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # the first call is where the backend builds kernels
                if not is_compile_error(err):
                    raise
                logger.warning("torch.compile failed (%s); running eagerly", describe(err))
                self.compiled = None
        return self.eager(*args, **kwargs)
