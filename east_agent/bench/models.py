"""Random-weight models of the Llama-3 shapes (`--random-model`) and the Llama-3 tokenizer
in EAST-8B form they are sized by."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch

from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
)

if TYPE_CHECKING:
    from transformers import (
        LlamaForCausalLM,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )


# a Llama-3 tokenizer's ids (every Llama 3.x one): the random models' vocabulary
LLAMA3_VOCABULARY = 128_256


def llama3_east_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A Llama-3 tokenizer (its `tokenizer.json`, or a folder holding one) in EAST-8B form:
    the Llama-3 chat template and the two EAST tokens."""
    from transformers import PreTrainedTokenizerFast

    from east_agent.decoding.prompt import (
        BEGIN_OF_TEXT,
        END_OF_TURN,
        LLAMA3_CHAT_TEMPLATE,
        LLAMA3_SPECIAL_TOKENS,
    )

    path = Path(path)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"--tokenizer {path}: no tokenizer.json there")
    try:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(path), bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TURN
        )
    except Exception as error:  # tokenizers raises its parse errors as a bare Exception
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--tokenizer {path}: not a tokenizer.json ({first})") from None
    vocabulary = tokenizer.get_vocab()
    lacking = [token for token in LLAMA3_SPECIAL_TOKENS if token not in vocabulary]
    if lacking or len(vocabulary) < LLAMA3_VOCABULARY:  # before: taken, the model sized by it
        without = f", without {', '.join(lacking)}" if lacking else ""
        raise ValueError(
            f"--tokenizer {path}: no Llama-3 tokenizer ({len(vocabulary):,} tokens{without}; "
            f"Llama-3's has {LLAMA3_VOCABULARY:,}): the random models are Llama-3's shape, "
            "vocabulary included"
        )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_READ, END_OF_WRITE]})
    return tokenizer


class LlamaShape(TypedDict):
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rope_theta: float
    max_position_embeddings: int


RANDOM_MODELS: dict[str, LlamaShape] = {
    "llama3-8b": {
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
    },
    "llama3-tiny": {
        "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 500000.0,
        "max_position_embeddings": 2048,
    },
}  # fmt: skip


def random_model(
    name: str, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype, device: str, seed: int = 0
) -> LlamaForCausalLM:
    """The `RANDOM_MODELS[name]` shape with weights drawn from `seed` (the same weights,
    and so the same translations, in every run on one machine); the caller's CPU and
    CUDA generators are left as they were."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **RANDOM_MODELS[name],  # type: ignore[misc]  # rope_theta: taken by its **kwargs, unhinted
    )
    cuda_devices = list(range(torch.cuda.device_count()))  # manual_seed seeds them all
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        with torch.device(device):
            model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval()
