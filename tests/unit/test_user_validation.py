"""Username, password-strength and phone rules (pure functions)."""

from __future__ import annotations

import pytest

from defguard.core.users.validation import (
    FieldError,
    check_password_strength,
    check_phone,
    check_username,
    is_valid_username,
    normalize_phone,
)


@pytest.mark.parametrize("name", ["a", "jdoe", "John.Doe", "j-doe_2", "0day", "x" * 63])
def test_valid_usernames(name):
    check_username(name)
    assert is_valid_username(name)


@pytest.mark.parametrize(
    "name",
    ["", "x" * 64, "-jdoe", ".jdoe", "_jdoe", "j doe", "jdoe!", "jdoé", "jdoe\n", "ｊdoe"],
)
def test_invalid_usernames(name):
    assert not is_valid_username(name)
    with pytest.raises(FieldError) as exc:
        check_username(name)
    assert str(exc.value).startswith("username: ")


def test_username_error_names_the_length_rule():
    with pytest.raises(FieldError, match="1-63 characters"):
        check_username("x" * 64)


@pytest.mark.parametrize(
    "password", ["Tr0ub4dor&3x", "Aa1!aaaa", "Adm1n!Passw0rd", "A1!" + "a" * 125]
)
def test_strong_passwords(password):
    check_password_strength(password)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Aa1!aaa", "8-128 characters"),
        ("A1!" + "a" * 126, "8-128 characters"),
        ("Aa1aaaaa", "a special character"),
        ("Aa!aaaaa", "a digit"),
        ("AA1!AAAA", "a lowercase letter"),
        ("aa1!aaaa", "an uppercase letter"),
        ("ÄÖ1!äöaa", "an uppercase letter"),
        ("password", "a special character, a digit, an uppercase letter"),
    ],
)
def test_weak_passwords(password, problem):
    with pytest.raises(FieldError) as exc:
        check_password_strength(password, "new_password")
    assert str(exc.value).startswith("new_password: ")
    assert problem in str(exc.value)


@pytest.mark.parametrize(
    "phone", ["+1 (202) 555-0173", "91-1234-5678", "+48 600 100 200", "600100200", "(12)3456"]
)
def test_valid_phones(phone):
    check_phone(phone)


@pytest.mark.parametrize(
    "phone", ["202.555.0173", "123-456-789-0000", "abc", "", "+1 (202) 555-0173\n", "１２３"]
)
def test_invalid_phones(phone):
    with pytest.raises(FieldError) as exc:
        check_phone(phone)
    assert str(exc.value).startswith("phone: ")


def test_blank_phone_means_none():
    assert normalize_phone(None) is None
    assert normalize_phone("") is None
    assert normalize_phone("   ") is None
    assert normalize_phone("91-1234-5678") == "91-1234-5678"
