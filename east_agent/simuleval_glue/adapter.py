"""The base of this package's SimulEval agents: SimulEval units in, decoder steps out.

SimulEval sends one source unit per step; the agent hands it to a streaming decoder
(`east_agent.decoding.streaming`) and returns every word the decoder wrote at that step in one
`WriteAction`. The agents themselves (`east_agent/agent.py`, `east_agent/waitk_agent.py`)
only pick the decoder; no `@entrypoint` lives here, so importing this module registers no
agent with SimulEval.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from simuleval.agents import ReadAction, TextToTextAgent, WriteAction

from east_agent.common.arguments import (
    TORCH_DTYPES,
    checked_device,
    non_negative_int,
    positive_int,
    torch_dtype_of,
)
from east_agent.common.entry import ended_as_stock_simuleval, raise_if_signalled
from east_agent.decoding.long_form import (
    DEFAULT_CONTEXT_WORDS,
    DEFAULT_SEGMENT_UNITS,
    cache_budget_of,
    capped_note,
)
from east_agent.decoding.prompt import LATENCY_LEVELS, known_language_name
from east_agent.decoding.streaming import StreamingDecoder
from east_agent.lm import KV_CACHES
from east_agent.lm.checkpoint import (
    check_adapter_base,
    check_adapter_path,
    check_config,
    check_hub_model,
    check_weights,
    check_weights_readable,
    is_hub_id,
    load_east_checkpoint,
)
from east_agent.simuleval_glue.data_files import (
    check_control_tokens,
    check_sentences_fit,
    check_source_file,
    check_units_split,
)
from east_agent.simuleval_glue.stock_command import checked_stock_command

if TYPE_CHECKING:
    from simuleval.agents.states import AgentStates
    from simuleval.data.segments import Segment
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from east_agent.decoding.east import DecoderConfig
    from east_agent.decoding.waitk import WaitkConfig

    DecodingConfig = DecoderConfig | WaitkConfig

logger = logging.getLogger("east_agent")
# an agent class's decoding config: what `decoding_config` makes, the other methods take
ConfigT = TypeVar("ConfigT", bound="DecodingConfig")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags that load a checkpoint."""
    parser.add_argument("--model-path", required=True, help="checkpoint directory or hub id")
    parser.add_argument("--adapter-path", default=None, help="LoRA adapter to merge (peft)")
    parser.add_argument("--torch-dtype", default="auto", choices=TORCH_DTYPES)
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a checkpoint's own modelling code (off by default)",
    )


def add_decoding_args(parser: argparse.ArgumentParser) -> None:
    """Flags of the translation direction and the decoding limits."""
    parser.add_argument("--src-lang", required=True, help="source language: ISO code or name")
    parser.add_argument("--tgt-lang", required=True, help="target language: ISO code or name")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        help="cap on the tokens of one chunk (wait-k: of its final write; a word of its "
        "schedule takes at most 32)",
    )
    parser.add_argument(
        "--max-context", type=int, default=None, help="token limit (default: the model's)"
    )
    parser.add_argument(
        "--kv-cache",
        default="auto",
        choices=KV_CACHES,
        help="static: preallocated cache, lean forward, CUDA graphs and compiled layers on "
        "GPUs (Llama family); compiled: static with compiled layers on any device; "
        "dynamic: transformers' DynamicCache; auto: static where it checks out",
    )


def add_long_form_args(parser: argparse.ArgumentParser) -> None:
    """Flags of long-form input (`east_agent.decoding.long_form`)."""
    parser.add_argument(
        "--long-form",
        action="store_true",
        help="one unbounded source per line (a talk): segments at sentence ends, bounded cache",
    )
    parser.add_argument(
        "--cache-budget",
        type=positive_int,
        default=None,
        help="--long-form: tokens a stream's cache may hold (default: half the context)",
    )
    parser.add_argument(
        "--context-words",
        type=non_negative_int,
        default=DEFAULT_CONTEXT_WORDS,
        help="--long-form: source and target words of a sentence cut by the budget or "
        "--segment-units carried into the segment that goes on with it (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--context-across-sentences",
        action="store_true",
        help="--long-form: carry the last --context-words words past sentence ends too "
        "(discourse; for checkpoints trained on documents)",
    )
    parser.add_argument(
        "--segment-units",
        type=positive_int,
        default=DEFAULT_SEGMENT_UNITS,
        help="--long-form: a write is forced after this many units without a sentence end "
        "(default: %(default)s)",
    )


