"""The shared argument checks: a parameter outside its interval or shape is refused by name."""

import math

import pytest
import torch

from neural_memory.common.validation import check_range

LIKE = torch.zeros(3, 4, dtype=torch.float64)


def test_check_range_returns_a_tensor_in_the_dtype_of_like():
    t = check_range("eta", 0.5, LIKE)
    assert t.dtype == torch.float64 and t.item() == 0.5
    assert check_range("alpha", torch.full((3, 1), 1.0), LIKE, high=1.0).shape == (3, 1)


@pytest.mark.parametrize(
    ("value", "interval", "message"),
    [
        (-0.1, {}, r"eta must be in \[0, inf\)"),
        (math.nan, {}, r"eta must be in \[0, inf\)"),
        (math.inf, {}, r"eta must be in \[0, inf\)"),
        (1.5, {"high": 1.0}, r"eta must be in \[0, 1\]"),
        (0.0, {"low_open": True, "allow_inf": True}, r"eta must be in \(0, inf\]"),
    ],
)
def test_check_range_refuses_values_outside_the_interval(value, interval, message):
    with pytest.raises(ValueError, match=message):
        check_range("eta", value, LIKE, **interval)


def test_check_range_accepts_inf_only_when_allowed_and_checks_the_shape_and_type():
    assert math.isinf(check_range("alpha", math.inf, LIKE, low_open=True, allow_inf=True).item())
    with pytest.raises(ValueError, match=r"eta of shape \(5,\) does not broadcast to \(3,\)"):
        check_range("eta", torch.ones(5), LIKE, shape=LIKE.shape[:1])
    with pytest.raises(TypeError, match="eta must be a float or a tensor"):
        check_range("eta", "0.5", LIKE)
    with pytest.raises(TypeError, match="eta must be a float or a tensor"):
        check_range("eta", True, LIKE)


def test_the_bounds_themselves_are_inside_a_closed_interval():
    assert check_range("eta", 0.0, LIKE).item() == 0.0
    assert check_range("alpha", 1.0, LIKE, high=1.0).item() == 1.0
    assert check_range("theta", -2.0, LIKE, low=-2.0).item() == -2.0


def test_the_error_shows_a_scalar_but_not_a_whole_tensor():
    with pytest.raises(ValueError, match=r"^eta must be in \[0, inf\), got -0\.5$"):
        check_range("eta", -0.5, LIKE)
    with pytest.raises(ValueError, match=r"^eta must be in \[0, inf\), got -0\.5$"):
        check_range("eta", torch.tensor(-0.5), LIKE)  # a one-entry tensor shows its value...
    with pytest.raises(ValueError, match=r"^eta must be in \[0, inf\), got a tensor with entries$"):
        check_range("eta", torch.tensor([0.5, -0.5]), LIKE, shape=(2,))  # ...a longer one does not


def test_the_type_error_names_the_type_it_got():
    with pytest.raises(TypeError, match=r"^eta must be a float or a tensor, got str$"):
        check_range("eta", "0.5", LIKE)
    with pytest.raises(TypeError, match=r"^eta must be a float or a tensor, got bool$"):
        check_range("eta", True, LIKE)


def test_check_range_checks_the_value_where_it_is_and_returns_it_on_the_device_of_like():
    """A float (or a CPU tensor) is checked on the CPU and moved to ``like``'s device (``meta`` standing
    in for CUDA here; a value check on a ``meta`` tensor could not read anything)."""
    like = torch.zeros(2, 3, device="meta")
    for value in (0.5, torch.full((3,), 0.25)):
        t = check_range("gate", value, like, high=1.0)
        assert t.device.type == "meta" and t.dtype == like.dtype
    with pytest.raises(ValueError, match=r"^gate must be in \[0, 1\], got 2.0$"):
        check_range("gate", 2.0, like, high=1.0)
