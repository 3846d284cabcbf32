"""The shared argument helpers."""

import argparse

import pytest

from east_agent.common.arguments import given_flags, positive_int, positive_seconds


def test_given_flags_reads_either_spelling_and_no_longer_flag():
    argv = ["--source-type", "text", "--output=out", "--source", "a", "--comet-gpus", "1"]
    assert given_flags(argv, ("--source", "--output", "--target")) == ["--output", "--source"]
    assert given_flags(argv, ("--target",), prefix="--comet-") == ["--comet-gpus"]
    assert given_flags(["--output", "a", "--output", "b"], ("--output",)) == ["--output"]


def test_positive_int_refuses_zero_and_words():
    assert positive_int("3") == 3
    for text in ("0", "-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
            positive_int(text)


def test_positive_seconds_refuses_zero_infinity_and_words():
    assert positive_seconds("0.4") == 0.4 and positive_seconds("1e-3") == 0.001
    for text in ("0", "-1", "inf", "nan", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match="seconds above 0"):
            positive_seconds(text)
