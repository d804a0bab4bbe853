"""E-mail addresses of offices: what a valid one is, and reading what a clerk typed."""

from __future__ import annotations

import re

from dispatch.text import clean_line

# At most this many copies (cc) per office.
MAX_CC = 10

# A deliberately plain address check: ASCII local part and a dotted domain with a letter TLD.
# Anything stricter rejects real government addresses; anything looser lets typos through.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def is_valid_email(value: str) -> bool:
    """True for one plain address (local@domain.tld) of at most 254 characters."""
    return len(value) <= 254 and _EMAIL.fullmatch(value) is not None


def parse_addresses(email: str, cc: str) -> tuple[str, list[str], dict[str, str]]:
    """(e-mail, cc list, errors) from what a clerk typed; cc separated by ";", "," or lines."""
    errors: dict[str, str] = {}
    address = clean_line(email).lower()
    if not address:
        errors["email"] = "Vui lòng nhập địa chỉ thư điện tử."
    elif not is_valid_email(address):
        errors["email"] = f"Địa chỉ thư điện tử “{address}” không hợp lệ."
    copies: list[str] = []
    for part in cc.replace(",", ";").replace("\n", ";").split(";"):
        item = clean_line(part).lower()
        if not item:
            continue
        if not is_valid_email(item):
            errors["cc"] = f"Địa chỉ đồng gửi “{item}” không hợp lệ."
        elif item != address and item not in copies:
            copies.append(item)
    if len(copies) > MAX_CC:
        errors["cc"] = f"Tối đa {MAX_CC} địa chỉ đồng gửi."
    return address, copies, errors
