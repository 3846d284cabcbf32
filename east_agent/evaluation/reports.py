"""What a grid reports: `results.{csv,md}` (system, setting, BLEU, AL, LAAL, AL_CA,
LAAL_CA, wall seconds, streams), `curves.png` (BLEU against LAAL, a line per system) and
`significance.{csv,md}` (paired bootstrap resampling from each setting of a system to the
next, `east_agent.evaluation.significance`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from east_agent.common.atomic import atomic_path, write_atomically
from east_agent.common.text_lines import read_lines
from east_agent.evaluation.config import EvalConfig, Run
from east_agent.evaluation.significance import SIGNIFICANCE_COLUMNS, Comparison, compare_runs
from east_agent.evaluation.testsets import read_prepared

TABLE_COLUMNS = (
    "system", "setting", "BLEU", "AL", "LAAL", "AL_CA", "LAAL_CA", "wall_seconds", "streams",
)  # fmt: skip


SCORE_COLUMNS = TABLE_COLUMNS[2:-2]


def read_scores(run_dir: Path) -> dict[str, str]:
    header, values = (run_dir / "scores.tsv").read_text().strip().splitlines()[:2]
    return dict(zip(header.split("\t"), values.split("\t")))


def collect(config: EvalConfig, runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        run_dir = config.run_dir(run)
        if not (run_dir / "scores.tsv").exists():
            continue
        scores = read_scores(run_dir)
        seconds = json.loads((run_dir / "wall_seconds.json").read_text())["seconds"]
        row = {"system": run.system, "setting": run.setting, "wall_seconds": seconds}
        row.update({column: scores.get(column, "") for column in SCORE_COLUMNS})
        row["streams"] = streams_of(run_dir)
        rows.append(row)
    return rows


def streams_of(run_dir: Path) -> int:
    """How many streams shared the device in a run (its computation-aware latency's
    setting): 1 for SimulEval's own loop; a batched run says in `batch.json`."""
    from east_agent.simuleval_glue.batch import BATCH_RECORD

    record = run_dir / BATCH_RECORD
    return json.loads(record.read_text())["streams"] if record.exists() else 1


def write_tables(
    rows: list[dict[str, Any]],
    output: Path,
    columns: tuple[str, ...] = TABLE_COLUMNS,
    name: str = "results",
) -> None:
    """Write `<output>/<name>.csv` and `<name>.md`, each atomically."""
    with atomic_path(output / f"{name}.csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows),
    ]
    write_atomically(output / f"{name}.md", "\n".join(lines) + "\n")


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """BLEU against LAAL, a line per system; nothing to draw (and no file) while no system
    has two settings."""
    systems = [row["system"] for row in rows if row["LAAL"] not in ("", "nan")]
    if all(systems.count(system) < 2 for system in systems):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for system in dict.fromkeys(row["system"] for row in rows):
        points = sorted(
            (float(row["LAAL"]), float(row["BLEU"]), row["setting"])
            for row in rows
            if row["system"] == system and row["LAAL"] not in ("", "nan")
        )
        if not points:
            continue
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
        for laal, bleu, setting in points:
            axes.annotate(
                setting, (laal, bleu), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    axes.set_xlabel("LAAL (source words)")
    axes.set_ylabel("BLEU")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def summarize(config: EvalConfig, runs: list[Run]) -> list[dict[str, Any]]:
    rows = collect(config, runs)
    if rows:
        write_tables(rows, config.output)
        plot_curves(rows, config.output / "curves.png", config.testset)
        print((config.output / "results.md").read_text(), flush=True)
        comparisons = compare_settings(config, runs)
        if comparisons:
            rows_of_tests = [comparison.row() for comparison in comparisons]
            write_tables(rows_of_tests, config.output, SIGNIFICANCE_COLUMNS, "significance")
            print("Paired bootstrap, each setting against the one before it:", flush=True)
            print((config.output / "significance.md").read_text(), flush=True)
    return rows


def compare_settings(config: EvalConfig, runs: list[Run]) -> list[Comparison]:
    """Significance of the BLEU differences along each system's settings (its curve)."""
    testset = read_prepared(config.testset_dir)
    references = read_lines(testset.reference)
    comparisons = []
    for system in dict.fromkeys(run.system for run in runs):
        finished = [
            (run.setting, config.run_dir(run))
            for run in runs
            if run.system == system and (config.run_dir(run) / "scores.tsv").exists()
        ]
        if len(finished) > 1:
            comparisons += compare_runs(system, finished, references, testset.sacrebleu_tokenizer)
    return comparisons