def add_latency_arg(parser: argparse.ArgumentParser, note: str = "") -> None:
    """`--latency`; `note`: what the agent adds to its help (after the default)."""
    parser.add_argument(
        "--latency",
        "--latency-level",
        dest="latency",
        default="low",
        choices=LATENCY_LEVELS,
        help=f"the latency level asked for in the prompt (default low{note}; with the stock "
        "`simuleval` command write --latency-level: it reads --latency as --latency-metrics)",
    )


def check_precision(args: argparse.Namespace, given_as: str = "--torch-dtype {}") -> None:
    """SimulEval's --fp16 / --dtype beside --torch-dtype: refused where they disagree
    (before: `--torch-dtype bfloat16 --fp16` ran in float16, recorded as bfloat16; `--dtype
    fp32` left a half-precision model as it was). `given_as`: where the torch dtype was
    set, `{}` its value (a `--system-dir`'s `main.yaml` names its line)."""
    dtype = getattr(args, "dtype", None)
    half = getattr(args, "fp16", False) or dtype == "fp16"
    asked = "--fp16" if getattr(args, "fp16", False) else f"--dtype {dtype}"
    torch_dtype = given_as.format(args.torch_dtype)
    if half and args.torch_dtype not in ("auto", "float16"):
        raise ValueError(
            f"{asked} with {torch_dtype}: two precisions; give one "
            "(--torch-dtype float16 loads the weights in half precision)"
        )
    if dtype == "fp32" and args.torch_dtype != "float32":
        raise ValueError(
            f"--dtype fp32 with {torch_dtype}: SimulEval's --dtype fp32 "
            "converts no model this package loads; give --torch-dtype float32"
        )


def model_positions(args: argparse.Namespace) -> int:
    """The checkpoint's max_position_embeddings, reading only its config."""
    return checkpoint_config(args).max_position_embeddings


def checkpoint_config(args: argparse.Namespace) -> PretrainedConfig:
    """The checkpoint's config as transformers reads it (no weights), read once in this
    process while its config.json is as it was (a run's checks ask for it more than once)."""
    config_file = Path(args.model_path) / "config.json"
    state = stat_of(config_file) if config_file.is_file() else ()
    return _read_config(str(args.model_path), args.trust_remote_code, state)


@lru_cache(maxsize=2)
def _read_config(model_path: str, trust_remote_code: bool, state: tuple):
    from transformers import AutoConfig

    from east_agent.lm.checkpoint import check_model_path

    check_model_path(model_path)
    return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)


def check_beams_in_vocabulary(args: argparse.Namespace, num_beams: int) -> None:
    """A --num-beams whose beam steps the checkpoint's vocabulary can fill, read from its
    config, tokenizer and generation config (before: refused by `east-bench` alone; a run
    failed at its first beam search, after the model loaded). A hub id is left to the run."""
    if num_beams == 1 or not (Path(args.model_path) / "config.json").is_file():
        return
    from east_agent.decoding.chunk_search import check_beams_fit
    from east_agent.lm.checkpoint import east_token_ids, generation_eos

    config = checkpoint_config(args)
    eos = generation_eos(args.model_path, config)
    stops = east_token_ids(checkpoint_tokenizer(args)(), eos).write_stops
    check_beams_fit(num_beams, len(stops), config.get_text_config().vocab_size)


def check_max_context(args: argparse.Namespace, max_context: int | None) -> None:
    """Refuse a --max-context the checkpoint cannot hold, reading only its config."""
    if max_context is None:
        return
    from east_agent.decoding.streaming import context_limit

    context_limit(max_context, model_positions(args))


