"""How messages say a count: `1 sentence`, `2 sentences`, `0 chunks`."""

from __future__ import annotations


def counted(number: int, thing: str) -> str:
    """`number` and `thing`, plural unless it is one (`thing` takes an `s`)."""
    return f"{number} {thing}" + ("" if number == 1 else "s")
