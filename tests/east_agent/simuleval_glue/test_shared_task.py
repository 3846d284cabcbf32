"""Shared-task paths: a standalone agent server evaluated over HTTP, a --system-dir."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import torch
import yaml
from commands import AGENT_FILE, console_script, with_flags, write_toy_test_set

from east_agent.simuleval_glue import system_dir
from east_agent.simuleval_glue.system_dir import system_config


@pytest.fixture
def flags_matched_whole():
    """argparse's parsers as east-simuleval makes them, for the test (its checks called
    in this process)."""
    from east_agent.simuleval_glue import cli

    with cli._flags_matched_whole():
        yield


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared-task")
    write_toy_test_set(folder, 3, seed=11)
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


AGENT_FLAGS = ["--src-lang", "de", "--tgt-lang", "en", "--latency", "low", "--max-context", "200"]


def wait_for_server(server, port, log):
    deadline = time.time() + 120
    while True:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok:
                return
        except requests.RequestException:  # not up yet, or too busy loading to answer
            assert time.time() < deadline, "the agent server did not come up"
            time.sleep(0.2)


def non_loopback_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_clients_of_one_server_each_get_a_local_runs_scores(east_checkpoint, test_set, tmp_path):
    """Two clients at once; one client with three sentences at once (three sessions); a
    client killed and resumed; a sentence the server refuses."""
    local = tmp_path / "local"
    run(
        console_script("east-simuleval"), "--agent", AGENT_FILE, "--model-path", east_checkpoint,
        *AGENT_FLAGS, "--source", test_set / "src.txt", "--target", test_set / "ref.txt",
        "--output", local,
    )  # fmt: skip
    port, server_log = free_port(), tmp_path / "server.log"
    server_errors = server_log.open("w")  # a file, not a pipe: a full pipe would stall it
    server = subprocess.Popen(
        [console_script("east-simuleval"), "--standalone", "--remote-port", str(port),
         "--agent", str(AGENT_FILE), "--model-path", str(east_checkpoint), *AGENT_FLAGS,
         "--batch-size", "3", "--session-timeout", "4"],
        stdout=subprocess.DEVNULL, stderr=server_errors,
    )  # fmt: skip
    try:
        wait_for_server(server, port, server_log)
        a_port_in_use_is_refused_before_loading(port, tmp_path)
        clients = [
            subprocess.Popen(
                remote_eval_command(port, test_set, tmp_path / name, *extra),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # the server's own target language asked for, by code or by name
            for name, extra in (("first", ["--tgt-lang", "en"]), ("second", []))
        ]
        for client in clients:
            assert client.wait(timeout=300) == 0, client.stderr.read()[-3000:]
        three_at_once(port, test_set, tmp_path / "concurrent")
        another_target_language_is_refused(port, test_set, tmp_path / "french")
        check_sessions_and_bad_requests(f"http://127.0.0.1:{port}")
        words = one_request_or_two_give_the_same_output(f"http://127.0.0.1:{port}", test_set)
        # the clients sent each word and took its output in one request (POST /step)
        access = server_log.read_text()
        assert "200 POST /step" in access and access.count("200 PUT /input") == len(words)
        resume_after_a_kill(port, test_set, tmp_path / "first")
        an_overflow_is_named(port, test_set, tmp_path)
        address = non_loopback_address()
        if address is not None:  # the server listens on the loopback interface only
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://{address}:{port}/", timeout=2)
    finally:
        server.terminate()
        server.wait(timeout=30)
        server_errors.close()
    local_scores = scores(local)
    local_log = [json.loads(line) for line in (local / "instances.log").read_text().splitlines()]
    # the served system's settings, as the local run recorded its own (less its data files,
    # the units its log is in and the sentences it covers: each client's own)
    remote_settings = json.loads((tmp_path / "second" / "run_settings.json").read_text())
    local_settings = json.loads((local / "run_settings.json").read_text())
    clients = ("source", "target", "eval_latency_unit", "eval_latency_spm_model", "span")
    assert remote_settings["served"] == {
        k: v for k, v in local_settings.items() if k not in clients
    }
    assert remote_settings["span"] == local_settings["span"] == [0, 3]
    for name in ("first", "second", "concurrent"):
        remote_scores = scores(tmp_path / name)
        for metric in ("BLEU", "LAAL", "AL", "AP", "DAL"):
            assert remote_scores[metric] == local_scores[metric], (name, metric)
        remote_log = (tmp_path / name / "instances.log").read_text().splitlines()
        remote_log = [json.loads(line) for line in remote_log]
        assert [r["prediction"] for r in remote_log] == [r["prediction"] for r in local_log]
        assert [r["delays"] for r in remote_log] == [r["delays"] for r in local_log]


def test_batch_json_counts_the_sessions_the_server_had_a_stream_for(
    east_checkpoint, test_set, tmp_path, monkeypatch, capsys
):
    """Another client takes one of the three streams after the run asked for three: the
    third session gets 503, and the other two translate (before: batch.json said 3)."""
    from east_agent.simuleval_glue import remote_eval

    port, server_log = free_port(), tmp_path / "server.log"
    with server_log.open("w") as server_errors:
        server = subprocess.Popen(
            [console_script("east-simuleval"), "--standalone", "--remote-port", str(port),
             "--agent", str(AGENT_FILE), "--model-path", str(east_checkpoint), *AGENT_FLAGS,
             "--batch-size", "3"],
            stdout=subprocess.DEVNULL, stderr=server_errors,
        )  # fmt: skip
        try:
            wait_for_server(server, port, server_log)
            url, other = f"http://127.0.0.1:{port}", {"X-Session-Id": "another-client"}
            free = remote_eval._server_info(url, 60)  # what the run is told: three free
            monkeypatch.setattr(remote_eval, "_server_info", lambda *_: free)
            requests.post(f"{url}/reset", headers=other).raise_for_status()
            output = tmp_path / "out"
            remote_eval.main(remote_eval_command(port, test_set, output, "--batch-size", "3")[1:])
            requests.post(f"{url}/close", headers=other).raise_for_status()
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert "no free stream (503) for 1 of 3 sessions" in capsys.readouterr().err
    assert len((output / "instances.log").read_text().splitlines()) == 3
    batching = json.loads((output / "batch.json").read_text())
    assert (batching["batch_size"], batching["streams"]) == (3, 2)
    assert "up to 2 streams sharing the server" in batching["computation_aware"]


def a_port_in_use_is_refused_before_loading(port, tmp_path):
    """In one line, before the model loads (a traceback after it, before)."""
    busy = subprocess.run(
        [console_script("east-simuleval"), "--standalone", "--remote-port", str(port),
         "--agent", str(AGENT_FILE), "--model-path", str(tmp_path / "never-loaded"),
         *AGENT_FLAGS],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert busy.returncode == 2, busy.stderr[-3000:]
    assert f"--remote-port {port}: cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "never-loaded" not in busy.stderr and "Traceback" not in busy.stderr


def another_target_language_is_refused(port, test_set, output):
    """`--tgt-lang` goes to the server with every segment; this package's server
    translates into its own (before: ignored, an English run scored against French)."""
    result = subprocess.run(
        remote_eval_command(port, test_set, output, "--tgt-lang", "fr"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"--tgt-lang fr: the server at http://127.0.0.1:{port} translates into en" in (
        result.stderr
    )
    assert not output.exists()


def server_refusal(folder, *flags):
    """`east-simuleval --standalone` with `flags`, in `folder`, its model never loaded."""
    command = [
        console_script("east-simuleval"), "--standalone", "--remote-port", str(free_port()),
        "--agent", str(AGENT_FILE), "--model-path", str(folder / "never-loaded"), *AGENT_FLAGS,
    ]  # fmt: skip
    return subprocess.run(
        with_flags(command, *flags),
        capture_output=True, text=True, timeout=120, cwd=folder,
    )  # fmt: skip


def test_the_evaluators_flags_are_refused_by_the_server(tmp_path):
    """The server translates what clients send and scores nothing: the data and scoring
    flags would be ignored there (before: silently); refused before the model loads."""
    refused = server_refusal(
        tmp_path, "--source", "src.txt", "--output=out", "--comet-batch-size", "8",
        "--dataloader", "text-to-txt",  # a typo too: the evaluator's all the same
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    said = "--source --output --comet-batch-size --dataloader: the evaluator's, not the server's"
    assert said in refused.stderr
    assert "never-loaded" not in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_the_server_refuses_a_device_it_lacks_before_loading(tmp_path):
    """Before: a traceback from the model load."""
    refused = server_refusal(tmp_path, "--device", "gpu")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "east-simuleval: --device: 'gpu' is not a device" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_server_refuses_its_own_flag_given_twice(tmp_path):
    """Before the repeat check: the last one was taken, without a word."""
    refused = server_refusal(tmp_path, "--session-timeout", "5", "--session-timeout=60")
    assert refused.returncode == 2, refused.stderr[-3000:]
    said = "east-simuleval: --session-timeout given 2 times; give it once\n"
    assert refused.stderr.endswith(said) and "never-loaded" not in refused.stderr


def test_the_server_names_a_port_that_is_no_number(tmp_path):
    """Before: "invalid literal for int() with base 10: 'abc'", no flag named."""
    refused = server_refusal(tmp_path, "--remote-port", "abc")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "east-simuleval: --remote-port abc: not a port number (1 to 65535)" in refused.stderr
    assert "never-loaded" not in refused.stderr and "Traceback" not in refused.stderr


def test_simulevals_own_server_names_a_port_that_is_no_number(tmp_path):
    """Another agent gets SimulEval's own server; its port is checked as this package's
    server checks it (before: a socket traceback, "Servname not supported")."""
    sleepy = Path(__file__).with_name("sleepy_agent.py")
    refused = subprocess.run(
        [console_script("east-simuleval"), "--standalone", "--agent", str(sleepy),
         "--remote-port", "abc"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.endswith(
        "east-simuleval: --remote-port abc: not a port number (1 to 65535)\n"
    )
    assert "Traceback" not in refused.stderr


def remote_eval_command(port, test_set, output, *extra):
    return [
        console_script("east-remote-eval"),
        "--remote-address", "127.0.0.1", "--remote-port", str(port),
        "--source", str(test_set / "src.txt"), "--target", str(test_set / "ref.txt"),
        "--output", str(output), *extra,
    ]  # fmt: skip


def three_at_once(port, test_set, output):
    """`--batch-size 4` for the three sentences: a session a sentence, the server's three
    streams in one forward (a fourth session is not opened: it would find no free stream)."""
    run(*remote_eval_command(port, test_set, output, "--batch-size", "4"))
    batching = json.loads((output / "batch.json").read_text())
    assert (batching["batch_size"], batching["streams"]) == (4, 3)
    assert "sharing the server" in batching["computation_aware"]
    log = output / "instances.log"
    lines = log.read_text().splitlines(keepends=True)
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
    log.write_text(lines[2] + lines[0][:30])  # killed: sentence 2 done, 0 being written
    run(*remote_eval_command(port, test_set, output, "--batch-size", "4", "--continue-unfinished"))
    resumed = log.read_text().splitlines(keepends=True)
    assert [json.loads(line)["index"] for line in resumed] == [0, 1, 2] and resumed[2] == lines[2]


def resume_after_a_kill(port, test_set, output):
    """A client killed after its first sentence, while writing its second, resumes."""
    log = output / "instances.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[1][:30])
    for name in ("scores.tsv", "metrics.tsv"):
        (output / name).unlink()
    run(*remote_eval_command(port, test_set, output, "--continue-unfinished"))
    assert log.read_text().splitlines(keepends=True)[0] == lines[0]
    assert len(log.read_text().splitlines()) == 3 and (output / "scores.tsv").exists()


def an_overflow_is_named(port, test_set, tmp_path):
    """The server refuses a sentence too long for its context (422): the client names it
    and the server's reason, and keeps the sentence finished before it."""
    overlong = tmp_path / "overlong"
    overlong.mkdir()
    source = (test_set / "src.txt").read_text().splitlines()[:1] + [" ".join(["rote"] * 300)]
    (overlong / "src.txt").write_text("\n".join(source) + "\n")
    (overlong / "ref.txt").write_text("a\nb\n")
    output = tmp_path / "overlong-out"
    result = subprocess.run(
        remote_eval_command(port, overlong, output), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "sentence 1: the server answered 422: session" in result.stderr
    assert "needs more than 200 tokens" in result.stderr and "Traceback" not in result.stderr
    assert [json.loads(line)["index"] for line in (output / "instances.log").open()] == [0]
    assert not (output / "scores.tsv").exists()


def check_sessions_and_bad_requests(url):
    never_opened = requests.put(f"{url}/input", data=b"{}", headers={"X-Session-Id": "bad"})
    assert never_opened.status_code == 404, never_opened.text  # only /reset opens one
    requests.post(f"{url}/reset", headers={"X-Session-Id": "bad"}).raise_for_status()
    for body, message in [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"content": "Haus"}', "no 'data_type'"),
        (b'{"data_type": "text", "finished": false}', "string 'content'"),
        (b'{"data_type": null, "content": "Haus", "finished": true}', "carries no content"),
    ]:
        reply = requests.put(f"{url}/input", data=body, headers={"X-Session-Id": "bad"})
        assert reply.status_code == 400 and message in reply.json()["error"], reply.text
    # over 1 MiB: 413 naming the limit (before: tornado's bare 400, or the connection
    # dropped, which a batched client took for a lost server and ended the run; later
    # dropped beyond 64 MiB), however large the body (read as it comes, not kept)
    for size in (2 << 20, 80 << 20):
        unit = json.dumps({"data_type": "text", "content": "x" * size, "finished": False})
        for endpoint, method in (("input", requests.put), ("step", requests.post)):
            reply = method(f"{url}/{endpoint}", data=unit, headers={"X-Session-Id": "bad"})
            assert reply.status_code == 413, reply.text
            assert "above this server's limit of 1048576" in reply.json()["error"]
    # a body split in chunks (no Content-Length) is counted as it comes, past the 64 MiB
    # the server held before too
    chunks = (b"x" * (1 << 20) for _ in range(80))
    reply = requests.put(f"{url}/input", data=chunks, headers={"X-Session-Id": "bad"})
    assert reply.status_code == 413 and "has 83886080 bytes" in reply.json()["error"]
    assert requests.get(f"{url}/reset").status_code == 405  # each endpoint its methods
    requests.post(f"{url}/close", headers={"X-Session-Id": "bad"}).raise_for_status()
    reopened = requests.post(f"{url}/reset", headers={"X-Session-Id": "bad"})  # closed: gone
    assert reopened.status_code == 410 and "not opened again" in reopened.json()["error"]
    assert requests.get(f"{url}/").json()["sessions"] == 0  # the clients closed theirs
    requests.post(f"{url}/reset").raise_for_status()  # the legacy session
    for name in ("a", "b"):
        requests.post(f"{url}/reset", headers={"X-Session-Id": name}).raise_for_status()
    full = requests.post(f"{url}/reset", headers={"X-Session-Id": "c"})
    assert full.status_code == 503 and "all 3 streams are in use" in full.json()["error"]
    deadline = time.time() + 30
    while requests.get(f"{url}/").json()["sessions"]:
        assert time.time() < deadline, "idle sessions were not dropped"
        time.sleep(0.5)
    requests.post(f"{url}/reset", headers={"X-Session-Id": "b"}).raise_for_status()


