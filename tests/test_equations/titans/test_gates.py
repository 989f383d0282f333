"""The gates of the memory (``titans/gates.py``): their initial values, ranges, checks and device.

The formulas (sigmoids of a linear map, per head, the ablation flags) are checked by hand in
``test_memory.py``; here the defaults a user gets without choosing anything.
"""

import math

import pytest
import torch

from neural_memory.titans.gates import FixedGates, MemoryGates


def test_default_gates_at_zero_input_are_the_documented_initial_values():
    # alpha = 0.0025 (slow forgetting), eta = 0.88 (long momentum), theta = 0.12 theta_max, theta_max = 0.02;
    # the biases are float32 logits, hence the 1e-6 tolerance
    gates = MemoryGates(6, 3).double()
    alpha, eta, theta = gates(torch.zeros(2, 4, 6, dtype=torch.float64))
    for got, want in ((alpha, 0.0025), (eta, 0.88), (theta, 0.12 * 0.02)):
        torch.testing.assert_close(got, torch.full((6, 4), want, dtype=torch.float64), rtol=1e-6, atol=0)


def test_chosen_initial_values_are_reached_exactly_at_zero_input():
    gates = MemoryGates(4, 2, theta_max=0.5, init=(0.3, 0.6, 0.9)).double()
    alpha, eta, theta = gates(torch.zeros(1, 3, 4, dtype=torch.float64))
    for got, want in ((alpha, 0.3), (eta, 0.6), (theta, 0.45)):
        torch.testing.assert_close(got, torch.full((2, 3), want, dtype=torch.float64), rtol=1e-6, atol=0)


def test_the_linear_map_starts_small_so_every_token_starts_near_the_initial_gates():
    torch.manual_seed(0)
    weight = MemoryGates(512, 4).proj.weight  # 12 x 512 draws
    assert 0.018 < weight.std().item() < 0.022
    assert abs(weight.mean().item()) < 0.002


@pytest.mark.parametrize("theta_max", [0.0, -0.1])
def test_theta_max_must_be_positive(theta_max):
    with pytest.raises(ValueError, match=f"theta_max must be > 0, got {theta_max}"):
        MemoryGates(4, 1, theta_max=theta_max)


@pytest.mark.parametrize("init", [(0.0, 0.5, 0.5), (0.5, 1.0, 0.5), (0.5, 0.5, 1.5), (-0.1, 0.5, 0.5)])
def test_initial_gates_must_be_strictly_inside_zero_one(init):
    # 0 and 1 are the logits' infinities: no finite bias reaches them
    with pytest.raises(ValueError, match=r"init gates must be in \(0, 1\), got " + re_tuple(init)):
        MemoryGates(4, 1, init=init)


def re_tuple(values):
    return r"\(" + ", ".join(str(v) for v in values) + r"\)"


@pytest.mark.parametrize("module", ["learned", "fixed"])
def test_gates_are_made_on_the_input_device_and_dtype(module):
    # the meta device stands for any device other than the default one (CUDA is never required)
    gates = MemoryGates(4, 2) if module == "learned" else FixedGates(2, 0.1, 0.5, 0.01)
    gates = gates.to(device="meta", dtype=torch.float64)
    for g in gates(torch.empty(3, 5, 4, device="meta", dtype=torch.float64)):
        assert g.device.type == "meta" and g.dtype == torch.float64 and g.shape == (6, 5)


def test_fixed_gates_are_the_given_constants_and_are_checked():
    alpha, eta, theta = FixedGates(2, 0.1, 0.5, 0.01)(torch.zeros(3, 5, 4))
    assert (alpha == 0.1).all() and (eta == 0.5).all() and (theta == 0.01).all()
    with pytest.raises(ValueError, match="alpha"):
        FixedGates(1, 1.5, 0.5, 0.01)
    assert math.isclose(FixedGates(1, 0.0, 1.0, 0.0).values[1], 1.0)
