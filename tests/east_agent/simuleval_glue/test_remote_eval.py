"""`east-remote-eval`'s own paths against a stand-in server: sentences sent together, the
server's refusals, a lost or silent server, Ctrl-C, the folder it writes. A real server
(`east-simuleval --standalone`) is evaluated in `test_shared_task.py`."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import time
from functools import partial

import pytest
from commands import console_script
from fake_session_server import FakeSessionServer

from east_agent.common.run_lock import hold_run_lock
from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK
from east_agent.simuleval_glue.server_sessions import CLOSE_TIMEOUT

SENTENCES = [f"satz{index} hat hier noch einige worte" for index in range(6)]


@pytest.fixture
def test_set(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "src.txt").write_text("".join(line + "\n" for line in SENTENCES))
    (folder / "ref.txt").write_text("".join(line + "\n" for line in SENTENCES))
    return folder


def client_command(port, test_set, output, *extra, address="127.0.0.1") -> list[str]:
    return [
        console_script("east-remote-eval"),
        "--remote-address", address, "--remote-port", str(port),
        "--source", str(test_set / "src.txt"), "--target", str(test_set / "ref.txt"),
        "--output", str(output), *map(str, extra),
    ]  # fmt: skip


def remote_eval(port, test_set, output, *extra, timeout=120):
    command = client_command(port, test_set, output, "--no-progress-bar", *extra)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def kill_once_waiting(server: FakeSessionServer, command: list[str], sessions: int) -> None:
    """Run a client and SIGKILL it once each of its `sessions` waits for an answer."""
    client = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(sessions):
            assert server.held.acquire(timeout=60), client.stderr
    finally:
        client.kill()
        client.wait()


def logged(output):
    return [json.loads(line) for line in (output / "instances.log").read_text().splitlines()]


# A server that takes `POST /step` gets each unit in one request; else `PUT` and `GET`.
PROTOCOLS = pytest.mark.parametrize("step", [False, True], ids=["put-get", "step"])


def check_protocol(server: FakeSessionServer) -> None:
    units = [r for r in server.requests if r in ("POST /step", "PUT /input", "GET /output")]
    assert units and set(units) == (
        {"POST /step"} if server.step else {"PUT /input", "GET /output"}
    )


@PROTOCOLS
def test_sentences_are_sent_together_and_logged_in_index_order(test_set, tmp_path, step):
    """The first output of each of the three sessions waits until all three ask: a client
    sending its sentences one after another gets a 500 there."""
    output = tmp_path / "out"
    with FakeSessionServer(streams=3, together=3, step=step) as server:
        result = remote_eval(server.port, test_set, output, "--batch-size", 3)
    assert result.returncode == 0, result.stderr[-3000:]
    check_protocol(server)
    assert [(r["index"], r["prediction"]) for r in logged(output)] == list(enumerate(SENTENCES))
    assert (output / "scores.tsv").read_text().splitlines()[1].startswith("100.0")
    assert not server.sessions  # every session closed


def test_batch_json_counts_the_sessions_that_had_a_sentence(test_set, tmp_path):
    """`--batch-size 3` for two sentences: two sessions shared the server."""
    output = tmp_path / "out"
    with FakeSessionServer(streams=3) as server:
        result = remote_eval(server.port, test_set, output, "--batch-size", 3, "--end-index", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["index"] for r in logged(output)] == [0, 1]
    record = json.loads((output / "batch.json").read_text())
    assert (record["batch_size"], record["streams"]) == (3, 2)
    assert "sharing the server" in record["computation_aware"]


def test_free_streams_are_asked_only_for_the_sentences_left(test_set, tmp_path):
    """Three free streams: `--batch-size 8` for two sentences, or for a resumed run with
    two left, opens two sessions (before: refused, "--batch-size 8 needs 8"); for six
    sentences it is refused before the folder is made."""
    output = tmp_path / "out"
    with FakeSessionServer(streams=3) as server:
        refused = remote_eval(server.port, test_set, output, "--batch-size", 8)
        assert refused.returncode == 2 and not output.exists()
        # no session open: the server is too small (before: told of open sessions too)
        assert refused.stderr.endswith(
            f"the server at http://127.0.0.1:{server.port} has 3 streams; --batch-size 8 needs "
            "6 (6 sentences are left): lower it, or start a server with --batch-size 6 or more\n"
        )
        result = remote_eval(server.port, test_set, output, "--batch-size", 8, "--end-index", 2)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((output / "batch.json").read_text())["streams"] == 2
        log = output / "instances.log"
        kept = "".join(log.read_text().splitlines(keepends=True)[:1])
        log.write_text(kept)  # killed after its first sentence
        (output / "scores.tsv").unlink()
        resumed = remote_eval(
            server.port, test_set, output, "--batch-size", 8, "--end-index", 4,
            "--continue-unfinished",
        )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["index"] for r in logged(output)] == [0, 1, 2, 3]
    assert log.read_text().startswith(kept)


@PROTOCOLS
def test_sessions_without_a_stream_give_their_sentences_back(test_set, tmp_path, step):
    """The server advertised three free streams, then had two (another client took one)."""
    output = tmp_path / "out"
    for busy_delay in (0.0, 2.0):  # 2 s: the others have finished the rest by then
        with FakeSessionServer(3, open_limit=2, busy_delay=busy_delay, step=step) as server:
            result = remote_eval(server.port, test_set, output, "--batch-size", 3)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "no free stream (503) for 1 of 3 sessions; the other 2 went on" in result.stderr
        assert [r["index"] for r in logged(output)] == list(range(6))
        # two streams translated (before: batch.json said the three sessions asked for)
        assert json.loads((output / "batch.json").read_text())["streams"] == 2
    with FakeSessionServer(streams=3, open_limit=0) as server:
        result = remote_eval(server.port, test_set, tmp_path / "none", "--batch-size", 3)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no free stream (503) for any of the 3 sessions; 6 sentences are left" in result.stderr


@pytest.mark.parametrize("batch", [1, 3])
def test_a_long_form_servers_failures_name_talks(test_set, tmp_path, batch):
    """A system served with --long-form reads each source line as a talk (before: "sentence
    2: ...", as the local run's messages said before they counted talks)."""
    with FakeSessionServer(refuse_word="satz2", settings={"long_form": True}) as server:
        result = remote_eval(server.port, test_set, tmp_path / "out", "--batch-size", batch)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "talk 2: the server answered 422: the sentence holds 'satz2'" in result.stderr
    said = "the talks finished before it are in" if batch == 1 else "1 of the 6 talks this run"
    assert said in result.stderr, result.stderr[-2000:]
    with FakeSessionServer(settings={"long_form": True}) as server:
        again = remote_eval(server.port, test_set, tmp_path / "out", "--batch-size", batch)
    assert "finished talks replaced by this fresh run" in again.stderr, again.stderr[-2000:]


@PROTOCOLS
@pytest.mark.parametrize("batch", [1, 3])
def test_a_refused_sentence_is_named_and_the_session_closed(test_set, tmp_path, batch, step):
    """One at a time, the run stops at it (SimulEval's loop); at once, the others finish."""
    output = tmp_path / "out"
    with FakeSessionServer(streams=3, refuse_word="satz2", step=step) as server:
        result = remote_eval(server.port, test_set, output, "--batch-size", batch)
        assert not server.sessions
    check_protocol(server)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sentence 2: the server answered 422: the sentence holds 'satz2'" in result.stderr
    expected = [0, 1] if batch == 1 else [0, 1, 3, 4, 5]
    assert sorted(r["index"] for r in logged(output)) == expected
    assert not (output / "scores.tsv").exists()


@PROTOCOLS
def test_a_lost_server_ends_the_run_keeping_the_finished_sentences(test_set, tmp_path, step):
    output = tmp_path / "out"
    with FakeSessionServer(streams=3, drop_word="satz4", step=step) as server:
        result = remote_eval(server.port, test_set, output, "--batch-size", 3)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "was lost" in result.stderr and "sentence 4: the server was lost" in result.stderr
    # kept: every sentence the server gave its last words to before it was lost (sentence
    # 4 went to the second session to finish one); which ones those were is the threads'
    # race, and a sentence still under way is left for a rerun
    finished = {r["index"] for r in logged(output)}
    answered = {SENTENCES.index(text) for text in server.completed}
    assert finished == answered and len(finished) >= 2 and 4 not in finished


@pytest.mark.parametrize("batch", [1, 3])
def test_the_folder_records_the_language_the_server_reads(test_set, tmp_path, batch):
    """Kept for scoring the log again (`--score-only`), with the data files; a resumed run
    refuses other data files or a server that reads another language, and keeps its
    record with one that names none; a new run against a server that names none records
    its data files only."""
    output = tmp_path / "out"
    with FakeSessionServer(source_language="German") as server:
        result = remote_eval(server.port, test_set, output, "--batch-size", batch)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((output / "run_settings.json").read_text())
    units = {"eval_latency_unit", "eval_latency_spm_model"}  # how the log records them
    assert record["src_lang"] == "German"
    assert set(record) == {"src_lang", "source", "target", "span", *units}
    assert record["source"]["file"] == str((test_set / "src.txt").resolve())
    # other files: refused, not resumed into a log of two test sets (before: silently)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("src.txt", "ref.txt"):
        (other / name).write_text((test_set / name).read_text().replace("satz", "wort"))
    log = output / "instances.log"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    with FakeSessionServer(source_language="German") as server:
        resumed = remote_eval(
            server.port, other, output, "--batch-size", batch, "--continue-unfinished"
        )
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "was written with --source" in resumed.stderr and len(logged(output)) == 3
    # a log in words resumed in characters: refused (before: the units mixed in one log)
    with FakeSessionServer(source_language="German") as server:
        resumed = remote_eval(
            server.port, test_set, output, "--batch-size", batch, "--continue-unfinished",
            "--eval-latency-unit", "char",
        )  # fmt: skip
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "was written with --eval-latency-unit word, not char" in resumed.stderr
    assert len(logged(output)) == 3
    # a log a local run wrote (its richer record, the language by its code) resumes as it is
    local = {"src_lang": "de", "latency": "low"}
    (output / "run_settings.json").write_text(json.dumps(local))
    with FakeSessionServer(source_language="German") as server:
        resumed = remote_eval(
            server.port, test_set, output, "--batch-size", batch, "--continue-unfinished"
        )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # kept, with the sentences this run covered
    assert json.loads((output / "run_settings.json").read_text()) == {**local, "span": [0, 6]}
    with FakeSessionServer(source_language="Chinese") as server:
        resumed = remote_eval(
            server.port, test_set, output, "--batch-size", batch, "--continue-unfinished"
        )
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "written from a de source, and the server reads Chinese" in resumed.stderr
    # a server that names no language (SimulEval's) cannot contradict the record: kept
    log = output / "instances.log"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))
    with FakeSessionServer() as server:
        resumed = remote_eval(
            server.port, test_set, output, "--batch-size", batch, "--continue-unfinished"
        )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(logged(output)) == len(SENTENCES)
    assert json.loads((output / "run_settings.json").read_text()) == {**local, "span": [0, 6]}
    with FakeSessionServer() as server:
        result = remote_eval(server.port, test_set, tmp_path / "simulevals", "--batch-size", batch)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "simulevals" / "run_settings.json").read_text())
    assert set(record) == {"source", "target", "span", *units}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("hold", ["output", "all"])
