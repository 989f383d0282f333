"""Cross-paper identity: self-modifying Titans with self-modification off and GD instead of DGD *is* the
Titans memory.

Switch off everything NL §8.1 adds — static projections k, v, q (Eq. 76), no self-generated values (the main
memory regresses v_t, Eq. 81), no ``kk^T`` term (GD with weight decay, not DGD) — and Eq. 88 with a matrix
memory becomes Titans Eq. 13–14 without momentum: :math:`\\mathcal M_t = \\alpha_t\\mathcal M_{t-1} -
\\eta_t\\nabla\\tfrac12\\|\\mathcal M k_t - v_t\\|^2`, i.e. Titans' forget gate :math:`1 - \\alpha_t` and step
:math:`\\theta_t = \\eta_t / 2` (Titans' loss has no ½), momentum decay 0. Both read the memory at the start
of the token's chunk (Titans' ``read="chunk"``; with chunk size 1, read before write as Eq. 83), and both take
every gradient of a chunk at the chunk's start (Titans Eq. 16 / NL Eq. 90). Compared with the Titans
token-by-token reference, float64, to 1e-12 (the gates pass through ``1 - (1 - α)``, which is not bit-exact).
"""

import pytest
import torch

from neural_memory.nl.self_modifying import SelfModifyingTitans
from neural_memory.titans.memory_model import MemoryMLP
from neural_memory.titans.reference import reference_memory
from neural_memory.titans.state import MemoryState

F64 = torch.float64
DIM = 5


@pytest.mark.equation("nl", 76)
@pytest.mark.equation("nl", 90)
@pytest.mark.parametrize("chunk", [1, 3])
def test_self_modification_off_with_gd_is_the_titans_memory(chunk):
    torch.manual_seed(0)
    nl = SelfModifyingTitans(DIM, memory="linear", chunk_size=chunk, self_modifying=False, values="shared",
                             rule="gd").double()  # fmt: skip
    titans = MemoryMLP(DIM, depth=1, residual_norm=False).double()
    with torch.no_grad():
        titans.initial_weights[0].copy_(nl.initial["memory_0"][None])
    x = torch.randn(2, 10, DIM, dtype=F64, requires_grad=True)

    y_nl, s_nl = nl(x)
    proj = nl.static_projections(x)
    w0 = titans.expand(2)
    start = MemoryState(weights=w0, momentum=(torch.zeros_like(w0[0]),), chunk_weights=w0)
    y_t, s_t = reference_memory(titans, start, proj["k"], proj["v"], proj["q"], 1 - proj["alpha"],
                                torch.zeros_like(proj["eta"]), proj["eta"] / 2, chunk_size=chunk,
                                read="chunk")  # fmt: skip
    torch.testing.assert_close(y_nl, y_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_nl.current["memory"][0], s_t.weights[0], rtol=1e-12, atol=1e-12)

    g_nl = torch.autograd.grad(
        (y_nl**2).sum() + (s_nl.current["memory"][0] ** 2).sum(), [x, nl.initial["memory_0"]]
    )
    g_t = torch.autograd.grad((y_t**2).sum() + (s_t.weights[0] ** 2).sum(), [x, titans.initial_weights[0]])
    torch.testing.assert_close(g_nl[0], g_t[0], rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(g_nl[1], g_t[1][0], rtol=1e-11, atol=1e-12)
