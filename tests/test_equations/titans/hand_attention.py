"""A hand-written softmax attention, head by head, shared by the MAC, MAG and MAL tests (not a test file)."""

import math

import torch


def hand_attention(proj, queries, keys, visible):
    """Softmax attention written out head by head for one sequence.

    ``queries (Lq, dim)``, ``keys (Lk, dim)`` (keys and values come from the same rows), ``visible (Lq, Lk)``
    bool from a hand rule. nn.Linear computes ``x W^T``; head ``h`` owns output rows ``h*d .. (h+1)*d``.
    """
    d = proj.head_dim
    heads = []
    for h in range(proj.heads):
        rows = slice(h * d, (h + 1) * d)
        q = queries @ proj.to_q.weight[rows].T
        k = keys @ proj.to_k.weight[rows].T
        v = keys @ proj.to_v.weight[rows].T
        scores = (q @ k.T / math.sqrt(d)).masked_fill(~visible, -math.inf)
        heads.append(torch.softmax(scores, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ proj.to_out.weight.T
