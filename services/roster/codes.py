"""Dial-in meeting IDs: random digits from the OS's CSPRNG (`secrets`), so one meeting's
code says nothing about another's, plus a Luhn check digit so that a mistyped code on a
phone keypad is caught as a typo instead of reaching another meeting."""

from __future__ import annotations

import secrets


def luhn_digit(digits: str) -> str:
    """The check digit that makes `digits + check` pass the Luhn test."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def new_code(random_digits: int) -> str:
    body = "".join(str(secrets.randbelow(10)) for _ in range(random_digits))
    return body + luhn_digit(body)


def well_formed(code: str) -> bool:
    return len(code) >= 2 and code.isascii() and code.isdigit() and luhn_digit(code[:-1]) == code[-1]
