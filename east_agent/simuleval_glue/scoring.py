"""SimulEval's scoring flags, and the record of the settings a folder's scores were made
with.

A folder's `scores.tsv` depends on its log and on the scorers' settings: the metrics, the
latency unit, BLEU's tokenizer, the computation-aware clock (`--ca-unit-seconds`), and
whatever else the chosen scorers take. Every writer of `scores.tsv` (SimulEval's loop, a
batched run, `--score-only`, `east-remote-eval`; through `simuleval_fixes`' dumps) removes
the old `scoring.json` first and writes the new one after the scores and metrics, so a
folder whose record is missing or differs from what is asked now holds scores made some
other way: `east-eval` scores such a log again instead of tabling them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from east_agent.common.atomic import remove, write_atomically
from east_agent.common.comet_process import COMET_INPUTS, checkpoint_identity
from east_agent.common.fingerprint import content_of, shown_setting
from east_agent.common.records import read_json_object
from east_agent.decoding.prompt import (
    LANGUAGE_NAMES,
    is_unspaced,
    known_language_name,
    language_name,
)

SCORING_RECORD = "scoring.json"
UNSPACED_UNITS = "joined without spaces"  # COMET's source: Chinese or Japanese units
# SimulEval's evaluator flags that change scores; the chosen scorers' own flags are added
EVALUATOR_SETTINGS = (
    "quality_metrics", "latency_metrics", "computation_aware", "no_use_ref_len",
    "eval_latency_unit", "eval_latency_spm_model",
)  # fmt: skip
# how COMET runs, not what it says
NOT_SCORE_SETTINGS = {"comet_batch_size", "comet_gpus", "comet_python"}


# SimulEval adds a scorer's flags only when the scorer is asked for: named in every help
SCORER_FLAGS = (
    "With --quality-metrics COMET: --comet-checkpoint (a local COMET model.ckpt), "
    "--comet-python, --comet-batch-size, --comet-gpus, --comet-source-lang "
    "(`--quality-metrics COMET --help` "
    "shows them). With an *_CA latency metric: --ca-unit-seconds S, the seconds one "
    "source unit takes to arrive."
)


def scoring_parser(argv: list[str]) -> argparse.ArgumentParser:
    """SimulEval's flags for scoring a log (the chosen scorers' flags included)."""
    from simuleval import options

    import east_agent.simuleval_plugin  # noqa: F401  (the *_CA metrics and COMET)

    parser = options.general_parser()
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser, argv)
    options.add_dataloader_args(parser, argv)
    return parser


def scoring_args(argv: list[str], strict: bool = True) -> argparse.Namespace:
    """The scoring flags of `argv` (with `strict`, any other flag is an error)."""
    parser = scoring_parser(argv)
    return parser.parse_args(argv) if strict else parser.parse_known_args(argv)[0]


def check_scoring_flags(args: argparse.Namespace, tgt_lang: str | None = None) -> None:
    """The scoring flags SimulEval would fail on after the decoding (or score wrongly),
    refused before: `--eval-latency-unit spm` without a sentencepiece model that loads,
    `char` for a target that writes words (`tgt_lang`, where known), a BLEU tokenizer
    that does not load, COMET's settings."""
    from east_agent.simuleval_glue.comet_scorer import check_comet_flags

    check_latency_unit(args, tgt_lang)
    check_bleu_tokenizer(args)
    check_comet_flags(args)


def check_bleu_tokenizer(args: argparse.Namespace) -> None:
    """BLEU's `--sacrebleu-tokenizer` built once before anything runs: `ja-mecab` without
    its packages (or `flores200` offline) fails in the scorer, which SimulEval turns into a
    BLEU of 0 (now a failure, `simuleval_fixes`)."""
    name = getattr(args, "sacrebleu_tokenizer", None)
    scored = not getattr(args, "no_scoring", False)
    if name is None or not scored or "BLEU" not in (getattr(args, "quality_metrics", None) or ()):
        return
    from sacrebleu.metrics import BLEU

    try:
        BLEU(tokenize=name)
    except (RuntimeError, OSError, ImportError) as error:
        said = " ".join(str(error).split())  # sacrebleu's advice spans lines
        raise ValueError(f"--sacrebleu-tokenizer {name}: cannot score with it ({said})") from None


# BLEU's tokenizers that split a text without spaces nowhere: one Chinese or Japanese
# sentence, one token
SPACE_TOKENIZERS = ("13a", "intl", "none")


def check_latency_unit(args: argparse.Namespace, tgt_lang: str | None = None) -> None:
    """The latency unit against the target language (where known), and for a Chinese or
    Japanese target BLEU's tokenizer: before, a `zh` target scored by SimulEval's defaults
    (`word`, `13a`) gave AL -34.5 and a BLEU of 0 for a perfect translation, exit 0."""
    unit = getattr(args, "eval_latency_unit", "word")
    if unit == "spm":
        check_spm_model(getattr(args, "eval_latency_spm_model", None))
    if tgt_lang is None or known_language_name(tgt_lang) not in LANGUAGE_NAMES:
        return
    if is_unspaced(tgt_lang):
        _check_unspaced_target(args, unit, tgt_lang)
    elif unit == "char":
        raise ValueError(
            f"--eval-latency-unit char: for a Chinese or Japanese target, whose characters "
            f"are its units; a target in {language_name(tgt_lang)} writes words (SimulEval "
            "would take the spaces out of the translations, not the references: BLEU near 0)"
        )


