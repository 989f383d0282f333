"""The long-term memory by hand for one sequence, shared by the memory and MAC tests (not a test file).

Plain torch ops on a :class:`NeuralMemory`'s own weight tensors; nothing here calls the module's methods.
Rows are tokens (``z = x W``); ``nn.Linear`` computes ``x W^T + b``; head ``h`` owns features
``h*d .. (h+1)*d``; SiLU is ``z * sigmoid(z)``.
"""

import torch


def silu(z):
    return z * torch.sigmoid(z)


def causal_conv(conv, x):
    """``x (T, C)`` through a causal depthwise-separable convolution starting from zeros (an empty cache).

    Tap ``j`` of the depthwise kernel multiplies the input ``K - 1 - j`` steps back (tap ``K - 1`` = now).
    """
    k = conv.kernel_size
    weight, bias = conv.depthwise.weight[:, 0, :], conv.depthwise.bias
    rows = []
    for t in range(x.shape[0]):
        acc = bias
        for j in range(k):
            if t - (k - 1 - j) >= 0:
                acc = acc + weight[:, j] * x[t - (k - 1 - j)]
        rows.append(acc)
    return torch.stack(rows) @ conv.pointwise.weight.T + conv.pointwise.bias


def project(module, name, x):
    """Keys, values or queries of ``x (T, dim)``, one ``(T, d)`` tensor per head (Eq. 11 and §4.4).

    projection -> causal depthwise-separable convolution -> SiLU -> split heads -> l2 norm (keys, queries).
    """
    z = x @ getattr(module, f"to_{name}").weight.T
    if name in module.convs:
        z = causal_conv(module.convs[name], z)
    z = silu(z)
    d = module.head_dim
    heads = [z[:, h * d : (h + 1) * d] for h in range(module.heads)]
    if module.qk_norm and name in ("q", "k"):
        heads = [r / torch.sqrt((r * r).sum(-1, keepdim=True)) for r in heads]
    return heads


def initial_weights(module):
    """:math:`\\mathcal{M}_0` per head: ``[[W_1, ..., W_L] for every head]``, each ``(d_in, d_out)``."""
    return [[w[h] for w in module.memory.initial_weights] for h in range(module.heads)]


def mlp_read(weights, q, norm=None):
    """:math:`\\mathcal{M}(q)` for one head: layers ``q W_1``, SiLU, ``W_2``, ... (no SiLU after the last).

    With ``norm = (gain, bias)`` (the residual read-out of a deep memory) the result is
    ``q + gain * (z - mean z) / sqrt(var z + 1e-5) + bias``, mean and biased variance over the channels.
    """
    z = q
    for layer, w in enumerate(weights):
        z = z @ w
        if layer < len(weights) - 1:
            z = silu(z)
    if norm is None:
        return z
    gain, bias = norm
    centred = z - z.mean(-1, keepdim=True)
    return q + gain * centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + 1e-5) + bias


def head_norm(module, h):
    """The residual read-out's ``(gain, bias)`` of head ``h``, or None for a memory without one."""
    memory = module.memory
    return (memory.norm_weight[h], memory.norm_bias[h]) if memory.residual_norm else None


def output(module, reads, x):
    """The §4.4 output path: heads side by side, RMSNorm, times ``SiLU(x W_g + b)``, then ``W_o``."""
    y = torch.cat(reads, dim=-1)
    if isinstance(module.out_norm, torch.nn.RMSNorm):
        eps = (
            module.out_norm.eps if module.out_norm.eps is not None else torch.finfo(y.dtype).eps
        )  # torch doc
        y = y / torch.sqrt((y * y).mean(-1, keepdim=True) + eps) * module.out_norm.weight
    if module.to_gate is not None:
        y = y * silu(x @ module.to_gate.weight.T + module.to_gate.bias)
    return y @ module.to_out.weight.T


def retrieve(module, weights, x):
    """Eq. 15 without writing: every query of ``x (T, dim)`` read with the fixed per-head ``weights``."""
    queries = project(module, "q", x)
    reads = [mlp_read(weights[h], queries[h], head_norm(module, h)) for h in range(module.heads)]
    return output(module, reads, x)


def linear_memory_loop(w0, s0, keys, values, alpha, eta, theta, chunk_size):
    """Eq. 13-14 for a linear memory ``z = k W``, one token at a time, gradients at the chunk start (Eq. 16).

    ``grad = 2 k^T (k W_{t'} - v)`` (Eq. 12 differentiated by hand), ``S_t = eta_t S_{t-1} - theta_t grad``,
    ``M_t = (1 - alpha_t) M_{t-1} + S_t``; ``t'`` is the start of the chunk of ``t`` (chunks of
    ``chunk_size`` tokens from the first token). ``keys, values (T, d)``; gates are sequences of floats or
    0-d tensors.

    Returns:
        ``(weights, chunk_start, momentum)``: ``weights[t]`` is M after token ``t``, ``chunk_start[t]`` the
        weights token ``t``'s gradient is taken at, ``momentum`` the final S.
    """
    w, s, start = w0, s0, w0
    weights, chunk_start = [], []
    for t in range(keys.shape[0]):
        if t % chunk_size == 0:
            start = w
        k, v = keys[t : t + 1], values[t : t + 1]
        grad = 2 * k.T @ (k @ start - v)
        s = eta[t] * s - theta[t] * grad
        w = (1 - alpha[t]) * w + s
        weights.append(w)
        chunk_start.append(start)
    return weights, chunk_start, s
