"""Shared-task paths: a standalone agent server evaluated over HTTP, a --system-dir, COMET."""

import socket
import subprocess
import sys
import time
import types

import pytest
import requests
from test_agent import AGENT_FILE, console_script

from east_agent.system_dir import system_config, write_system_dir
from tiny_east import LEXICON, synthetic_sentence


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    import random

    rng = random.Random(11)
    sentences = [synthetic_sentence(rng)[0] for _ in range(3)]
    folder = tmp_path_factory.mktemp("shared-task")
    (folder / "src.txt").write_text("".join(" ".join(s) + "\n" for s in sentences))
    (folder / "ref.txt").write_text(
        "".join(" ".join(LEXICON[w] for w in s) + "\n" for s in sentences)
    )
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scores(folder):
    header, values = (folder / "scores.tsv").read_text().splitlines()
    return dict(zip(header.split("\t"), values.split("\t")))


def run(*command, timeout=300):
    result = subprocess.run(
        list(map(str, command)), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


AGENT_FLAGS = ["--src-lang", "de", "--tgt-lang", "en", "--latency", "low"]


def test_standalone_server_and_remote_evaluation_match_a_local_run(
    east_checkpoint, test_set, tmp_path
):
    local = tmp_path / "local"
    run(
        console_script("east-simuleval"), "--agent", AGENT_FILE, "--model-path", east_checkpoint,
        *AGENT_FLAGS, "--source", test_set / "src.txt", "--target", test_set / "ref.txt",
        "--output", local,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [console_script("east-simuleval"), "--standalone", "--remote-port", str(port),
         "--agent", str(AGENT_FILE), "--model-path", str(east_checkpoint), *AGENT_FLAGS],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok:
                    break
            except requests.ConnectionError:
                assert time.time() < deadline, "the agent server did not come up"
                time.sleep(0.2)
        remote = tmp_path / "remote"
        run(
            console_script("east-remote-eval"), "--remote-address", "127.0.0.1",
            "--remote-port", port, "--source", test_set / "src.txt",
            "--target", test_set / "ref.txt", "--output", remote,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    local_scores, remote_scores = scores(local), scores(remote)
    for metric in ("BLEU", "LAAL", "AL", "AP", "DAL"):
        assert remote_scores[metric] == local_scores[metric]
    local_log = (local / "instances.log").read_text().splitlines()
    remote_log = (remote / "instances.log").read_text().splitlines()
    assert len(remote_log) == len(local_log) == 3


def test_system_dir_runs_under_stock_simuleval(east_checkpoint, test_set, tmp_path):
    flags = {"src_lang": "de", "tgt_lang": "en", "latency": "low", "document_level": False}
    folder = write_system_dir(tmp_path / "submission", east_checkpoint, flags)
    assert (folder / "model").is_symlink()
    main = (folder / "main.yaml").read_text()
    assert "agent_class: east_agent.agent.EastAgent" in main
    assert "document_level" not in main  # SimulEval would turn `false` into the flag
    run(
        console_script("simuleval"), "--system-dir", folder, "--source", test_set / "src.txt",
        "--target", test_set / "ref.txt", "--output", tmp_path / "out",
    )  # fmt: skip
    assert len((tmp_path / "out" / "instances.log").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"latency": "very low"}, "splits YAML values on spaces"),
        ({"latncy": "low"}, "rejects these flags"),
    ],
)
def test_system_dir_refuses_what_simuleval_would_mangle(flags, message):
    with pytest.raises(ValueError, match=message):
        system_config("east", {"src_lang": "de", "tgt_lang": "en", **flags})


def test_comet_needs_a_local_checkpoint(tmp_path):
    from east_agent.comet_scorer import CometScorer

    with pytest.raises(ValueError, match="needs --comet-checkpoint"):
        CometScorer(None)
    with pytest.raises(FileNotFoundError, match="model.ckpt does not exist"):
        CometScorer(str(tmp_path / "model.ckpt"))


def test_comet_scorer_feeds_sources_predictions_and_references(tmp_path, monkeypatch):
    from east_agent.comet_scorer import CometScorer

    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"weights")
    seen = {}

    class FakeComet:
        def predict(self, data, batch_size, gpus, progress_bar):
            seen["data"] = data
            return types.SimpleNamespace(scores=[0.5, 0.7], system_score=0.6)

    fake = types.ModuleType("comet")
    fake.load_from_checkpoint = lambda path: seen.setdefault("path", path) and FakeComet()
    monkeypatch.setitem(sys.modules, "comet", fake)
    instances = {
        0: types.SimpleNamespace(source="Hallo", prediction="Hello", reference="Hi", metrics={}),
        1: types.SimpleNamespace(source="Ja", prediction="Yes", reference="Yes", metrics={}),
    }
    assert CometScorer(str(checkpoint))(instances) == pytest.approx(60.0)
    assert seen["path"] == str(checkpoint)
    assert seen["data"][0] == {"src": "Hallo", "mt": "Hello", "ref": "Hi"}
    assert instances[1].metrics["COMET"] == pytest.approx(70.0)


def test_comet_without_the_extra_is_a_clear_error(tmp_path, monkeypatch):
    from east_agent.comet_scorer import CometScorer

    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "comet", None)
    with pytest.raises(ImportError, match=r"east-simul\[comet\]"):
        CometScorer(str(checkpoint))
