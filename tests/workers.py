"""Functions for worker processes of tests (importable by name in a spawned process)."""

import time
from pathlib import Path


def threads_once_more(threads: int, started: str, seconds: float = 60) -> int:
    """Touch `started`, then wait (at most `seconds`) until this process is told to use more
    than `threads` threads; the count it ends with."""
    import torch

    Path(started).touch()
    deadline = time.monotonic() + seconds
    while torch.get_num_threads() <= threads and time.monotonic() < deadline:
        time.sleep(0.01)
    return torch.get_num_threads()