def checkpoint_tokenizer(args: argparse.Namespace) -> Callable[[], Any]:
    """The checkpoint's tokenizer, loaded on the first call (only checks that need it),
    and not again in this process while its files are as they were (SimulEval's loop checks
    once before its folder changes, and again as it builds the agent, which may name the
    folder otherwise: a system folder's `model` from inside it)."""
    state = tokenizer_files_state(args.model_path)
    where = state[0] if state else str(args.model_path)  # a local folder: as resolved
    return partial(_checks_tokenizer, where, args.trust_remote_code, state)


def tokenizer_files_state(model_path: str | Path) -> tuple:
    """A local checkpoint folder's files but its weights (what its tokenizer is read from
    among them), as they are now."""
    folder = Path(model_path).resolve()
    if not folder.is_dir():
        return ()  # a hub id: its cached files do not change under a run
    weights = (".safetensors", ".bin", ".pt", ".pth")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in weights)
    return (str(folder), *((path.name, *stat_of(path)) for path in files))


def stat_of(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


@lru_cache(maxsize=2)
def _checks_tokenizer(model_path: str, trust_remote_code: bool, state: tuple):
    from east_agent.lm.checkpoint import load_tokenizer

    return load_tokenizer(model_path, trust_remote_code)


def prompt_room_checked(config: DecodingConfig) -> bool:
    """Whether a decoder config has room to check against its checkpoint (`check_prompt_room`):
    a --max-context, or long-form input's cache budget."""
    return config.max_context is not None or getattr(config, "long_form", False)


def check_prompt_room(
    tokenizer: Callable[[], Any],
    config: DecodingConfig,
    fixed_prompt: Callable[..., tuple[str, ...]],
    args: argparse.Namespace,
) -> None:
    """Refuse a --max-context no sentence fits in after the decoder's fixed prompt, or a
    long-form cache budget no segment fits in, reading the checkpoint's config and
    tokenizer only (before: every sentence failed after the model loaded; a budget was
    found as the decoder was built, after the run folder had changed);
    `fixed_prompt(tokenizer, config)`: the decoder's prompt pieces."""
    if not prompt_room_checked(config):
        return
    long_form = getattr(config, "long_form", False)
    from east_agent.decoding.long_form import checked_budget, prompt_tokens
    from east_agent.decoding.streaming import check_sentence_room

    loaded = tokenizer()
    fixed = prompt_tokens(loaded, *fixed_prompt(loaded, config))
    if long_form:
        checked_budget(config.cache_budget, config.max_context or model_positions(args), fixed)
    else:
        assert config.max_context is not None  # prompt_room_checked, and not long form
        check_sentence_room(config.max_context, fixed)
        if source := getattr(args, "source", None):
            # a --system-dir agent's flags are its main.yaml's: the span is the evaluator's
            indices = (getattr(args, "start_index", 0), getattr(args, "end_index", -1))
            check_sentences_fit(source, indices, loaded, config.src_lang, fixed, config.max_context)


def load_east(
    args: argparse.Namespace, max_context: int | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An EAST checkpoint (and its tokenizer, as the checks loaded it) as the model flags
    say."""
    check_max_context(args, max_context)
    return load_east_checkpoint(
        args.model_path,
        adapter_path=args.adapter_path,
        torch_dtype=torch_dtype_of(args),
        device=getattr(args, "device", "cpu"),
        trust_remote_code=args.trust_remote_code,
        tokenizer_loader=checkpoint_tokenizer(args),
    )


class StreamingAgent(TextToTextAgent, Generic[ConfigT]):
    """Subclasses turn their flags into one decoding config (`decoding_config`, checked
    before anything loads), load their model (`load`) and build their decoder from the
    config (`build_decoder`); class methods, so that a batched run or a server builds one
    decoder with many streams and no agent."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.config: ConfigT = self.checked_config(args)  # the data files among the checks
        self.check_with_tokenizer(args, self.config)
        self.model, self.tokenizer = self.load(args, self.config)
        self.decoder: StreamingDecoder = self.build_decoder(self.model, self.tokenizer, self.config)
        self.units_pushed = 0
        super().__init__(args)  # calls reset()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StreamingAgent[ConfigT]:
        """How SimulEval builds the agent; under its own `simuleval` command a refusal ends
        the command in one line, as under `east-simuleval`."""
        with ended_as_stock_simuleval():
            return cls(checked_stock_command(args))

    @classmethod
    def decoding_config(cls, args: argparse.Namespace) -> ConfigT:
        """The decoder's settings, from the flags, once (a bad value is refused here)."""
        raise NotImplementedError

    @classmethod
    def checked_config(cls, args: argparse.Namespace) -> ConfigT:
        """`decoding_config`, a --device this machine has, the source and reference
        files, a checkpoint config transformers reads, and a --max-context the checkpoint
        can hold (its config read, not its weights): what a run checks before it writes or
        loads anything."""
        config = cls.decoding_config(args)
        check_precision(args)
        checked_device(getattr(args, "device", "cpu"), "--device")
        if is_hub_id(args.model_path) and not Path(args.model_path).exists():
            # asked of the hub once (before: a mistyped models/east-dem, 48 s of retries)
            check_hub_model(str(args.model_path), "--model-path")
        check_weights(args.model_path, "--model-path")
        # headers only (before: weights cut short were found by the load, a finished log
        # emptied by then)
        check_weights_readable(args.model_path, "--model-path")
        adapter_path = getattr(args, "adapter_path", None)
        check_adapter_path(adapter_path)
        if adapter_path is not None:
            check_adapter_base(args.model_path, adapter_path)
        source = getattr(args, "source", None)
        target, unit = getattr(args, "target", None), getattr(args, "eval_latency_unit", "word")
        check_source_file(source, target, unit)  # before any checkpoint file
        check_units_split(source, config.src_lang)
        # the config read as transformers reads it, before --max-context reads it
        check_config(args.model_path, "--model-path", getattr(args, "trust_remote_code", False))
        check_max_context(args, config.max_context)
        return config

    @classmethod
    def resolved_settings(cls, args: argparse.Namespace) -> dict:
        """What the flags resolve to, recorded beside them so that a resume compares these
        (`run_folder.RESOLVED_IN`): the languages the prompt names and, where the
        checkpoint's config is here and readable, the context the decoder holds and, in
        long form, its cache budget."""
        from east_agent.simuleval_glue.run_folder import EFFECTIVE_CONTEXT, PROMPT_LANGUAGES

        languages = [known_language_name(args.src_lang), known_language_name(args.tgt_lang)]
        resolved: dict[str, Any] = {PROMPT_LANGUAGES: languages}
        if not (Path(args.model_path) / "config.json").is_file():
            return resolved  # a hub name: its config is not read here
        try:
            context = args.max_context or model_positions(args)
        except (OSError, ValueError, AttributeError):  # the run refuses that config itself
            return resolved
        budget = cache_budget_of(args.cache_budget, context) if args.long_form else None
        resolved[EFFECTIVE_CONTEXT] = {"max_context": context, "cache_budget": budget}
        return resolved

    @classmethod
    def check_with_tokenizer(cls, args: argparse.Namespace, config: ConfigT) -> None:
        """What a run checks reading the checkpoint's tokenizer, once the flags, files and
        output folder passed (`checked_config`, `run_folder.writing`), before the folder
        changes or the weights load: a checkpoint whose config, tokenizer, EAST tokens or
        chat template do not load (`check_checkpoint`), a --max-context or long-form cache
        budget the fixed prompt leaves no room in, a source holding one of its control
        tokens."""
        check_checkpoint(cls, args, config)  # its config, tokenizer and chat template load
        tokenizer = checkpoint_tokenizer(args)
        check_prompt_room(tokenizer, config, cls.fixed_prompt, args)
        if getattr(args, "source", None):
            check_control_tokens(args.source, tokenizer())

    @classmethod
    def fixed_prompt(cls, tokenizer: PreTrainedTokenizerBase, config: ConfigT) -> tuple[str, ...]:
        """The prompt pieces of the decoder `build_decoder` makes for `config`."""
        raise NotImplementedError

    @classmethod
    def load(
        cls, args: argparse.Namespace, config: ConfigT
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """(model, tokenizer) as the model flags say."""
        raise NotImplementedError

    @classmethod
    def build_decoder(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: ConfigT,
        streams: int = 1,
    ) -> StreamingDecoder:
        raise NotImplementedError

    def reset(self) -> None:
        super().reset()
        self.decoder.reset()
        self.units_pushed = 0

    def to(self, device: str, *args: object, fp16: bool = False, **kwargs: object) -> None:
        """SimulEval's --device / --fp16: the model was loaded on `device` already."""
        import torch

        moved = str(self.decoder.lm.device) != str(torch.device(device))
        if fp16 and self.model.dtype != torch.float16:
            self.model.half()
            moved = True
        if moved:
            self.model.to(device)  # type: ignore[arg-type]  # transformers' @wraps leaves `to` unbound
            self.decoder = self.build_decoder(self.model, self.tokenizer, self.config)

    def policy(self) -> ReadAction | WriteAction:
        # SimulEval's own loop (`--batch-size 1`) checks for no signal: a Ctrl-C a library
        # swallowed (as the model loaded) ends the run here, the finished sentences in the
        # log (before: every sentence translated and scored, then "interrupted")
        raise_if_signalled()
        new_units = self.states.source[self.units_pushed :]
        self.units_pushed = len(self.states.source)
        source_finished = self.states.source_finished
        written: list[str] = []
        finished = False
        for position, unit in enumerate(new_units):
            is_last = source_finished and position == len(new_units) - 1
            step = self.decoder.push_unit(unit, is_last=is_last)
            if step.chunk:
                written.append(step.chunk)
            finished = step.finished
        if source_finished and not finished:
            if self.units_pushed == 0:
                logger.warning("empty source sentence: writing an empty translation")
            step = self.decoder.finish()
            if step.chunk:
                written.append(step.chunk)
            finished = True
        if finished:
            counters = self.decoder.streams[0].translation().counters
            if note := capped_note(counters, "this talk"):
                logger.warning(note)
        if written or finished:
            return WriteAction("".join(written), finished=finished)
        return ReadAction()

    def pop(self, states: AgentStates | None = None) -> Segment:
        """SimulEval leaves a typing object in `tgt_lang`, which its server cannot send."""
        segment = super().pop(states)
        if hasattr(segment, "tgt_lang") and not isinstance(segment.tgt_lang, (str, type(None))):
            segment.tgt_lang = self.config.tgt_lang
        return segment


def check_checkpoint(
    chosen: type[StreamingAgent],
    args: argparse.Namespace,
    decoding: DecodingConfig,
    shown: str | None = None,
) -> None:
    """What a run of the agent class `chosen` reads of its checkpoint before the weights,
    read now: its `config.json` as transformers reads it, its tokenizer (loaded once,
    cached for the run's own checks), the EAST tokens (for an EAST prompt) and the chat
    template its prompt is rendered with; each refused in one line naming --model-path's
    folder (`shown`: as named; before: a traceback, or a failure once the weights had
    loaded)."""
    from jinja2 import TemplateError

    from east_agent.lm.checkpoint import east_token_ids, loading

    shown = shown or str(args.model_path)
    check_config(args.model_path, "--model-path", args.trust_remote_code, shown)
    with loading(shown, "--model-path", part="its tokenizer"):
        tokenizer = checkpoint_tokenizer(args)()
    try:
        if getattr(decoding, "prompt", "east") == "east":  # an offline wait-k prompt: none
            east_token_ids(tokenizer)
        chosen.fixed_prompt(tokenizer, decoding)  # its chat template
    except ValueError as error:
        raise ValueError(f"--model-path {shown}: {error}") from None
    except TemplateError as error:  # before: jinja's message alone ("unknown tag 'x'")
        raise ValueError(
            f"--model-path {shown}: its chat template cannot be rendered "
            f"({type(error).__name__}: {error})"
        ) from None
