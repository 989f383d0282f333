r"""Boolean attention masks for the attention branches of Titans (MAC, MAG, MAL).

Convention everywhere: ``mask[i, j] is True`` means query ``i`` **may attend** to key ``j`` (the convention of
``torch.nn.functional.scaled_dot_product_attention`` for boolean masks). Masks are plain ``torch.bool``
tensors of shape ``(L_q, L_k)``; they broadcast over batch and head axes in
:func:`neural_memory.common.attention.masked_attention`.

Which mask goes with which equation (Titans v1):

* Eq. 2 (causal attention): :func:`causal_mask`.
* Eq. 23 (MAC, Fig. 3a, T-U11): full causal attention inside each extended window
  ``[N_p persistent | N_l memory | C segment]`` — :func:`mac_mask` for one window, :func:`block_causal_mask`
  for several windows laid out back to back.
* Eq. 27 (MAG, ``SW-Attn*``): sliding window plus the always-visible persistent prefix —
  :func:`sliding_window_mask` with ``prefix = N_p``.
* Eq. 31 (MAL, ``SW-Attn``): plain sliding window — :func:`sliding_window_mask` with ``prefix = 0``.
* Streaming with a KV cache: :func:`window_mask_from_positions` builds the same sliding-window rows from
  absolute positions.
"""

from __future__ import annotations

import torch

from neural_memory.common.validation import check_int

Device = torch.device | str | None
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def causal_mask(n: int, *, device: Device = None) -> torch.Tensor:
    r"""Causal mask: query ``i`` sees keys ``j <= i`` (Titans Eq. 2's index range ``j = 1..i``).

    Args:
        n: sequence length, ``n >= 1``.
        device: device of the returned mask.

    Returns:
        ``(n, n)`` bool, lower triangular including the diagonal.
    """
    check_int("n", n, 1)
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def sliding_window_mask(n: int, window: int, *, prefix: int = 0, device: Device = None) -> torch.Tensor:
    r"""Sliding-window causal mask with an optional always-visible prefix (Titans Eq. 27 and 31).

    The sequence is ``[prefix positions | n sequence positions]``. Sequence query ``i`` (0-based among
    the ``n`` sequence positions) sees every prefix position and the sequence positions
    ``j ∈ (i − window, i]``, i.e. itself and the ``window − 1`` tokens before it. Prefix positions
    (Titans' persistent memory, Eq. 26) attend causally among themselves and never see the sequence,
    so their outputs do not depend on the input.

    ``prefix = 0`` is MAL's plain ``SW-Attn`` (Eq. 31); ``prefix = N_p`` is MAG's ``SW-Attn*`` (Eq. 27,
    Fig. 3b). The paper gives no window size. ``window >= n`` gives :func:`causal_mask`.

    Args:
        n: number of sequence positions, ``n >= 1``.
        window: how many most recent sequence positions (including itself) a query sees, ``>= 1``.
        prefix: number of always-visible prefix positions at the front, ``>= 0``.
        device: device of the returned mask.

    Returns:
        ``(prefix + n, prefix + n)`` bool.
    """
    check_int("n", n, 1)
    check_int("window", window, 1)
    check_int("prefix", prefix, 0)
    total = prefix + n
    mask = causal_mask(total, device=device)
    # band of the last `window` sequence keys, cut out of the lower triangle
    seq_block = mask[prefix:, prefix:]
    seq_block &= torch.ones(n, n, dtype=torch.bool, device=device).triu(-(window - 1))
    return mask