def translate_by_hand(url, session, words, one_request):
    """A sentence through the server, word by word: `POST /step`, or `PUT /input` then
    `GET /output` (SimulEval's protocol); the outputs it gave, in order."""
    headers = {"X-Session-Id": session}
    requests.post(f"{url}/reset", headers=headers).raise_for_status()
    outputs = []
    for position, word in enumerate(words):
        body = json.dumps({"index": position, "data_type": "text", "content": word,
                           "finished": position == len(words) - 1})  # fmt: skip
        if one_request:
            reply = requests.post(f"{url}/step", data=body, headers=headers)
        else:
            requests.put(f"{url}/input", data=body, headers=headers).raise_for_status()
            reply = requests.get(f"{url}/output", headers=headers)
        reply.raise_for_status()
        outputs.append((reply.json()["content"] or "", reply.json()["finished"]))  # empty: []
    requests.post(f"{url}/close", headers=headers).raise_for_status()
    return outputs


def one_request_or_two_give_the_same_output(url, test_set):
    assert requests.get(f"{url}/").json()["step"] is True  # east-remote-eval uses /step
    words = (test_set / "src.txt").read_text().splitlines()[0].split()
    by_step = translate_by_hand(url, "by-step", words, one_request=True)
    assert by_step == translate_by_hand(url, "by-two", words, one_request=False)
    assert by_step[-1][1] is True and "".join(text for text, _ in by_step).strip()
    headers = {"X-Session-Id": "bad-step"}
    requests.post(f"{url}/reset", headers=headers).raise_for_status()
    bad = requests.post(f"{url}/step", data=b"{not json", headers=headers)
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    requests.post(f"{url}/close", headers=headers).raise_for_status()
    return words


