"""The Markdown tables `east-bench` prints and appends to `--output`, their header, and
the checks of an output file made before any model loads (the benchmark scripts' too)."""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
from pathlib import Path

import torch

from east_agent.bench.step_costs import weight_bytes
from east_agent.bench.timing import MethodResult
from east_agent.common.atomic import (
    append_atomically,
    check_folder_path,
    is_special_file,
)
from east_agent.common.counts import counted
from east_agent.common.text_lines import (
    GZIP_MAGIC,
    read_text,
    starts_as_gzip,
)


def report(results: list[MethodResult], steps: dict, floor_ms: float, header: str) -> str:
    baseline = next(r for r in results if r.name.startswith("(b)"))
    offline = next(r for r in results if r.name.startswith("(c)"))
    lines = [
        header,
        "",
        "| method | forwards/sent. | tokens fed/sent. | re-encoded/sent. | ms/sent. "
        "| speed-up over (b) | wall vs (c) | forwards vs (c) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per = r.per_sentence
        lines.append(
            f"| {r.name} | {per(r.forward_passes):.1f} | {per(r.tokens_fed):.1f} | "
            f"{per(r.tokens_reencoded):.1f} | {1000 * per(r.seconds):.1f} | "
            f"{baseline.seconds / r.seconds:.2f}x | {r.seconds / offline.seconds:.2f}x | "
            f"{r.forward_passes / offline.forward_passes:.2f}x |"
        )
    lines += ["", "| step | ms | / floor |", "|---|---|---|"]
    lines.append(f"| weight-bandwidth floor | {floor_ms:.3f} | 1.00x |")
    for name, ms in steps.items():
        lines.append(f"| {name} | {ms:.3f} | {ms / floor_ms:.2f}x |")
    return "\n".join(lines) + "\n"


def sentences_label(total: int, distinct: int, testset: str) -> str:
    """`total` sentences of `testset`, of which the first `distinct` taken again in turn."""
    label = f"{total} sentences of {testset}"
    if distinct < total:
        label += f" (its first {distinct}, taken again in turn)"
    return label


def run_header(
    args: argparse.Namespace,
    model: torch.nn.Module,
    model_name: str,
    sentences: int,
    device: torch.device,
    note: str,
    distinct: int | None = None,
) -> str:
    threads = torch.get_num_threads()
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {counted(threads, 'thread')}"
    )
    return (
        f"### {datetime.date.today()}: {model_name} ({args.torch_dtype}, "
        f"{weight_bytes(model) / 1e9:.3f} GB of weights) on {machine}, torch "
        f"{torch.__version__}, transformers {__import__('transformers').__version__}\n\n"
        f"{sentences_label(sentences, distinct or sentences, args.testset)}, latency "
        f"{args.latency}, schedule: {args.schedule or 'the model’s own decisions'}{note}"
    )


def publish(text: str, output: str | None) -> None:
    """Print a report; append it to the Markdown file `output` too, if given (the file is
    rewritten in one step: a kill leaves it as it was or with the whole report, and two
    benchmarks finishing at once both keep theirs)."""
    print(text)
    if output:
        append_atomically(Path(output), "\n" + text)


def compile_note() -> str:
    """How many versions torch.compile made of the compiled layer step in this process; at
    the limit, torch runs it uncompiled from then on, and the tables must say so."""
    from torch._dynamo.utils import counters

    from east_agent.lm.static import RECOMPILE_LIMIT

    graphs = counters["stats"]["unique_graphs"]
    if not graphs:
        return ""
    note = f"; compiled layer step: {graphs} versions (limit {RECOMPILE_LIMIT})"
    return note + (" REACHED: later steps ran uncompiled" if graphs >= RECOMPILE_LIMIT else "")


def check_output_file(flag: str, value: str) -> None:
    """One of `check_output_files`' files (the benchmark scripts' `--output` too)."""
    path = Path(value)
    if is_special_file(path):  # /dev/null, /dev/stdout: written into as it is
        return
    if path.is_dir():
        raise ValueError(f"{flag} {value}: a folder; name a file")
    if flag == "--output" and path.exists():  # the report is appended to its bytes
        with open(path, "rb") as handle:
            if starts_as_gzip(handle.read(len(GZIP_MAGIC))):
                raise ValueError(f"{flag} {value}: gzip-compressed; name a Markdown file")
        read_text(path)  # UTF-8 text, a bad byte named
    check_folder_path(path.parent, f"{flag} {value}: its folder")  # "is a file"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{flag} {value}: cannot make its folder {path.parent}: {error.strerror}"
        ) from None
    check_writable(path, flag, append=flag == "--output")


def check_writable(path: Path, flag: str, append: bool = False) -> None:
    """`path`'s folder takes a new file (the atomic write's temporary, renamed into place):
    tried for real, a file made there and removed, since permission bits do not stop root
    and a read-only mount or an immutable folder stops everyone. With `append`, a file
    already at `path` must open for appending too (`append_atomically` locks it so);
    opening it changes nothing (before: both found after the whole benchmark)."""
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as error:
        raise ValueError(
            f"{flag} {path}: cannot write in its folder {path.parent}: {error.strerror}"
        ) from None
    if append and path.exists():
        try:
            open(path, "ab").close()
        except OSError as error:
            raise ValueError(f"{flag} {path}: cannot append to it: {error.strerror}") from None
