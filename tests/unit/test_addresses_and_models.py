import pytest
from eth_utils.crypto import keccak

from fabstir_sdk import InvalidAddressError, ValidationError
from fabstir_sdk.chain.addresses import checksum_address, eip55
from fabstir_sdk.chain.model_id import model_id, split_model

GOOD = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55 test vector


def test_checksum_accepts_lower_upper_and_correct_mixed_case():
    assert checksum_address(GOOD.lower()) == GOOD
    assert checksum_address("0x" + GOOD[2:].upper()) == GOOD
    assert checksum_address(GOOD) == GOOD


def test_a_remembered_checksum_still_refuses_a_bad_one():
    """The EIP-55 form is computed once per spelling (``eip55``); a mistyped case of an
    address whose good form is remembered is still refused."""
    eip55.cache_clear()
    assert checksum_address(GOOD.lower()) == GOOD
    assert checksum_address(GOOD.lower()) == GOOD
    assert eip55.cache_info().hits == 1
    with pytest.raises(InvalidAddressError, match="checksum"):
        checksum_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")
    assert checksum_address(GOOD) == GOOD


@pytest.mark.parametrize(
    "bad",
    [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",  # one letter's case flipped
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",  # 39 digits
        "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",  # no 0x
        "0xZZaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        None,
        12,
    ],
)
def test_checksum_rejects(bad):
    with pytest.raises(InvalidAddressError):
        checksum_address(bad)


@pytest.mark.parametrize("key", ["0x" + "ab" * 32, "ab" * 32, " 0x" + "AB" * 32 + "\n"])
def test_a_key_given_for_an_address_is_not_echoed(key):
    with pytest.raises(InvalidAddressError) as caught:
        checksum_address(key, what="--signer-address")
    assert str(caught.value) == (
        "--signer-address must be 0x followed by 40 hex digits, got a private key? (not shown)"
    )
    with pytest.raises(InvalidAddressError, match=r"got '0x1234'$"):  # anything else is shown
        checksum_address("0x1234")


def test_model_id_forms_agree():
    expected = "0x" + keccak(b"org/repo/model.gguf").hex()
    assert model_id("org/repo:model.gguf") == expected
    assert model_id("org/repo/model.gguf") == expected
    assert model_id(expected.upper().replace("0X", "0x")) == expected
    assert split_model("org/repo/model.gguf") == ("org/repo", "model.gguf")


@pytest.mark.parametrize("bad", ["", "nofile", ":file", "repo:", "0x1234", 5])
def test_model_id_rejects(bad):
    with pytest.raises(ValidationError):
        model_id(bad)
