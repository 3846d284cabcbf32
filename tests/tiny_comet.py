"""A tiny real COMET checkpoint, built from configs in COMET's own environment.

unbabel-comet needs transformers < 5, so it lives in an environment of its own (`.ci/run`
makes one; elsewhere set EAST_COMET_PYTHON to its interpreter). `build_tiny_comet` runs
this file there: a 2-layer XLM-R encoder with a Unigram vocabulary trained on a few
Multi30k lines, under COMET's regression head, random weights from a fixed seed, saved
as COMET saves its checkpoints (`checkpoints/model.ckpt` beside `hparams.yaml`). The
scores mean nothing; every line of COMET that loads and runs a checkpoint is the real one.
`fake_comet_python` stands in for an environment whose COMET fails in a given way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

COMET_PYTHON = "EAST_COMET_PYTHON"


def comet_python() -> str | None:
    """The interpreter of a COMET environment, if this machine has one."""
    return os.environ.get(COMET_PYTHON) or None


def build_tiny_comet(python: str, folder: Path, texts: list[str]) -> Path:
    """Build the checkpoint in `folder` with COMET's interpreter; its `model.ckpt`."""
    (folder / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    subprocess.run([python, __file__, str(folder)], check=True)
    return folder / "checkpoints" / "model.ckpt"


def fake_checkpoint(folder: Path, content: bytes = b"weights") -> Path:
    """A file laid out as a COMET checkpoint (`checkpoints/model.ckpt` below `hparams.yaml`)
    that is none, for COMET's failures."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hparams.yaml").write_text("pretrained_model: nowhere\n")
    checkpoint = folder / "checkpoints" / "model.ckpt"
    checkpoint.write_bytes(content)
    return checkpoint


def fake_comet_python(folder: Path, body: str) -> str:
    """An interpreter whose `comet` is `body` (COMET's failures, without COMET)."""
    package = folder / "site" / "comet"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(body))
    python = folder / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={folder / "site"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return str(python)


def _build(folder: Path) -> None:
    import pytorch_lightning
    import torch
    import yaml
    from comet.models import RegressionMetric
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=specials, unk_token="<unk>")
    texts = (folder / "texts.txt").read_text(encoding="utf-8").splitlines()
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer = _in_a_fixed_order(tokenizer, len(specials))
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    encoder = folder / "encoder"
    fast = XLMRobertaTokenizerFast(tokenizer_object=tokenizer, model_max_length=512)
    fast.save_pretrained(encoder)
    XLMRobertaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ).save_pretrained(encoder)
    torch.manual_seed(0)
    hparams = {
        "pretrained_model": str(encoder),
        "encoder_model": "XLM-RoBERTa",
        "load_pretrained_weights": False,
        "hidden_sizes": [16],
        "layer": "mix",
        "pool": "avg",
    }
    model = RegressionMetric(**hparams)
    (folder / "checkpoints").mkdir(exist_ok=True)
    hyper_parameters = dict(model.hparams)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": hyper_parameters,
        "pytorch-lightning_version": pytorch_lightning.__version__,
    }
    torch.save(checkpoint, folder / "checkpoints" / "model.ckpt")
    saved = {**hyper_parameters, "class_identifier": "regression_metric"}
    (folder / "hparams.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")


def _in_a_fixed_order(tokenizer, specials: int):
    """The trained Unigram vocabulary in a fixed order, with fixed scores. The trainer sums
    in the order of its hash maps, seeded anew in each process: scores differ in their
    last digits, pieces of one score swap places, and the characters it appends below
    every piece it learned get their scores in that order, so a rare word (the units of a
    Chinese source joined) was cut into other pieces from one build to the next, its
    COMET score moving by up to 1e-3."""
    import json

    from tokenizers import Tokenizer

    saved = json.loads(tokenizer.to_str())
    vocab = saved["model"]["vocab"]
    pieces = [(piece, round(score, 9)) for piece, score in vocab[specials:]]
    lowest = min(score for piece, score in pieces if len(piece) > 1)
    learned = [(piece, score) for piece, score in pieces if len(piece) > 1 or score >= lowest]
    appended = [entry for entry in pieces if entry not in learned]
    scores = sorted((score for _, score in appended), reverse=True)
    appended = list(zip(sorted(piece for piece, _ in appended), scores))
    ordered = sorted(learned, key=lambda entry: (-entry[1], entry[0])) + appended
    saved["model"]["vocab"] = vocab[:specials] + [list(entry) for entry in ordered]
    return Tokenizer.from_str(json.dumps(saved))


if __name__ == "__main__":
    _build(Path(sys.argv[1]))
