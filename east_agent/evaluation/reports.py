"""What a grid reports: `results.{csv,md}`, `curves.png` (BLEU against latency, a line per
system) and `significance.{csv,md}` (paired bootstrap resampling from each setting of a
system to the next, `east_agent.evaluation.significance`).

A sentence-level grid's table has SimulEval's BLEU, AL, LAAL, AL_CA and LAAL_CA (source
units) and the grid's other latency metrics (AP, DAL, ...) beside OmniSTEval's YAAL,
YAAL_CA and its degenerate-policy diagnostics (SWF, EFSW, DSPTV in %, `degenerate` 1 when
|DSPTV| > 20); its curve is BLEU against LAAL. A long-form
grid's table has OmniSTEval's scores after re-segmentation to the reference sentences:
BLEU, chrF, LongYAAL and StreamLAAL, computation-unaware and -aware, in milliseconds
(`east_agent.evaluation.run_scores`); its curve is BLEU against LongYAAL, and its
significance tests run on the re-segmented sentences.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from east_agent.common.atomic import atomic_path, remove, write_atomically
from east_agent.common.entry import CommandError
from east_agent.common.text_lines import read_lines
from east_agent.evaluation.config import EvalConfig, Run
from east_agent.evaluation.omnisteval_scoring import SHORTFORM_KEYS
from east_agent.evaluation.run_scores import longform_columns, shortform_columns
from east_agent.evaluation.runs import counted_seconds, settled_tries, translated_tries
from east_agent.evaluation.significance import (
    SIGNIFICANCE_COLUMNS,
    SIGNIFICANCE_NOTE,
    Comparison,
    compare_resegmented,
    compare_runs,
)
from east_agent.evaluation.testsets import prepared_named
from east_agent.simuleval_glue.run_folder import streams_of

SIMULEVAL_COLUMNS = ("BLEU", "AL", "LAAL", "AL_CA", "LAAL_CA")
RUN_COLUMNS = ("wall_seconds", "streams", "jobs")
TABLE_COLUMNS = ("system", "setting", *SIMULEVAL_COLUMNS, *SHORTFORM_KEYS, *RUN_COLUMNS)
LONGFORM_COLUMNS = (
    "system", "setting", "BLEU", "chrF", "LongYAAL", "StreamLAAL", "LongYAAL_CA",
    "StreamLAAL_CA", *RUN_COLUMNS,
)  # fmt: skip
CURVE_AXES = {  # x column of the curves, its label
    False: ("LAAL", "LAAL (source words)"),
    True: ("LongYAAL", "LongYAAL (ms)"),
}


def read_scores(run_dir: Path) -> dict[str, str]:
    """SimulEval's `scores.tsv`: a header line, a line of values (NaN is an empty field:
    a line of tabs for a run of no sentence, which stripping the text took away)."""
    lines = (run_dir / "scores.tsv").read_text().splitlines()
    header, values = (lines + ["", ""])[:2]
    return dict(zip(header.split("\t"), values.split("\t")))


def table_columns(config: EvalConfig) -> tuple[str, ...]:
    """The grid's table; COMET after BLEU when the config asks for it, and latency metrics
    it asks for beyond the table's own (AP, DAL, ATD) after LAAL_CA (before: scored, and
    shown nowhere)."""
    columns = LONGFORM_COLUMNS if config.long_form else TABLE_COLUMNS
    extra = extra_latency_columns(config)
    if extra:
        end = columns.index(SIMULEVAL_COLUMNS[-1]) + 1
        columns = (*columns[:end], *extra, *columns[end:])
    if "COMET" in config.quality_metrics:
        columns = (*columns[:3], "COMET", *columns[3:])
    return columns


def extra_latency_columns(config: EvalConfig) -> tuple[str, ...]:
    """SimulEval's latency metrics the grid asks for that the table has no column of (a
    long-form table shows OmniSTEval's alone)."""
    if config.long_form:
        return ()
    return tuple(name for name in config.latency_metrics if name not in SIMULEVAL_COLUMNS)


def collect(
    config: EvalConfig, runs: list[Run], left_out: set[str] | None = None
) -> list[dict[str, Any]]:
    """The table's rows of the finished runs; a long-form run OmniSTEval could not score
    (its every score is OmniSTEval's) is left out, named in `left_out` (before: a row of
    empty cells, exit 0)."""
    testset = prepared_named(config.testset_dir, config.testset)
    rows = []
    for run in runs:
        run_dir = config.run_dir(run)
        if not (run_dir / "scores.tsv").exists() or run.name in (left_out or ()):
            continue
        row = {"system": run.system, "setting": run.setting, **timing_cells(run_dir)}
        if not config.long_form:
            scores = read_scores(run_dir)
            columns = (*SIMULEVAL_COLUMNS, *extra_latency_columns(config), "COMET")
            row.update({column: score_cell(scores.get(column, "")) for column in columns})
        cells = omnisteval_cells(config, run, run_dir, testset.eval_latency_unit)
        if cells is None and config.long_form:
            if left_out is not None:
                left_out.add(run.name)
            continue
        row.update(cells or {})
        row["streams"] = streams_of(run_dir)
        rows.append(row)
    return rows


