r"""The language model every architecture plugs into, and streaming generation.

Sequence-mixer protocol
-----------------------
A *mixer* is the only part that differs between architectures (Transformer, Titans MAC/MAG/MAL/LMM, MIRAS,
Nested Learning). It is an :class:`torch.nn.Module` with ::

    forward(x: (batch, seq, dim), state=None) -> (y: (batch, seq, dim), new_state)

* ``state=None`` means "start of the stream"; the mixer builds its own initial state.
* Chunking must not change the result: processing ``[A; B]`` in one call equals processing ``A`` and then
  ``B`` with the state returned after ``A`` (this is what streaming generation relies on; every kind is
  tested for it).
* The state is any object the mixer understands (a dataclass of tensors, typically). Recurrent mixers keep it
  bounded: its size never grows with the stream. Full attention is the exception: its KV cache grows by one
  key and one value per token, which is inherent to attending to everything seen.
* A mixer never mutates the state it is given (the caller may reuse it, e.g. to branch a stream).

A mixer is registered under a *kind* name in :mod:`neural_memory.models.registry`; :func:`build_lm` builds
``depth`` of them (one per block) and wraps them in :class:`LanguageModel`:

.. code-block:: text

    tokens (B, T) -> Embedding -> depth x [x += mixer(RMSNorm(x)); x += GatedMLP(RMSNorm(x))]
                  -> RMSNorm -> head (tied to the embedding by default) -> logits (B, T, vocab)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neural_memory.common.validation import check_int

NORM_EPS = 1e-6
EMBEDDING_STD = 0.02  # GPT-2's init, kept for an untied output head
# Token embeddings start unit-normal, as in Meta's LLaMA reference code (issue 7): at GPT-2's 0.02 the token
# identity is a tiny signal in the residual stream, and every kind sat on the recall task's 0.30 shortcut
# plateau for thousands of steps; at 1.0 the Transformer left it by step 1000 (seeds 0-2). The head is
# untied by default (below) so that the initial logits stay small.
TOKEN_EMBEDDING_STD = 1.0


class GatedMLP(nn.Module):
    r"""SwiGLU feed-forward layer (Shazeer, 2020): :math:`W_d\,(\mathrm{SiLU}(x W_g) \odot x W_u)`.

    One branch decides how much of the other passes, channel by channel. Bias-free.

    Args:
        dim: model width.
        hidden: width of the two inner branches.

    Shapes:
        ``(..., dim) -> (..., dim)``.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: ``x += mixer(RMSNorm(x))``, then ``x += GatedMLP(RMSNorm(x))``."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_mult: int):
        super().__init__()
        self.mixer_norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.mixer = mixer
        self.mlp_norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.mlp = GatedMLP(dim, mlp_mult * dim)

    def forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        out = self.mixer(self.mixer_norm(x), state)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor)):
            raise TypeError(
                f"mixer {type(self.mixer).__name__} must return (y, new_state) with y a tensor "
                "(see the mixer protocol in neural_memory.models.lm)"
            )
        y, new_state = out
        if y.shape != x.shape:
            raise ValueError(
                f"mixer {type(self.mixer).__name__} returned y of shape {tuple(y.shape)}, "
                f"expected {tuple(x.shape)}"
            )
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), new_state


