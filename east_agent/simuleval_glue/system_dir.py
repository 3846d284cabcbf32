"""`east-package-system`: a SimulEval `--system-dir` submission folder for a checkpoint.

    east-package-system submission/ --model-path models/EAST-8B \\
        src_lang=de tgt_lang=en latency=low num_beams=5 torch_dtype=bfloat16

writes

    submission/
      main.yaml   agent_class + the agent's flags (model_path: model)
      model/      the checkpoint (a symbolic link, or with --copy-model a copy of the
                  files transformers loads from its top level: no subfolder, model card, plot)
      adapter/    with adapter_path=DIR: that LoRA adapter, linked or copied the same
                  way (adapter_path: adapter)

which any SimulEval 1.1.4 evaluator runs as
`simuleval --system-dir submission --source ... --target ... --output ...` (relative paths
in main.yaml are resolved inside the folder). SimulEval turns every YAML boolean into a
bare flag, `false` included, and splits values on spaces; this command checks the flags
against the agent's own parser, leaves out false booleans and refuses values with spaces.
The model is --model-path's (a `model_path=` flag is refused), a `device=` must be one
torch knows (this machine need not have it), and an adapter must be a peft adapter; the
model and adapter must hold their weights (safetensors headers read, no weights loaded),
the model's config.json, tokenizer, EAST tokens and chat template must load as the run
loads them, and the flags are checked against the model as the system's run will check
them (its positions, its prompt's length). The folder is new: one there already, or one
that appears while the model is copied, is never replaced.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from east_agent.common.arguments import (
    ArgumentsRefused,
    checked_device,
    parse_quietly,
    refuse_unknown_first,
    repeated_flag,
)
from east_agent.common.atomic import atomic_path, check_folder_path
from east_agent.common.entry import command_line
from east_agent.common.fingerprint import MODEL_FILE_SUFFIXES, is_hub_id

if TYPE_CHECKING:
    from east_agent.simuleval_glue.adapter import StreamingAgent

AGENT_CLASSES = {
    "east": "east_agent.agent.EastAgent",
    "waitk": "east_agent.waitk_agent.WaitkAgent",
}


def agent_class(agent: str) -> type[StreamingAgent]:
    from simuleval.utils.agent import get_agent_class_from_string

    return get_agent_class_from_string(AGENT_CLASSES[agent])


def agent_parser(agent: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    agent_class(agent).add_args(parser)
    parser.add_argument("--device")
    return parser


def check_flag_values(flags: dict[str, object]) -> None:
    """Refuse a `model_path=` (the packaged model is --model-path's) and a `device=` torch
    does not know (a CUDA one this machine lacks is fine: the evaluator's may have it)."""
    if "model_path" in flags:
        raise ValueError(
            f"model_path={flags['model_path']}: give the model with --model-path "
            "(it is packaged as model/)"
        )
    if "device" in flags:
        checked_device(str(flags["device"]), "device", needed_here=False)


def flag_dests(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each spelling of the parser's flags as a key (`latency_level`), to its setting."""
    return {
        option.lstrip("-").replace("-", "_"): action.dest
        for action in parser._actions
        for option in action.option_strings
    }


def repeated_setting(parser: argparse.ArgumentParser, keys: list[str]) -> tuple[int, int] | None:
    """Where two of `keys` first name one setting of `parser`, in one spelling or two
    (`latency`, `latency_level`): their indices, or None."""
    dests = flag_dests(parser)
    first: dict[str, int] = {}  # a setting: the index of the key that first named it
    for index, key in enumerate(keys):
        setting = dests.get(key, key)
        if setting in first:
            return first[setting], index
        first[setting] = index
    return None


def split_by_simuleval(value: object) -> bool:
    """Whether SimulEval would split a YAML value into other flags' words: a text that is
    empty or holds a space (`latency: high low` runs at high)."""
    return isinstance(value, str) and (not value or any(char.isspace() for char in value))


def check_repeated_flags(agent: str, flags: list[tuple[str, str]]) -> None:
    """A setting given twice, in one spelling or two (`latency=high latency_level=low`),
    refused (before: the last one kept, without a word)."""
    pair = repeated_setting(agent_parser(agent), [key for key, _ in flags])
    if pair is not None:
        (key, value), (again, other) = flags[pair[0]], flags[pair[1]]
        raise ValueError(f"{key}={value} and {again}={other}: one setting given twice")


def system_config(agent: str, flags: dict[str, object]) -> dict[str, object]:
    """main.yaml's content; raises on a flag the agent does not know or SimulEval mangles."""
    check_flag_values(flags)
    parser = agent_parser(agent)
    check_flag_names(agent, parser, flags)
    dests = flag_dests(parser)
    switches = {action.dest for action in parser._actions if action.nargs == 0}
    config: dict[str, object] = {"agent_class": AGENT_CLASSES[agent], "model_path": "model"}
    for key, value in flags.items():
        if dests.get(key, key) in switches:
            value = switch_value(key, value)
        if value == "":  # before: "SimulEval splits YAML values on spaces"
            raise ValueError(f"{key}=: no value (leave the flag out for its default)")
        if split_by_simuleval(value):
            raise ValueError(f"{key}={value!r}: SimulEval splits YAML values on spaces")
        if value is not False:  # SimulEval would turn `false` into the bare (true) flag
            config[key] = value
    given_dests = {dests.get(key, key) for key in config}
    needed = [
        action.option_strings[0].removeprefix("--").replace("-", "_")
        for action in parser._actions
        if action.required and action.dest not in given_dests and action.dest != "model_path"
    ]
    if needed:  # before: blamed on the settings given, in flag spelling (--src-lang)
        settings = " ".join(f"{name}=..." for name in needed)
        them = "it" if len(needed) == 1 else "them"
        raise ValueError(f"the {agent} agent needs {settings}: give {them} as settings")
    arguments = flag_arguments(without_paths(config), model_path="model")
    try:
        parsed = parse_quietly(parser, arguments)
    except ArgumentsRefused as why:
        given = " ".join(f"{key}={value}" for key, value in flags.items())
        raise ValueError(f"the {agent} agent refuses {given or 'no flags'}: {why}") from None
    agent_class(agent).decoding_config(parsed)  # values its decoder refuses, refused here
    # as the agent reads them (`max_new_tokens=010` is 10, not YAML 1.1's 8)
    return {key: getattr(parsed, dests.get(key, key), value) for key, value in config.items()}


def switch_value(key: str, value: object) -> bool:
    """A yes/no flag's value: true or false (`document_level=true`)."""
    if isinstance(value, bool):
        return value
    switch = {"true": True, "false": False}.get(str(value).strip().lower())
    if switch is None:
        raise ValueError(f"{key}={value}: a yes/no flag, true or false")
    return switch


def without_paths(config: dict[str, object]) -> dict[str, object]:
    """main.yaml's agent flags, less its class and model path."""
    return {key: value for key, value in config.items() if key not in ("agent_class", "model_path")}


def flag_arguments(settings: dict[str, object], model_path: str | Path) -> list[str]:
    """`settings` as the agent's command line (true: the bare flag), after `--model-path`."""
    arguments = ["--model-path", str(model_path)]
    for key, value in settings.items():
        option = "--" + key.replace("_", "-")
        arguments += [option] if value is True else [option, str(value)]
    return arguments


def check_flag_names(agent: str, parser: argparse.ArgumentParser, flags: dict) -> None:
    """A flag the agent lacks is a typo: named as given, the closest flag suggested."""
    spelt = (o.lstrip("-").replace("-", "_") for a in parser._actions for o in a.option_strings)
    known = sorted({*(action.dest for action in parser._actions), *spelt})
    for key, value in flags.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}=?)" if close else ""
            raise ValueError(f"{key}={value}: the {agent} agent has no such flag{hint}")


def adapter_folder(flags: dict[str, object]) -> Path | None:
    """The folder of an `adapter_path=` flag (None without one); not a peft adapter (no
    adapter_config.json) is refused."""
    from east_agent.lm.checkpoint import check_adapter_path  # torch: once the work starts

    if "adapter_path" not in flags:
        return None
    given = str(flags["adapter_path"])
    check_adapter_path(given, "adapter_path")  # as given: a link is told from what it names
    return Path(given).resolve()


def package_folder(source: Path, target: Path, copy: bool) -> list[str]:
    """`source` at `target`: a symbolic link to it, or a folder of copies of what
    transformers and peft load from it (`MODEL_FILE_SUFFIXES`: files at its top level,
    a link to a file copied as that file); never a subfolder or a link to one (a
    submission packaged inside the model folder, `checkpoint-*/`), nor a model card, a
    plot, a hidden file. The names left out (a folder's with a `/`)."""
    if not copy:
        os.symlink(source, target, target_is_directory=True)
        return []
    target.mkdir()
    left_out = []
    for path in sorted(source.iterdir()):
        loaded = not path.name.startswith(".") and path.suffix in MODEL_FILE_SUFFIXES
        if loaded and path.is_file():
            shutil.copyfile(path, target / path.name)
        else:
            left_out.append(path.name + ("/" if path.is_dir() else ""))
    return left_out


def write_system_dir(
    output: str | Path,
    model_path: str | Path,
    flags: dict[str, object],
    agent: str = "east",
    copy_model: bool = False,
) -> Path:
    """The submission folder `output` (see the module's docstring); everything is checked
    before anything is written or copied."""
    from east_agent.lm.checkpoint import (  # torch: not for reading the flags
        CheckpointError,
        check_model_path,
        check_weights,
        check_weights_readable,
    )

    if not str(output):  # before: ". exists; choose a new folder"
        raise ValueError("output '': name the new folder")
    output = Path(output)
    check_new_folder(output)
    if is_hub_id(model_path) and not Path(model_path).exists():
        raise CheckpointError(
            f"model path {str(model_path)!r} does not exist (a submission packages a local "
            "checkpoint folder, not a hub id)"
        )
    check_model_path(model_path)  # not there, a file, or no config.json: each named
    check_weights(model_path, "--model-path")
    check_weights_readable(model_path, "--model-path")  # headers only, not the weights
    given, model_path = str(model_path), Path(model_path).resolve()
    adapter = adapter_folder(flags)
    if copy_model:
        check_outside(output, [model_path, adapter])
    packaged = {**flags, "adapter_path": "adapter"} if adapter is not None else flags
    config = system_config(agent, packaged)  # resolved inside the folder
    check_with_model(agent, config, model_path, adapter, given)
    packaged_folders = {"model": model_path, "adapter": adapter}
    left_out = {}
    try:
        with atomic_path(output, new=True) as temporary:
            temporary.mkdir(parents=True)
            for name, source in packaged_folders.items():
                if source is not None:
                    left_out[name] = package_folder(source, temporary / name, copy_model)
            (temporary / "main.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    except FileExistsError:
        raise FileExistsError(
            f"{output} appeared while this command wrote the submission; nothing replaced, "
            "choose a new folder"
        ) from None
    for name, names in left_out.items():
        if names:
            print(
                f"{output / name}: a copy of {packaged_folders[name]} without "
                f"{', '.join(names)} (no file transformers or peft loads)"
            )
    return output


def check_new_folder(output: Path) -> None:
    """The submission's folder must be new, and not inside a file."""
    check_folder_path(output, "output")
    if output.exists() or output.is_symlink():
        raise FileExistsError(f"{output} exists; choose a new folder")


def check_outside(output: Path, folders: list[Path | None]) -> None:
    """A copied model (or adapter) must not hold the submission: the copy would copy itself."""
    inside = output.resolve()
    for folder in filter(None, folders):
        if inside == folder or folder in inside.parents:
            raise ValueError(
                f"{output}: inside {folder}, which --copy-model copies into it; choose a "
                "folder outside it"
            )


def check_with_model(
    agent: str,
    config: dict[str, object],
    model_path: Path,
    adapter: Path | None,
    given: str | None = None,
) -> None:
    """What the packaged system reads of its model before the weights (`check_checkpoint`)
    and checks of its flags against it when it runs (a --max-context the model holds and
    the prompt leaves room in, a long-form cache budget), checked now: refused here, not
    by the evaluator's run; `given`: the model folder as named (in the messages)."""
    from east_agent.lm.checkpoint import check_adapter_base
    from east_agent.simuleval_glue.adapter import check_checkpoint, check_max_context

    settings = without_paths(config)
    if adapter is not None:
        check_adapter_base(model_path, adapter, ("--model-path", "adapter_path"))
        settings["adapter_path"] = adapter
    args = agent_parser(agent).parse_args(flag_arguments(settings, model_path=model_path))
    chosen = agent_class(agent)
    decoding = chosen.decoding_config(args)
    check_checkpoint(chosen, args, decoding, given)
    check_max_context(args, decoding.max_context)
    chosen.check_with_tokenizer(args, decoding)


def parse_flag(text: str) -> tuple[str, str]:
    """`key=value`, the value as text: typed by the agent's parser (`system_config`), not
    as YAML 1.1, which reads `010` as 8 and a folder `0755` as 493."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected flag=value")
    key, value = text.split("=", 1)
    return key.replace("-", "_"), value


@command_line("east-package-system")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="package a checkpoint as a --system-dir")
    parser.add_argument("output", help="new folder")
    parser.add_argument("--model-path", required=True, help="the checkpoint folder to package")
    parser.add_argument(
        "--agent",
        default="east",
        choices=sorted(AGENT_CLASSES),
        help="the agent the system runs (default: %(default)s)",
    )
    parser.add_argument(
        "--copy-model",
        action="store_true",
        help="copy the model (and adapter) instead of linking: the files transformers and "
        "peft load from the folder's top level, no subfolder",
    )
    parser.add_argument("flags", nargs="*", type=parse_flag, help="agent flags: key=value")
    argv = sys.argv[1:] if argv is None else argv
    refuse_unknown_first(parser, argv, intermixed=True)
    args = parser.parse_intermixed_args(argv)  # key=value after the options too
    if (repeated := repeated_flag(parser, argv)) is not None:
        parser.error(repeated)
    check_repeated_flags(args.agent, args.flags)
    folder = write_system_dir(
        args.output, args.model_path, dict(args.flags), args.agent, args.copy_model
    )
    shown = shlex.quote(str(folder))  # pasted into a shell: a path with a space stays one
    print(f"wrote {folder}; run: simuleval --system-dir {shown} --source ... --target ...")


if __name__ == "__main__":
    main()