def check_tabled(left_out: set[str]) -> None:
    """Fail for the finished runs a grid could not score, once its tables hold the others
    (before: exit 0 when COMET failed after the runs, or with `jobs` above 1)."""
    if left_out:
        raise CommandError(
            f"not scored, left out of the tables (why, and what to do, said above): "
            f"{', '.join(sorted(left_out))}"
        )


def timing_cells(run_dir: Path) -> dict[str, Any]:
    """A run's wall seconds and the most runs side by side in a try that translated
    (`jobs`; before: a try that failed before its first sentence counted too); empty for a
    folder without `wall_seconds.json` (made by hand, or before runs were timed)."""
    tries = settled_tries(run_dir)
    if tries is None:
        return {"wall_seconds": "", "jobs": ""}
    translated = translated_tries(tries) or tries
    jobs = max((attempt.get("jobs", 1) for attempt in translated), default=1)
    return {"wall_seconds": f"{counted_seconds(tries):.2f}", "jobs": jobs}


def omnisteval_cells(
    config: EvalConfig, run: Run, run_dir: Path, unit: str
) -> dict[str, str] | None:
    """A run's OmniSTEval cells; None for a run OmniSTEval cannot score, named on stderr
    (a sentence-level run's cells stay empty, the rest of the table is still written)."""
    try:
        if config.long_form:
            return shown(longform_columns(config, run, run_dir))
        return shown(shortform_columns(config, run_dir, unit))
    except (ValueError, RuntimeError, OSError, KeyError) as error:
        print(f"east-eval: {run.name}: not scored by OmniSTEval: {error}", file=sys.stderr)
        return None


def shown(scores: dict[str, float | None]) -> dict[str, str]:
    """OmniSTEval's numbers as table cells: 3 decimals (`degenerate`, a flag: 0 or 1),
    empty when undefined."""
    return {key: shown_cell(key, value) for key, value in scores.items()}