def _detach(obj: Any) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Tensor) or hasattr(obj, "detach"):
        return obj.detach()
    if isinstance(obj, tuple | list):
        return type(obj)(_detach(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class LMState:
    """Streaming state of a :class:`LanguageModel`.

    Attributes:
        layers: one mixer state per block (``None`` = that mixer has not started).
        position: tokens consumed since the start of the stream.
    """

    layers: tuple[Any, ...]
    position: int = 0

    def detach(self) -> LMState:
        """The same state cut from the autograd graph (truncated back-propagation between calls)."""
        return LMState(tuple(_detach(s) for s in self.layers), self.position)


class LanguageModel(nn.Module):
    """Token embedding, ``depth`` pre-norm blocks around the given mixers, final RMSNorm, output head.

    Usually built with :func:`neural_memory.models.build_lm`.

    Args:
        vocab_size: number of token ids, ``>= 1``.
        dim: model width, ``>= 1``.
        mixers: one mixer per block, each following the mixer protocol (module docstring).
        mlp_mult: the SwiGLU hidden width is ``mlp_mult * dim``, ``>= 1``.
        tie_embeddings: the head reuses the embedding matrix (no separate head weights), its input scaled
            by ``dim ** -0.5`` as in T5 (unit-normal embeddings would otherwise give logits of std
            ``sqrt(dim)``). Default ``False`` (issue 7): a tied head reads the current token's unit-normal
            embedding back out of the residual stream and predicts "repeat this byte" at initialisation.
        embedding_std: standard deviation of the embedding's normal initialisation, ``> 0`` (default
            ``TOKEN_EMBEDDING_STD`` = 1.0; an untied head keeps GPT-2's ``EMBEDDING_STD`` = 0.02). Issue 7:
            GPT-2's 0.02 with a tied head kept every kind on the recall task's shortcut plateau.

    Shapes:
        ``forward(tokens (B, T) long, state) -> (logits (B, T, vocab_size), LMState)``.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int,
        mixers: Sequence[nn.Module],
        mlp_mult: int = 4,
        tie_embeddings: bool = False,
        embedding_std: float = TOKEN_EMBEDDING_STD,
    ):
        super().__init__()
        check_int("vocab_size", vocab_size)
        check_int("dim", dim)
        check_int("mlp_mult", mlp_mult)
        if not isinstance(tie_embeddings, bool):
            raise TypeError(f"tie_embeddings must be a bool, got {type(tie_embeddings).__name__}")
        if (
            isinstance(embedding_std, bool)
            or not isinstance(embedding_std, (int, float))
            or not 0 < embedding_std < math.inf
        ):
            raise ValueError(f"embedding_std must be a finite number > 0, got {embedding_std!r}")
        if len(mixers) < 1 or not all(isinstance(m, nn.Module) for m in mixers):
            raise ValueError("mixers must be a non-empty sequence of nn.Module (one per block)")
        self.vocab_size, self.dim, self.depth = vocab_size, dim, len(mixers)
        self.embedding = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embedding.weight, std=float(embedding_std))
        self.blocks = nn.ModuleList(Block(dim, mixer, mlp_mult) for mixer in mixers)
        self.norm = nn.RMSNorm(dim, eps=NORM_EPS)
        self.head = None if tie_embeddings else nn.Linear(dim, vocab_size, bias=False)
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=EMBEDDING_STD)

    def check_tokens(self, tokens: object, name: str = "tokens") -> Tensor:
        """``tokens`` as a ``(batch, seq)`` long tensor of ids in ``[0, vocab_size)``; ``ValueError`` else."""
        if not isinstance(tokens, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (batch, seq), got {type(tokens).__name__}"
            )
        if tokens.dtype != torch.long:
            raise ValueError(f"{name} must have dtype torch.long (int64), got {tokens.dtype}")
        if tokens.dim() != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
            raise ValueError(f"{name} must have shape (batch >= 1, seq >= 1), got {tuple(tokens.shape)}")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(
                f"{name} must lie in [0, vocab_size={self.vocab_size}), "
                f"got values in [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens

    def _layer_states(self, state: LMState | None) -> tuple[tuple[Any, ...], int]:
        if state is None:
            return (None,) * self.depth, 0
        if not isinstance(state, LMState):
            raise TypeError(f"state must be an LMState or None, got {type(state).__name__}")
        if len(state.layers) != self.depth:
            raise ValueError(f"state has {len(state.layers)} layer states, the model has depth {self.depth}")
        return state.layers, state.position

    def forward(self, tokens: Tensor, state: LMState | None = None) -> tuple[Tensor, LMState]:
        self.check_tokens(tokens)
        layer_states, position = self._layer_states(state)
        x = self.embedding(tokens)  # (B, T, dim)
        new_states = []
        for block, layer_state in zip(self.blocks, layer_states, strict=True):
            x, layer_state = block(x, layer_state)
            new_states.append(layer_state)
        h = self.norm(x)
        if self.head is None:
            # tied head, T5's rescaling: unit-normal embeddings would give logits of std sqrt(dim) at init
            logits = F.linear(h * self.dim**-0.5, self.embedding.weight)
        else:
            logits = self.head(h)
        return logits, LMState(tuple(new_states), position + tokens.shape[1])

    def loss(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Next-token cross-entropy of ``tokens (B, T+1)``: predict ``tokens[:, 1:]`` from ``tokens[:, :-1]``.

        ``mask`` (``(B, T)`` bool, optional) restricts the mean to the marked target positions.
        """
        self.check_tokens(tokens)
        if tokens.shape[1] < 2:
            raise ValueError(
                f"tokens must hold at least 2 positions for a next-token loss, got {tokens.shape}"
            )
        logits, _ = self(tokens[:, :-1])
        return lm_loss(logits, tokens[:, 1:], mask)


def lm_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of ``logits (B, T, V)`` against ``targets (B, T)`` (nats per predicted token).

    ``mask`` (``(B, T)`` bool) keeps only the marked positions (e.g. the answers of associative recall);
    it must mark at least one position.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            "logits must be (B, T, V) and targets (B, T), "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    if mask is None:
        return losses.mean()
    if mask.shape != targets.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(targets.shape)}, got {mask.dtype} {mask.shape}"
        )
    if not mask.any():
        raise ValueError("mask marks no position; the loss would be 0/0")
    return losses[mask.flatten()].mean()