def test_system_dir_runs_under_stock_simuleval(east_checkpoint, test_set, tmp_path):
    """Packaged as the README shows (the agent's flags after the options); run by the stock
    `simuleval` and by `east-simuleval`, which gives the same log."""
    folder = tmp_path / "submission"
    packaged = run(
        console_script("east-package-system"), folder, "--model-path", east_checkpoint,
        "src_lang=de", "tgt_lang=en", "latency=low", "document_level=false",
    )  # fmt: skip
    assert "ffmpeg" not in packaged.stderr  # SimulEval's warning, silenced by the package
    assert (folder / "model").is_symlink()
    main = (folder / "main.yaml").read_text()
    assert "agent_class: east_agent.agent.EastAgent" in main
    assert "document_level" not in main  # SimulEval would turn `false` into the flag
    run(
        console_script("simuleval"), "--system-dir", folder, "--source", test_set / "src.txt",
        "--target", test_set / "ref.txt", "--output", tmp_path / "out",
    )  # fmt: skip
    log = (tmp_path / "out" / "instances.log").read_text().splitlines()
    assert len(log) == 3
    run(
        console_script("east-simuleval"), "--system-dir", folder, "--source",
        test_set / "src.txt", "--target", test_set / "ref.txt", "--output", tmp_path / "ours",
    )  # fmt: skip
    ours = (tmp_path / "ours" / "instances.log").read_text().splitlines()
    without_elapsed = [{**json.loads(line), "elapsed": None} for line in log]
    assert [{**json.loads(line), "elapsed": None} for line in ours] == without_elapsed
    refused = subprocess.run(
        [console_script("east-simuleval"), "--system-dir", folder, "--source",
         test_set / "src.txt", "--target", test_set / "ref.txt", "--output",
         tmp_path / "aware", "--computation-aware"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]  # before, after the decoding:
    assert "--computation-aware: SimulEval's computation-aware" in refused.stderr  # a traceback
    assert not (tmp_path / "aware").exists()
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(folder / "main.yaml", moved)
    (moved / "model").symlink_to(tmp_path / "gone")
    broken = subprocess.run(
        [console_script("simuleval"), "--system-dir", moved, "--source", test_set / "src.txt",
         "--target", test_set / "ref.txt", "--output", tmp_path / "broken"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert broken.returncode == 2 and "Traceback" not in broken.stderr  # before: SimulEval's
    assert broken.stderr.splitlines()[-1] == (  # traceback of the one-line error
        f"simuleval: --model-path model: a broken link, to {tmp_path / 'gone'}, which is "
        "not there (the model moved or was removed)"
    )


def test_stock_simuleval_checks_a_system_dirs_data_files_before_its_model(
    east_checkpoint, test_set, tmp_path
):
    """SimulEval's `simuleval --system-dir` gives the agent the folder's flags alone and
    builds it inside the folder: the command line's files, named relative to where it
    runs, are checked first, as `east-simuleval` checks them (before: a reference file of
    another length was SimulEval's AssertionError once the model had loaded). A folder
    whose model link is broken shows that nothing of the model was read."""
    folder = tmp_path / "submission"
    run(
        console_script("east-package-system"), folder, "--model-path", east_checkpoint,
        "src_lang=de", "tgt_lang=en", "latency=low",
    )  # fmt: skip
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(folder / "main.yaml", broken)
    (broken / "model").symlink_to(tmp_path / "gone")
    shutil.copy(test_set / "src.txt", tmp_path / "src.txt")
    lines = (test_set / "ref.txt").read_text().splitlines()
    (tmp_path / "short.txt").write_text("\n".join(lines[:2]) + "\n")

    def stock(system, target, output):
        return subprocess.run(
            [console_script("simuleval"), "--system-dir", system, "--source", "src.txt",
             "--target", target, "--output", output],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip

    refused = stock("broken", "short.txt", "out")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "simuleval: src.txt has 3 lines but short.txt has 2: each source sentence needs its "
        "reference on the same line"
    )
    assert not (tmp_path / "out").exists()
    shutil.copy(test_set / "ref.txt", tmp_path / "ref.txt")
    ran = stock("submission", "ref.txt", "out")
    assert ran.returncode == 0, ran.stderr[-3000:]
    logged = [json.loads(line) for line in (tmp_path / "out" / "instances.log").open()]
    sources = (test_set / "src.txt").read_text().splitlines()
    assert [" ".join(record["source"].split()) for record in logged] == sources
    assert [record["reference"].rstrip("\n") for record in logged] == lines


def test_a_system_dirs_max_context_no_sentence_fits_in_is_refused_before_its_model(
    east_checkpoint, east_tokenizer, test_set, tmp_path
):
    """Its main.yaml's flags hold no span (the evaluator's): every sentence of the source
    counts (this check's first version failed there: an AttributeError traceback)."""
    from east_agent.agent import EastAgent
    from east_agent.decoding.east import DecoderConfig
    from east_agent.decoding.long_form import prompt_tokens
    from east_agent.decoding.streaming import SENTENCE_ROOM
    from east_agent.simuleval_glue.data_files import source_tokens

    sources = (test_set / "src.txt").read_text().splitlines()
    references = (test_set / "ref.txt").read_text().splitlines()
    tokens = source_tokens(sources, east_tokenizer, "de")
    prompt = EastAgent.fixed_prompt(east_tokenizer, DecoderConfig("de", "en"))
    fixed = prompt_tokens(east_tokenizer, *prompt)
    longer = [index for index, count in enumerate(tokens) if count > SENTENCE_ROOM + 1]
    assert len(longer) >= 2  # sentences that need more than the prompt's floor
    data = tmp_path / "data"
    data.mkdir()
    (data / "src.txt").write_text("".join(sources[i] + "\n" for i in longer))
    (data / "ref.txt").write_text("".join(references[i] + "\n" for i in longer))
    context = fixed + min(tokens[i] for i in longer) - 1
    folder = tmp_path / "submission"
    run(
        console_script("east-package-system"), folder, "--model-path", east_checkpoint,
        "src_lang=de", "tgt_lang=en", f"max_context={context}",
    )  # fmt: skip
    for command in ("simuleval", "east-simuleval"):
        refused = subprocess.run(
            [console_script(command), "--system-dir", folder, "--source", data / "src.txt",
             "--target", data / "ref.txt", "--output", tmp_path / command],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        said = f"none of the {len(longer)} sentences to translate fits in --max-context {context}"
        assert said in refused.stderr.splitlines()[-1]
        assert not (tmp_path / command).exists()


def test_a_system_dir_runs_references_are_checked_in_the_command_lines_unit(
    east_checkpoint, test_set, tmp_path
):
    """A Chinese system folder scored in characters (the command line's unit: SimulEval
    reads the evaluator's flags from there alone, and a `main.yaml` holding them is
    refused): references spaced otherwise than single spaces between words are its to
    have (before: refused by the word unit's check)."""
    folder = tmp_path / "submission"
    run(
        console_script("east-package-system"), folder, "--model-path", east_checkpoint,
        "src_lang=de", "tgt_lang=zh", "latency=low",
    )  # fmt: skip
    references = ["一只  猫", "两只狗 ", "\t三只鸟"]
    (tmp_path / "ref.zh").write_text("\n".join(references) + "\n")
    run(
        console_script("east-simuleval"), "--system-dir", folder, "--source",
        test_set / "src.txt", "--target", tmp_path / "ref.zh", "--output", tmp_path / "out",
        "--eval-latency-unit", "char", "--sacrebleu-tokenizer", "zh",
    )  # fmt: skip
    logged = (tmp_path / "out" / "instances.log").read_text().splitlines()
    assert [json.loads(line)["reference"].rstrip("\n") for line in logged] == references


def test_a_system_dir_run_records_its_settings_and_resumes_only_its_own_log(
    east_checkpoint, test_set, tmp_path
):
    """The folder's agent, its `main.yaml` flags and its model (by fingerprint) are the
    run's settings: a log resumes with the same system (moved too), not with another's
    (before: no record, and another system's sentences went on into the log, exit 0)."""
    systems = {}
    for latency in ("low", "high"):
        systems[latency] = tmp_path / f"system-{latency}"
        run(
            console_script("east-package-system"), systems[latency], "--model-path",
            east_checkpoint, "src_lang=de", "tgt_lang=en", f"latency={latency}",
        )  # fmt: skip
    data = ["--source", test_set / "src.txt", "--target", test_set / "ref.txt"]
    output = tmp_path / "out"
    run(console_script("east-simuleval"), "--system-dir", systems["low"], *data, "--output", output)
    record = json.loads((output / "run_settings.json").read_text())
    assert record["agent_class"] == "EastAgent" and record["latency"] == "low"
    assert record["model_path"]["folder"] == str((systems["low"] / "model").resolve())
    whole = (output / "instances.log").read_text().splitlines(keepends=True)
    (output / "instances.log").write_text(whole[0])
    other = subprocess.run(
        list(map(str, [console_script("east-simuleval"), "--system-dir", systems["high"],
                       *data, "--output", output, "--continue-unfinished"])),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert other.returncode == 2, other.stderr[-3000:]
    assert "was written with other settings (latency: 'low' there, 'high' now)" in other.stderr
    assert (output / "instances.log").read_text() == whole[0]
    moved = tmp_path / "moved"
    systems["low"].rename(moved)
    run(console_script("east-simuleval"), "--system-dir", moved, *data, "--output", output,
        "--continue-unfinished")  # fmt: skip
    resumed = (output / "instances.log").read_text().splitlines()
    assert [json.loads(line)["prediction"] for line in resumed] == [
        json.loads(line)["prediction"] for line in whole
    ]
    # a flag SimulEval does not read with a system folder (a typo, an agent's flag), or an
    # agent beside it, is refused before the folder changes (before: the log emptied, then
    # SimulEval's refusal after the model loaded; a traceback for --agent)
    for extra, said in (
        (["--no-scorng"], "--no-scorng: not read with --system-dir"),
        (["--latency", "high"], "--latency high: not read with --system-dir"),
        (["--agent", AGENT_FILE], "--system-dir and --agent (or --agent-class): name one"),
    ):
        refused = subprocess.run(
            list(map(str, [console_script("east-simuleval"), "--system-dir", moved, *data,
                           "--output", output, *extra])),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr[-3000:]
        assert "Traceback" not in refused.stderr
        assert (output / "instances.log").read_text().splitlines() == resumed


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"latency": "very low"}, "splits YAML values on spaces"),
        # before: "latency='': SimulEval splits YAML values on spaces"
        ({"latency": ""}, r"latency=: no value \(leave the flag out for its default\)"),
        (
            {"latncy": "low"},
            r"latncy=low: the east agent has no such flag \(did you mean latency=\?\)",
        ),
        (
            {"latency": "instant"},
            "the east agent refuses .*latency=instant: argument --latency/--latency-level: invalid",
        ),
        # a value the decoder refuses (before: packaged, refused when the system ran)
        ({"cache_budget": 300}, r"cache_budget \(--cache-budget\): settings of long-form"),
        # before: written, and the submission loaded /tmp instead of its model/ folder
        ({"model_path": "/tmp"}, "model_path=/tmp: give the model with --model-path"),
        # before: written, and refused only when the evaluator ran the system
        ({"device": "gpu"}, "device: 'gpu' is not a device"),
    ],
)
def test_system_dir_refuses_what_simuleval_would_mangle(flags, message):
    with pytest.raises(ValueError, match=message):
        system_config("east", {"src_lang": "de", "tgt_lang": "en", **flags})


def test_system_dir_names_required_flags_in_one_line(capsys):
    """Before: argparse's usage (17 lines) and its error in --flag spelling first; then
    blamed on the settings given (`the east agent refuses latency=high: the following
    arguments are required: --src-lang, --tgt-lang`)."""
    said = r"^the east agent needs src_lang=\.\.\.: give it as settings$"
    with pytest.raises(ValueError, match=said):
        system_config("east", {"tgt_lang": "en"})
    with pytest.raises(ValueError, match=r"needs src_lang=\.\.\. tgt_lang=\.\.\.: give"):
        system_config("east", {"latency": "high"})
    assert capsys.readouterr().err == ""


def test_system_dir_takes_a_cuda_device_this_machine_lacks(monkeypatch):
    """The evaluator's machine runs the submission, not this one."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    config = system_config("east", {"src_lang": "de", "tgt_lang": "en", "device": "cuda"})
    assert config["device"] == "cuda"


@pytest.fixture
def packaging(east_checkpoint, tmp_path, monkeypatch):
    """A folder holding a checkpoint (the test checkpoint's files, linked) and a stand-in
    peft adapter (its config and a weights file whose header reads are all packaging
    reads), as the working directory; the flags of a submission."""
    from safetensors.torch import save_file

    (tmp_path / "checkpoint").mkdir()
    for path in east_checkpoint.iterdir():
        (tmp_path / "checkpoint" / path.name).symlink_to(path)
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    save_file({}, tmp_path / "lora" / "adapter_model.safetensors")
    monkeypatch.chdir(tmp_path)
    return {"src_lang": "de", "tgt_lang": "en"}


def package(*argv) -> str:
    """`east-package-system argv` in this process: its one-line refusal (exit 2)."""
    import contextlib
    import io

    said = io.StringIO()
    with contextlib.redirect_stderr(said), pytest.raises(SystemExit) as exit_info:
        system_dir.main(list(map(str, argv)))
    assert exit_info.value.code == 2
    return said.getvalue()


@pytest.mark.parametrize(
    "flags, said",
    [
        (["max_context=1000"], "--max-context 1000 is above the 512 positions"),
        (["max_context=10"], "--max-context 10 leaves no room for a sentence"),
        (["long_form=true", "cache_budget=20"], "(--cache-budget) 20 leaves too little room"),
    ],
)
def test_system_dir_checks_the_flags_against_its_model(packaging, flags, said):
    """Before: packaged, exit 0, and a traceback when the evaluator ran the system."""
    error = package("submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
                    *flags)  # fmt: skip
    assert said in error and "Traceback" not in error
    assert not Path("submission").exists()


def test_package_system_names_an_empty_output_and_quotes_the_command_it_prints(packaging, capsys):
    """Before: `""` said ". exists; choose a new folder", and a folder with a space was
    printed unquoted in the command to paste."""
    error = package("", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en")
    assert error == "east-package-system: output '': name the new folder\n"
    system_dir.main(["with space", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en"])
    assert "run: simuleval --system-dir 'with space' --source" in capsys.readouterr().out


def test_system_dir_refuses_a_model_or_adapter_without_weights(packaging):
    Path("lora", "adapter_model.safetensors").unlink()
    error = package("submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
                    "adapter_path=lora")  # fmt: skip
    assert error.startswith("east-package-system: adapter_path lora: no weights")
    Path("checkpoint", "model.safetensors").unlink()
    error = package("submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en")
    assert error.startswith("east-package-system: --model-path checkpoint: no weights file")
    assert not Path("submission").exists()


@pytest.mark.parametrize(
    "broken, said",
    [
        ("tokenizer.json", "--model-path checkpoint: its tokenizer cannot be loaded (ValueError"),
        ("chat_template.jinja", "--model-path checkpoint: the tokenizer has no chat template"),
        ("model.safetensors", "--model-path checkpoint: model.safetensors cannot be loaded "
         "(SafetensorError: Error while deserializing header"),
        ("config.json", "--model-path checkpoint: config.json cannot be loaded (OSError"),
        ("adapter_model.safetensors", "adapter_path lora: adapter_model.safetensors cannot be "
         "loaded (SafetensorError"),
    ],
)  # fmt: skip
def test_system_dir_refuses_a_model_folder_that_does_not_load(packaging, broken, said):
    """The tokenizer, chat template, config and weights' headers the run reads, read with
    no --max-context too, the weights not loaded (before: packaged, exit 0, and the
    evaluator's run failed in a traceback: the tokenizer was loaded only for a
    max_context=, the weights only looked for)."""
    folder = Path("lora" if broken.startswith("adapter") else "checkpoint")
    data = (folder / broken).read_bytes()
    (folder / broken).unlink()  # a link to the session's checkpoint: replaced, not changed
    if broken.endswith(".safetensors"):
        (folder / broken).write_bytes(data[: len(data) - 8])  # a copy stopped short
    elif broken == "config.json":
        (folder / broken).write_text("{not json")
    error = package("submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
                    "adapter_path=lora")  # fmt: skip
    assert error.startswith(f"east-package-system: {said}"), error
    assert len(error.splitlines()) == 1 and not Path("submission").exists()


def test_system_dir_names_a_chat_template_that_does_not_render(packaging):
    """Before: jinja's message alone, "east-package-system: --model-path checkpoint:
    Encountered unknown tag 'bad'."."""
    template = Path("checkpoint", "chat_template.jinja")
    template.unlink()  # a link to the session's checkpoint: replaced, not changed
    template.write_text("{% bad %}")
    error = package("submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en")
    assert error == (
        "east-package-system: --model-path checkpoint: its chat template cannot be rendered "
        "(TemplateSyntaxError: Encountered unknown tag 'bad'.)\n"
    )
    assert not Path("submission").exists()


def test_a_copied_model_is_what_loads_and_runs_from_elsewhere(east_checkpoint, test_set, tmp_path):
    """--copy-model copies the files transformers loads from the folder's top level (before:
    shutil.copytree: every file and subfolder, links to folders followed, so that a
    submission packaged into the model folder in link mode was copied into itself level
    after level, then a shutil.Error traceback); what it leaves out is said; the copy,
    moved, runs without the model folder."""
    model = tmp_path / "checkpoint"
    shutil.copytree(east_checkpoint, model)
    (model / "README.md").write_text("# a model card\n")
    (model / "curves.png").write_bytes(b"\x89PNG")
    (model / "checkpoint-10").mkdir()
    (model / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    run(console_script("east-package-system"), model / "linked", "--model-path", model,
        "src_lang=de", "tgt_lang=en")  # fmt: skip
    folder = tmp_path / "submission"
    packaged = run(
        console_script("east-package-system"), folder, "--model-path", model, "--copy-model",
        "src_lang=de", "tgt_lang=en", timeout=120,
    )  # fmt: skip
    copied = sorted(folder.joinpath("model").iterdir())
    assert [path.name for path in copied] == sorted(p.name for p in east_checkpoint.iterdir())
    assert not [path for path in copied if path.is_symlink() or not path.is_file()]
    assert f"{folder / 'model'}: a copy of {model} without README.md, checkpoint-10/, " in (
        packaged.stdout
    )
    assert "curves.png, linked/ (no file transformers or peft loads)" in packaged.stdout
    moved = tmp_path / "elsewhere"
    folder.rename(moved)
    shutil.rmtree(model)
    run(
        console_script("east-simuleval"), "--system-dir", moved, "--source",
        test_set / "src.txt", "--target", test_set / "ref.txt", "--output", tmp_path / "out",
    )  # fmt: skip
    assert len((tmp_path / "out" / "instances.log").read_text().splitlines()) == 3


def test_a_flag_given_twice_beside_another_packages_system_dir_is_refused(test_set, tmp_path):
    """Its flags are SimulEval's alone (the agent's are its main.yaml's); before: the last
    one won, without a word (`--end-index 1 --end-index 2` translated two sentences)."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    shutil.copy(Path(__file__).with_name("sleepy_agent.py"), folder)
    (folder / "main.yaml").write_text("agent_class: sleepy_agent.SleepyWaitOne\nsleep: 0\n")
    command = [
        console_script("east-simuleval"), "--system-dir", folder, "--source",
        test_set / "src.txt", "--target", test_set / "ref.txt", "--output", tmp_path / "out",
        "--end-index", "1",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(folder)}
    refused = subprocess.run(
        [*map(str, command), "--end-index=2"], capture_output=True, text=True, timeout=120,
        env=environment,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.endswith("east-simuleval: --end-index given 2 times; give it once\n")
    assert not (tmp_path / "out").exists()
    ran = subprocess.run(
        [*map(str, command)], capture_output=True, text=True, timeout=120, env=environment
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert len((tmp_path / "out" / "instances.log").read_text().splitlines()) == 1


def test_a_system_dir_run_reads_its_main_yaml_as_the_server_does(
    east_checkpoint, test_set, tmp_path, monkeypatch, flags_matched_whole
):
    """A local `--system-dir` run refuses, before anything loads, a `main.yaml` key that is
    no flag (before: SimulEval left it unread, so `latncy: high` ran at the default latency,
    exit 0, while the server refused it), a `false` (SimulEval gives it as the bare flag:
    `document_level: false` ran document-level), a folder without `main.yaml` (an errno
    message before) and a model link that leads nowhere (before: "model path 'model' does
    not exist"); `--batch-size` says why it cannot run a folder."""
    from east_agent.simuleval_glue import cli

    folder = tmp_path / "submission"
    run(console_script("east-package-system"), folder, "--model-path", east_checkpoint,
        "src_lang=de", "tgt_lang=en")  # fmt: skip
    main = (folder / "main.yaml").read_text()
    (folder / "main.yaml").write_text(main + "latncy: high\n")
    data = ["--source", str(test_set / "src.txt"), "--target", str(test_set / "ref.txt")]
    output = tmp_path / "out"
    for extra, said in (
        ([], f"{folder / 'main.yaml'}: latncy: no flag of SimulEval's, its scorers' or the "
             "EastAgent agent's (did you mean latency?)"),
        (["--batch-size", "4"], "--batch-size above 1 with --system-dir: a batched run builds "
         "the agent of --agent or --agent-class from the command line's flags, not a folder's"),
    ):  # fmt: skip
        refused = subprocess.run(
            [console_script("east-simuleval"), "--system-dir", folder, *data, "--output",
             output, *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert f"east-simuleval: {said}" in refused.stderr
        assert "Traceback" not in refused.stderr and not output.exists()

    import east_agent.simuleval_plugin  # noqa: F401  (the *_CA scorers' flags)

    argv = ["--system-dir", str(folder), *data]
    monkeypatch.setattr("sys.argv", ["east-simuleval", *argv])
    for extra, said in (
        ("notes: hello\n", "notes: no flag of SimulEval's"),
        ("document_level: false\n", "document_level: false: SimulEval gives every YAML "
         "boolean as its bare flag, false too (--document-level would be on)"),
        # the line of a YAML error (before: "not YAML (ScannerError: mapping values are
        # not allowed here)", no line)
        (" latency: high\nnum_beams: 1\n", f"invalid YAML: line {main.count(chr(10)) + 1}, "),
    ):  # fmt: skip
        (folder / "main.yaml").write_text(main + extra)
        with pytest.raises(ValueError, match=re.escape(f"{folder / 'main.yaml'}: {said}")):
            cli._check_system_dir(argv)
    # a switch on is read; an evaluator's flag SimulEval reads from the command line
    # alone is refused (before: taken, and left unread by SimulEval's scoring)
    (folder / "main.yaml").write_text(main + "eval_latency_unit: char\n")
    with pytest.raises(ValueError, match=re.escape(
        f"{folder / 'main.yaml'}: eval_latency_unit: SimulEval reads --eval-latency-unit from "
        "the command line alone"
    )):  # fmt: skip
        cli._check_system_dir(argv)
    (folder / "main.yaml").write_text(main + "document_level: true\n")
    cli._check_system_dir(argv)
    (folder / "main.yaml").unlink()
    with pytest.raises(ValueError, match=re.escape(f"--system-dir {folder}: no main.yaml in")):
        cli._check_system_dir(argv)
    (tmp_path / "moved").symlink_to(tmp_path / "nowhere")
    for path, said in (  # before: "no such folder" for the link
        (tmp_path / "moved", f"a broken link, to {tmp_path / 'nowhere'}, which is not there"),
        (folder / "model" / "config.json", "a file, not a folder"),
    ):
        monkeypatch.setattr("sys.argv", ["east-simuleval", "--system-dir", str(path), *data])
        with pytest.raises(ValueError) as refused:
            cli._check_system_dir(["--system-dir", str(path), *data])
        assert str(refused.value) == f"--system-dir {path}: {said}"
    monkeypatch.setattr("sys.argv", ["east-simuleval", *argv])
    (folder / "main.yaml").write_text(main)
    (folder / "model").unlink()
    (folder / "model").symlink_to(tmp_path / "moved-away")
    with pytest.raises(ValueError) as broken:
        cli._check_system_dir(argv)
    assert str(broken.value).startswith(
        f"--system-dir {folder}: model_path: model is a broken link, to {tmp_path}/moved-away, "
        "which is not there"
    )
    # main.yaml's model named by its key (before: argparse's usage "the following arguments
    # are required: --model-path", and "--model-path: model path 'model' does not exist")
    (folder / "model").unlink()
    with pytest.raises(ValueError, match=re.escape(
        f"{folder / 'main.yaml'}: model_path: model: no such folder in {folder} (SimulEval"
    )):  # fmt: skip
        cli._check_system_dir(argv)
    lines = [line for line in main.splitlines(True) if not line.startswith("model_path:")]
    for value, said in (
        (tmp_path / "gone", f"model_path: {tmp_path / 'gone'}: no such folder\n"),
        ("org/name", None),
    ):  # the second a hub id: the agent's to load
        (folder / "main.yaml").write_text("".join(lines) + f"model_path: {value}\n")
        if said is None:
            cli._check_system_dir(argv)
            continue
        with pytest.raises(ValueError) as refused:  # absolute: "in <folder>" not said
            cli._check_system_dir(argv)
        assert f"{refused.value}\n".endswith(said)
    (folder / "main.yaml").write_text("".join(lines))
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'main.yaml'}: no model_path (")):
        cli._check_system_dir(argv)


@pytest.mark.parametrize(
    "where, output, said",
    [
        ("in-a-file", "notes/submission", "output notes/submission: inside a file ("),
        ("dangling-link", "gone", "output gone: a broken link, to nowhere, which is not there"),
        ("in-the-model", "checkpoint/submission", "which --copy-model copies into it"),
        ("taken-meanwhile", "submission", "submission appeared while this command wrote"),
    ],
)
def test_system_dir_refuses_an_output_it_cannot_or_must_not_write(
    packaging, monkeypatch, where, output, said
):
    """Before: tracebacks (a path inside a file, a dangling link, which also left a
    temporary folder), a copy of the model into itself until the path was too long, and a
    folder made while the model was copied replaced with what it held."""
    Path("notes").write_text("x")
    Path("gone").symlink_to("nowhere")
    if where == "taken-meanwhile":
        copy = system_dir.package_folder

        def someone_else_writes(source, target, copy_model):
            Path("submission").mkdir(exist_ok=True)
            Path("submission", "mine.txt").write_text("precious")
            return copy(source, target, copy_model)

        monkeypatch.setattr(system_dir, "package_folder", someone_else_writes)
    before = sorted(p.name for p in Path(".").iterdir())
    error = package(output, "--model-path", "checkpoint", "--copy-model", "src_lang=de",
                    "tgt_lang=en")  # fmt: skip
    assert said in error and "Traceback" not in error
    if where == "taken-meanwhile":
        assert Path("submission", "mine.txt").read_text() == "precious"
        assert sorted(p.name for p in Path("submission").iterdir()) == ["mine.txt"]
    else:
        assert sorted(p.name for p in Path(".").iterdir()) == before
    assert not [p for p in Path(".").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("copy_model", [False, True])
def test_system_dir_packages_its_adapter_beside_the_model(packaging, tmp_path, copy_model):
    """A relative adapter_path= is packaged as adapter/ (before: written as given, so the
    submission broke once moved)."""
    system_dir.write_system_dir(
        "submission", "checkpoint", {**packaging, "adapter_path": "lora"}, copy_model=copy_model
    )
    (tmp_path / "submission").rename(tmp_path / "moved")  # an evaluator's copy elsewhere
    moved = tmp_path / "moved"
    assert yaml.safe_load((moved / "main.yaml").read_text())["adapter_path"] == "adapter"
    assert (moved / "adapter" / "adapter_config.json").is_file()
    assert (moved / "adapter").is_symlink() is not copy_model


def test_system_dir_refuses_a_missing_adapter_in_one_line(packaging, capsys):
    """Before: packaged, and refused only when the evaluator loaded the model."""
    with pytest.raises(SystemExit) as exit_info:
        system_dir.main(
            ["submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
             "adapter_path=/nonexistent"]
        )  # fmt: skip
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error == "east-package-system: adapter_path /nonexistent: no such folder\n"
    assert not Path("submission").exists()
    with pytest.raises(SystemExit):  # a folder that is no adapter
        system_dir.main(
            ["submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
             "adapter_path=checkpoint"]
        )  # fmt: skip
    said = "adapter_path checkpoint: no adapter_config.json (not a peft adapter)\n"
    assert capsys.readouterr().err == f"east-package-system: {said}"


@pytest.mark.parametrize(
    "path, said",
    [
        ("nowhere", "model path 'nowhere' does not exist"),
        ("org/model", "model path 'org/model' does not exist (a submission packages a local"),
    ],
)
def test_system_dir_names_a_model_path_that_is_not_there(packaging, capsys, path, said):
    """Before: "is not a checkpoint (no config.json)" for a path that does not exist; a
    hub id's form must not pass as a checkpoint (a link to nothing packaged)."""
    with pytest.raises(SystemExit) as exit_info:
        system_dir.main(["submission", "--model-path", path, "src_lang=de", "tgt_lang=en"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"east-package-system: {said}")
    assert not Path("submission").exists()


def test_system_dir_flags_are_read_as_the_agent_reads_them(packaging, tmp_path):
    """Before: read as YAML 1.1, `max_new_tokens=010` was packaged as 8 and an adapter
    folder named `0755` was looked for as `493`."""
    shutil.copytree(tmp_path / "lora", tmp_path / "0755")
    system_dir.main(["submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
                     "max_new_tokens=010", "adapter_path=0755", "document_level=True"])  # fmt: skip
    config = yaml.safe_load((tmp_path / "submission" / "main.yaml").read_text())
    assert config["max_new_tokens"] == 10 and config["document_level"] is True
    assert config["adapter_path"] == "adapter"
    assert (tmp_path / "submission" / "adapter").resolve() == (tmp_path / "0755").resolve()


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ({"document_level": "yes"}, "document_level=yes: a yes/no flag, true or false"),
        # before: `false` read as YAML's false for any flag, and a text flag left out
        ({"torch_dtype": "false"}, "torch_dtype=false: argument --torch-dtype: invalid choice"),
    ],
)
def test_system_dir_takes_true_or_false_for_a_switch_only(flags, said):
    with pytest.raises(ValueError, match=re.escape(said)):
        system_config("east", {"src_lang": "de", "tgt_lang": "en", **flags})
    config = system_config("east", {"src_lang": "de", "tgt_lang": "en", "document_level": "TRUE"})
    assert config["document_level"] is True


def test_a_system_dir_run_refuses_a_flag_simuleval_does_not_read_there(
    monkeypatch, flags_matched_whole
):
    """In this process, before the output folder changes: SimulEval's, its scorers' and the
    server's flags pass; a typo, an agent's flag, a stray value or an agent beside the
    folder are refused."""
    import east_agent.simuleval_plugin  # noqa: F401  (the *_CA scorers' flags)
    from east_agent.simuleval_glue import cli

    folder = ["--system-dir", "d", "--source", "s", "--target", "t"]
    monkeypatch.setattr("sys.argv", ["east-simuleval", *folder])
    for flags in (
        ["--output=x", "--latency-metrics", "AL_CA", "--ca-unit-seconds", "0.5", "--end-index",
         "3", "--device", "cpu", "--eval-latency-unit", "word", "--continue-unfinished"],
        ["--standalone", "--remote-port", "1234", "--session-timeout", "5", "--batch-wait-ms", "0"],
    ):  # fmt: skip
        cli._check_one_system([*folder, *flags])
    for flags, said in (
        (["--no-scorng"], "--no-scorng: not read with --system-dir"),
        (["--latency", "high"], "--latency high: not read with --system-dir"),
        (["--no-scoring", "yes"], "yes: not read with --system-dir"),
        (["--outptu", "o"], "them) (--outptu: did you mean --output?)"),  # a hint now
    ):
        with pytest.raises(ValueError, match=re.escape(said)):
            cli._check_one_system([*folder, *flags])
    for flags in (["--torch-dtype", "bfloat16"], ["--src-lang", "de"]):  # the agent's: no hint
        with pytest.raises(ValueError, match=r"package it again to change them\)$"):
            cli._check_one_system([*folder, *flags])  # before: "did you mean --source-type?"
    monkeypatch.setattr("sys.argv", ["east-simuleval", *folder, "--agent-class", "x.Agent"])
    with pytest.raises(ValueError, match="--system-dir and --agent \\(or --agent-class\\): name"):
        cli._check_one_system([*folder, "--agent-class", "x.Agent"])


def test_system_dir_takes_a_flag_by_any_of_its_spellings():
    config = system_config("east", {"src_lang": "de", "tgt_lang": "en", "latency_level": "high"})
    assert config["latency_level"] == "high"


@pytest.mark.parametrize(
    "flags, said",
    [
        (["latency=high", "latency=low"], "latency=high and latency=low: one setting given"),
        (["latency=high", "latency-level=low"], "latency=high and latency_level=low: one"),
        (["--model-path", "elsewhere"], "--model-path given 2 times; give it once"),
    ],
)
def test_system_dir_refuses_a_setting_given_twice(tmp_path, capsys, flags, said):
    """Before: the last one packaged, without a word."""
    arguments = [str(tmp_path / "system"), "--model-path", str(tmp_path), *flags]
    with pytest.raises(SystemExit) as exit_:
        system_dir.main([*arguments, "src_lang=de", "tgt_lang=en"])
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "system").exists()


def test_system_dir_names_a_misspelt_flag_before_the_required_one(tmp_path, capsys):
    """Before: "the following arguments are required: --model-path", the flag misspelt."""
    with pytest.raises(SystemExit) as exit_:
        system_dir.main([str(tmp_path / "system"), "--modl-path", str(tmp_path), "src_lang=de"])
    assert exit_.value.code == 2
    assert "(--modl-path: did you mean --model-path?)" in capsys.readouterr().err
    assert not (tmp_path / "system").exists()


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--fp16"], "--fp16 with torch_dtype: bfloat16 of {}: two precisions"),
        (["--dtype", "fp32"], "--dtype fp32 with torch_dtype: bfloat16 of {}: SimulEval's"),
        (["--fp16", "--torch-dtype", "float32"], None),  # the command line's, the agent's check
        (["--dtype", "fp16", "--torch-dtype", "float16"], None),
        ([], None),
    ],
)
def test_a_system_dirs_torch_dtype_against_simulevals_precision_names_its_line(
    packaging, monkeypatch, flags, said, flags_matched_whole
):
    """Before: refused naming --torch-dtype, a flag the command line did not give."""
    from east_agent.simuleval_glue import cli

    system_dir.main(["submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
                     "torch_dtype=bfloat16"])  # fmt: skip
    import east_agent.simuleval_plugin  # noqa: F401  (the *_CA scorers' flags)

    argv = ["--system-dir", "submission", "--source", "s.txt", "--target", "r.txt", *flags]
    monkeypatch.setattr("sys.argv", ["east-simuleval", *argv])
    if said is None:
        cli._check_system_dir(argv)
        return
    with pytest.raises(ValueError) as refused:
        cli._check_system_dir(argv)
    assert str(refused.value).startswith(said.format(Path("submission") / "main.yaml"))


@pytest.mark.parametrize(
    "edit, said",
    [
        ("latency: high\n", "line 6, column 1: the key 'latency' is given twice"),
        ("latency_level: high\n", "latency and latency_level: one setting given twice"),
        ("num_beams: 5 4\n", "num_beams: '5 4': SimulEval splits a value at its spaces"),
        ("src_lang_x: 1\n", "src_lang_x: no flag of SimulEval's"),  # as before
        ("num_beams:\n", "num_beams: no value; give one value"),
        ("num_beams: [1, 2]\n", "num_beams: a list; give one value"),
        ("num_beams: 0\n", "num_beams: 0: argument --num-beams: takes a whole number"),
        ("max_new_tokens: many\n", "max_new_tokens: many: argument --max-new-tokens: "),
    ],
)
def test_a_system_dirs_main_yaml_values_are_refused_naming_the_key(
    packaging, monkeypatch, edit, said, flags_matched_whole
):
    """Before, exit 0: a key given twice or in two spellings ran with the last, a value
    with a space with its first word; a bad value was argparse's usage, naming a flag the
    command line did not give."""
    from east_agent.simuleval_glue import cli

    system_dir.main(["submission", "--model-path", "checkpoint", "src_lang=de", "tgt_lang=en",
                     "latency=low"])  # fmt: skip
    main_yaml = Path("submission") / "main.yaml"
    main_yaml.write_text(main_yaml.read_text() + edit)
    import east_agent.simuleval_plugin  # noqa: F401  (the *_CA scorers' flags)

    argv = ["--system-dir", "submission", "--source", "s.txt", "--target", "r.txt"]
    monkeypatch.setattr("sys.argv", ["east-simuleval", *argv])
    with pytest.raises(ValueError) as refused:
        cli._check_system_dir(argv)
    assert str(refused.value).startswith(f"{main_yaml}: "), refused.value
    assert said in str(refused.value)


def test_comet_reads_a_served_chinese_source_as_the_server_read_it(
    east_checkpoint, test_set, tiny_comet, tmp_path
):
    """Without --comet-source-lang, east-remote-eval joins the source's units as the
    served decoder did: its server names its source language (`GET /`)."""
    from east_agent.common.comet_process import comet_scores
    from east_agent.simuleval_glue.instance_log import finished_records

    flags = [*AGENT_FLAGS]
    flags[flags.index("--src-lang") + 1] = "zh"
    port, server_log, output = free_port(), tmp_path / "server.log", tmp_path / "remote"
    comet = ["--quality-metrics", "BLEU", "COMET", "--comet-checkpoint", tiny_comet.checkpoint,
             "--comet-python", tiny_comet.python]  # fmt: skip
    with server_log.open("w") as server_errors:
        server = subprocess.Popen(
            [console_script("east-simuleval"), "--standalone", "--remote-port", str(port),
             "--agent", str(AGENT_FILE), "--model-path", str(east_checkpoint), *flags],
            stdout=subprocess.DEVNULL, stderr=server_errors,
        )  # fmt: skip
        try:
            wait_for_server(server, port, server_log)
            info = requests.get(f"http://127.0.0.1:{port}/", timeout=30).json()
            assert info["source_language"] == "Chinese"
            run(*remote_eval_command(port, test_set, output, *comet))
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert json.loads((output / "scoring.json").read_text())["comet_source_units"] == (
        "joined without spaces"
    )
    records = finished_records(output / "instances.log")
    joined = ["".join(record["source"].split()) for record in records]
    translations = [record["prediction"].strip() for record in records]
    references = [record["reference"].strip() for record in records]  # as comet-score reads
    expected = comet_scores(tiny_comet, joined, translations, references).system
    assert float(scores(output)["COMET"]) == pytest.approx(100 * expected, abs=1e-3)

    # scored again on its own: the folder records the language the server named
    assert json.loads((output / "run_settings.json").read_text())["src_lang"] == "Chinese"
    before = scores(output)
    score_only = [console_script("east-remote-eval"), "--score-only", "--output", output]
    run(*score_only, *comet)
    assert scores(output) == before
    # a folder that does not (a server that names no language: SimulEval's) asks for it
    (output / "run_settings.json").unlink()
    refused = subprocess.run(
        list(map(str, [*score_only, *comet])), capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "joined without spaces" in refused.stderr and "--comet-source-lang" in refused.stderr
    run(*score_only, *comet, "--comet-source-lang", "zh")
    assert scores(output) == before


def packaged_and_run(checkpoint, test_set, tmp_path, setting, flags=(), output="out"):
    """`tmp_path/submission` packaged from `checkpoint` with `setting`, then run locally on
    `test_set` with `flags` into `tmp_path/output`; the folder."""
    folder = tmp_path / "submission"
    run(
        console_script("east-package-system"), folder, "--model-path", checkpoint,
        "src_lang=de", "tgt_lang=en", setting, "max_context=200",
    )  # fmt: skip
    run(
        console_script("east-simuleval"), "--system-dir", folder, *flags, "--source",
        test_set / "src.txt", "--target", test_set / "ref.txt", "--output", tmp_path / output,
    )  # fmt: skip
    return folder


@pytest.mark.parametrize("form", ["--device=cpu", "--device cpu"])
def test_a_system_dirs_device_gives_way_to_the_command_lines_in_either_form(
    east_checkpoint, test_set, tmp_path, form
):
    """Before: SimulEval added main.yaml's `device: cuda` after a `--device=cpu`, which it
    took for not given: "this machine has no CUDA device" (`--device cpu` ran on the CPU)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    packaged_and_run(
        east_checkpoint, test_set, tmp_path, "device=cuda", flags=form.split(), output="out"
    )
    assert len((tmp_path / "out" / "instances.log").read_text().splitlines()) == 3


def test_a_system_dir_is_served_as_packaged(east_checkpoint, test_set, tmp_path):
    """`--standalone --system-dir`: the folder's agent with its flags, its paths inside it
    (before: SimulEval's "--agent-class must be specified" traceback); the clients get the
    translations of a local run of the folder."""
    folder = packaged_and_run(east_checkpoint, test_set, tmp_path, "latency=low", output="local")
    # a folder's own `batch_size` is served (before: 8 sessions), beside a `--device=cpu`
    with (folder / "main.yaml").open("a") as config:
        config.write("batch_size: 2\n")
    port, server_log = free_port(), tmp_path / "server.log"
    with server_log.open("w") as server_errors:
        server = subprocess.Popen(
            [console_script("east-simuleval"), "--standalone", "--remote-port", str(port),
             "--system-dir", str(folder), "--session-timeout", "30", "--batch-wait-ms", "2",
             "--device=cpu"],
            stdout=subprocess.DEVNULL, stderr=server_errors, cwd=tmp_path,
        )  # fmt: skip
        try:
            wait_for_server(server, port, server_log)
            more = remote_eval_command(port, test_set, tmp_path / "more", "--batch-size", "3")
            refused = subprocess.run(more, capture_output=True, text=True, timeout=120)
            assert refused.returncode == 2 and "has 2 streams" in refused.stderr, refused.stderr
            run(*remote_eval_command(port, test_set, tmp_path / "remote", "--batch-size", "2"))
        finally:
            server.terminate()
            server.wait(timeout=30)
    local, remote = (
        [json.loads(line) for line in (tmp_path / name / "instances.log").open()]
        for name in ("local", "remote")
    )
    assert len(local) == 3
    assert [(r["prediction"], r["delays"]) for r in remote] == [
        (r["prediction"], r["delays"]) for r in local
    ]
