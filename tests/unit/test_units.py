from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabstir_sdk import FloatAmountError, InvalidAmountError, format_units, to_base_units


@pytest.mark.parametrize(
    ("amount", "decimals", "expected"),
    [
        ("1.5", 6, 1_500_000),
        ("0.000001", 6, 1),
        (Decimal("0.005"), 18, 5 * 10**15),
        (2, 6, 2_000_000),
        (" 1 ", 6, 1_000_000),
        ("1e-6", 6, 1),
    ],
)
def test_to_base_units_exact(amount, decimals, expected):
    assert to_base_units(amount, decimals) == expected


def test_float_is_refused_as_type_error():
    with pytest.raises(FloatAmountError) as err:
        to_base_units(0.1, 18)
    assert isinstance(err.value, TypeError)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("amount", ["0", "-1", 0, -5, "abc", "", "nan", "inf", True, None, b"1"])
def test_bad_amounts(amount):
    with pytest.raises(InvalidAmountError):
        to_base_units(amount, 6)


def test_too_many_decimals_is_not_rounded():
    with pytest.raises(InvalidAmountError, match="more than 6 decimal places"):
        to_base_units("0.0000001", 6)


@given(st.integers(min_value=1, max_value=10**30), st.integers(min_value=0, max_value=24))
def test_format_then_parse_round_trips(base, decimals):
    assert to_base_units(format_units(base, decimals), decimals) == base


def test_huge_amounts_are_exact_or_refused():
    assert to_base_units("10000000000000000000000000001", 0) == 10**28 + 1
    with pytest.raises(InvalidAmountError, match="too large"):
        to_base_units("1e100000", 18)
    with pytest.raises(InvalidAmountError, match="uint256"):
        to_base_units(str(2**256), 0)


def test_format_units():
    assert format_units(1_500_000, 6) == "1.5"
    assert format_units(270_000, 6) == "0.27"
    assert format_units(10**18, 18) == "1"
    assert format_units(-5, 2) == "-0.05"
