import pickle
import sys
import types

from east_agent.lm.module_scan import make_modules_scannable


def stand_in_module(name: str) -> types.ModuleType:
    """A module like yt-dlp's stand-in for a missing package: every name it lacks is
    looked up in a module that is not there."""
    module = types.ModuleType(name)

    def __getattr__(attribute):
        if attribute == "version":
            return "1.0"
        __import__("no_such_package_east_agent_test")

    module.__getattr__ = __getattr__
    return module


def test_a_module_raising_import_error_for_missing_names_is_made_scannable(monkeypatch):
    module = stand_in_module("stand_in_for_a_missing_package")
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def nowhere():
        pass

    nowhere.__module__ = None  # what torch.compile's cache keys pickle and look for
    try:
        pickle.whichmodule(nowhere, "nowhere")
        raise AssertionError("the stand-in module should have failed the scan")
    except ModuleNotFoundError:
        pass
    # (the process may hold others: transformers 5.17's image processors whose imports fail)
    assert module.__name__ in make_modules_scannable()
    assert pickle.whichmodule(nowhere, "nowhere") == "__main__"  # not found, as it should be
    assert module.version == "1.0"  # what it has, it still gives
    assert module.__name__ not in make_modules_scannable()  # once is enough