def test_ctrl_c_ends_a_run_waiting_on_the_server(test_set, tmp_path, batch, hold):
    """Waiting for output, Ctrl-C ends the run within seconds and closes its sessions; a
    silent server (`hold="all"`: not even a close is answered) holds it a few seconds."""
    with FakeSessionServer(streams=3, hold=hold) as server:
        command = client_command(server.port, test_set, tmp_path / "out", "--batch-size", batch)
        # SIGINT as a terminal has it, even where pytest runs in the background (ignored)
        restore = partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
        client = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=restore)
        try:
            for _ in range(batch):  # every session waits for an answer
                assert server.held.acquire(timeout=60), client.stderr
            client.send_signal(signal.SIGINT)
            started = time.monotonic()
            client.wait(timeout=30)
        finally:
            client.kill()
        # closing a silent server's sessions waits out CLOSE_TIMEOUT; the rest is margin
        assert time.monotonic() - started < sum(CLOSE_TIMEOUT) + 8
        if hold == "output":
            assert not server.sessions  # a rerun finds its streams free
    assert client.returncode == -signal.SIGINT  # as Ctrl-C ends a process: a shell loop stops
    assert client.stderr.read().strip().splitlines()[-1] == "east-remote-eval: interrupted"


@pytest.mark.parametrize("batch", [1, 3])
def test_a_killed_clients_sessions_are_closed_by_the_next_run_into_its_folder(
    test_set, tmp_path, batch
):
    """SIGKILL leaves no time to close: the sessions held the server's streams until its
    --session-timeout (before: the rerun was refused, "0 free of its 3 streams"). The
    run's `sessions.json` names them; the next run into the folder closes them first."""
    output = tmp_path / "out"
    with FakeSessionServer(streams=3, hold="output") as server:
        kill_once_waiting(
            server, client_command(server.port, test_set, output, "--batch-size", batch), batch
        )
        recorded = json.loads((output / "sessions.json").read_text())
        assert recorded["server"] == f"http://127.0.0.1:{server.port}"
        assert sorted(recorded["sessions"]) == sorted(server.sessions)
        assert len(server.sessions) == batch
        server.hold = None
        other = remote_eval(server.port, test_set, tmp_path / "other", "--batch-size", 3)
        assert other.returncode == 2 and f"has {3 - batch} free" in other.stderr  # not its own
        with hold_run_lock(output, INSTANCES_LOCK):  # a live run's sessions are its own
            refused = remote_eval(server.port, test_set, output, "--batch-size", 3)
        assert refused.returncode == 2 and "is being written by" in refused.stderr
        assert len(server.sessions) == batch
        with FakeSessionServer(streams=3) as elsewhere:  # closed where the run held them
            result = remote_eval(elsewhere.port, test_set, output, "--batch-size", 3,
                                 "--continue-unfinished")  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert not server.sessions
    assert [r["index"] for r in logged(output)] == list(range(6))
    assert not (output / "sessions.json").exists()