def window_mask_from_positions(
    query_pos: torch.Tensor, key_pos: torch.Tensor, window: int, *, prefix_keys: int = 0
) -> torch.Tensor:
    r"""Sliding-window mask from absolute positions, for streaming with a KV cache (Titans Eq. 27, 31).

    The key axis is ``[prefix_keys always-visible keys | keys at absolute positions key_pos]``. A query at
    absolute position ``p`` sees every prefix key and the keys whose position lies in ``(p − window, p]``.
    For a whole sequence (``query_pos = key_pos = arange(n)``) this equals the sequence rows of
    :func:`sliding_window_mask` with ``prefix = prefix_keys``; for a cache holding keys ``start..n−1`` it
    equals the matching rows and columns of it.

    Args:
        query_pos: ``(L_q,)`` integer absolute positions of the queries.
        key_pos: ``(L_k,)`` integer absolute positions of the cached keys (after the prefix keys).
        window: ``>= 1``, as in :func:`sliding_window_mask`.
        prefix_keys: number of always-visible keys at the front of the key axis, ``>= 0``.

    Returns:
        ``(L_q, prefix_keys + L_k)`` bool, on ``query_pos``' device.
    """
    for name, pos in (("query_pos", query_pos), ("key_pos", key_pos)):
        if not isinstance(pos, torch.Tensor) or pos.dtype not in _INT_DTYPES:
            raise TypeError(f"{name} must be an integer tensor of absolute positions")
        if pos.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(pos.shape)}")
    check_int("window", window, 1)
    check_int("prefix_keys", prefix_keys, 0)
    lag = query_pos[:, None] - key_pos[None, :]  # how far back each key is from each query
    in_window = (lag >= 0) & (lag < window)
    prefix = torch.ones(len(query_pos), prefix_keys, dtype=torch.bool, device=query_pos.device)
    return torch.cat([prefix, in_window], dim=1)


def block_causal_mask(n: int, block: int, *, device: Device = None) -> torch.Tensor:
    r"""Causal attention inside consecutive blocks of ``block`` positions, nothing across blocks.

    Lays several MAC extended windows (Titans Eq. 23, Fig. 3a) back to back in one attention call:
    position ``i`` sees ``j`` iff ``j <= i`` and ``⌊i / block⌋ = ⌊j / block⌋``. The last block may be
    shorter when ``block`` does not divide ``n``.

    Args:
        n: total length, ``>= 1``.
        block: block length, ``>= 1`` (for MAC, ``N_p + N_l + C``).
        device: device of the returned mask.

    Returns:
        ``(n, n)`` bool.
    """
    check_int("n", n, 1)
    check_int("block", block, 1)
    block_id = torch.arange(n, device=device) // block
    return causal_mask(n, device=device) & (block_id[:, None] == block_id[None, :])


def mac_mask(
    n_persistent: int, n_memory: int, n_segment: int, *, causal_memory: bool = False, device: Device = None
) -> torch.Tensor:
    r"""Mask of one MAC extended window ``[N_p persistent | N_l memory | C segment]`` (Titans Eq. 23).

    ``causal_memory=False`` (default) is Fig. 3a as drawn, "full causal attention in each window": it is
    exactly ``causal_mask(N_p + N_l + C)``. Hence every segment query sees all ``N_p`` persistent and all
    ``N_l`` memory tokens and the segment tokens up to itself; persistent rows see only earlier persistent
    positions; memory row ``j`` sees the persistent tokens and memory tokens ``<= j``.

    Caveat: with Eq. 21 as printed, ``h_t = M*_{t−1}(S^{(t)} W_Q)`` has one memory token per segment token
    (``N_l = C``), and ``h_j`` depends on segment token ``j``. The default mask then lets segment query ``i``
    see ``h_j`` for ``j > i``, a leak of future tokens inside the segment (see docs/errata.md).
    ``causal_memory=True`` treats memory token ``j`` as aligned with segment token ``j`` (needs
    ``N_l = C``): segment query ``i`` then sees the persistent tokens, ``h_{≤i}`` and segment tokens
    ``≤ i``. It is never more permissive than the default.

    Args:
        n_persistent: ``N_p >= 0``.
        n_memory: ``N_l >= 0``.
        n_segment: ``C >= 1``.
        causal_memory: hide memory tokens aligned with future segment tokens (needs ``N_l == C``).
        device: device of the returned mask.

    Returns:
        ``(N_p + N_l + C, N_p + N_l + C)`` bool.
    """
    check_int("n_persistent", n_persistent, 0)
    check_int("n_memory", n_memory, 0)
    check_int("n_segment", n_segment, 1)
    total = n_persistent + n_memory + n_segment
    mask = causal_mask(total, device=device)
    if causal_memory:
        if n_memory != n_segment:
            raise ValueError(
                f"causal_memory=True needs n_memory == n_segment (one memory token per segment token), "
                f"got n_memory={n_memory}, n_segment={n_segment}"
            )
        mem = slice(n_persistent, n_persistent + n_memory)
        mask[n_persistent + n_memory :, mem] = causal_mask(n_segment, device=device)
    return mask
