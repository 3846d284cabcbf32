"""COMET in its own environment: the real unbabel-comet on a tiny checkpoint (`tiny_comet`),
and the ways a run of it is refused or fails."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from kill import descendants, live_processes, processes_mentioning

from east_agent.common import comet_process
from east_agent.common.comet_process import (
    CometError,
    CometSettings,
    check_comet,
    check_named_by_flag,
    checkpoint_identity,
    comet_scores,
)
from tiny_comet import fake_checkpoint, fake_comet_python

SOURCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest."]
TRANSLATIONS = ["A man rides a bike.", "Two dogs in snow.", "A woman is reading a book."]
REFERENCES = ["A man is riding a bicycle.", "Two dogs play in the snow.", "A woman reads."]


def zip_of(content: bytes) -> bytes:
    """A zip holding `content`, as torch.save's checkpoints are."""
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w") as archive:
        archive.writestr("archive/data.pkl", content)
    return written.getvalue()


TORCH_ZIP = zip_of(b"weights")


def in_comet_itself(settings: CometSettings, samples: list[dict]) -> list[float]:
    """The scores COMET's own API gives in its environment, for comparison."""
    script = textwrap.dedent(f"""
        import json
        from comet import load_from_checkpoint
        model = load_from_checkpoint({settings.checkpoint!r})
        output = model.predict({samples!r}, batch_size=2, gpus=0, progress_bar=False)
        print(json.dumps([float(score) for score in output.scores]))
    """)
    done = subprocess.run([settings.python, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_comet_scores_each_triple_in_its_order_as_comet_itself(tiny_comet):
    check_comet(tiny_comet)
    scores = comet_scores(tiny_comet, SOURCES, TRANSLATIONS, REFERENCES)
    triples = list(zip(SOURCES, TRANSLATIONS, REFERENCES))
    samples = [{"src": src, "mt": mt, "ref": ref} for src, mt, ref in triples]
    expected = in_comet_itself(tiny_comet, samples)
    assert scores.sentences == pytest.approx(expected, abs=1e-6)
    assert scores.system == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    # the order is the triples': each one alone scores what it scored among the others
    alone = [comet_scores(tiny_comet, [s], [t], [r]).system for s, t, r in triples]
    assert scores.sentences == pytest.approx(alone, abs=1e-5)
    assert len(set(scores.sentences)) == 3


def test_comet_scores_texts_stripped_as_comet_score_reads_its_lines(tiny_comet):
    """A reference's line end or a re-segmented sentence's spaces are not scored: COMET
    reads what `comet-score` reads of files holding these texts a line each."""
    spaced = [f" {text}  \n" for text in TRANSLATIONS]
    references = [f"{text}\n" for text in REFERENCES]
    scores = comet_scores(tiny_comet, SOURCES, spaced, references)
    stripped = comet_scores(tiny_comet, SOURCES, TRANSLATIONS, REFERENCES)
    assert scores.sentences == pytest.approx(stripped.sentences, abs=1e-6)
    triples = zip(SOURCES, spaced, references)
    as_given = in_comet_itself(
        tiny_comet, [{"src": src, "mt": mt, "ref": ref} for src, mt, ref in triples]
    )
    assert max(abs(a - b) for a, b in zip(as_given, scores.sentences)) > 1e-4  # told apart


def test_a_missing_checkpoint_or_interpreter_is_refused(tmp_path):
    missing = CometSettings(str(tmp_path / "model.ckpt"))
    with pytest.raises(CometError, match="model.ckpt does not exist") as refused:
        check_comet(missing)
    assert refused.value.setting == "checkpoint"
    (tmp_path / "checkpoints").mkdir()
    alone = tmp_path / "checkpoints" / "model.ckpt"
    alone.write_bytes(b"weights")
    with pytest.raises(CometError, match="hparams.yaml, which COMET reads") as refused:
        check_comet(CometSettings(str(alone)))
    assert refused.value.setting == "checkpoint"
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    no_python = CometSettings(str(checkpoint), str(tmp_path / "bin" / "python"))
    with pytest.raises(CometError, match="cannot run") as refused:
        check_comet(no_python)
    assert refused.value.setting == "python"


def test_an_interpreter_without_comet_is_refused_with_how_to_make_one(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    # this package's own environment: transformers 5, where unbabel-comet cannot install
    with pytest.raises(CometError, match=r"has no unbabel-comet.*pip install unbabel-comet"):
        check_comet(CometSettings(str(checkpoint), sys.executable))
    # a checkpoint that is no torch file is named first, its bytes read before any
    # interpreter is asked (before: the interpreter's fault first, the file's after its fix)
    html = fake_checkpoint(tmp_path / "html", b"<!DOCTYPE html>")
    with pytest.raises(CometError, match="is not a torch checkpoint") as refused:
        check_comet(CometSettings(str(html), sys.executable))
    assert refused.value.setting == "checkpoint"


def test_an_interpreter_that_fails_is_named_with_its_own_words_not_as_one_without_comet(
    tmp_path,
):
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\necho 'python: error while loading shared libraries: libpython3.11.so' >&2\n"
        "exit 127\n"
    )
    python.chmod(0o755)
    with pytest.raises(CometError) as refused:
        check_named_by_flag(CometSettings(str(checkpoint), str(python)))
    message = str(refused.value)
    assert message.startswith(f"--comet-python: {python} failed to run Python (exit status 127)")
    assert "libpython3.11.so" in message and "unbabel-comet" not in message


def test_a_folder_given_as_the_checkpoint_is_named_as_a_folder(tmp_path):
    """The model's folder or its `checkpoints/`: the checkpoint there named (before:
    `checkpoints/model.ckpt` added to either, a path that is not there for the second)."""
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    for folder in (checkpoint.parents[1], checkpoint.parent):
        with pytest.raises(CometError) as refused:
            check_named_by_flag(CometSettings(str(folder)))
        expected = f"is a folder: give its model.ckpt file (there: {checkpoint})"
        assert str(refused.value) == f"--comet-checkpoint: COMET checkpoint {folder} {expected}"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CometError, match=re.escape(f"(e.g. {empty}/checkpoints/model.ckpt)") + "$"):
        check_named_by_flag(CometSettings(str(empty)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"model.ckpt is empty \(0 bytes\)$"),
        (b"<!DOCTYPE html>", r"model.ckpt is not a torch checkpoint \(it begins b'<!DO'\)"),
        (b"PK", r"model.ckpt is not a torch checkpoint \(it begins b'PK'\)"),
        (TORCH_ZIP[:-30], r"model.ckpt is cut short \(its zip has no directory at its end\)"),
    ],
)
def test_a_checkpoint_that_is_empty_or_no_torch_file_is_refused_before_it_loads(
    tmp_path, content, message
):
    checkpoint = fake_checkpoint(tmp_path / "model", content)
    python = fake_comet_python(tmp_path / "env", "raise SystemExit('COMET was asked')\n")
    with pytest.raises(CometError, match="^--comet-checkpoint: COMET checkpoint .*" + message):
        check_named_by_flag(CometSettings(str(checkpoint), python))


