"""Files known by their content: a SHA-256 over their names, sizes and bytes, weights files
sampled; and settings that name a file or folder so (`{"file" or "folder": path, "sha256":
...}`), as records keep them, compared and shown.

Weights are read in `SAMPLES` small blocks spread over the file, its first and last ones
included (the safetensors header: names, shapes, types). Reading 16 GB of weights would
cost more than many runs; a checkpoint trained or merged from another differs in a share
of its bytes throughout (a LoRA merged into two projections of each layer: about 8%), which
1,024 blocks all miss with a probability under 1e-30.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

WEIGHTS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}  # sampled
SAMPLES, SAMPLE_BYTES = 1024, 4 << 10  # 4 MiB of each weights file, in blocks spread over it
# What transformers and peft load from a model folder (weights, configuration, tokenizer,
# chat template, remote code); not a model card, tables or plots written beside them.
MODEL_FILE_SUFFIXES = {
    ".json", ".safetensors", ".bin", ".pt", ".pth", ".model", ".tiktoken", ".txt", ".jinja",
    ".py",
}  # fmt: skip


def files_fingerprint(paths: Iterable[Path], where: Path) -> str:
    """SHA-256 over the files, each one's name, size and content (weights sampled); a file
    that goes away meanwhile is named with `where`."""
    digest = hashlib.sha256()
    try:
        for path in paths:
            size = path.stat().st_size
            digest.update(os.fsencode(path.name) + f"\0{size}\0".encode())
            with open(path, "rb") as handle:
                if path.suffix not in WEIGHTS_SUFFIXES or size <= SAMPLES * SAMPLE_BYTES:
                    read_into(digest, handle, 0, None)
                    continue
                last = size - SAMPLE_BYTES
                for number in range(SAMPLES):
                    read_into(digest, handle, last * number // (SAMPLES - 1), SAMPLE_BYTES)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{where}: {Path(error.filename).name} went away while its fingerprint was "
            "taken (is something writing it?)"
        ) from None
    return digest.hexdigest()


def read_into(digest: hashlib._Hash, handle: BinaryIO, offset: int, length: int | None) -> None:
    """Feed `length` bytes of an open file from `offset` (None: to the end) to `digest`."""
    handle.seek(offset)
    left = length
    while block := handle.read(1 << 20 if left is None else min(1 << 20, left)):
        digest.update(block)
        if left is not None and not (left := left - len(block)):
            break


def is_content_setting(value: object) -> TypeGuard[dict[str, Any]]:
    """A file's or folder's setting, known by its content."""
    return isinstance(value, dict) and "sha256" in value and ("file" in value or "folder" in value)


def content_of(value: object) -> object:
    """What a setting is compared by: a content setting's SHA-256, any other itself."""
    return value["sha256"] if is_content_setting(value) else value


def same_setting(one: object, other: object) -> bool:
    """Two records' values of a setting are the same: by content when both know it, by
    where the file is when one of them does not (a record written before files or model
    folders were known by content)."""
    if isinstance(one, str) and is_content_setting(other):
        return one == _where(other)
    if isinstance(other, str) and is_content_setting(one):
        return other == _where(one)
    return content_of(one) == content_of(other)


def shown_setting(value: object) -> str:
    if is_content_setting(value):
        return f"{_where(value)!r} (sha256 {value['sha256'][:12]}...)"
    return repr(value)


def _where(value: dict[str, Any]) -> object:
    return value.get("file", value.get("folder"))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a whole file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        read_into(digest, handle, 0, None)
    return digest.hexdigest()


def path_setting(path: Path, model_folder: bool) -> str | dict:
    """A file by its content (a moved or copied file is the same one), a model folder by
    its fingerprint, another folder by where it is."""
    if not path.exists():
        return str(path)
    if path.is_file():
        return {"file": str(path.resolve()), "sha256": file_sha256(path)}
    if model_folder:
        return {"folder": str(path.resolve()), "sha256": folder_fingerprint(path)}
    return str(path.resolve())


def folder_fingerprint(folder: Path) -> str:
    """The fingerprint of the folder's model files (`MODEL_FILE_SUFFIXES`; not its
    subfolders nor hidden files)."""
    files = [
        path
        for path in sorted(folder.iterdir())
        if not path.name.startswith(".") and path.suffix in MODEL_FILE_SUFFIXES and path.is_file()
    ]
    return files_fingerprint(files, folder)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(model_path: str | Path, base: Path = Path()) -> bool:
    """ "org/name" that is not a local path (its first component is no local folder), read
    from `base` (the current directory, or the folder a system's paths are read in)."""
    text = str(model_path)
    return (
        not (base / text).exists()
        and HUB_ID.match(text) is not None
        and not (base / text.split("/")[0]).exists()
    )


def model_setting(model_path: str) -> str | dict:
    """A checkpoint (or adapter) as records name it: a folder by its fingerprint (moved or
    copied, it is the same one), a hub name as given, a folder that is not there (gone
    since its runs finished) by its absolute path."""
    path = Path(model_path)
    if path.exists():
        return path_setting(path, model_folder=True)
    return model_path if is_hub_id(model_path) else str(path.resolve())
