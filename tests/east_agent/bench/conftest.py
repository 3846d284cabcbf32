"""Fixtures shared by the tests of `east_agent.bench`."""

import pytest

from tiny_east import synthetic_sentence


@pytest.fixture(scope="module")
def sentences():
    import random

    rng = random.Random(5)
    return [synthetic_sentence(rng)[0] for _ in range(3)]