def _numel(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def count_parameters(model: LanguageModel) -> dict[str, Any]:
    """Parameter counts of a :class:`LanguageModel`, in total and per component.

    Returns:
        ``{"total", "embedding", "head", "final_norm", "mixer", "mlp", "norms", "blocks"}``: ``head`` is 0
        when tied to the embedding; ``mixer``/``mlp``/``norms`` are summed over blocks and ``blocks`` lists
        ``{"mixer", "mlp", "norms", "total"}`` per block. ``total`` counts every distinct parameter once.
    """
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model must be a LanguageModel, got {type(model).__name__}")
    blocks = []
    for block in model.blocks:
        counts = {
            "mixer": _numel(block.mixer),
            "mlp": _numel(block.mlp),
            "norms": _numel(block.mixer_norm) + _numel(block.mlp_norm),
        }
        blocks.append({**counts, "total": sum(counts.values())})
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "embedding": _numel(model.embedding),
        "head": _numel(model.head),
        "final_norm": _numel(model.norm),
        **{part: sum(b[part] for b in blocks) for part in ("mixer", "mlp", "norms")},
        "blocks": blocks,
    }


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row from ``logits (B, V)``: ``(B, 1)`` long.

    ``temperature == 0`` is greedy (argmax); otherwise sample ``softmax(logits / temperature)`` restricted to
    the ``top_k`` most likely tokens when given (``top_k >= vocab`` means no restriction).
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    scaled = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _check_sampling(max_new_tokens: object, temperature: object, top_k: object) -> None:
    check_int("max_new_tokens", max_new_tokens, 0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if temperature == float("inf"):
        raise ValueError("temperature must be finite")
    if top_k is not None:
        check_int("top_k", top_k)


@torch.no_grad()
def generate(
    model: LanguageModel,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    state: LMState | None = None,
) -> tuple[Tensor, LMState]:
    """Sample a continuation of ``prompt``, streaming: the prompt is run once, then one token per call.

    The prefix is never re-run; every step feeds only the last sampled token with the carried state, so the
    cost per new token is that of one token (plus, for full attention, reading its KV cache).

    Args:
        model: the language model.
        prompt: ``(B, t)`` long, ``t >= 1``; continues the stream of ``state`` if given.
        max_new_tokens: number of tokens to sample, ``>= 0``.
        temperature: ``>= 0``; 0 is greedy decoding.
        top_k: sample among the ``k`` most likely tokens only (``None`` = all).
        generator: random source for sampling (seeded for reproducible output).
        state: stream state to continue (``None`` = a new stream).

    Returns:
        ``(new_tokens (B, max_new_tokens) long, state)``; the state has consumed the prompt and every new
        token, so passing it back continues the stream right after ``new_tokens``.
    """
    _check_sampling(max_new_tokens, temperature, top_k)
    model.check_tokens(prompt, "prompt")
    logits, state = model(prompt, state)
    new_tokens = []
    for _ in range(max_new_tokens):
        token = sample_next(logits[:, -1], temperature=temperature, top_k=top_k, generator=generator)
        new_tokens.append(token)
        logits, state = model(token, state)
    if not new_tokens:
        return prompt.new_empty(prompt.shape[0], 0), state
    return torch.cat(new_tokens, dim=1), state


__all__ = [
    "Block",
    "GatedMLP",
    "LMState",
    "LanguageModel",
    "count_parameters",
    "generate",
    "lm_loss",
    "sample_next",
]
