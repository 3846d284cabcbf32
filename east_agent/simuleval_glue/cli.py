"""`east-simuleval`: the `simuleval` command, with SimulEval 1.1.4's traps defused.

1. SimulEval parses its own flags before it has imported the agent, with argparse's
   prefix matching on: an agent flag `--latency low` is read as `--latency-metrics low`
   ("No latency metric called low"). This command turns prefix matching off, so agent
   flags are matched whole. (With the stock `simuleval`, write `--latency-level`.)
2. Importing SimulEval warns that ffmpeg is missing, which text evaluation never needs
   (silenced for the whole package in `east_agent/__init__.py`).
3. Empty runs scored as NaN rather than a crash, ATD of a text log scored as text, an
   unknown metric and `--computation-aware` for text refused in one line, every finished
   sentence flushed to `instances.log` as it finishes, `config.yaml` and the scores
   written atomically (`east_agent.simuleval_glue.simuleval_fixes`).
4. `--score-only` prints the scores of an existing `instances.log` but writes no
   `scores.tsv`; here it writes `scores.tsv` and `metrics.tsv` like a full run.
5. One writer per output folder, from the first write to the last (scores included), and
   no scores of an earlier log left beside a new one (`east_agent.simuleval_glue.
   run_folder`). `--continue-unfinished` drops a line a kill cut in half instead of failing
   on it, resumes a batched run's log (written in finishing order) keeping every finished
   sentence, and scores a log that is already complete instead of failing on it.
6. The source and reference files are checked before the model loads; a sentence too long
   for the context is named (index, length, limit).

`--batch-size N` (N > 1) evaluates N sentences at once (`east_agent.simuleval_glue.batch`):
the same output folder, SimulEval's format and scorers. `--standalone` serves this
package's agents with sessions (`east_agent.simuleval_glue.agent_server`: one stream per client, the
clients' forwards batched, 127.0.0.1 unless `--remote-address` says otherwise).

It also loads `east_agent.simuleval_plugin`: computation-aware latency for text (`AL_CA`,
`LAAL_CA`, `AP_CA`, `DAL_CA`, see `east_agent.simuleval_glue.ca_latency`) and COMET.

Everything else is SimulEval's own `main()`, unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from east_agent.common.arguments import (
    flags_meant,
    given_flags,
    meant_said,
    refuse_repeated,
    values_apart,
)
from east_agent.common.counts import instance_kind
from east_agent.common.entry import command_line


@contextmanager
def _flags_matched_whole() -> Iterator[None]:
    """Every argparse parser made meanwhile matches flags whole (SimulEval's among them),
    and after, as before (a caller of `main` in its own process keeps its abbreviations)."""
    original_init = argparse.ArgumentParser.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.allow_abbrev = False

    argparse.ArgumentParser.__init__ = init  # type: ignore[method-assign]  # patched for SimulEval's parsers
    try:
        yield
    finally:
        argparse.ArgumentParser.__init__ = original_init  # type: ignore[method-assign]  # put back


def _score_only(argv: list[str]) -> None:
    from east_agent.simuleval_glue.batch import score_folder
    from east_agent.simuleval_glue.scoring import scoring_parser

    parser = scoring_parser(argv)
    args, rest = parser.parse_known_args(argv)
    refuse_repeated(parser, argv)  # before: the last one scored
    if rest:  # before: argparse's "unrecognized arguments", the whole run command listed
        flags = [arg.split("=", 1)[0] for arg in rest if arg.startswith("-")] or rest
        raise ValueError(
            f"--score-only scores the log in --output with the scoring flags alone; "
            f"{', '.join(flags)}: not {'a scoring flag' if len(flags) == 1 else 'scoring flags'}"
            " (drop the run's flags)"
        )
    score_folder(args)


@command_line("east-simuleval")
def main() -> None:
    with _flags_matched_whole():
        _run_command_line()


def _run_command_line() -> None:
    from simuleval.cli import main as simuleval_main

    from east_agent.simuleval_glue import simuleval_fixes

    simuleval_fixes.apply()

    import east_agent.simuleval_plugin  # noqa: F401
    from east_agent.simuleval_glue.batch import batch_size_of
    from east_agent.simuleval_glue.ca_latency import refuse_unit_seconds_without_ca_metric
    from east_agent.simuleval_glue.comet_scorer import refuse_comet_flags_without_comet
    from east_agent.simuleval_glue.data_files import check_dataloader_flags
    from east_agent.simuleval_glue.run_folder import check_output_folder

    if {"-h", "--help"} & set(sys.argv[1:]):
        _help(sys.argv[1:], simuleval_main)
        return
    batch_size, rest = batch_size_of(sys.argv[1:])
    if _given("--system-dir"):  # SimulEval adds main.yaml's `device` beside a `--device=X`
        rest = values_apart(rest)
    if "--score-only" in rest:
        from east_agent.simuleval_glue.batch import refuse_run_flags

        refuse_run_flags(sys.argv[1:])
    refuse_unit_seconds_without_ca_metric(rest)
    if "--standalone" not in rest:  # a server refuses them all, as the evaluator's
        refuse_comet_flags_without_comet(rest)
    check_output_folder(rest)
    check_agent_file(rest)
    if "--standalone" not in rest:  # to a server they are the evaluator's: refused there
        check_dataloader_flags(rest)
    if "--remote-eval" in rest:  # SimulEval's evaluator lacks a method it calls
        raise ValueError(
            "--remote-eval: SimulEval's remote evaluation fails on this SimulEval (after "
            "asking the server); evaluate a served system with east-remote-eval"
        )
    if "--slurm" in rest:  # before: an AttributeError, the output folder begun
        raise ValueError(
            "--slurm: SimulEval's Slurm submission fails on this SimulEval (and would submit "
            "the stock simuleval); put the east-simuleval command in your own job script "
            "(east-eval --shard I/N splits a grid into jobs)"
        )
    if "--score-only" not in rest and not any(
        _given(flag) for flag in ("--agent", "--agent-class", "--system-dir")
    ):  # before: SimulEval emptied the output folder's log, then failed with a traceback
        raise ValueError("name the system: --agent FILE, --agent-class CLASS or --system-dir DIR")
    if _given("--agent") and _given("--agent-class"):  # before: the file's ran, the class unread
        raise ValueError("--agent and --agent-class: name one system, the file's or the class")
    if batch_size > 1 and _given("--system-dir") and not {"--score-only", "--standalone"} & {*rest}:
        raise ValueError(BATCHED_SYSTEM_DIR)  # before the folder is read
    if _given("--system-dir") and "--score-only" not in rest:
        _check_one_system(rest)
        _check_system_dir(rest)
    batch_size_given = _given("--batch-size")
    sys.argv = [sys.argv[0], *rest]
    if "--score-only" in rest:
        _score_only(rest)
    elif "--standalone" in rest:
        _serve(rest, batch_size if batch_size_given else None, simuleval_main)
    elif batch_size > 1:
        _run_batched(rest, batch_size)
    else:
        _run_simuleval_loop(rest, simuleval_main)


OWN_FLAGS = """east-simuleval: SimulEval's `simuleval`, with SimulEval's flags and the agent's.
Its own flags:
  --batch-size N          sentences decoded at once; 1 (the default) is SimulEval's own
                          loop, one sentence at a time (single-stream computation-aware
                          latency); with --standalone, sessions decoded at once (default 8,
                          or a --system-dir's batch_size)
  --standalone            serve this package's agent with sessions (one stream per client)
  --session-timeout S     seconds after which an idle session is dropped (--standalone;
                          default 600)
  --batch-wait-ms MS      how long a forward waits for the sessions between two requests
                          to join it (--standalone; default 5, 0: no wait)
  --ca-unit-seconds S     with an *_CA latency metric (AL_CA, LAAL_CA, AP_CA, DAL_CA):
                          seconds one source unit takes to arrive (default 0.4)
SimulEval's --remote-eval and --slurm are refused (they fail on this SimulEval); its
--fp16 and --dtype must agree with the agent's --torch-dtype.
"""


def check_agent_file(argv: list[str]) -> None:
    """An `--agent` file that is a folder or nothing, named (before: an errno message)."""
    from east_agent.common.text_lines import check_regular_file

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--agent")
    agent = parser.parse_known_args(argv)[0].agent
    if agent is not None:
        check_regular_file(agent, "--agent")


def _help(argv: list[str], simuleval_main) -> None:
    """This command's own flags, then SimulEval's help: the agent's flags too when an
    agent is named (SimulEval's own help needs one). SimulEval's `--slurm*` flags are left
    out: `--slurm` is refused. SimulEval builds its parser inside its `main`, so the flags
    are hidden as they are added (argparse's method, put back after)."""
    add_argument = argparse._ActionsContainer.add_argument

    def without_slurm(container, *names, **settings):
        if any(name.startswith("--slurm") for name in names):
            settings["help"] = argparse.SUPPRESS
        return add_argument(container, *names, **settings)

    argparse._ActionsContainer.add_argument = without_slurm  # type: ignore[method-assign, assignment]  # patched for SimulEval's parser
    try:
        _print_help(argv, simuleval_main)
    finally:
        argparse._ActionsContainer.add_argument = add_argument  # type: ignore[method-assign]  # put back


def _print_help(argv: list[str], simuleval_main) -> None:
    from east_agent.simuleval_glue.scoring import SCORER_FLAGS

    print(OWN_FLAGS)
    print(SCORER_FLAGS + "\n")
    if any(arg.split("=", 1)[0] in ("--agent", "--agent-class", "--system-dir") for arg in argv):
        sys.argv = [sys.argv[0], *(arg for arg in argv if arg != "--standalone")]
        simuleval_main()  # prints the help and exits
        return
    from east_agent.simuleval_glue.scoring import scoring_parser

    parser = scoring_parser(argv)
    parser.prog = "east-simuleval"
    parser.print_help()
    print("\nName an agent (--agent east_agent/agent.py) for its flags too.")


def _run_simuleval_loop(argv: list[str], simuleval_main) -> None:
    """SimulEval's own loop, its output folder held while it writes there (`run_folder`)."""
    from east_agent.decoding.streaming import ContextOverflowError
    from east_agent.simuleval_glue.batch import score
    from east_agent.simuleval_glue.data_files import check_data_files
    from east_agent.simuleval_glue.run_folder import loop_in, output_of
    from east_agent.simuleval_glue.scoring import check_scoring_flags, scoring_args
    from east_agent.simuleval_glue.simuleval_fixes import refuse_computation_aware_for_text

    # a system folder's flags too: its --eval-latency-unit decides how references are read
    span = check_data_files(_with_system_dir_flags(argv) if _given("--system-dir") else argv)
    scoring = scoring_args(argv, strict=False)
    check_scoring_flags(scoring)  # and against the target language, with the settings
    named = _given("--agent") or _given("--agent-class")
    agent_class = _agent_class() if named else None  # None: a system folder's, SimulEval's
    computation_aware = "--computation-aware" in argv
    typed = agent_class
    if agent_class is None and _given("--system-dir"):
        typed = _system_dir_class()  # for its source and target types only
    source_type, target_type = (
        getattr(typed, name, None) for name in ("source_type", "target_type")
    )
    refuse_computation_aware_for_text(computation_aware, source_type)
    known_types = (
        (source_type, target_type)
        if isinstance(source_type, str) and isinstance(target_type, str)
        else None
    )
    output = output_of(argv)
    # the agent's flags and the scoring's against its target, with or without a folder
    # (before: a Chinese target in words was refused only with --output)
    settings, check = _settings_and_check(agent_class, argv)
    if output is None:
        if check is not None:
            check()
        simuleval_main()
        return
    scores = None if scoring.no_scoring else partial(score, scoring)
    resume = "--continue-unfinished" in argv
    try:
        loop_in(output, settings, resume, span, simuleval_main, scores, check, known_types)
    except ContextOverflowError as error:
        raise ContextOverflowError(
            _overflow_message(error, output / "instances.log", span, settings)
        ) from None


def _settings_and_check(
    agent_class, argv: list[str]
) -> tuple[dict | None, Callable[[], None] | None]:
    """The translation settings of a run of an agent file or class (`--agent`,
    `--agent-class`) or of a `--system-dir` of this package's agents (None for another
    agent's folder, or `--remote-eval`), and the checks that read its checkpoint, to run
    once the folder is held, before it changes."""
    from east_agent.simuleval_glue.adapter import StreamingAgent
    from east_agent.simuleval_glue.batch import parse_args
    from east_agent.simuleval_glue.run_folder import MODEL_FOLDERS, translation_settings
    from east_agent.simuleval_glue.scoring import check_latency_unit

    folder = _given_system_dir() if agent_class is None else None
    given = argv
    if folder is not None:
        agent_class, argv = _system_dir_class(), _with_system_dir_flags(argv)
        if not issubclass(agent_class, StreamingAgent):
            return None, None  # another agent's folder: its flags are not known here
    if agent_class is None:
        return None, None
    args = parse_args(agent_class, argv, known_only=folder is not None, given=given)
    check_latency_unit(args, getattr(args, "tgt_lang", None))  # a --system-dir's: its config
    if folder is not None:  # its model paths are the folder's (SimulEval builds it there)
        for name in MODEL_FOLDERS & set(vars(args)):
            value = getattr(args, name)
            if value is not None and (folder / value).exists():  # else a hub id
                setattr(args, name, str(folder / value))
    check = None
    if issubclass(agent_class, StreamingAgent):
        config = agent_class.checked_config(args)  # a bad flag: before the folder changes
        check = partial(agent_class.check_with_tokenizer, args, config)
    return translation_settings(agent_class, args), check


def _check_one_system(argv: list[str]) -> None:
    """A `--system-dir` run names no agent beside it (a traceback before: SimulEval found
    two systems), and gives no flag SimulEval does not read there: SimulEval builds the
    folder's agent from its config alone, then refuses a flag neither it, a scorer nor
    the server reads (a typo, or one of the agent's), after the output folder was emptied
    and the model loaded; refused here first."""
    from simuleval import options

    from east_agent.simuleval_glue.agent_server import add_server_args
    from east_agent.simuleval_glue.scoring import scoring_parser

    if _given("--agent") or _given("--agent-class"):
        raise ValueError(
            "--system-dir and --agent (or --agent-class): name one system, the folder's or the "
            "agent's"
        )
    parser = scoring_parser(argv)
    options.add_slurm_args(parser)
    add_server_args(parser)  # --standalone's own
    unread = parser.parse_known_args(argv)[1]
    if unread:
        agents = _package_agent_flags()  # the folder's to set: no typo of SimulEval's flags
        typos = [arg for arg in unread if arg.split("=")[0] not in agents]
        hints = meant_said(parser, flags_meant(parser, typos, argv), argv)
        raise ValueError(
            f"{' '.join(unread)}: not read with --system-dir, by SimulEval, its scorers or the "
            "server (the agent's flags are the folder's main.yaml: package it again to change "
            f"them){hints}"
        )
    refuse_repeated(parser, argv)  # another package's folder too (its flags are SimulEval's)


def _package_agent_flags() -> set[str]:
    """The flags this package's agents take (their `add_args`)."""
    from east_agent.agent import EastAgent
    from east_agent.waitk_agent import WaitkAgent

    flags: set[str] = set()
    for agent in (EastAgent, WaitkAgent):
        parser = argparse.ArgumentParser(add_help=False)
        agent.add_args(parser)
        flags |= set(parser._option_string_actions)
    return flags


def _check_system_dir(argv: list[str]) -> None:
    """A `--system-dir` SimulEval can build, its `main.yaml` read as the server reads it,
    before anything loads: a folder that is not there or holds no config (before: an
    errno message), a config that is no YAML mapping with an `agent_class`, a key that is
    no flag of SimulEval's, its scorers' or the agent's (a typo: SimulEval leaves it unread,
    so `latncy: high` ran at the default latency, exit 0, where the server refuses it), a
    `false` (SimulEval gives every YAML boolean as its bare flag: `document_level: false`
    ran document-level), a model or adapter link that leads nowhere (the model moved)."""
    import difflib

    import yaml
    from simuleval import options
    from simuleval.utils.arguments import check_argument

    from east_agent.common.arguments import parse_quietly
    from east_agent.common.atomic import not_a_folder
    from east_agent.common.yaml_files import load_yaml
    from east_agent.simuleval_glue.adapter import check_precision
    from east_agent.simuleval_glue.batch import add_batch_arg
    from east_agent.simuleval_glue.scoring import scoring_parser

    folder, name = Path(check_argument("system_dir")), check_argument("system_config")
    if not folder.is_dir():
        raise ValueError(f"--system-dir {folder}: {not_a_folder(folder)}")
    main_yaml = folder / name
    if not main_yaml.is_file():
        raise ValueError(
            f"--system-dir {folder}: no {name} in it, so no submission folder "
            "(east-package-system writes one)"
        )
    try:
        text = main_yaml.read_text(encoding="utf-8")
        load_yaml(text, str(main_yaml))  # a key twice, and the line of a YAML error
        config = yaml.safe_load(text)  # as SimulEval reads it
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{main_yaml}: not YAML ({type(error).__name__}: {first})") from None
    if not isinstance(config, dict) or not isinstance(config.get("agent_class"), str):
        raise ValueError(
            f"{main_yaml}: no agent_class (a mapping of SimulEval's and the agent's flags, "
            "agent_class: the agent's module.Class)"
        )
    try:
        agent_class = _system_dir_class()
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"{main_yaml}: agent_class {config['agent_class']}: cannot be imported "
            f"({type(error).__name__}: {error})"
        ) from None
    with_flags = _with_system_dir_flags(argv)
    parser = scoring_parser(with_flags)  # SimulEval's, its scorers' and the dataloader's
    options.add_slurm_args(parser)
    agent_class.add_args(parser)
    add_batch_arg(parser)  # the parser of the folder's run, as the server's
    known = _long_options(parser)
    read_here = known  # the server reads its settings from the folder
    if "--standalone" not in argv:  # SimulEval builds the folder's agent alone from it
        agent_parser = options.general_parser()
        agent_class.add_args(agent_parser)
        read_here = _long_options(agent_parser)
    for key, value in config.items():
        option = "--" + str(key).replace("_", "-")
        if option in known and option not in read_here:
            raise ValueError(
                f"{main_yaml}: {key}: SimulEval reads {option} from the command line alone, "
                "not from a folder's config (left unread, its default in its place): give it "
                "on the command line"
            )
        if option not in known:
            close = difflib.get_close_matches(option, sorted(known), n=1)
            hint = f" (did you mean {close[0][2:].replace('-', '_')}?)" if close else ""
            raise ValueError(
                f"{main_yaml}: {key}: no flag of SimulEval's, its scorers' or the "
                f"{agent_class.__name__} agent's{hint}: SimulEval leaves such a key unread, "
                "the flag's default in its place; correct or remove it"
            )
        if value is False:
            raise ValueError(
                f"{main_yaml}: {key}: false: SimulEval gives every YAML boolean as its bare "
                f"flag, false too ({option} would be on); remove the line to leave it off"
            )
    if "torch_dtype" in config and not given_flags(argv, ("--torch-dtype",)):
        precision = parse_quietly(options.general_parser(), argv, known_only=True)  # --fp16
        precision.torch_dtype = str(config["torch_dtype"])
        check_precision(precision, f"torch_dtype: {{}} of {main_yaml}")
    _check_system_dir_values(main_yaml, config, parser, with_flags)
    _check_system_dir_models(folder, main_yaml, config, agent_class)


def _check_system_dir_models(folder: Path, main_yaml: Path, config: dict, agent_class) -> None:
    """The folder's model paths, named by `main.yaml`'s key (before: argparse's usage for
    a `model_path` left out, "--model-path: model path 'model' does not exist" for a
    model not there, naming neither the folder nor its `main.yaml`)."""
    from east_agent.common.atomic import not_a_folder
    from east_agent.common.fingerprint import is_hub_id
    from east_agent.simuleval_glue.adapter import StreamingAgent
    from east_agent.simuleval_glue.run_folder import MODEL_FOLDERS

    if issubclass(agent_class, StreamingAgent) and "model_path" not in config:
        raise ValueError(
            f"{main_yaml}: no model_path (the model the agent loads: east-package-system "
            "writes `model_path: model`, the model beside main.yaml)"
        )
    for key in MODEL_FOLDERS & {*config}:
        path = folder / str(config[key])
        if path.is_symlink() and not path.exists():
            raise ValueError(
                f"--system-dir {folder}: {key}: {config[key]} is {not_a_folder(path)} (the "
                "model moved or was removed); package the submission again (--copy-model: a "
                "folder that holds its model)"
            )
        value = str(config[key])
        # a hub id as the agent reads it: from inside the folder, where SimulEval runs it
        if not path.exists() and not is_hub_id(value, base=folder):
            inside = f" in {folder} (SimulEval reads the folder's paths there)"
            where = "" if Path(value).is_absolute() else inside
            raise ValueError(f"{main_yaml}: {key}: {value}: no such folder{where}")


def _check_system_dir_values(
    main_yaml: Path, config: dict, parser: argparse.ArgumentParser, with_flags: list[str]
) -> None:
    """`main.yaml`'s values as SimulEval will give them, refused naming the file and key:
    one setting in two spellings (`latency` and `latency_level`: SimulEval keeps the
    last), a value with a space (split: `latency: high low` ran at high), no value or a
    list, and a value the flag refuses (before: argparse's usage, naming a flag the
    command line did not give)."""
    from east_agent.common.arguments import ArgumentsRefused, parse_quietly
    from east_agent.simuleval_glue.system_dir import repeated_setting, split_by_simuleval

    keys = [str(key) for key in config]
    pair = repeated_setting(parser, keys)
    if pair is not None:
        raise ValueError(
            f"{main_yaml}: {keys[pair[0]]} and {keys[pair[1]]}: one setting given twice "
            "(SimulEval would keep the last); keep one"
        )
    for key, value in config.items():
        if value is None or isinstance(value, (list, dict)):
            kind = "no value" if value is None else f"a {type(value).__name__}"
            raise ValueError(f"{main_yaml}: {key}: {kind}; give one value")
        if split_by_simuleval(value):
            taken = repr(value.split()[0]) if value.split() else "no value"
            raise ValueError(
                f"{main_yaml}: {key}: {value!r}: SimulEval splits a value at its spaces "
                f"(the run would take {taken})"
            )
    try:
        parse_quietly(parser, with_flags, known_only=True)
    except ArgumentsRefused as refused:
        why = str(refused)
        flags = why.partition(":")[0].removeprefix("argument ").split("/")
        for key, value in config.items():
            if "--" + str(key).replace("_", "-") in flags:
                raise ValueError(f"{main_yaml}: {key}: {value}: {why}") from None
        # a command-line flag's error: argparse says it as before, when the run parses


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for option in parser._option_string_actions if option.startswith("--")}


def _agent_class():
    """The agent class SimulEval's main will find, left for it to find again: SimulEval
    adds an `--agent-class` (or `--system-dir`) class each time it looks, and runs an agent
    file anew (as module `agents`), registering a class defined there once more, but not
    one the file imports from elsewhere (imported once, registered once)."""
    from simuleval.utils.agent import EVALUATION_SYSTEM_LIST, get_agent_class

    registered = list(EVALUATION_SYSTEM_LIST)
    agent_class = _named_class(get_agent_class) if not _given("--agent") else get_agent_class()
    if not _given("--agent") or agent_class.__module__ == "agents":
        EVALUATION_SYSTEM_LIST[:] = registered
    return agent_class


def _named_class(get_agent_class):
    """`get_agent_class()` for an `--agent-class` alone: a class that does not import is
    named in one line (before: SimulEval's log line and a traceback)."""
    import logging

    from simuleval.utils.arguments import check_argument

    quiet = logging.getLogger("simuleval.utils.agent")
    was_disabled, quiet.disabled = quiet.disabled, True  # its "Try setting --user-dir?"
    name = check_argument("agent_class")
    try:
        return get_agent_class()
    except (ModuleNotFoundError, AttributeError, ValueError) as error:
        if not names_no_class(error, name):  # the agent's module failing on its own
            raise
        raise ValueError(
            f"--agent-class {name}: {error} (a module.Class this Python can import: add its "
            "folder with --user-dir)"
        ) from None
    finally:
        quiet.disabled = was_disabled


def names_no_class(error: Exception, name: str) -> bool:
    """Whether `error` says `name` (module.Class) names nothing: its module, a module above
    it, or the class missing, or no module part (not an import inside the module)."""
    module, _, class_name = name.rpartition(".")
    if isinstance(error, ModuleNotFoundError):
        return bool(error.name) and f"{module}.".startswith(f"{error.name}.")
    if isinstance(error, AttributeError):
        return error.name == class_name
    return not module


def _system_dir_class():
    """The agent class a `--system-dir`'s config names, SimulEval's registry left as it
    was (importing the class's module registers it there)."""
    from simuleval.utils.agent import EVALUATION_SYSTEM_LIST, get_agent_class_from_dir
    from simuleval.utils.arguments import check_argument

    registered = list(EVALUATION_SYSTEM_LIST)
    try:
        config = check_argument("system_config") or "main.yaml"
        return get_agent_class_from_dir(check_argument("system_dir"), config)
    finally:
        EVALUATION_SYSTEM_LIST[:] = registered


def _overflow_message(
    error: Exception, log: Path, span: tuple[int, int] | None, settings: dict | None
) -> str:
    """Which sentence (talk, in long form) overflowed: SimulEval's loop stops at it, after
    the last one logged."""
    from east_agent.simuleval_glue.instance_log import finished_records
    from east_agent.simuleval_glue.run_folder import long_form_run

    records = finished_records(log)
    done = {record["index"] for record in records}
    index = span[0] if span else 0
    while index in done:  # the first missing one (a batched run's later ones are kept)
        index += 1
    kind = instance_kind(long_form_run(settings))
    return (
        f"{kind} {index}: {error}. SimulEval's loop (--batch-size 1) stops there: the "
        f"finished {kind}s ({len(records)}) are in {log}; with --batch-size above 1 "
        f"the run finishes every other {kind} and names each one that does not fit"
    )


def _given(flag: str) -> bool:
    return bool(given_flags(sys.argv[1:], (flag,)))


def _serve(argv: list[str], batch_size: int | None, simuleval_main) -> None:
    """This package's agents get the session server; any other agent SimulEval's own."""
    from east_agent.simuleval_glue.adapter import StreamingAgent
    from east_agent.simuleval_glue.agent_server import (
        DEFAULT_SESSIONS,
        add_server_args,
        refuse_evaluator_flags,
        serve,
    )
    from east_agent.simuleval_glue.batch import parse_args

    in_folder = _given("--system-dir")
    agent_class = _system_dir_class() if in_folder else _agent_class()
    if not issubclass(agent_class, StreamingAgent):
        _check_simuleval_server_port(argv)
        simuleval_main()
        return
    refuse_evaluator_flags(argv)
    server_parser = argparse.ArgumentParser(prog="east-simuleval", add_help=False)
    add_server_args(server_parser)
    server_args, rest = server_parser.parse_known_args(argv)
    refuse_repeated(server_parser, argv)
    if in_folder:
        rest = _enter_system_dir(rest)
    sessions = ["--batch-size", str(batch_size or DEFAULT_SESSIONS)]
    if batch_size is None and "--batch-size" in rest:  # a folder's `batch_size` stands
        sessions = []
    args = parse_args(agent_class, [*rest, *sessions], given=argv)
    args.session_timeout = server_args.session_timeout
    args.batch_wait_ms = server_args.batch_wait_ms
    serve(agent_class, args)


def _check_simuleval_server_port(argv: list[str]) -> None:
    """SimulEval's own server (another agent's) listens on every interface: its
    `--remote-port` refused in one line as this package's server refuses it (before: a
    socket traceback, "Servname not supported", after the agent was built)."""
    from east_agent.simuleval_glue.agent_server import listening_sockets

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--remote-port", default=12321)  # SimulEval's default
    port = parser.parse_known_args(argv)[0].remote_port
    for taken in listening_sockets(None, port):  # every interface, IPv6 too, as tornado
        taken.close()


def _given_system_dir() -> Path | None:
    from simuleval.utils.arguments import check_argument

    return Path(check_argument("system_dir")).resolve() if _given("--system-dir") else None


def _with_system_dir_flags(argv: list[str]) -> list[str]:
    """`argv` and the flags of the `--system-dir`'s config it does not give."""
    from simuleval.utils.agent import get_system_config
    from simuleval.utils.arguments import check_argument, cli_argument_list

    folder = _given_system_dir()
    config = get_system_config(folder, check_argument("system_config") or "main.yaml")
    # SimulEval's list: the command line (less none of its server flags), then the config's
    # flags the command line does not give
    return [*argv, *cli_argument_list(config)[len(sys.argv) - 1 :]]


def _enter_system_dir(argv: list[str]) -> list[str]:
    """`argv` and the flags of the `--system-dir`'s config it does not give, with the folder
    as the working directory: its paths (`model_path: model`), and relative paths given on
    the command line too, are the folder's, as SimulEval's `build_system_from_dir` reads
    them."""
    with_flags = _with_system_dir_flags(argv)
    folder = _given_system_dir()
    assert folder is not None  # called with --system-dir given
    os.chdir(folder)
    return with_flags


BATCHED_SYSTEM_DIR = (
    "--batch-size above 1 with --system-dir: a batched run builds the agent of --agent or "
    "--agent-class from the command line's flags, not a folder's from its main.yaml; drop "
    "--batch-size (SimulEval's loop runs the folder one sentence at a time), or run its "
    "agent batched with main.yaml's flags given as flags (--agent-class CLASS --model-path "
    "DIR/model ...)"
)


def _run_batched(argv: list[str], batch_size: int) -> None:
    from simuleval.utils.agent import get_agent_class

    from east_agent.simuleval_glue.batch import parse_args, run_batched
    from east_agent.simuleval_glue.simuleval_fixes import refuse_computation_aware_for_text

    for flag in given_flags(argv, ("--standalone", "--remote-eval", "--slurm")):
        raise ValueError(f"--batch-size above 1 evaluates locally; drop {flag}")
    from east_agent.simuleval_glue.adapter import StreamingAgent

    agent_class = get_agent_class()
    if not issubclass(agent_class, StreamingAgent):
        raise ValueError(
            f"--batch-size above 1 runs this package's agents (east_agent/agent.py, "
            f"east_agent/waitk_agent.py); {agent_class.__name__} is not one: drop --batch-size"
        )
    args = parse_args(agent_class, [*argv, "--batch-size", str(batch_size)], given=argv)
    refuse_computation_aware_for_text(args.computation_aware, args.source_type)
    run_batched(agent_class, args)


if __name__ == "__main__":
    main()
