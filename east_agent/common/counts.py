"""How messages say a count: `1 sentence`, `2 sentences`, `0 chunks`; and what they count."""

from __future__ import annotations


def counted(number: int, thing: str) -> str:
    """`number` and `thing`, plural unless it is one (`thing` takes an `s`)."""
    return f"{number} {thing}" + ("" if number == 1 else "s")


def instance_kind(long_form: bool) -> str:
    """What one SimulEval instance (a source line) is, for messages: a talk in long form
    (`--long-form`), else a sentence."""
    return "talk" if long_form else "sentence"