def _check_unspaced_target(args: argparse.Namespace, unit: str, tgt_lang: str) -> None:
    tokenizer = "zh" if language_name(tgt_lang) == "Chinese" else "ja-mecab"
    if unit == "word":
        raise ValueError(
            f"--eval-latency-unit word (given, or SimulEval's default) for a {tgt_lang} "
            "target, which writes no spaces: its units are characters; give "
            f"--eval-latency-unit char (and --sacrebleu-tokenizer {tokenizer}); a log "
            "written in words cannot be scored or resumed in characters: translate it again"
        )
    name = getattr(args, "sacrebleu_tokenizer", None)
    scored = not getattr(args, "no_scoring", False)
    if name in SPACE_TOKENIZERS and scored and "BLEU" in (args.quality_metrics or ()):
        raise ValueError(
            f"--sacrebleu-tokenizer {name}"
            + (" (given, or SimulEval's default)" if name == "13a" else "")
            + f" for a {tgt_lang} target splits it nowhere (a sentence, one token): give "
            f"--sacrebleu-tokenizer {tokenizer}"
        )


def check_spm_model(model: str | None) -> None:
    if not model:
        raise ValueError("--eval-latency-unit spm: give the model with --eval-latency-spm-model")
    if not Path(model).is_file():
        raise ValueError(f"--eval-latency-spm-model {model}: no such file")
    try:
        import sentencepiece

        sentencepiece.SentencePieceProcessor(model_file=str(model))
    except ImportError:
        raise ValueError("--eval-latency-unit spm needs the sentencepiece package") from None
    except (RuntimeError, OSError) as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"--eval-latency-spm-model {model}: not a sentencepiece model ({first})"
        ) from None


def scoring_settings(args: argparse.Namespace) -> dict:
    """What the scores of `args` depend on besides the log, as JSON holds it."""
    from simuleval import options

    flags = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
    for kind, metrics in (("quality", args.quality_metrics), ("latency", args.latency_metrics)):
        for metric in metrics:
            options.get_scorer_class(kind, metric).add_args(flags)
    names = sorted({*EVALUATOR_SETTINGS, *(action.dest for action in flags._actions)})
    names = [name for name in names if name not in NOT_SCORE_SETTINGS]
    settings: dict[str, Any] = {name: getattr(args, name, None) for name in names}
    if settings.get("comet_checkpoint"):
        settings["comet_checkpoint"] = checkpoint_identity(settings["comet_checkpoint"])
    if "comet_source_lang" in settings:  # how the source's units were joined, not the name
        language = settings.pop("comet_source_lang") or getattr(args, "src_lang", None)
        unspaced = language is not None and is_unspaced(language)
        settings["comet_source_units"] = UNSPACED_UNITS if unspaced else "joined by spaces"
    if "COMET" in args.quality_metrics:  # a record without it: COMET of unstripped texts
        settings["comet_inputs"] = COMET_INPUTS
    return json.loads(json.dumps(settings))


def recorded_source_units(output: Path) -> str | None:
    """How the source's units were joined for COMET in the scores `output` holds."""
    saved = _saved_settings(output)
    return None if saved is None else saved.get("comet_source_units")


def _saved_settings(output: Path) -> dict | None:
    path = output / SCORING_RECORD
    return read_json_object(path) if path.exists() else None


def scoring_differences(output: Path, settings: dict) -> list[str]:
    """How the scores in `output` were made otherwise than `settings` asks, setting by
    setting ("not recorded" for scores written before records were kept)."""
    saved = _saved_settings(output)
    if saved is None:
        return ["scoring settings not recorded"]
    names = sorted(set(saved) | set(settings))
    differences = [
        f"{name} {shown_setting(saved.get(name))} (now {shown_setting(settings.get(name))})"
        for name in names
        # a COMET checkpoint recorded by its path alone may have been replaced since
        if content_of(saved.get(name)) != content_of(settings.get(name))
    ]
    if not differences and (damage := damaged_scores(output, saved)):
        differences.append(damage)  # before: "done already", its table cells empty
    return differences


def damaged_scores(output: Path, saved: dict) -> str | None:
    """Why `scores.tsv` does not hold the scores its record says were made (a column a
    metric each, quality first, and a line of numbers; none where no sentence was scored),
    or None."""
    path = output / "scores.tsv"
    quality, latency = saved.get("quality_metrics"), saved.get("latency_metrics")
    if not (path.is_file() and isinstance(quality, list) and isinstance(latency, list)):
        return None  # no scores (the grid runs such a run), or a record naming no metrics
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        return f"{path} does not read ({error})"
    metrics = list(dict.fromkeys([*quality, *latency]))  # a column each, as SimulEval's dict
    header, values = (lines + ["", ""])[:2]
    fields = values.split("\t") if values else [""] * len(metrics)
    if len(lines) > 2 or header.split("\t") != metrics or len(fields) != len(metrics):
        return f"{path} does not hold the scores {', '.join(metrics)} (damaged?)"
    for field in fields:
        try:
            float(field or "nan")
        except ValueError:
            return f"{path}: {field[:40]!r} is no score (damaged?)"
    return None


def forget_scoring(output: Path) -> None:
    """Before `scores.tsv` is replaced: no record that might outlive the scores it named."""
    remove(output / SCORING_RECORD)


def record_scoring(output: Path, args: argparse.Namespace) -> None:
    """Once the scores and metrics of `args` are in `output`: how they were made."""
    write_atomically(output / SCORING_RECORD, json.dumps(scoring_settings(args), indent=2) + "\n")
