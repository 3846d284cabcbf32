"""COMET's side of `east_agent.common.comet_process`, run by the interpreter of COMET's own
environment as `python comet_child.py REQUESTS ANSWERS`. It imports COMET and the standard
library only (that environment has no east_agent).

It answers each request line read from the descriptor REQUESTS (JSON) with one line written
to the descriptor ANSWERS, until REQUESTS ends; its standard input, output and error are
COMET's own (whatever COMET, Lightning or transformers read or print there never meets a
request or an answer):
- `{"task": "check", "checkpoint": ...}`: COMET imports and the checkpoint's encoder (the
  tokenizer and configuration `model.ckpt` names, as COMET loads it) loads:
  `{"checked": true}`, or `error` with `failed` saying which of the two did not (`import`,
  `encoder`; and `unreachable`, what stopped one quick request to the hub, for an encoder
  neither a folder nor in the Hugging Face cache). An encoder that is either is never
  asked of the hub, by the check nor by the scoring (`HF_HUB_OFFLINE`, set at the child's
  first request, whichever: `offline_where_here`);
- `{"task": "score", "checkpoint": ..., "identity": ..., "batch_size": ..., "gpus": ...,
  "samples": [{"src", "mt", "ref"}, ...]}`: one score a sample and the system score, as
  COMET gives them (about 0 to 1), or `error` with COMET's traceback.
The model stays loaded between requests for the same checkpoint (its path and `identity`,
the content's fingerprint that the parent sends: a file replaced at its path is loaded
again), one model at a time. Nothing is written to disk. Descriptors that did not reach it
(a wrapper interpreter that drops what it inherits) are named on its standard error, and
it exits with status 4 (`LOST_DESCRIPTORS`).
"""

import functools
import gc
import json
import os
import sys
import traceback
from pathlib import Path

LOST_DESCRIPTORS = 4  # the exit status when the pipes did not reach this process


def serve(requests_fd: int, answers_fd: int) -> None:
    for name, fd in (("requests", requests_fd), ("answers", answers_fd)):
        try:  # not handed on to what COMET starts, which would hold it open after this
            os.set_inheritable(fd, False)  # process died
        except OSError:
            print(
                f"comet_child.py: descriptor {fd} (the {name}' pipe) is not open here: the "
                "interpreter was started by a wrapper that does not keep the descriptors it "
                "inherits (conda run, docker run -i and ssh relay only standard input and "
                "output); give the environment's own interpreter (ENV/bin/python), or a "
                "script that execs it",
                file=sys.stderr,
            )
            sys.exit(LOST_DESCRIPTORS)
    requests = os.fdopen(requests_fd, encoding="utf-8")
    answers = os.fdopen(answers_fd, "w", encoding="utf-8")
    loaded: dict[str, object] = {}
    for number, line in enumerate(requests):
        try:
            request = json.loads(line)
            if number == 0:  # a check, or a score in a child started again after one died
                offline_where_here(request["checkpoint"])
            answer = TASKS[request["task"]](request, loaded)
        except Exception:
            traceback.print_exc()
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def check(request: dict, loaded: dict) -> dict:
    encoder, hparams_encoder, unread, unreachable = None, None, None, None
    try:
        hparams_encoder, encoder = encoder_names(Path(request["checkpoint"]))
        unreachable = hub_unreachable(encoder) if isinstance(encoder, str) else None
    except Exception:
        unread = traceback.format_exc()
    try:
        import comet  # noqa: F401  (its own imports: torch, Lightning, transformers 4)
        from transformers import AutoConfig, AutoTokenizer
    except Exception:
        return {"error": traceback.format_exc(), "failed": "import"}
    if unread is not None or unreachable is not None:
        answer = {"error": unread or unreachable, "failed": "encoder"}
        if unreachable is not None:
            answer["unreachable"] = unreachable
    else:
        try:
            if encoder is None:
                raise KeyError("pretrained_model: neither model.ckpt nor hparams.yaml names one")
            AutoConfig.from_pretrained(encoder)
            AutoTokenizer.from_pretrained(encoder)
        except Exception:
            answer = {"error": traceback.format_exc(), "failed": "encoder"}
        else:
            return {"checked": True}
    named = encoder if isinstance(encoder, str) else None
    answer["encoder"] = named
    if named is not None and named != hparams_encoder:
        answer["hparams_encoder"] = hparams_encoder
    return answer


