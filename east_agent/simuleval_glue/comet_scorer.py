"""COMET as a SimulEval quality metric: `--quality-metrics BLEU COMET --comet-checkpoint CKPT
--comet-python COMET_ENV/bin/python`.

COMET weights are never downloaded here: `--comet-checkpoint` is a local checkpoint (for
instance `wmt22-comet-da/checkpoints/model.ckpt`). COMET runs in an environment of its own
(`east_agent.common.comet_process`: unbabel-comet requires transformers < 5); both are
checked when the scorer is built, before any sentence is decoded. Scores are COMET's
times 100, each sentence's in its `metric` field of the scored instances. COMET reads each
text stripped, as `comet-score` reads the lines of its files (SimulEval's references keep
their line end).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from simuleval.evaluator.scorers.quality_scorer import QualityScorer, register_quality_scorer

from east_agent.common.comet_process import (
    CometSettings,
    add_comet_flags,
    check_named_by_flag,
    comet_scores,
    comet_settings,
)
from east_agent.decoding.prompt import is_unspaced
from east_agent.decoding.units import join_source_units

if TYPE_CHECKING:
    from simuleval.evaluator.instance import Instance, LogInstance


@register_quality_scorer("COMET")
class CometScorer(QualityScorer):
    def __init__(self, settings: CometSettings | None, source_lang: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.source_lang = source_lang

    def __call__(self, instances: dict) -> float:
        if self.settings is None:
            raise ValueError("COMET was built for a run without scoring (--no-scoring)")
        scored = list(instances.values())
        scores = comet_scores(
            self.settings,
            [source_text(ins, self.source_lang) for ins in scored],
            [ins.prediction for ins in scored],
            [ins.reference for ins in scored],
        )
        for ins, score in zip(scored, scores.sentences):
            ins.metrics["COMET"] = 100 * score
        return 100 * scores.system

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        add_comet_flags(parser)
        parser.add_argument(
            "--comet-source-lang",
            default=None,
            help="the source language, for the text COMET reads: Chinese and Japanese units "
            "are joined without spaces (default: the run's --src-lang, or the one its "
            "output folder recorded)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CometScorer:
        """The scorer of the flags, checked (SimulEval builds every scorer asked for, even
        with --no-scoring: then nothing is checked)."""
        settings = comet_settings(args)
        language = args.comet_source_lang or getattr(args, "src_lang", None)
        if getattr(args, "no_scoring", False):
            return cls(settings, language)
        if settings is None:
            raise ValueError(
                "--quality-metrics COMET needs --comet-checkpoint: the path of a local "
                "COMET checkpoint (model.ckpt); nothing is downloaded"
            )
        if language is not None:
            try:
                is_unspaced(language)
            except ValueError as error:
                raise ValueError(f"--comet-source-lang: {error}") from None
        check_named_by_flag(settings)
        return cls(settings, language)


def refuse_comet_flags_without_comet(argv: list[str]) -> None:
    """COMET's flags are the COMET scorer's (SimulEval adds them with it): without COMET
    among `--quality-metrics`, they are refused saying so (before: argparse's usage and
    "unrecognized arguments", of a flag the help lists)."""
    from east_agent.common.arguments import given_flags

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--quality-metrics", nargs="+", default=["BLEU"])
    known, _ = parser.parse_known_args(argv)
    comet = argparse.ArgumentParser(add_help=False)
    CometScorer.add_args(comet)  # its flags, as SimulEval adds them
    given = given_flags(argv, tuple(comet._option_string_actions))
    if given and "COMET" not in known.quality_metrics:
        flags, them = ("a flag", "it") if len(given) == 1 else ("flags", "them")
        raise ValueError(
            f"{', '.join(given)}: {flags} of the COMET scorer, and --quality-metrics asks for "
            f"no COMET: add COMET to it, or leave {them} out"
        )


def check_comet_flags(args: argparse.Namespace) -> None:
    """With COMET among `args.quality_metrics` (and scoring not turned off): its checkpoint
    and interpreter checked, for the runs that build their scorers after decoding (or
    after loading the model)."""
    if "COMET" in (getattr(args, "quality_metrics", None) or ()):
        CometScorer.from_args(args)


def source_text(instance: Instance | LogInstance, language: str | None) -> str:
    """The source sentence: a live instance keeps its units in a list, one read back from a
    log the line of units that SimulEval split; Chinese and Japanese units are joined
    without spaces, as the decoder read them (`join_source_units`)."""
    source = instance.source
    units = source.split() if isinstance(source, str) else list(source)
    return join_source_units(units, language) if language else " ".join(units)
