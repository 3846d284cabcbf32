"""COMET's side of `east_agent.common.comet_process`, run by the interpreter of COMET's own
environment: `python comet_child.py REQUEST ANSWER`.

It imports COMET and the standard library only (that environment has no east_agent). The
request is JSON: the checkpoint, batch size, GPUs and samples (`src`, `mt`, `ref`); the
answer, written whole or not at all, is JSON: one score a sample and the system score,
as COMET gives them (about 0 to 1).
"""

import json
import os
import sys


def main(request_path: str, answer_path: str) -> None:
    with open(request_path, encoding="utf-8") as file:
        request = json.load(file)
    from comet import load_from_checkpoint

    model = load_from_checkpoint(request["checkpoint"])
    output = model.predict(
        request["samples"],
        batch_size=request["batch_size"],
        gpus=request["gpus"],
        progress_bar=False,
    )
    answer = {
        "scores": [float(score) for score in output.scores],
        "system_score": float(output.system_score),
    }
    partial = answer_path + ".partial"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(answer, file)
    os.replace(partial, answer_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
