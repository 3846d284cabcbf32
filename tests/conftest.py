"""Session fixtures: the real Llama-3 tokenizer in EAST form and a tiny trained EAST model."""

from __future__ import annotations

import pytest
from commands import write_toy_test_set

from tiny_east import build_llama3_tokenizer, train_tiny_east_model


@pytest.fixture(scope="session")
def east_tokenizer():
    return build_llama3_tokenizer()


@pytest.fixture(scope="session")
def east_model(east_tokenizer):
    return train_tiny_east_model(east_tokenizer)


@pytest.fixture(scope="session")
def east_checkpoint(east_model, east_tokenizer, tmp_path_factory):
    """The tiny model saved as a normal transformers checkpoint directory."""
    path = tmp_path_factory.mktemp("tiny-east")
    east_model.save_pretrained(path)
    east_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def toy_test_set(tmp_path_factory):
    """Three synthetic sentences as SimulEval files: (folder, their units)."""
    folder = tmp_path_factory.mktemp("toy-test-set")
    return folder, write_toy_test_set(folder, 3, seed=7)