def test_a_killed_clients_sessions_are_closed_whatever_the_servers_address_spelling(
    test_set, tmp_path
):
    """Killed through `localhost`, resumed through 127.0.0.1: the server is asked again
    once the sessions are closed (before: "has 0 free of its 3 streams", its answer from
    before the close)."""
    output = tmp_path / "out"
    with FakeSessionServer(streams=3, hold="output") as server:
        command = client_command(
            server.port, test_set, output, "--batch-size", 3, address="localhost"
        )
        kill_once_waiting(server, command, 3)
        server.hold = None
        result = remote_eval(server.port, test_set, output, "--batch-size", 3,
                             "--continue-unfinished")  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert not server.sessions
    assert [r["index"] for r in logged(output)] == list(range(6))


def test_a_raw_chinese_source_is_refused_before_the_folder_changes(test_set, tmp_path):
    """The server says it reads Chinese: a line of raw text would be one unit (before:
    translated, AL 1.0, exit 0), refused as a local run refuses it."""
    (test_set / "src.txt").write_text("一个戴着橙色帽子的男人正在凝视着什么东西。\n" * 6)
    with FakeSessionServer(source_language="Chinese") as server:
        result = remote_eval(server.port, test_set, tmp_path / "out", "--batch-size", 3)
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        "src.txt: line 1: '一个戴着橙色帽子的男人正在凝视着什么东西' is one unit" in result.stderr
    )
    assert not (tmp_path / "out").exists() and not server.requests[1:]


