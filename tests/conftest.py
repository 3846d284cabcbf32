"""Session fixtures: the real Llama-3 tokenizer in EAST form and a tiny trained EAST model."""

from __future__ import annotations

import os

# One CPU thread per process, unless the caller says otherwise: the models here are tiny,
# so torch's threads only wait on each other, and test workers with SimulEval children
# would ask for several times the cores there are. Set before torch is imported, so that
# this process and every child it starts read it. On 2 cores, 65 decoder tests under two
# workers: 330-356 s with torch's default threads, 137 s with one (benchmarks/RESULTS.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gzip
from pathlib import Path

import pytest
from commands import DEMO_MODEL, REPO, write_toy_test_set

from east_agent.common.comet_process import CometSettings
from tiny_comet import COMET_PYTHON, build_tiny_comet, comet_python
from tiny_east import LEXICON, build_llama3_tokenizer, train_tiny_east_model


@pytest.fixture(scope="session")
def east_tokenizer():
    return build_llama3_tokenizer()


@pytest.fixture(scope="session")
def east_model(east_tokenizer):
    return train_tiny_east_model(east_tokenizer)


@pytest.fixture(scope="session")
def east_checkpoint(east_model, east_tokenizer, tmp_path_factory):
    """The tiny model saved as a normal transformers checkpoint directory."""
    path = tmp_path_factory.mktemp("tiny-east")
    east_model.save_pretrained(path)
    east_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def demo_model():
    """The shipped demo model (models/east-demo) and its tokenizer, in float32."""
    from east_agent.lm.checkpoint import load_east_checkpoint

    return load_east_checkpoint(DEMO_MODEL, torch_dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def toy_test_set(tmp_path_factory):
    """Three synthetic sentences as SimulEval files: (folder, their units)."""
    folder = tmp_path_factory.mktemp("toy-test-set")
    return folder, write_toy_test_set(folder, 3, seed=7)


@pytest.fixture(scope="session")
def tiny_comet(tmp_path_factory) -> CometSettings:
    """A tiny real COMET checkpoint and the interpreter of COMET's own environment. Without
    one the COMET tests are skipped, except in CI (`.ci/run` makes one), where they fail."""
    python = comet_python()
    if python is None:
        message = f"no COMET environment: set {COMET_PYTHON} to its interpreter"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (.ci/run makes one)")
        pytest.skip(message)
    multi30k = REPO / "east_agent" / "data" / "multi30k"
    texts = [" ".join(LEXICON), " ".join(LEXICON.values())]
    for language in ("de", "en"):
        with gzip.open(multi30k / f"val.{language}.gz", "rt", encoding="utf-8") as lines:
            texts += [line.strip() for line in lines][:300]
    checkpoint = build_tiny_comet(python, Path(tmp_path_factory.mktemp("tiny-comet")), texts)
    return CometSettings(str(checkpoint), python, batch_size=4)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test that replaced the machine's /dev/null (an atomic write over it, once) fails
    the run: every later `> /dev/null` on the machine would write into what took its place."""
    import stat

    if not stat.S_ISCHR(os.lstat(os.devnull).st_mode):
        print(f"\n{os.devnull} is no longer a character device: a test replaced it")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
