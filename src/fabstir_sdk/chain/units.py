"""Exact money: human amounts to base units and back, never through ``float``."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ..errors import FloatAmountError, InvalidAmountError

__all__ = [
    "ETH_DECIMALS",
    "PRICE_PRECISION",
    "USDC_DECIMALS",
    "Amount",
    "format_amount",
    "format_units",
    "to_base_units",
]

ETH_DECIMALS = 18
USDC_DECIMALS = 6
#: ``price_per_token`` is base units per 1000 tokens: cost = tokens * price // PRICE_PRECISION.
PRICE_PRECISION = 1000

Amount = str | Decimal | int
_MAX_DIGITS = 78  # 2**256 has 78 decimal digits


def to_base_units(amount: Amount, decimals: int, *, what: str = "amount") -> int:
    """Convert a human amount (``"1.5"`` USDC) to base units (``1500000``).

    ``int`` means whole tokens. Refuses floats, bools, non-finite or negative numbers, zero,
    and digits finer than the token's ``decimals`` (no silent rounding of money).
    """
    if isinstance(amount, float):
        raise FloatAmountError(f"{what} must be str, Decimal or int, not float ({amount!r})")
    if isinstance(amount, bool) or not isinstance(amount, str | Decimal | int):
        raise InvalidAmountError(f"{what} must be str, Decimal or int, got {type(amount).__name__}")
    try:
        value = Decimal(amount.strip() if isinstance(amount, str) else amount)
    except InvalidOperation:
        raise InvalidAmountError(f"{what} {amount!r} is not a number") from None
    if not value.is_finite():
        raise InvalidAmountError(f"{what} {amount!r} is not a finite number")
    if value <= 0:
        raise InvalidAmountError(f"{what} must be positive, got {amount!r}")
    # Exact integer arithmetic on the digits: Decimal's context would round past 28 digits.
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    shift = exponent + decimals
    if shift > _MAX_DIGITS:
        raise InvalidAmountError(f"{what} {amount!r} is too large")
    mantissa = int("".join(map(str, digits)))
    if shift >= 0:
        base_units = mantissa * int(10**shift)
    else:
        base_units, rest = divmod(mantissa, int(10**-shift))
        if rest:
            raise InvalidAmountError(f"{what} {amount!r} has more than {decimals} decimal places")
    if base_units >= 2**256:
        raise InvalidAmountError(f"{what} {amount!r} does not fit in uint256")
    return base_units


def format_units(base_units: int, decimals: int) -> str:
    """Render base units as an exact decimal string (``1500000, 6 -> "1.5"``)."""
    sign = "-" if base_units < 0 else ""
    whole, frac = divmod(abs(base_units), 10**decimals)
    frac_text = f"{frac:0{decimals}d}".rstrip("0") if decimals else ""
    return f"{sign}{whole}.{frac_text}" if frac_text else f"{sign}{whole}"


def format_amount(base_units: int, decimals: int, symbol: str) -> str:
    """An amount as a person reads it, with its token: ``5000000, 6, "USDC" -> "5 USDC"``."""
    return f"{format_units(base_units, decimals)} {symbol}"
