"""YAML as the project's configs (evaluation grids, training recipes) read it: safe, a
key given twice refused, merge keys taken, and no YAML 1.1 number a user would not mean
(`1e-6` a number, `010` and `09` decimal, a base-60 `1:30` text); errors as one line
naming the file, line and column. A top-level key beginning with `x-` holds blocks for
merge keys to take (`x-defaults: &defaults {...}`, then `<<: *defaults`), read for its
anchors alone (Docker Compose's extension fields)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A config that cannot be read as YAML, the message naming where."""


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last, silently dropping a setting or a whole section)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: its keys may be set again here
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, bool):  # `off:`, `yes:` as a name (a system's)
                raise _error(
                    f"the key {key_node.value} is read by YAML as {str(key).lower()}: quote it",
                    key_node,
                )
            try:
                twice = key in seen
                seen.add(key)
            except TypeError:  # a list or mapping as a key (`? [a, b]`)
                raise _error("a key must be text", key_node) from None
            if twice:
                raise _error(f"the key {key!r} is given twice", key_node)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | str:
        """`010` is ten (YAML 1.1: octal eight; before: a recipe's `seed: 0042` was 34); a
        base-60 `1:30` is text (YAML 1.1: ninety; before: `max_steps: 1:30` trained 90
        steps), refused by a field that takes a number, kept by one that takes text."""
        text = str(self.construct_scalar(node)).replace("_", "")
        if ":" in text:
            return str(self.construct_scalar(node))
        digits = text.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            return int(text, 10)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | str:
        if ":" in str(self.construct_scalar(node)):  # base 60: text, as `1:30` above
            return str(self.construct_scalar(node))
        return super().construct_yaml_float(node)


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", UniqueKeyLoader.construct_yaml_int)
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", UniqueKeyLoader.construct_yaml_float)


def _error(problem: str, node: yaml.Node) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


# YAML 1.1 wants a dot in a float (`1.0e-6`); `1e-6` would be text
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
UniqueKeyLoader.add_implicit_resolver(  # `09`: YAML 1.1 reads it as text (no octal digit)
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?0[0-9_]+$"), list("-+0")
)


def read_yaml_text(path: Path, what: str) -> str:
    """The text of a YAML file; `what` names it in errors (`config`, `recipe`)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlFileError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise YamlFileError(f"{path}: a folder, not a {what} file") from None
    except UnicodeDecodeError as error:
        raise YamlFileError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise YamlFileError(f"{path}: {error.strerror}") from None


def load_yaml(text: str, where: str) -> Any:
    """The YAML value of `text`; invalid YAML named `WHERE: invalid YAML: line L, column C:
    problem` in one line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        mark, begun = error.problem_mark or error.context_mark, error.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = error.context
        if context and begun and mark and begun.line != mark.line:  # where it was opened
            context += f" begun at line {begun.line + 1}, column {begun.column + 1}:"
        problem = " ".join(part for part in (context, error.problem) if part)
        raise YamlFileError(f"{where}: invalid YAML: {at}{problem}") from None
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise YamlFileError(f"{where}: invalid YAML: {first_line}") from None


ANCHORS_ONLY = "x-"  # a top-level key for merge keys' blocks alone


def without_anchor_blocks(tree: Any) -> Any:
    """A config's mapping without its `x-` keys, which only hold blocks for merge keys."""
    if not isinstance(tree, dict):
        return tree
    return {
        key: value
        for key, value in tree.items()
        if not (isinstance(key, str) and key.startswith(ANCHORS_ONLY))
    }


def close_hint(key: str, known: Iterable[str]) -> str:
    """` (did you mean 'systems'?)` for the known key closest to a typo, if any."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
