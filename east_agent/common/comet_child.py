"""COMET's side of `east_agent.common.comet_process`, run by the interpreter of COMET's own
environment. It imports COMET and the standard library only (that environment has no
east_agent).

    python comet_child.py serve              answers each request line on standard input
                                             (JSON: the checkpoint, batch size, GPUs and
                                             samples `src`, `mt`, `ref`) with one line on
                                             standard output until standard input ends
    python comet_child.py check CHECKPOINT   COMET imports (else exit status 1), and the
                                             checkpoint's encoder (its tokenizer and
                                             configuration) loads (else `NO_ENCODER`)

An answer is one score a sample and the system score, as COMET gives them (about 0 to 1),
or `error` with COMET's traceback. The model stays loaded between requests for the same
checkpoint (its path and `identity`, the content's fingerprint that the parent sends: a
file replaced at its path is loaded again), one model at a time. Whatever COMET
and Lightning print goes to standard error, so standard output carries answers only.
Nothing is written to disk.
"""

import gc
import json
import os
import sys
import traceback
from pathlib import Path


def serve() -> None:
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    loaded = {}
    for line in sys.stdin:
        try:
            answer = score(json.loads(line), loaded)
        except Exception:
            traceback.print_exc()
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


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


NO_ENCODER = 4  # comet_process.CHECK_NO_ENCODER


def check(checkpoint: str) -> None:
    import comet  # noqa: F401  (its own imports: torch, Lightning, transformers 4)
    import yaml
    from transformers import AutoConfig, AutoTokenizer

    try:
        hparams = yaml.safe_load((Path(checkpoint).parents[1] / "hparams.yaml").read_text())
        encoder = hparams["pretrained_model"]
        AutoConfig.from_pretrained(encoder)
        AutoTokenizer.from_pretrained(encoder)
    except Exception:
        traceback.print_exc()
        sys.exit(NO_ENCODER)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        check(sys.argv[2])
