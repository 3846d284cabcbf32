"""Random-weight models of the Llama-3 shapes and the tokenizer they are sized by."""

import shutil

import pytest
import torch
from commands import DEMO_MODEL

from east_agent.bench import models


def test_random_models_are_drawn_from_their_seed(east_tokenizer):
    rng_before = torch.random.get_rng_state()
    first, again, other = (
        models.random_model("llama3-tiny", east_tokenizer, torch.bfloat16, "cpu", seed)
        for seed in (0, 0, 1)
    )
    weights = [model.model.layers[0].mlp.up_proj.weight for model in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's draws untouched


@pytest.mark.parametrize("kind", ["not a tokenizer", "another model's"])
def test_a_random_models_tokenizer_must_be_llama3s(tmp_path, kind, llama3_tokenizer):
    """Before: a JSON file that is no tokenizer was tokenizers' traceback naming neither
    flag nor file; the demo model's 8,002-token tokenizer was taken, and the "llama3-8b"
    model sized by it."""
    path = tmp_path / "tokenizer.json"
    if kind == "not a tokenizer":
        path.write_text('{"testset": "multi30k.de-en"}')
        said = f"--tokenizer {path}: not a tokenizer.json ("
    else:
        shutil.copy(DEMO_MODEL / "tokenizer.json", path)
        said = f"--tokenizer {path}: no Llama-3 tokenizer (8,0"
    with pytest.raises(ValueError) as raised:
        models.llama3_east_tokenizer(path)
    assert str(raised.value).startswith(said)
    assert len(models.llama3_east_tokenizer(llama3_tokenizer)) > 128_000  # Llama-3's is taken