def shown_cell(key: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if key == "degenerate" else f"{value:.3f}"


def score_cell(text: str) -> str:
    """A score of SimulEval's `scores.tsv` (rounded, its trailing zeros dropped: "1.87") with
    3 decimals like the table's other scores ("1.870"); anything else as it is."""
    try:
        return f"{float(text):.3f}"
    except ValueError:
        return text


def write_tables(
    rows: list[dict[str, Any]],
    output: Path,
    columns: tuple[str, ...] = TABLE_COLUMNS,
    name: str = "results",
    note: str = "",
) -> None:
    """Write `<output>/<name>.csv` and `<name>.md`, each atomically; `note`: a line under
    the Markdown table."""
    with atomic_path(output / f"{name}.csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows),
        *(("", note) if note else ()),
    ]
    write_atomically(output / f"{name}.md", "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    """A Markdown table cell: a `|` in a system's name or setting escaped, not a new column."""
    return str(value).replace("|", "\\|")


def plot_curves(
    rows: list[dict[str, Any]], path: Path, title: str, long_form: bool = False
) -> None:
    """BLEU against LAAL (LongYAAL for talks), a line per system; nothing to draw (and no
    file: an earlier grid's curves are removed) while no system has two settings."""
    x_column, x_label = CURVE_AXES[long_form]
    # a run OmniSTEval could not score has no LongYAAL at all
    systems = [row["system"] for row in rows if row.get(x_column, "") not in ("", "nan")]
    if all(systems.count(system) < 2 for system in systems):
        remove(path)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    lines, names = [], []
    for system in dict.fromkeys(row["system"] for row in rows):
        points = sorted(
            (float(row[x_column]), float(row["BLEU"]), row["setting"])
            for row in rows
            if row["system"] == system and row.get(x_column, "") not in ("", "nan")
        )
        if not points:
            continue
        (line,) = axes.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        lines.append(line)
        names.append(system)
        for laal, bleu, setting in points:
            axes.annotate(
                setting, (laal, bleu), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    axes.set_xlabel(x_label)
    axes.set_ylabel("BLEU")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(lines, names)  # named here: a `label` starting with `_` is left out
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def write_curves(config: EvalConfig, rows: list[dict[str, Any]]) -> None:
    """`curves.png`, or, when the grid's metrics lack an axis of it, none (said on stdout;
    an earlier grid's, of other metrics, removed: it would not match the tables)."""
    path = config.output / "curves.png"
    missing = curve_metrics_missing(config)
    if not missing:
        plot_curves(rows, path, config.testset, config.long_form)
        return
    note = f"east-eval: no curves.png: BLEU against LAAL needs {' and '.join(missing)} in "
    note += "the grid's metrics"
    if path.exists():
        remove(path)
        note += f" (the earlier {path}, of other metrics, removed)"
    print(note, flush=True)


def curve_metrics_missing(config: EvalConfig) -> list[str]:
    """The curve's axes a sentence-level grid does not score (a long-form grid's are
    OmniSTEval's, always scored)."""
    if config.long_form:
        return []
    axes = (("BLEU", config.quality_metrics), ("LAAL", config.latency_metrics))
    return [name for name, metrics in axes if name not in metrics]


TABLE_FILES = (
    "results.csv", "results.md", "significance.csv", "significance.md", "curves.png",
)  # fmt: skip


def summarize(
    config: EvalConfig,
    runs: list[Run],
    compared: dict[str, list[Comparison]] | None = None,
    left_out: set[str] | None = None,
    asked: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The grid's tables and curves; `compared`: systems' comparisons made already
    (`compare_system`, by system, in a worker while the grid ran). Runs `collect` leaves
    out are added to `left_out` (for `check_tabled`); runs named there already (the caller
    could not score them) are not tabled either, and their systems' tests are made again.
    `asked`: the runs this command ran or merged (None: all), named under the table when
    it lacks them."""
    left_out = set() if left_out is None else left_out
    rows = collect(config, runs, left_out)
    note = untabled_note(runs, rows, asked)
    dropped = {run.system for run in runs if run.name in left_out}  # their tests made again
    compared = {
        system: tests for system, tests in (compared or {}).items() if system not in dropped
    }
    runs = [run for run in runs if run.name not in left_out]
    if not rows:
        remove_earlier_tables(config.output)
        return rows
    write_tables(rows, config.output, table_columns(config), note=note)
    write_curves(config, rows)
    print((config.output / "results.md").read_text(), flush=True)
    comparisons = compare_settings(config, runs, compared)
    if comparisons:
        rows_of_tests = [comparison.row() for comparison in comparisons]
        write_tables(
            rows_of_tests, config.output, SIGNIFICANCE_COLUMNS, "significance", SIGNIFICANCE_NOTE
        )
        print("Paired bootstrap, each setting against the one before it:", flush=True)
        print((config.output / "significance.md").read_text(), flush=True)
    else:  # an earlier grid's tests, of runs this one leaves out
        for suffix in (".csv", ".md"):
            remove(config.output / f"significance{suffix}")
    return rows


def untabled_note(runs: list[Run], rows: list[dict[str, Any]], asked: list[str] | None) -> str:
    """The runs `asked` for (None: all of `runs`) that the table lacks, named under it
    (before: named on stderr alone, so the table of a grid with failed runs read as a whole
    grid); one left out of `runs` as made otherwise is among them."""
    shown = {(row["system"], row["setting"]) for row in rows}
    tabled = {run.name for run in runs if (run.system, run.setting) in shown}
    names = [run.name for run in runs] if asked is None else asked
    missing = [name for name in names if name not in tabled]
    if not missing:
        return ""
    return (
        f"Not in this table: {', '.join(missing)} (failed, unfinished or not scored; "
        "`east-eval` said why)."
    )


def remove_tables(output: Path) -> list[str]:
    """An earlier grid's tables and curves removed from `output`: the names of those there."""
    gone = [name for name in TABLE_FILES if (output / name).exists()]
    for name in gone:
        remove(output / name)
    return gone


def remove_earlier_tables(output: Path) -> None:
    """No finished run to table: an earlier grid's tables and curves, which would show runs
    this one left out, are removed (before: kept, exit 0), and that is said."""
    gone = remove_tables(output)
    said = f" ({', '.join(gone)} of an earlier grid removed)" if gone else ""
    print(f"no finished run to table{said}", flush=True)


def compare_settings(
    config: EvalConfig, runs: list[Run], compared: dict[str, list[Comparison]]
) -> list[Comparison]:
    """Significance of the BLEU differences along each system's settings (its curve)."""
    comparisons: list[Comparison] = []
    for system in dict.fromkeys(run.system for run in runs):
        found = compared.get(system)
        comparisons += found if found is not None else compare_system(config, system, runs)
    return comparisons


def compare_system(config: EvalConfig, system: str, runs: list[Run]) -> list[Comparison]:
    """Each finished setting of `system` against the one before it."""
    finished = [
        (run.setting, config.run_dir(run))
        for run in runs
        if run.system == system and (config.run_dir(run) / "scores.tsv").exists()
    ]
    if len(finished) < 2:
        return []
    testset = prepared_named(config.testset_dir, config.testset)
    if config.long_form:
        return compare_resegmented(system, finished, testset.sacrebleu_tokenizer)
    references = read_lines(testset.reference)
    return compare_runs(system, finished, references, testset.sacrebleu_tokenizer)
