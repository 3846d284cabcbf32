"""Does BLEU really rise from one setting to the next? Paired bootstrap resampling.

A quality–latency curve is read setting by setting: does `medium-high` translate better
than `medium`, does wait-5 beat wait-3? On a 1,000-sentence test set two BLEU scores a few
tenths apart are often the same system quality. For each system of a grid with two or more
settings, this compares every setting with the one before it (in the config's order) by
sacrebleu's paired bootstrap resampling (the Moses test; 1,000 resamples, sacrebleu's fixed
seed) on the runs' own `instances.log` predictions, and gives each run's 95% confidence
interval. `east-eval` writes the rows as `<output>/significance.{csv,md}`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from east_agent.common.text_lines import iter_lines
from east_agent.evaluation.omnisteval_scoring import RESEGMENTED_FILE
from east_agent.simuleval_glue.instance_log import log_record

SIGNIFICANCE_COLUMNS = (
    "system", "from", "to", "BLEU_from", "BLEU_to", "delta", "CI95_to", "p_value", "verdict",
)  # fmt: skip
SAMPLES = 1000
LEVEL = 0.05
# under the Markdown table (before: a CI95_to of 17.7 beside a BLEU of 33.3 read as a bound)
SIGNIFICANCE_NOTE = (
    "CI95_to: half-width of the 95% bootstrap interval of BLEU_to, centred on the "
    "resamples' mean BLEU (sacrebleu's), not on BLEU_to itself; "
    f"p_value: paired bootstrap, {SAMPLES:,} resamples; tie: p ≥ {LEVEL:g}, or a delta of 0"
)


def fewest_sentences(samples: int) -> int:
    """The fewest sentences with at least `samples` distinct resamples (multisets of n of n:
    C(2n-1, n)). Below it the bootstrap repeats a handful of resamples, and sacrebleu's p
    comes out at its floor 1/(samples+1) as readily as not: one sentence is always
    itself, and two gave "higher, p 0.0010" from 3 resamples, one of them reversing the
    difference (before: tested from 2 sentences on)."""
    sentences = 1
    while math.comb(2 * sentences - 1, sentences) < samples:
        sentences += 1
    return sentences


MIN_SENTENCES = fewest_sentences(SAMPLES)  # 7: 1,716 distinct resamples (6 have 462)


@dataclass
class Comparison:
    system: str
    from_setting: str
    to_setting: str
    bleu_from: float
    bleu_to: float
    ci95_to: float | None  # half-width of the 95% bootstrap interval of `to`'s BLEU
    p_value: float | None  # None: not tested (fewer than MIN_SENTENCES sentences)

    @property
    def verdict(self) -> str:
        if self.p_value is None:
            return f"untested (under {MIN_SENTENCES} sentences)"
        if self.p_value >= LEVEL or round(self.bleu_to - self.bleu_from, 3) == 0:
            return "tie"
        return "higher" if self.bleu_to > self.bleu_from else "lower"

    def row(self) -> dict[str, object]:
        """The comparison as a table row: scores with 3 decimals, p with 4."""
        return {
            "system": self.system,
            "from": self.from_setting,
            "to": self.to_setting,
            "BLEU_from": f"{self.bleu_from:.3f}",
            "BLEU_to": f"{self.bleu_to:.3f}",
            # the shown scores' difference (before: the unrounded one's, 0.001 off); + 0.0:
            # no "-0.000"
            "delta": f"{round(round(self.bleu_to, 3) - round(self.bleu_from, 3), 3) + 0.0:.3f}",
            "CI95_to": "" if self.ci95_to is None else f"{self.ci95_to:.3f}",
            "p_value": "" if self.p_value is None else f"{self.p_value:.4f}",
            "verdict": self.verdict,
        }


def read_predictions(run_dir: Path) -> dict[int, str]:
    """The run's translations by sentence index, from SimulEval's `instances.log`."""
    log = Path(run_dir) / "instances.log"
    predictions = {}
    for number, line in enumerate(iter_lines(log), 1):
        record = log_record(log, number, line)
        try:
            predictions[int(record["index"])] = str(record["prediction"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{log}, line {number}: not a SimulEval instance ({error})") from None
    return predictions


def compare_runs(
    system: str,
    runs: list[tuple[str, Path]],
    references: list[str],
    tokenize: str = "13a",
    samples: int = SAMPLES,
) -> list[Comparison]:
    """Compare the (setting, run folder) pairs of one system, each with the one before it.

    Only the sentences every run translated count (all of them, unless `--limit`)."""
    predictions = {setting: read_predictions(folder) for setting, folder in runs}
    shared = sorted(set.intersection(*(set(found) for found in predictions.values())))
    if not shared:
        return []
    return compare(
        system,
        [(setting, [found[index] for index in shared]) for setting, found in predictions.items()],
        [references[index] for index in shared],
        tokenize,
        samples,
    )


def compare_resegmented(
    system: str, runs: list[tuple[str, Path]], tokenize: str = "13a", samples: int = SAMPLES
) -> list[Comparison]:
    """Compare long-form runs on their re-segmented sentences (OmniSTEval's
    `omnisteval.resegmented.jsonl`, `east_agent.evaluation.run_scores`); runs scored on
    other talks than the first (a partial run) are left out."""
    settings: list[tuple[str, list[str]]] = []
    references: list[str] | None = None
    for setting, folder in runs:
        records = [json.loads(line) for line in iter_lines(folder / RESEGMENTED_FILE)]
        found = [str(record["reference"]) for record in records]
        if references is None:
            references = found
        if found == references:
            settings.append((setting, [str(record["prediction"]) for record in records]))
    if len(settings) < 2:
        return []
    assert references is not None  # the first run's, which settings holds
    return compare(system, settings, references, tokenize, samples)


def compare(
    system: str,
    settings: list[tuple[str, list[str]]],
    references: list[str],
    tokenize: str = "13a",
    samples: int = SAMPLES,
) -> list[Comparison]:
    """Compare each (setting, predictions) with the one before it; under MIN_SENTENCES
    sentences (set by the grid's SAMPLES draws, whatever `samples` a test asks) untested."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest, Result

    for setting, predictions in settings:
        if len(predictions) != len(references):
            raise ValueError(
                f"{system}-{setting}: {len(predictions)} translations for "
                f"{len(references)} references (an unfinished run?)"
            )
    bleu = BLEU(tokenize=tokenize, references=[references])  # tokenized once, for every pair
    comparisons = []
    for (before, baseline), (after, candidate) in zip(settings, settings[1:]):
        if len(references) < MIN_SENTENCES:
            bleu_from = bleu.corpus_score(baseline, None).score
            bleu_to = bleu.corpus_score(candidate, None).score
            comparisons.append(Comparison(system, before, after, bleu_from, bleu_to, None, None))
            continue
        test = PairedTest(
            [(before, baseline), (after, candidate)],
            {"BLEU": bleu},
            references=None,  # the metric's own cache
            test_type="bs",
            n_samples=samples,
        )
        _, results = test()
        # a metric's column holds Results (only the "System" column holds names)
        baseline_result, candidate_result = cast("list[Result]", results["BLEU"])
        # the bootstrap gives every system after the baseline both
        assert candidate_result.ci is not None and candidate_result.p_value is not None
        comparisons.append(
            Comparison(
                system,
                before,
                after,
                float(baseline_result.score),
                float(candidate_result.score),
                float(candidate_result.ci),
                # no difference (the same translations, or another with the same BLEU):
                # sacrebleu's p is 1/(samples+1) where no resample differs (multeval's rule)
                1.0
                if baseline == candidate or baseline_result.score == candidate_result.score
                else float(candidate_result.p_value),
            )
        )
    return comparisons
