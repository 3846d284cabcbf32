"""Lazy modules that torch.compile's cache keys can scan.

torch.compile pickles parts of a graph for its cache keys, and `pickle.whichmodule` looks
for an object without a `__module__` in every module of `sys.modules`, taking
AttributeError to mean "not here". A lazy module whose `__getattr__` raises anything else
fails the compile: yt-dlp (which SimulEval imports) stands in for a missing pycryptodomex
with `yt_dlp.dependencies.Cryptodome`, whose every unknown name raises
ModuleNotFoundError, so `east-simuleval --kv-cache compiled` crashed, and `auto` fell back
to plain layers on GPUs. Such a module's `__getattr__` is wrapped to raise AttributeError
for a name it cannot give (an import that fails), and nothing else changes.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

PROBE = "_east_agent_no_such_attribute"


def make_modules_scannable() -> list[str]:
    """Wrap the `__getattr__` of every loaded module that raises ImportError for a name it
    lacks; return their names (modules that fail otherwise are named in a warning)."""
    fixed = []
    for name, module in list(sys.modules.items()):
        try:
            getattr(module, PROBE, None)
        except ImportError:
            getter = vars(module).get("__getattr__")
            if getter is None:
                logger.warning("module %s fails attribute lookups: compiling may fail", name)
                continue
            # the module's own hook, replaced (typeshed has it a method of ModuleType)
            module.__getattr__ = _missing_as_attribute_error(getter)  # type: ignore[method-assign]
            fixed.append(name)
        except Exception as error:  # not what the compile fails on here; named, left alone
            logger.warning("module %s fails attribute lookups (%r)", name, error)
    return fixed


def _missing_as_attribute_error(getter: Callable[[str], Any]) -> Callable[[str], Any]:
    @functools.wraps(getter)
    def __getattr__(attribute: str) -> Any:
        try:
            return getter(attribute)
        except ImportError as error:
            raise AttributeError(attribute) from error

    return __getattr__
