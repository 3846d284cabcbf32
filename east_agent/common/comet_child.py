"""COMET's side of `east_agent.common.comet_process`, run by the interpreter of COMET's own
environment. It imports COMET and the standard library only (that environment has no
east_agent).

    python comet_child.py score < REQUEST    the request is JSON: the checkpoint, batch
                                             size, GPUs and samples (`src`, `mt`, `ref`)
    python comet_child.py check CHECKPOINT   COMET imports (else exit status 1), and the
                                             checkpoint's encoder (its tokenizer and
                                             configuration) loads (else `NO_ENCODER`)

`score` prints one line `ANSWER` + JSON after whatever COMET prints: one score a sample and
the system score, as COMET gives them (about 0 to 1). Nothing is written to disk.
"""

import json
import sys
import traceback
from pathlib import Path

ANSWER = "east-comet-answer: "


def score() -> None:
    request = json.load(sys.stdin)
    from comet import load_from_checkpoint

    model = load_from_checkpoint(request["checkpoint"])
    output = model.predict(
        request["samples"],
        batch_size=request["batch_size"],
        gpus=request["gpus"],
        progress_bar=False,
    )
    answer = {
        "scores": [float(value) for value in output.scores],
        "system_score": float(output.system_score),
    }
    sys.stdout.write("\n" + ANSWER + json.dumps(answer) + "\n")


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
    if sys.argv[1] == "score":
        score()
    else:
        check(sys.argv[2])
