"""COMET as a SimulEval quality metric: `--quality-metrics BLEU COMET --comet-checkpoint CKPT
--comet-python COMET_ENV/bin/python`.

COMET weights are never downloaded here: `--comet-checkpoint` is a local checkpoint (for
instance `wmt22-comet-da/checkpoints/model.ckpt`). COMET runs in an environment of its own
(`east_agent.common.comet_process`: unbabel-comet requires transformers < 5); both are
checked when the scorer is built, before any sentence is decoded. Scores are COMET's
times 100, each sentence's in its `metric` field of the scored instances.
"""

from __future__ import annotations

from simuleval.evaluator.scorers.quality_scorer import QualityScorer, register_quality_scorer

from east_agent.common.comet_process import (
    CometSettings,
    add_comet_flags,
    check_comet,
    comet_scores,
    comet_settings,
)


@register_quality_scorer("COMET")
class CometScorer(QualityScorer):
    def __init__(self, settings: CometSettings) -> None:
        super().__init__()
        check_comet(settings)
        self.settings = settings

    def __call__(self, instances: dict) -> float:
        scored = list(instances.values())
        scores = comet_scores(
            self.settings,
            [source_text(ins) for ins in scored],
            [ins.prediction for ins in scored],
            [ins.reference for ins in scored],
        )
        for ins, score in zip(scored, scores.sentences):
            ins.metrics["COMET"] = 100 * score
        return 100 * scores.system

    @staticmethod
    def add_args(parser):
        add_comet_flags(parser)

    @classmethod
    def from_args(cls, args):
        settings = comet_settings(args)
        if settings is None:
            raise ValueError(
                "--quality-metrics COMET needs --comet-checkpoint: the path of a local "
                "COMET checkpoint (model.ckpt); nothing is downloaded"
            )
        return cls(settings)


def check_comet_flags(args) -> None:
    """With COMET among `args.quality_metrics`: its checkpoint and interpreter checked, for
    the runs that build their scorers after decoding (or after loading the model)."""
    if "COMET" in (getattr(args, "quality_metrics", None) or ()):
        CometScorer.from_args(args)


def source_text(instance) -> str:
    """The source as `instances.log` holds it: a live instance keeps its words in a list
    (SimulEval's `source_info` joins them), one read back from a log the line."""
    source = instance.source
    return source if isinstance(source, str) else " ".join(source)
