"""The kind registry: every sequence mixer the language model can be built with, by name.

A *kind* is a name (``"transformer"``, ``"titans-mac"``, ...) and a builder
``builder(*, dim, layer_index, **config) -> mixer`` (the mixer protocol is described in
:mod:`neural_memory.models.lm`). A module that provides kinds calls :func:`register_kind` at import time;
:func:`available_kinds` and :func:`build_lm` first import every module of :data:`PROVIDER_MODULES`, so
users never import providers by hand. To add a family of kinds (MIRAS, Nested Learning), write a module that
registers them and append its name to :data:`PROVIDER_MODULES`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

MixerBuilder = Callable[..., nn.Module]

# Modules that register kinds when imported. A provider that does not exist yet is skipped; any other
# import error inside an existing provider is raised (a broken provider must not silently vanish).
PROVIDER_MODULES: list[str] = [
    "neural_memory.models.transformer",
    "neural_memory.titans.models",
    "neural_memory.miras.models",
    "neural_memory.miras.baseline_models",
    "neural_memory.nl.models",
]

# Keys build_lm consumes itself; everything else in ``config`` goes to the mixer builder.
LM_KEYS = ("mlp_mult", "tie_embeddings", "embedding_std")


@dataclass(frozen=True)
class KindSpec:
    """A registered kind: its builder, the config it gets unless overridden, and one line about it."""

    name: str
    builder: MixerBuilder
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    min_depth: int = 1  # fewest blocks that make the kind what its name says (2 for alternating hybrids)

    def config_keys(self) -> list[str] | None:
        """Keyword arguments the builder accepts besides ``dim`` and ``layer_index`` (None = any)."""
        params = inspect.signature(self.builder).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return sorted(p.name for p in params if p.kind in keyword and p.name not in ("dim", "layer_index"))


_KINDS: dict[str, KindSpec] = {}


def register_kind(
    name: str,
    builder: MixerBuilder,
    *,
    defaults: Mapping[str, Any] | None = None,
    description: str = "",
    min_depth: int = 1,
) -> None:
    """Make ``name`` buildable by :func:`build_lm`.

    Args:
        name: the kind's name, a non-empty string (lower case with dashes by convention).
        builder: ``builder(*, dim, layer_index, **config) -> nn.Module`` following the mixer protocol.
        defaults: config used when the caller does not set a key (e.g. ``{"heads": 4}``).
        description: one line for listings.
        min_depth: the fewest blocks the kind can be built with (a hybrid that alternates two layer types
            needs 2: with one block it would be its first layer type under the hybrid's name).

    Registering the same name again with a builder of the same qualified name replaces the entry (a
    re-imported provider); a different builder under a taken name raises ``ValueError``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {type(builder).__name__}")
    old = _KINDS.get(name)
    if old is not None and _qualname(old.builder) != _qualname(builder):
        raise ValueError(f"kind {name!r} is already registered by {_qualname(old.builder)}")
    from neural_memory.common.validation import check_int

    check_int("min_depth", min_depth)
    spec = KindSpec(name, builder, MappingProxyType(dict(defaults or {})), description, min_depth)
    _check_config_keys(spec, spec.defaults)
    _KINDS[name] = spec


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def load_providers() -> None:
    """Import every module of :data:`PROVIDER_MODULES`, skipping only those that do not exist."""
    for module in PROVIDER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if not (module == missing or module.startswith(missing + ".")):
                raise  # the provider exists but one of *its* imports is missing


def available_kinds() -> list[str]:
    """Names of all registered kinds, sorted."""
    load_providers()
    return sorted(_KINDS)


def get_kind(kind: str) -> KindSpec:
    """The registered :class:`KindSpec` of ``kind``; ``ValueError`` listing the valid kinds otherwise."""
    kinds = available_kinds()
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; available kinds: {', '.join(kinds)}")
    return _KINDS[kind]


def _check_config_keys(spec: KindSpec, config: Mapping[str, Any]) -> None:
    accepted = spec.config_keys()
    if accepted is None:
        return
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise TypeError(
            f"unknown config keys for kind {spec.name!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join([*accepted, *LM_KEYS]) or '(none)'}"
        )


def mixer_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The full builder config of ``kind``: its defaults overridden by ``config`` (keys checked)."""
    spec = get_kind(kind)
    _check_config_keys(spec, config)
    return {**spec.defaults, **config}


def build_mixer(kind: str, *, dim: int, layer_index: int, **config: Any) -> nn.Module:
    """One mixer of ``kind`` for layer ``layer_index`` (defaults filled in, unknown keys rejected)."""
    spec = get_kind(kind)
    mixer = spec.builder(dim=dim, layer_index=layer_index, **mixer_config(kind, config))
    if not isinstance(mixer, nn.Module):
        raise TypeError(f"builder of kind {kind!r} returned {type(mixer).__name__}, not an nn.Module")
    return mixer


def check_depth(kind: str, depth: int) -> None:
    """``ValueError`` when ``kind`` cannot be built with ``depth`` blocks (its :attr:`KindSpec.min_depth`)."""
    needed = get_kind(kind).min_depth
    if depth < needed:
        raise ValueError(f"kind {kind!r} needs depth >= {needed}, got depth={depth}")


def build_lm(kind: str, *, vocab_size: int, dim: int, depth: int, **config: Any):
    """A :class:`~neural_memory.models.lm.LanguageModel` whose ``depth`` blocks all mix with ``kind``.

    Args:
        kind: a name from :func:`available_kinds`.
        vocab_size: number of token ids, ``>= 1``.
        dim: model width, ``>= 1``.
        depth: number of blocks, ``>= 1``.
        config: ``mlp_mult`` and ``tie_embeddings`` go to the language model; every other key goes to the
            kind's builder (unknown keys raise ``TypeError`` naming them).

    Returns:
        the model, with its mixers built for layers ``0 .. depth - 1``.
    """
    from neural_memory.common.validation import check_int
    from neural_memory.models.lm import LanguageModel

    lm_config = {key: config.pop(key) for key in LM_KEYS if key in config}
    check_int("depth", depth)
    check_int("dim", dim)
    mixer_config(kind, config)  # fail on a bad kind or bad keys before building anything
    check_depth(kind, depth)
    mixers = [build_mixer(kind, dim=dim, layer_index=i, **config) for i in range(depth)]
    return LanguageModel(vocab_size=vocab_size, dim=dim, mixers=mixers, **lm_config)


__all__ = [
    "PROVIDER_MODULES",
    "KindSpec",
    "available_kinds",
    "build_lm",
    "build_mixer",
    "check_depth",
    "get_kind",
    "load_providers",
    "mixer_config",
    "register_kind",
]