@pytest.mark.parametrize("content", [TORCH_ZIP, b"\x80\x02legacy"])
def test_a_checkpoint_that_begins_as_torchs_do_is_left_to_comet(tmp_path, content):
    checkpoint = fake_checkpoint(tmp_path / "model", content)
    python = fake_comet_python(tmp_path / "env", "raise ImportError('COMET was asked')\n")
    with pytest.raises(CometError, match=r"does not import[\s\S]*COMET was asked"):
        check_comet(CometSettings(str(checkpoint), python))


CHECKS_WITHIN_2_S = """
import sys
from east_agent.common import comet_process
comet_process.ANSWER_SECONDS = 2
try:
    comet_process.check_named_by_flag(comet_process.CometSettings(sys.argv[1], sys.argv[2]))
except comet_process.CometError as error:
    sys.exit(str(error))
"""


@pytest.mark.parametrize("hangs", ["interpreter", "wrapper", "comet import"])
def test_an_interpreter_that_does_not_answer_is_refused_after_a_while(tmp_path, hangs):
    """In a process of its own, so that a hang fails the test rather than stalling it; what
    the interpreter started is ended with it (a wrapper script that runs it without exec)."""
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    hung = f"sleep {1000 + os.getpid() % 1000}"  # this test's own
    if hangs in ("interpreter", "wrapper"):
        python = tmp_path / "python"
        python.write_text(f"#!/bin/sh\n{'exec ' if hangs == 'interpreter' else ''}{hung}\n")
        python.chmod(0o755)
    else:  # found without being imported; the child's check imports it
        python = fake_comet_python(tmp_path / "env", "import time\ntime.sleep(1000)\n")
    command = [sys.executable, "-c", CHECKS_WITHIN_2_S, str(checkpoint), str(python)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.stderr == f"--comet-python: {python} did not answer in 2 s\n"
    assert done.returncode == 1 and time.monotonic() - started < 30
    assert not processes_mentioning(hung)


def test_a_comet_that_does_not_import_is_refused_by_the_check(tmp_path):
    """setuptools 81 and later have no pkg_resources, which unbabel-comet's torchmetrics
    imports: COMET is found, but does not import."""
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    python = fake_comet_python(
        tmp_path / "env", "raise ModuleNotFoundError(\"No module named 'pkg_resources'\")\n"
    )
    with pytest.raises(CometError, match=r"does not import[\s\S]*pkg_resources") as refused:
        check_comet(CometSettings(str(checkpoint), python))
    assert refused.value.setting == "python"


def test_a_wrapper_that_closes_inherited_descriptors_is_refused_by_the_check(tmp_path):
    """`--comet-python` a wrapper that drops the pipes (as `conda run` does): refused by
    the check, naming the flag and why, rather than with a bare `Bad file descriptor`."""
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    python = fake_comet_python(tmp_path / "env", "")
    wrapper = tmp_path / "closing-wrapper"
    wrapper.write_text(
        f"#!{sys.executable}\nimport os, sys\nos.closerange(3, 65536)\n"
        f"os.execv({python!r}, [{python!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    with pytest.raises(CometError) as refused:
        check_named_by_flag(CometSettings(str(checkpoint), str(wrapper)))
    message = str(refused.value)
    assert message.startswith("--comet-python: ") and "exit status 4" in message, message
    assert "does not keep the descriptors it inherits" in message, message
    # one that puts /dev/null in their place: the child reads no request and ends at once
    wrapper.write_text(
        f"#!{sys.executable}\nimport os, sys\nos.closerange(3, 65536)\n"
        "for _ in range(32): os.set_inheritable(os.open(os.devnull, os.O_RDWR), True)\n"
        f"os.execv({python!r}, [{python!r}, *sys.argv[1:]])\n"
    )
    with pytest.raises(CometError) as refused:
        check_named_by_flag(CometSettings(str(checkpoint), str(wrapper)))
    message = str(refused.value)
    assert message.startswith("--comet-python: ") and "exit status 0" in message, message
    assert "replaced the descriptors it inherits" in message, message


def test_a_failing_comet_is_named_with_its_own_words(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model", b"not a checkpoint")
    python = fake_comet_python(
        tmp_path / "env",
        """
        def load_from_checkpoint(path):
            raise RuntimeError(f"cannot unpickle {path}")
        """,
    )
    settings = CometSettings(str(checkpoint), python)
    with pytest.raises(CometError, match=r"model.ckpt\) failed:[\s\S]*cannot unpickle"):
        comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES)


def test_a_checkpoint_is_known_by_its_content(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model", b"weights" * 10_000)
    moved = fake_checkpoint(tmp_path / "moved", b"weights" * 10_000)
    other = fake_checkpoint(tmp_path / "other", b"weighty" * 10_000)
    identity = checkpoint_identity(checkpoint)
    assert identity["file"] == str(checkpoint.resolve())
    assert checkpoint_identity(moved)["sha256"] == identity["sha256"]
    assert checkpoint_identity(other)["sha256"] != identity["sha256"]
    (tmp_path / "moved" / "hparams.yaml").write_text("pretrained_model: elsewhere\n")
    assert checkpoint_identity(moved)["sha256"] != identity["sha256"]
    assert checkpoint_identity(tmp_path / "none.ckpt") == str(tmp_path / "none.ckpt")


def test_an_answer_of_the_wrong_length_is_refused(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model")
    python = fake_comet_python(
        tmp_path / "env",
        """
        from types import SimpleNamespace

        class Model:
            def predict(self, samples, **settings):
                return SimpleNamespace(scores=[0.5], system_score=0.5)

        def load_from_checkpoint(path):
            return Model()
        """,
    )
    with pytest.raises(CometError, match="1 scores for 3 samples"):
        comet_scores(CometSettings(str(checkpoint), python), SOURCES, TRANSLATIONS, REFERENCES)
    with pytest.raises(ValueError, match="as many sources"):
        comet_scores(CometSettings(str(checkpoint), python), SOURCES[:2], TRANSLATIONS, REFERENCES)


def test_settings_are_passed_to_comet(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model")
    python = fake_comet_python(
        tmp_path / "env",
        """
        from types import SimpleNamespace

        class Model:
            def __init__(self, path):
                self.path = path

            def predict(self, samples, batch_size, gpus, progress_bar):
                # the settings come back as scores, to be read on the other side
                seen = [len(samples), batch_size, gpus, len(self.path), int(progress_bar)]
                return SimpleNamespace(scores=seen[:3], system_score=seen[3])

        def load_from_checkpoint(path):
            return Model(path)
        """,
    )
    settings = dataclasses.replace(CometSettings(str(checkpoint), python), batch_size=7, gpus=1)
    scores = comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES)
    assert scores.sentences == [3, 7, 1]
    assert scores.system == len(str(checkpoint.resolve()))


def test_a_checkpoint_whose_encoder_does_not_load_is_named_as_the_checkpoint(
    tiny_comet, tmp_path, monkeypatch
):
    # its hparams.yaml names no encoder; the hub not asked for it (26 s of retries offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)
    with pytest.raises(CometError, match="its encoder .* does not load") as refused:
        check_comet(CometSettings(str(checkpoint), tiny_comet.python))
    assert refused.value.setting == "checkpoint"
    # named (before: "its encoder (the tokenizer and configuration hparams.yaml names)")
    assert "its encoder 'nowhere' (hparams.yaml's pretrained_model) does not load" in str(
        refused.value
    )
    assert "The last lines of its error:\n" in str(refused.value)


def test_the_encoder_checked_is_the_one_comet_loads_the_name_model_ckpt_holds(
    tiny_comet, tmp_path, monkeypatch
):
    """COMET reads hparams.yaml for the model's class alone. Before: the check loaded the
    encoder hparams.yaml named, passed, and COMET failed after all the decoding."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    copy = tmp_path / "copy"
    shutil.copytree(Path(tiny_comet.checkpoint).parents[1], copy)
    hparams = (copy / "hparams.yaml").read_text()
    encoder = re.search(r"pretrained_model: (.*)", hparams).group(1)
    (copy / "hparams.yaml").write_text(hparams.replace(encoder, str(copy / "encoder")))
    save_encoder_name(tiny_comet.python, copy / "checkpoints" / "model.ckpt", "/nowhere/encoder")
    settings = dataclasses.replace(tiny_comet, checkpoint=str(copy / "checkpoints" / "model.ckpt"))
    with pytest.raises(CometError) as refused:
        check_comet(settings)
    assert (
        f"its encoder '/nowhere/encoder' (the name model.ckpt holds, which COMET loads; "
        f"hparams.yaml's pretrained_model, {str(copy / 'encoder')!r}, is read for the "
        "model's class alone) does not load"
    ) in str(refused.value)


@pytest.fixture
def a_hub_that_answers(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and a hub on 127.0.0.1 that answers 404 to everything
    and records what it is asked; the environment the test's COMET child starts with."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Hub(BaseHTTPRequestHandler):
        def do_HEAD(self):
            asked.append(self.path)
            self.send_error(404)

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with ThreadingHTTPServer(("127.0.0.1", 0), Hub) as hub:
        threading.Thread(target=hub.serve_forever, daemon=True).start()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.server_address[1]}")
        with a_fresh_child():
            yield asked
        hub.shutdown()


@contextmanager
def a_fresh_child():
    """A COMET child started in the test's environment, and ended after it."""
    comet_process._end_own_child()
    comet_process._check_in_child.cache_clear()
    try:
        yield
    finally:
        comet_process._end_own_child()
        comet_process._check_in_child.cache_clear()


def save_encoder_name(python: str, checkpoint: Path, encoder: str) -> None:
    """Name `encoder` in `model.ckpt` (its own name, which COMET loads), with COMET's torch."""
    rename = textwrap.dedent(f"""
        import torch
        path = {str(checkpoint)!r}
        saved = torch.load(path, map_location="cpu", weights_only=False)
        saved["hyper_parameters"]["pretrained_model"] = {encoder!r}
        torch.save(saved, path)
    """)
    subprocess.run([python, "-c", rename], check=True)


def with_a_cached_encoder(tiny_comet: CometSettings, tmp_path: Path, files=None) -> CometSettings:
    """The tiny checkpoint, its encoder named `tiny/encoder` and in the Hugging Face cache
    (`files` of it, or all)."""
    encoder = Path(tiny_comet.checkpoint).parents[1] / "encoder"
    snapshot = tmp_path / "hf" / "hub" / "models--tiny--encoder" / "snapshots" / "0123"
    shutil.copytree(encoder, snapshot)
    for path in snapshot.iterdir():
        if files is not None and path.name not in files:
            path.unlink()
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123")
    copy = tmp_path / "comet"
    shutil.copytree(Path(tiny_comet.checkpoint).parents[1], copy, ignore=lambda *_: ["encoder"])
    hparams = copy / "hparams.yaml"
    hparams.write_text(hparams.read_text().replace(str(encoder), "tiny/encoder"))
    save_encoder_name(tiny_comet.python, copy / "checkpoints" / "model.ckpt", "tiny/encoder")
    return dataclasses.replace(tiny_comet, checkpoint=str(copy / "checkpoints" / "model.ckpt"))


def test_an_encoder_in_the_cache_is_not_asked_of_the_hub(tiny_comet, tmp_path, a_hub_that_answers):
    """Before: every load of it asked the hub first, 23 s of retries where the hub cannot
    be reached (the check's two loads, then the scoring's); a child started again after
    one died, whose first request is a score, asked it again (a review)."""
    settings = with_a_cached_encoder(tiny_comet, tmp_path)
    check_comet(settings)
    assert len(comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES).sentences) == 3
    comet_process._end_own_child()  # the check stays done: the next child only scores
    assert len(comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES).sentences) == 3
    assert a_hub_that_answers == []


def test_an_encoder_cached_in_part_is_completed_from_the_hub(
    tiny_comet, tmp_path, a_hub_that_answers
):
    """Its configuration alone in the cache: the hub is asked for the tokenizer (before:
    taken for cached, offline, and the load failed where the hub could have given it)."""
    settings = with_a_cached_encoder(tiny_comet, tmp_path, files={"config.json"})
    with pytest.raises(CometError):  # this hub has nothing: the load fails all the same
        check_comet(settings)
    assert any("/resolve/" in path for path in a_hub_that_answers), a_hub_that_answers


def test_an_encoder_neither_here_nor_on_a_hub_is_refused_in_one_line(
    tiny_comet, tmp_path, monkeypatch
):
    """One quick request to the hub (before: 26 s of its retries, then "does not load" and
    the last lines of the hub's traceback)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that is not there
    checkpoint = fake_checkpoint(tmp_path / "model", TORCH_ZIP)  # its encoder: 'nowhere'
    with a_fresh_child(), pytest.raises(CometError) as refused:
        check_comet(CometSettings(str(checkpoint), tiny_comet.python))
    assert str(refused.value) == (
        f"COMET checkpoint {checkpoint.absolute()}: its encoder 'nowhere' (hparams.yaml's "
        "pretrained_model) is not in the Hugging Face cache, and the hub cannot be reached "
        "(ConnectionError from http://127.0.0.1:9): fetch it once where the hub answers "
        "(`hf download nowhere`, into the cache HF_HOME names), or name a local copy"
    )
    assert refused.value.setting == "checkpoint"


def test_a_checkpoint_in_the_hugging_face_cache_layout_is_found_as_comet_finds_it(
    tiny_comet, tmp_path
):
    """`comet.download_model` gives `snapshots/<rev>/checkpoints/model.ckpt`, a link into
    `blobs/`: its hparams.yaml is beside the link's folder, not the blob's."""
    model = tmp_path / "models--tiny"
    (model / "blobs").mkdir(parents=True)
    snapshot = model / "snapshots" / "0123"
    (snapshot / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_comet.checkpoint, model / "blobs" / "a1b2")
    shutil.copy(Path(tiny_comet.checkpoint).parents[1] / "hparams.yaml", snapshot)
    linked = snapshot / "checkpoints" / "model.ckpt"
    linked.symlink_to(model / "blobs" / "a1b2")
    settings = dataclasses.replace(tiny_comet, checkpoint=str(linked))
    check_comet(settings)
    scores = comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES)
    expected = comet_scores(tiny_comet, SOURCES, TRANSLATIONS, REFERENCES)
    assert scores.sentences == expected.sentences
    identity = checkpoint_identity(tiny_comet.checkpoint)
    assert checkpoint_identity(linked)["sha256"] == identity["sha256"]


def the_child_pid() -> int:
    return comet_process._child.process.pid


def test_one_child_scores_every_request_of_a_process_as_a_fresh_one(tiny_comet):
    first = comet_scores(tiny_comet, SOURCES, TRANSLATIONS, REFERENCES)
    serving = the_child_pid()
    again = comet_scores(tiny_comet, SOURCES[:2], TRANSLATIONS[:2], REFERENCES[:2])
    assert the_child_pid() == serving
    # two sentences are batched (padded) otherwise than three: the last float bit may
    # differ (seen once, 3e-8 in CI on a loaded machine); a request seeing another's state
    # would differ by far more
    assert again.sentences == pytest.approx(first.sentences[:2], abs=1e-6)
    comet_process._child.close()
    fresh = comet_scores(tiny_comet, SOURCES, TRANSLATIONS, REFERENCES)
    assert the_child_pid() != serving
    assert fresh.sentences == pytest.approx(first.sentences, abs=1e-6)
    assert fresh.system == pytest.approx(first.system, abs=1e-6)


def test_the_check_is_the_first_request_of_the_child_that_scores(tiny_comet):
    """Its imports are made once: the scores after the check come from the same child."""
    if comet_process._child is not None:
        comet_process._child.close()
    comet_process._check_in_child.cache_clear()
    check_comet(tiny_comet)
    checked_by = the_child_pid()
    comet_scores(tiny_comet, SOURCES, TRANSLATIONS, REFERENCES)
    assert the_child_pid() == checked_by


def test_a_forked_copy_holds_no_pipe_of_the_child(tmp_path):
    """A copy of the process made by fork neither keeps the child's requests' pipe open
    (the child ends when its process closes it, as if there were no copy: exit status 0,
    not killed) nor waits on the lock (held at the fork); a request of its own starts its
    own child."""
    settings = CometSettings(
        str(fake_checkpoint(tmp_path / "model", b"weights")),
        fake_comet_python(tmp_path / "env", COUNTING_COMET),
    )
    expected = comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES).sentences
    child = comet_process._child
    answers = tmp_path / "copy.txt"
    held = comet_process._CHILD_IN_USE
    held.acquire()  # as a thread asking at the fork would hold it
    copy = os.fork()
    if copy == 0:  # the copy: scores on its own child, then stays while the parent ends its
        try:
            scores = comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES).sentences
            answers.write_text(f"{scores} {comet_process._child.process.pid}\n")
            time.sleep(60)
        except BaseException as error:
            answers.write_text(f"failed: {error!r}\n")
        finally:
            os._exit(0)
    held.release()
    try:
        deadline = time.time() + 60
        while not answers.exists() or not answers.read_text().endswith("\n"):
            assert time.time() < deadline, "the copy's request never came back"
            time.sleep(0.05)
        scores, pid = answers.read_text().rsplit(" ", 1)
        assert scores == str(expected) and int(pid) != child.process.pid, scores
        comet_process._end_own_child()
        assert child.process.returncode == 0  # ended by its pipe's end, not killed
    finally:
        os.kill(copy, signal.SIGKILL)
        os.waitpid(copy, 0)
        comet_process._child = None


# COMET stand-in: a model is its checkpoint's bytes; scores say which and how many loads
COUNTING_COMET = """
    import os
    import sys
    import time
    import weakref
    from types import SimpleNamespace

    LOADS = []
    IN_MEMORY = weakref.WeakSet()

    class Model:
        def __init__(self, content):
            self.content = content
            self.itself = self  # in a cycle, as COMET's models are (with their trainer)
            IN_MEMORY.add(self)

        def predict(self, samples, **settings):
            if len(IN_MEMORY) > 1:
                raise MemoryError(f"{len(IN_MEMORY)} models in memory")
            if self.content == b"stray bytes":
                os.write(2, b"\\xe9 not UTF-8\\n" * 20_000)  # more than a pipe holds
            print("Predicting DataLoader 0", flush=True)  # as Lightning does, on stdout
            sys.stdout.write("no end of line")
            if self.content == b"slow":
                time.sleep(60)
            if self.content == b"dies":
                sys.stderr.write("CUDA out of memory\\n")
                sys.exit(3)
            scores = [len(self.content)] * len(samples)
            return SimpleNamespace(scores=scores, system_score=len(LOADS))

    def load_from_checkpoint(path):
        LOADS.append(path)
        with open(path, "rb") as checkpoint:
            return Model(checkpoint.read())
    """


def test_a_checkpoint_is_loaded_once_and_again_when_replaced_at_its_path(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model", b"weights")
    settings = CometSettings(str(checkpoint), fake_comet_python(tmp_path / "env", COUNTING_COMET))
    first = comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES)
    assert (first.sentences, first.system) == ([7, 7, 7], 1)
    assert comet_scores(settings, SOURCES[:1], TRANSLATIONS[:1], REFERENCES[:1]).system == 1
    checkpoint.write_bytes(b"other weights")
    replaced = comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES)
    assert (replaced.sentences, replaced.system) == ([13, 13, 13], 2)  # the former one freed


def test_what_the_child_writes_on_standard_error_never_stops_it(tmp_path):
    """Bytes that are not UTF-8, more than the pipe holds: read and kept as they come
    (in a process of its own, so that a hang fails the test rather than stalling it)."""
    checkpoint = fake_checkpoint(tmp_path / "model", b"stray bytes")
    python = fake_comet_python(tmp_path / "env", COUNTING_COMET)
    script = (
        "import sys\n"
        "from east_agent.common.comet_process import CometSettings, comet_scores\n"
        "print(comet_scores(CometSettings(sys.argv[1], sys.argv[2]), ['a'], ['b'], ['c']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(checkpoint), python],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentences=[11.0]" in done.stdout


SCORES_ONE = """
import sys
from east_agent.common.comet_process import CometError, CometSettings, comet_scores
try:
    scores = comet_scores(CometSettings(sys.argv[1], sys.argv[2]), ["a"], ["b"], ["c"])
except CometError as error:
    print(str(error).splitlines()[0], file=sys.stderr)
    sys.exit(2)
print(scores, file=sys.stderr)  # standard error: its standard output may be closed
"""


def score_one_in_a_process(checkpoint, python: str, timeout: float):
    """SCORES_ONE run (so that a hang fails the test rather than stalling it)."""
    command = [sys.executable, "-c", SCORES_ONE, str(checkpoint), python]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_a_comet_that_reads_standard_input_takes_no_request_and_waits_for_none(tmp_path):
    """Requests reach the child on a pipe of their own; its standard input is empty (a
    library that reads it at import, as a prompt would, neither takes a request nor hangs:
    in a process of its own, so that a hang fails the test rather than stalling it)."""
    checkpoint = fake_checkpoint(tmp_path / "model", b"weights")
    reads_input = "import sys\nREAD = sys.stdin.read()\n" + textwrap.dedent(COUNTING_COMET)
    reads_input += "\nassert READ == '', READ\n"
    python = fake_comet_python(tmp_path / "env", reads_input)
    done = score_one_in_a_process(checkpoint, python, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentences=[7.0]" in done.stderr


def test_comet_runs_for_a_process_whose_standard_input_and_output_are_closed(tmp_path):
    """Its pipes then take descriptors 0 and 1: moved above, not lost to the child's
    standard streams."""
    checkpoint = fake_checkpoint(tmp_path / "model", b"weights")
    python = fake_comet_python(tmp_path / "env", COUNTING_COMET)
    said = tmp_path / "said.txt"
    closed = f'exec "$0" -c "$1" "$2" "$3" <&- >&- 2>"{said}"'
    done = subprocess.run(
        ["sh", "-c", closed, sys.executable, SCORES_ONE, str(checkpoint), python], timeout=60
    )
    assert done.returncode == 0, said.read_text()[-3000:]
    assert "sentences=[7.0]" in said.read_text()


def test_a_process_comet_starts_does_not_hold_the_answers_open(tmp_path):
    """A child that dies is named at once, though something it started lives on (its
    pipes are not handed on: the process would hold the answers open)."""
    checkpoint = fake_checkpoint(tmp_path / "model", b"dies")
    starts = 'import subprocess\nsubprocess.Popen(["sleep", "60"], close_fds=False)\n'
    python = fake_comet_python(tmp_path / "env", starts + textwrap.dedent(COUNTING_COMET))
    done = score_one_in_a_process(checkpoint, python, timeout=40)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "failed with exit status 3" in done.stderr


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "--comet-batch-size: a batch size of 0: at least 1"),
        ({"gpus": 2}, "--comet-gpus: 2 GPUs: 0 or 1"),
    ],
)
def test_settings_comet_cannot_run_with_are_refused_by_their_flag(tmp_path, changes, message):
    settings = CometSettings(str(fake_checkpoint(tmp_path / "model")), **changes)
    with pytest.raises(CometError, match=message):
        check_named_by_flag(settings)


def test_a_child_that_dies_while_scoring_is_named_and_the_next_request_starts_another(tmp_path):
    python = fake_comet_python(tmp_path / "env", COUNTING_COMET)
    dying = CometSettings(str(fake_checkpoint(tmp_path / "dying", b"dies")), python)
    pattern = r"dying/checkpoints/model.ckpt\) failed with exit status 3:[\s\S]*out of memory"
    with pytest.raises(CometError, match=pattern):
        comet_scores(dying, SOURCES, TRANSLATIONS, REFERENCES)
    settings = CometSettings(str(fake_checkpoint(tmp_path / "model", b"weights")), python)
    assert comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES).sentences == [7, 7, 7]
    serving = the_child_pid()
    os.kill(serving, signal.SIGKILL)  # between two requests (killed by hand, out of memory)
    comet_process._child.process.wait()
    assert comet_scores(settings, SOURCES, TRANSLATIONS, REFERENCES).system == 1
    assert the_child_pid() != serving


def test_a_fork_after_the_child_died_lets_go_of_what_is_left(tmp_path):
    """A fork (a subprocess started with a `preexec_fn` forks too) after the child died
    lets go of its output's pipe and skips the pipes already closed, raising nothing."""
    python = fake_comet_python(tmp_path / "env", COUNTING_COMET)
    dying = CometSettings(str(fake_checkpoint(tmp_path / "dying", b"dies")), python)
    with pytest.raises(CometError, match="failed with exit status 3"):
        comet_scores(dying, SOURCES, TRANSLATIONS, REFERENCES)
    output = comet_process._child.process.stdout.fileno()
    unraised = []  # what the fork's handlers raise is reported here, not raised
    saved, sys.unraisablehook = sys.unraisablehook, unraised.append
    try:
        copy = os.fork()
        if copy == 0:
            let_go = os.readlink(f"/proc/self/fd/{output}") == os.devnull
            os._exit(1 if unraised else 0 if let_go else 2)
    finally:
        sys.unraisablehook = saved
    _, status = os.waitpid(copy, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    comet_process._child = None


def test_a_request_interrupted_leaves_no_answer_behind_for_the_next(tmp_path):
    python = fake_comet_python(tmp_path / "env", COUNTING_COMET)
    slow = CometSettings(str(fake_checkpoint(tmp_path / "slow", b"slow")), python)
    settings = CometSettings(str(fake_checkpoint(tmp_path / "model", b"weights")), python)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        with pytest.raises(KeyboardInterrupt):
            comet_scores(slow, SOURCES[:1], TRANSLATIONS[:1], REFERENCES[:1])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    # had its child lived, the slow request's answer ([4]) would be read as this one's
    assert comet_scores(settings, SOURCES[:1], TRANSLATIONS[:1], REFERENCES[:1]).sentences == [7]


SCORES_THEN_WAITS = """
import sys, time
from east_agent.common.comet_process import CometSettings, comet_scores
comet_scores(CometSettings(sys.argv[1], sys.argv[2]), ["a"], ["b"], ["c"])
print("scored", flush=True)
time.sleep(120)
"""


def test_the_child_dies_with_its_process(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model", b"weights")
    python = fake_comet_python(tmp_path / "env", COUNTING_COMET)
    scoring = subprocess.Popen(
        [sys.executable, "-c", SCORES_THEN_WAITS, str(checkpoint), python],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert scoring.stdout.readline() == "scored\n"
    children = [pid for pid, cmd in descendants(scoring.pid).items() if "comet_child.py" in cmd]
    assert len(children) == 1
    scoring.kill()
    scoring.wait()
    deadline = time.monotonic() + 10
    while children[0] in live_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children[0] not in live_processes()
