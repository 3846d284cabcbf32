"""The sessions a run holds on an `east-simuleval --standalone` server, and closing them.

A client run (`east-remote-eval`) names its sessions and their server in its output
folder while it runs (`SESSIONS_RECORD`). A run killed outright cannot close them, and
each would hold one of the server's streams until its `--session-timeout`: whoever takes
the folder over next (a resumed or fresh run, local or remote, or `--score-only`) closes
them first (`run_folder.writing`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

SESSION_HEADER = "X-Session-Id"
SESSIONS_RECORD = "sessions.json"
CLOSE_TIMEOUT = (2, 5)  # closing a session is never worth a long wait


def server_url(address: str, port: int | str) -> str:
    """The base URL of a server at `address` (a name, IPv4 or IPv6 literal) and `port`;
    a URL or `host:port` given as the address, or a port that is no number, is refused in
    one line, before any request (before: `http://[http://127.0.0.1]:PORT`, where nothing
    answered; SimulEval's own client takes no URL either: `http://http://...`)."""
    if "/" in address or "@" in address or address.count(":") == 1:  # IPv6: two or more
        what = "a URL" if "/" in address or "@" in address else "a host and port"
        raise ValueError(
            f"--remote-address {address}: a host name or IP address, not {what} (the port "
            "is --remote-port's: --remote-address 127.0.0.1 --remote-port 12321)"
        )
    try:
        number = int(str(port))
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ValueError(f"--remote-port {port}: not a port number (1 to 65535)")
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"http://{host}:{number}"


def close(session: requests.Session, base_url: str) -> None:
    """End the session (its stream goes back to the server); SimulEval's server answers
    404 (it has no sessions), a server that is gone or silent nothing."""
    import requests

    try:
        session.post(f"{base_url}/close", timeout=CLOSE_TIMEOUT)
    except requests.RequestException:
        pass


def close_all(base_url: str, names: list[str]) -> None:
    """Close the sessions `names` of the server (all at once, a few seconds at most)."""
    from requests import Session

    def close_one(name: str) -> None:
        with Session() as session:
            session.headers[SESSION_HEADER] = name
            close(session, base_url)

    closing = [threading.Thread(target=close_one, args=(name,), daemon=True) for name in names]
    for thread in closing:
        thread.start()
    deadline = time.monotonic() + sum(CLOSE_TIMEOUT)  # all of them, a name lookup included
    for thread in closing:
        thread.join(max(0.0, deadline - time.monotonic()))


@contextmanager
def recorded_sessions(output: str | Path | None, base_url: str, names: list[str]) -> Iterator[None]:
    """`names` (sessions of the server at `base_url`) in `output`'s `SESSIONS_RECORD`
    while the run holds them."""
    from east_agent.common.atomic import remove, write_atomically

    if output is None:
        yield
        return
    record = Path(output) / SESSIONS_RECORD
    write_atomically(record, json.dumps({"server": base_url, "sessions": names}) + "\n")
    try:
        yield
    finally:
        remove(record)


def close_stale_sessions(output: Path) -> bool:
    """Close the sessions a killed run into `output` left open (its `SESSIONS_RECORD`
    names them, and their server); whether there were any. A record that cannot be read
    is said on stderr and removed: it frees nothing, and must not stop the run. The caller
    holds the folder."""
    from east_agent.common.atomic import remove
    from east_agent.common.records import read_json_object

    record = output / SESSIONS_RECORD
    if not record.is_file():
        return False
    try:
        saved = read_json_object(record)
    except ValueError:  # not JSON, not UTF-8, not an object
        saved = {}
    names, server = saved.get("sessions"), saved.get("server")
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or not (isinstance(server, str))
    ):
        print(
            f"{record}: not a record of sessions and their server; removed, its sessions "
            "(if any) are closed by the server after its --session-timeout",
            file=sys.stderr,
        )
        remove(record)
        return False
    close_all(server, names)
    remove(record)
    return bool(names)