@pytest.mark.parametrize("batch", [1, 3])
def test_a_server_on_an_ipv6_address_is_reached(test_set, tmp_path, batch):
    """Before: "no system answers at http://::1:PORT (InvalidURL)"."""
    with FakeSessionServer(address="::1") as server:
        command = client_command(
            server.port, test_set, tmp_path / "out", "--batch-size", batch, address="::1"
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["prediction"] for r in logged(tmp_path / "out")] == SENTENCES


@PROTOCOLS
@pytest.mark.parametrize("batch", [1, 3])
def test_a_server_silent_past_the_request_timeout_is_taken_as_lost(test_set, tmp_path, batch, step):
    with FakeSessionServer(streams=3, hold="output", step=step) as server:
        started = time.monotonic()
        result = remote_eval(server.port, test_set, tmp_path / "out", "--batch-size", batch,
                             "--request-timeout", 1)  # fmt: skip
        assert time.monotonic() - started < 60
        assert not server.sessions
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sentence 0: the server gave no answer in time (--request-timeout)" in result.stderr


def test_score_only_scores_the_log_without_a_server(test_set, tmp_path):
    output = tmp_path / "out"
    with FakeSessionServer(streams=3) as server:
        assert remote_eval(server.port, test_set, output, "--batch-size", 2).returncode == 0
    log = (output / "instances.log").read_text()
    (output / "scores.tsv").unlink()
    score_only = [console_script("east-remote-eval"), "--score-only", "--output", output]
    run = partial(subprocess.run, capture_output=True, text=True, timeout=120)
    result = run([*score_only, "--no-progress-bar"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "instances.log").read_text() == log and (output / "scores.tsv").exists()
    # a run's flags beside it were taken and left unread (before: exit 0)
    data = run([*score_only, "--target", test_set / "ref.txt"])
    assert data.returncode == 2
    assert data.stderr.startswith("east-remote-eval: --target with --score-only: a log is ")
    client = run([*score_only, "--remote-port", "1", "--batch-size=2", "--start-index", "1"])
    assert client.returncode == 2 and client.stderr == (
        "east-remote-eval: --score-only scores the log in --output with the scoring flags "
        "alone; --remote-port, --batch-size, --start-index: a run's, not read (drop them)\n"
    )


def test_comet_flags_are_checked_before_a_server_is_asked(test_set, tmp_path):
    flags = ["--quality-metrics", "COMET", "--comet-checkpoint", "/nowhere/model.ckpt"]
    with FakeSessionServer() as server:
        port = server.port  # nothing listens there once it has stopped
    result = remote_eval(port, test_set, tmp_path / "out", *flags)
    assert result.returncode == 2 and "/nowhere/model.ckpt does not exist" in result.stderr
    assert "no system answers" not in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--source-type", "speech"], "--source-type speech: east-remote-eval evaluates text"),
        (["--target-type", "speech"], "--target-type speech: east-remote-eval evaluates text"),
        (["--dataloader", "text-to-txt"], "--dataloader text-to-txt: no such dataloader"),
        (["--user-dir", "nowhere"], "--user-dir nowhere: no such folder"),
        # before: the last one was asked
        (["--remote-port", "1"], "--remote-port given 2 times; give it once"),
        # before: "unrecognized arguments ... did you mean --batch-size?"
        (["--comet-batch-size", "4"], "--comet-batch-size: a flag of the COMET scorer, and"),
    ],
)
def test_what_it_cannot_evaluate_is_refused_before_the_folder_changes(
    test_set, tmp_path, flags, message
):
    result = remote_eval(1, test_set, tmp_path / "out", *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    (tmp_path / "afile").write_text("mine\n")
    result = remote_eval(1, test_set, tmp_path / "afile")
    assert result.returncode == 2 and "--output" in result.stderr and "a file" in result.stderr


@pytest.mark.parametrize(
    "flags",
    [
        ["--device", "cuda"],
        ["--agent", "agent.py", "--fp16"],
        ["--latency", "high", "--model-path", "m"],
        ["--num-beams=5"],
    ],
)
def test_the_served_systems_flags_are_refused(test_set, tmp_path, flags):
    """The served system was started with its own (before: silently ignored here; the
    agents' own, argparse's usage calling them unrecognized)."""
    result = remote_eval(1, test_set, tmp_path / "out", *flags)
    given = " ".join(flag.split("=")[0] for flag in flags if flag.startswith("--"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"east-remote-eval: {given}: the served system's" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_every_flag_of_the_agents_is_named_as_the_served_systems():
    """`SERVED_SYSTEM_FLAGS` lists each flag the agents add (but `--tgt-lang`, which the
    client sends), so that none given here is called unrecognized."""
    from east_agent.agent import EastAgent
    from east_agent.simuleval_glue.remote_eval import SERVED_SYSTEM_FLAGS
    from east_agent.waitk_agent import WaitkAgent

    parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
    EastAgent.add_args(parser)
    WaitkAgent.add_args(parser)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert flags - {"--tgt-lang"} <= set(SERVED_SYSTEM_FLAGS)


def test_the_target_language_is_checked_against_the_servers():
    from east_agent.simuleval_glue.remote_eval import _check_target_language

    english = {"settings": {"tgt_lang": "en"}}
    for wanted in (None, "en", "English"):
        _check_target_language(wanted, english, "http://server")
    _check_target_language("fr", {}, "http://server")  # SimulEval's server says nothing
    with pytest.raises(ValueError, match="--tgt-lang fr: the server at http://server trans"):
        _check_target_language("fr", english, "http://server")


def test_no_server_is_one_line_before_the_folder_changes(test_set, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text('{"index": 0}\n')
    with FakeSessionServer() as server:
        port = server.port  # nothing listens there once it has stopped
    result = remote_eval(port, test_set, output)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"east-remote-eval: no system answers at http://127.0.0.1:{port}" in result.stderr
    assert sorted(path.name for path in output.iterdir()) == ["instances.log"]
    assert (output / "instances.log").read_text() == '{"index": 0}\n'


@pytest.mark.parametrize(
    "address, port, said",
    [
        ("http://127.0.0.1", 12321, "--remote-address http://127.0.0.1: a host name or IP "
         "address, not a URL (the port is --remote-port's"),
        ("127.0.0.1:12321", 12321, "--remote-address 127.0.0.1:12321: a host name or IP "
         "address, not a host and port"),
        ("127.0.0.1", "abc", "--remote-port abc: not a port number (1 to 65535)"),
    ],
)  # fmt: skip
def test_an_address_or_port_that_is_none_is_refused_before_the_folder_changes(
    test_set, tmp_path, address, port, said
):
    """Before: "no system answers at http://[http://127.0.0.1]:12321" (taken for an IPv6
    literal, after asking), and a port `abc` asked for too."""
    output = tmp_path / "out"
    result = subprocess.run(
        client_command(port, test_set, output, address=address),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"east-remote-eval: {said}" in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()


@pytest.fixture
def answering_port():
    """A server on 127.0.0.1 that answers every GET as SimulEval's server answers `GET /`:
    its agent's name, not how many streams it has."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"info": "WaitkAgent[text -> text]"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with ThreadingHTTPServer(("127.0.0.1", 0), Answer) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        yield server.server_address[1]
        server.shutdown()


def test_simulevals_own_server_is_refused_concurrent_sentences(test_set, tmp_path, answering_port):
    """SimulEval's server keeps one agent state: sentences sent at once would mix."""
    result = remote_eval(answering_port, test_set, tmp_path / "out", "--batch-size", 2)
    assert result.returncode == 2
    assert "keeps one agent state (SimulEval's own server)" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--quality-metrics", "CHRF"], "--quality-metrics CHRF: no such metric"),
        (["--computation-aware"], "--computation-aware: SimulEval's computation-aware"),
        (
            ["--quality-metrics", "COMET", "--comet-checkpoint", "/nowhere/model.ckpt"],
            "--comet-checkpoint: COMET checkpoint /nowhere/model.ckpt does not exist",
        ),
    ],
)
def test_scoring_flags_simuleval_would_fail_on_are_refused(test_set, tmp_path, flags, message):
    with FakeSessionServer() as server:
        result = remote_eval(server.port, test_set, tmp_path / "out", *flags)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_being_written_is_refused(test_set, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "scores.tsv").write_text("BLEU\n1.0\n")
    with FakeSessionServer() as server, hold_run_lock(output, INSTANCES_LOCK):
        result = remote_eval(server.port, test_set, output)
    assert result.returncode != 0
    assert f"{output} is being written by process" in result.stderr, result.stderr[-2000:]
    assert sorted(path.name for path in output.iterdir()) == [INSTANCES_LOCK, "scores.tsv"]


def test_the_evaluators_side_imports_no_torch(test_set, tmp_path):
    """A whole evaluation, scores included, in a process that never imports torch."""
    import sys

    with FakeSessionServer(streams=2) as server:
        arguments = [
            "--remote-address", "127.0.0.1", "--remote-port", str(server.port),
            "--source", str(test_set / "src.txt"), "--target", str(test_set / "ref.txt"),
            "--output", str(tmp_path / "out"), "--batch-size", "2", "--no-progress-bar",
        ]  # fmt: skip
        program = (
            "import sys\n"
            "from east_agent.simuleval_glue.remote_eval import main\n"
            f"main({arguments!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "scores.tsv").exists()


def test_help_lists_the_clients_flags():
    result = subprocess.run([console_script("east-remote-eval"), "--help"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: east-remote-eval")
    # COMET's and the CA clock's too, which SimulEval adds only when asked for (before:
    # taken, and named nowhere in the help)
    shown = " ".join(result.stdout.split())
    for flag in ("--request-timeout", "--batch-size", "--remote-port", "--score-only",
                 "--comet-checkpoint", "--ca-unit-seconds"):  # fmt: skip
        assert flag in shown
    for flag in ("--agent", "--device", "--fp16", "--standalone"):  # refused: not offered
        assert f"{flag} " not in result.stdout
    # SimulEval's own text there was --computation-aware's ("Include computational latency.")
    assert "--no-use-ref-len latency with the prediction's length as the target" in shown
    # flags refused unless text: said so (before: SimulEval's texts, as if they were taken)
    assert "text (the only type this package's server writes)" in shown
    assert "--computation-aware SimulEval's, for speech input: refused for text" in shown


def test_a_log_of_another_served_system_is_not_resumed(test_set, tmp_path):
    """The server says what decides its translations (`GET /`: `settings`); the folder
    records it, and a resume against a server of other settings, or of settings other
    than the local run's that wrote the log, is refused (before: a log of two systems), and
    so is a log of known settings against SimulEval's server, which says none, or the other
    way round."""
    from east_agent.simuleval_glue.remote_eval import _served_settings

    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text('{"index": 0}\n')
    args = argparse.Namespace(
        output=str(output), continue_unfinished=True,
        source=str(test_set / "src.txt"), target=str(test_set / "ref.txt"),
        eval_latency_unit="word", eval_latency_spm_model=None,
    )  # fmt: skip
    low = {"agent_class": "EastAgent", "latency": "low", "num_beams": 1}
    record = _served_settings(args, {"settings": low})
    assert record["served"] == low
    (output / "run_settings.json").write_text(json.dumps(record))
    assert _served_settings(args, {"settings": low}) == record
    with pytest.raises(ValueError, match="latency: 'low' there, 'high' now"):
        _served_settings(args, {"settings": {**low, "latency": "high"}})
    local = {**low, "source": record["source"], "target": record["target"]}
    (output / "run_settings.json").write_text(json.dumps(local))  # a local run's log
    assert _served_settings(args, {"settings": low}) == local
    with pytest.raises(ValueError, match="num_beams: 1 there, 5 now"):
        _served_settings(args, {"settings": {**low, "num_beams": 5}})
    # against a server that says nothing (SimulEval's), and a log it wrote against this
    # package's server: either could be another system (before: resumed, exit 0)
    with pytest.raises(ValueError, match="by a system whose settings its record names, and "):
        _served_settings(args, {})
    stock = {name: value for name, value in record.items() if name != "served"}
    (output / "run_settings.json").write_text(json.dumps(stock))
    assert _served_settings(args, {}) == stock
    with pytest.raises(ValueError, match=r"says nothing of its settings \(SimulEval's own\), "):
        _served_settings(args, {"settings": low})
    # a record from before the weights' dtype was a setting names none: not compared for it
    # (before: "weights_dtype: None there, 'float32' now")
    newer = {**low, "weights_dtype": "float32"}
    for old_record in (record, local):
        (output / "run_settings.json").write_text(json.dumps(old_record))
        assert _served_settings(args, {"settings": newer}) == old_record
    (output / "run_settings.json").write_text(json.dumps({**record, "served": newer}))
    with pytest.raises(ValueError, match="weights_dtype: 'float32' there, 'bfloat16' now"):
        _served_settings(args, {"settings": {**low, "weights_dtype": "bfloat16"}})


def test_a_server_that_takes_the_connection_but_says_nothing_is_named():
    """`GET /` waits --request-timeout, not a fixed 30 s, and says what it saw (before:
    "no system answers", for a server that was there but stopped)."""
    import socket

    from east_agent.simuleval_glue.remote_eval import _server_info

    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ValueError, match="took the connection but said nothing in 1 s"):
            _server_info(url, 1)
        assert time.monotonic() - started < 20


@pytest.mark.parametrize("batch", [1, 3])
def test_a_run_without_references_translates_and_records_its_source(test_set, tmp_path, batch):
    """`--no-scoring` without `--target` (before: a TypeError traceback recording it)."""
    output = tmp_path / "out"
    command = [
        console_script("east-remote-eval"), "--remote-port", None, "--source",
        str(test_set / "src.txt"), "--output", str(output), "--no-progress-bar",
        "--no-scoring", "--batch-size", str(batch),
    ]  # fmt: skip
    with FakeSessionServer(source_language="German") as server:
        command[2] = str(server.port)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(logged(output)) == len(SENTENCES)
    record = json.loads((output / "run_settings.json").read_text())
    assert "source" in record and record["target"] is None
    # the rest with references: refused before anything is translated (before: translated,
    # then sacrebleu's TypeError on the sentences without one, exit 1)
    kept = (output / "instances.log").read_text()
    (output / "instances.log").write_text("".join(kept.splitlines(keepends=True)[:-1]))
    resumed = [c for c in command if c != "--no-scoring"]
    resumed += ["--target", str(test_set / "ref.txt"), "--continue-unfinished"]
    for said in (
        "was written with no --target, not --target ",
        # a record of an older version, which named no target when the run had none
        "holds sentences translated without --target (no reference)",
    ):
        with FakeSessionServer(source_language="German") as server:
            resumed[2] = str(server.port)
            result = subprocess.run(resumed, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-3000:]
        assert said in result.stderr
        assert len(logged(output)) == len(SENTENCES) - 1  # nothing translated
        settings = json.loads((output / "run_settings.json").read_text())
        settings.pop("target", None)
        (output / "run_settings.json").write_text(json.dumps(settings))


def test_a_log_of_sentences_without_references_is_not_scored(test_set, tmp_path):
    """A log resumed with --target under a record of an older version that named no target
    holds sentences without references: named by line before SimulEval's scorers (before:
    sacrebleu's TypeError)."""
    from east_agent.simuleval_glue.batch import score

    output = tmp_path / "out"
    output.mkdir()
    records = [
        {"index": 0, "prediction": "a", "delays": [1], "elapsed": [1.0],
         "prediction_length": 1, "reference": None, "source": ["x"], "source_length": 1},
        {"index": 1, "prediction": "b", "delays": [1], "elapsed": [1.0],
         "prediction_length": 1, "reference": "b", "source": ["y"], "source_length": 1},
    ]  # fmt: skip
    (output / "instances.log").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ValueError, match="line 1: sentence 0 holds no reference"):
        score(argparse.Namespace(output=str(output), quality_metrics=["BLEU"]))


@pytest.mark.parametrize(
    "bad_answer, said",
    [
        ("html", "the server's answer is not a SimulEval segment (JSONDecodeError: "),
        ("number", "its 'content' is no text or its 'finished' no true or false"),
        ("never", "the server gave 5 answers after the whole source was sent, none of them"),
    ],
)
@pytest.mark.parametrize("batch", [1, 2])
def test_an_answer_that_is_no_segment_is_named_with_its_sentence(
    test_set, tmp_path, monkeypatch, capsys, bad_answer, said, batch
):
    """A proxy's error page, a segment of a number, a server that never finishes: before,
    a JSON error naming nothing, a TypeError traceback, a client that never ended."""
    from east_agent.simuleval_glue import remote_eval

    monkeypatch.setattr(remote_eval, "MAX_ANSWERS_AFTER_SOURCE", 5)
    with FakeSessionServer(bad_answer=bad_answer) as server:
        arguments = [
            "--remote-port", str(server.port), "--source", str(test_set / "src.txt"),
            "--target", str(test_set / "ref.txt"), "--output", str(tmp_path / "out"),
            "--no-progress-bar", "--batch-size", str(batch),
        ]  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            remote_eval.main(arguments)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert said in error and "Traceback" not in error, error
    assert "sentence 0: the server" in error or "sentence 1: the server" in error
    if batch > 1:  # before: "the server ... was lost", of a server that answered
        assert "did not answer as a SimulEval agent does" in error


def test_a_server_that_is_no_simuleval_one_is_refused_before_the_folder_changes(test_set, tmp_path):
    """Before: config.yaml, run_settings.json and an empty log written, then "sentence 0:
    the server answered 501 ... the sentences finished before it are in ..."."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = partial(SimpleHTTPRequestHandler, directory=str(test_set))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        try:
            result = remote_eval(web.server_address[1], test_set, tmp_path / "out")
        finally:
            web.shutdown()
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.endswith(
        f"the server at http://127.0.0.1:{web.server_address[1]} is no SimulEval server: "
        "GET / answered text/html, not JSON (another program on that port? check "
        "--remote-address and --remote-port)\n"
    )
    assert not (tmp_path / "out").exists()
