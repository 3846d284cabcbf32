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
  `encoder`);
- `{"task": "score", "checkpoint": ..., "identity": ..., "batch_size": ..., "gpus": ...,
  "samples": [{"src", "mt", "ref"}, ...]}`: one score a sample and the system score, as
  COMET gives them (about 0 to 1), or `error` with COMET's traceback.
The model stays loaded between requests for the same checkpoint (its path and `identity`,
the content's fingerprint that the parent sends: a file replaced at its path is loaded
again), one model at a time. Nothing is written to disk. Descriptors that did not reach it
(a wrapper interpreter that drops what it inherits) are named on its standard error, and
it exits with status 4 (`LOST_DESCRIPTORS`).
"""

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
    for line in requests:
        try:
            request = json.loads(line)
            answer = TASKS[request["task"]](request, loaded)
        except Exception:
            traceback.print_exc()
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def check(request: dict, loaded: dict) -> dict:
    try:
        import comet  # noqa: F401  (its own imports: torch, Lightning, transformers 4)
        import yaml
        from transformers import AutoConfig, AutoTokenizer
    except Exception:
        return {"error": traceback.format_exc(), "failed": "import"}
    encoder, hparams_encoder = None, None  # named in the answer once read
    try:
        checkpoint = Path(request["checkpoint"])
        hparams = yaml.safe_load((checkpoint.parents[1] / "hparams.yaml").read_text())
        hparams_encoder = hparams.get("pretrained_model") if isinstance(hparams, dict) else None
        encoder = saved_encoder(checkpoint) or hparams_encoder  # COMET loads the ckpt's
        if encoder is None:
            raise KeyError("pretrained_model: neither model.ckpt nor hparams.yaml names one")
        AutoConfig.from_pretrained(encoder)
        AutoTokenizer.from_pretrained(encoder)
    except Exception:
        named = encoder if isinstance(encoder, str) else None
        answer = {"error": traceback.format_exc(), "failed": "encoder", "encoder": named}
        if named is not None and named != hparams_encoder:
            answer["hparams_encoder"] = hparams_encoder
        return answer
    return {"checked": True}


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
