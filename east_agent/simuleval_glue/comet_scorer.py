"""COMET as a SimulEval quality metric: `--quality-metrics BLEU COMET --comet-checkpoint CKPT`.

COMET weights are never downloaded here: point `--comet-checkpoint` at a local checkpoint
(for instance `wmt22-comet-da/checkpoints/model.ckpt`); `unbabel-comet` comes with the
`comet` extra (`pip install "east-simul[comet]"`). Both are checked when the scorer is
built, before any sentence is decoded.
"""

from __future__ import annotations

from pathlib import Path

from simuleval.evaluator.scorers.quality_scorer import QualityScorer, register_quality_scorer


@register_quality_scorer("COMET")
class CometScorer(QualityScorer):
    def __init__(self, checkpoint: str | None, batch_size: int = 16, gpus: int = 0) -> None:
        super().__init__()
        if not checkpoint:
            raise ValueError(
                "--quality-metrics COMET needs --comet-checkpoint: the path of a local "
                "COMET checkpoint (model.ckpt); nothing is downloaded"
            )
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"COMET checkpoint {checkpoint} does not exist")
        try:
            from comet import load_from_checkpoint
        except ImportError:
            raise ImportError(
                'COMET scoring needs unbabel-comet: pip install "east-simul[comet]"'
            ) from None
        self.load = load_from_checkpoint
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.gpus = gpus

    def __call__(self, instances: dict) -> float:
        model = self.load(self.checkpoint)
        data = [
            {"src": ins.source, "mt": ins.prediction, "ref": ins.reference}
            for ins in instances.values()
        ]
        output = model.predict(data, batch_size=self.batch_size, gpus=self.gpus, progress_bar=False)
        for ins, score in zip(instances.values(), output.scores):
            ins.metrics["COMET"] = 100 * score
        return 100 * output.system_score

    @staticmethod
    def add_args(parser):
        parser.add_argument("--comet-checkpoint", default=None, help="local COMET model.ckpt")
        parser.add_argument("--comet-batch-size", type=int, default=16)
        parser.add_argument("--comet-gpus", type=int, default=0)

    @classmethod
    def from_args(cls, args):
        return cls(args.comet_checkpoint, args.comet_batch_size, args.comet_gpus)