def encoder_names(checkpoint: Path) -> tuple:
    """The encoder hparams.yaml names, and the one COMET loads (model.ckpt's own, else that
    one); read once for a child's first request and its check alike (`_read_encoder_names`)."""
    hparams = checkpoint.parents[1] / "hparams.yaml"
    changed = (checkpoint.stat().st_mtime_ns, hparams.stat().st_mtime_ns)
    return _read_encoder_names(checkpoint, hparams, changed)


@functools.lru_cache(maxsize=4)
def _read_encoder_names(checkpoint: Path, hparams_file: Path, changed: tuple) -> tuple:
    import yaml

    hparams = yaml.safe_load(hparams_file.read_text())
    hparams_encoder = hparams.get("pretrained_model") if isinstance(hparams, dict) else None
    return hparams_encoder, saved_encoder(checkpoint) or hparams_encoder


HUB_TRY_SECONDS = 5
# a cached encoder's files: its configuration, and one of its tokenizer's
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "vocab.txt")
OFFLINE_BY_USER = any(
    os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
)  # as the child started: not what `offline_where_here` sets


def offline_where_here(checkpoint: str) -> None:
    """Before COMET's imports, which read HF_HUB_OFFLINE, at the child's first request:
    where the checkpoint's encoder is here (a folder, or in the Hugging Face cache), the hub
    is not asked for it, by the check nor by the scoring, for the child's life (before: a
    load of a cached encoder retried the hub for 23 s where it cannot be reached)."""
    try:
        _, encoder = encoder_names(Path(checkpoint))
    except Exception:
        return  # an unreadable checkpoint: its task says so
    if OFFLINE_BY_USER or not isinstance(encoder, str) or not encoder_here(encoder):
        return
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"  # for COMET's imports
    constants.HF_HUB_OFFLINE = True  # read as huggingface_hub was imported, just now


def encoder_here(encoder: str):  # no `bool | None`: COMET's Python may be 3.9
    """True for a folder, or a hub name in the Hugging Face cache (its configuration and
    tokenizer); False for a hub name that is not; None for neither (a folder not there)."""
    from huggingface_hub import try_to_load_from_cache

    folder = Path(encoder).expanduser()
    if folder.is_dir():
        return True
    if folder.is_absolute() or encoder.startswith((".", "~")) or encoder.count("/") > 1:
        return None  # no hub name: its load says at once that it is not there
    try:
        cached = [
            try_to_load_from_cache(encoder, name) for name in ("config.json", *TOKENIZER_FILES)
        ]
    except ValueError:  # no hub name either: the same
        return None
    return isinstance(cached[0], str) and any(isinstance(path, str) for path in cached[1:])


def hub_unreachable(encoder: str):  # no `str | None`: COMET's Python may be 3.9
    """For an encoder that is a hub name not in the cache, one quick try of the hub: None
    where it answers, or what the try met; None for any other encoder, or offline by the
    user (a load then fails at once where the files are not here)."""
    if OFFLINE_BY_USER or encoder_here(encoder) is not False:
        return None
    from huggingface_hub import constants

    return _hub_tried(constants.ENDPOINT, encoder)


def _hub_tried(endpoint: str, encoder: str):
    """None where the hub answers one request at once, or what stopped it."""
    import requests

    try:
        requests.head(f"{endpoint}/api/models/{encoder}", timeout=HUB_TRY_SECONDS)
    except requests.RequestException as error:
        return f"{type(error).__name__} from {endpoint}"
    return None


def saved_encoder(checkpoint: Path):  # no `str | None`: COMET's Python may be 3.9
    """The encoder name `model.ckpt` holds, which COMET loads (`load_from_checkpoint` reads
    `hparams.yaml` for the model's class alone: before, the check loaded the encoder
    hparams.yaml names, and a checkpoint whose own name did not load failed after all the
    decoding); None where the file does not unpickle here (COMET's load then fails on it).
    The weights are mapped, not read."""
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
        encoder = saved["hyper_parameters"]["pretrained_model"]
    except Exception:
        return None
    return encoder if isinstance(encoder, str) else None


def score(request: dict, loaded: dict) -> dict:
    from comet import load_from_checkpoint

    checkpoint = request["checkpoint"]
    key = (checkpoint, request["identity"])
    if loaded.get("key") != key:
        loaded.clear()  # the former model freed before the next loads (it is in cycles)
        gc.collect()
        loaded.update(key=key, model=load_from_checkpoint(checkpoint))
    output = loaded["model"].predict(
        request["samples"],
        batch_size=request["batch_size"],
        gpus=request["gpus"],
        progress_bar=False,
    )
    return {
        "scores": [float(value) for value in output.scores],
        "system_score": float(output.system_score),
    }


TASKS = {"check": check, "score": score}

if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
