"""Characters cut across tokens: a chunk whose token cap falls inside a character's bytes.

A byte-level tokenizer (Llama 3, Qwen, GPT-2) or a sentencepiece one with byte fallback
(Llama 2, Mistral, Gemma) spells a rare character as several tokens; cut after the first
of them, the text decodes to U+FFFD. `CharacterCuts` tells such a cut from a U+FFFD the
model wrote as a character of its own by the tokens' bytes: they end in the unfinished
start of a UTF-8 character. For a tokenizer whose tokens' bytes it cannot know (a slow
one, another decoder) it looks at the decoded text instead: a trailing U+FFFD that the
last one to three tokens make is taken for a cut.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from tokenizers.decoders import Decoder
    from transformers import PreTrainedTokenizerBase

    from east_agent.decoding.streaming import Stream

CUT_CHARACTER = "\ufffd"  # what the bytes of a character cut across tokens decode to
MAX_CUT_TOKENS = 3  # a UTF-8 character has at most 4 bytes, so a cut leaves 3 at most
BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # sentencepiece's byte fallback
SPIECE_SPACE = "\u2581"


class CharacterCuts:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.token_bytes = token_byte_table(tokenizer)  # None: look at the decoded text

    def cut_tokens(self, ids: list[int]) -> int:
        """How many of the last `ids` hold the unfinished start of a character (0: none)."""
        if self.token_bytes is None:
            return self._cut_tokens_by_text(ids)
        pending = self._unfinished_bytes(ids)
        cut, taken = 0, 0
        while taken < pending:
            cut += 1
            taken += len(self.token_bytes[ids[-cut]])
        return cut

    def whole(self, stream: Stream, new_ids: list[int], written: Sequence[int] = ()) -> list[int]:
        """`new_ids` (generated after `written`) without the tokens of a character their
        cap cut (counted in the stream's `characters_cut`)."""
        cut = self.cut_tokens([*written, *new_ids])
        if cut:
            stream.totals.characters_cut += 1
        return new_ids[: max(0, len(new_ids) - cut)]

    def ends_whole(self, ids: list[int]) -> bool:
        """Whether `ids` end on a whole character (by the text: hold no U+FFFD at all)."""
        if self.token_bytes is None:
            return CUT_CHARACTER not in self.tokenizer.decode(ids)
        return self._unfinished_bytes(ids) == 0

    def written(self, ids: list[int]) -> str:
        """The text of `ids` (special tokens left out) without the start of a character
        they cut (by the text: without every trailing U+FFFD)."""
        text = cast(str, self.tokenizer.decode(ids, skip_special_tokens=True))  # one sequence
        if self.token_bytes is None:
            return text.rstrip(CUT_CHARACTER)
        cut = self.cut_tokens(ids)
        if not cut:
            return text
        if self.token_bytes.marks_run:  # every byte of the run is U+FFFD, whole ones too
            return cast(str, self.tokenizer.decode(ids[:-cut], skip_special_tokens=True))
        return text.removesuffix(CUT_CHARACTER)  # byte-level: one U+FFFD for the cut start

    def _unfinished_bytes(self, ids: list[int]) -> int:
        assert self.token_bytes is not None  # its callers look at the text without a table
        # a cut leaves at most 3 bytes, so the last 4 tokens (a byte or more each) hold it
        return unfinished_bytes(b"".join(self.token_bytes[i] for i in ids[-4:]))

    def _cut_tokens_by_text(self, ids: list[int]) -> int:
        if not cast(str, self.tokenizer.decode(ids)).endswith(CUT_CHARACTER):
            return 0
        for cut in range(1, min(MAX_CUT_TOKENS, len(ids)) + 1):
            if not cast(str, self.tokenizer.decode(ids[:-cut])).endswith(CUT_CHARACTER):
                return cut
        return 0  # more than one character's bytes: not a cut, keep what the model wrote


def unfinished_bytes(data: bytes) -> int:
    """How many bytes at the end of `data` begin a UTF-8 character that more bytes could
    still complete."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(data, final=False)
    return len(decoder.getstate()[0])


class TokenBytes:
    """The bytes of a token id of a fast byte-level or byte-fallback tokenizer (an added
    token: its text's), spelled when first asked for."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        spell: Callable[[str], bytes],
        marks_run: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.spell = spell
        # sentencepiece's byte fallback decodes a run of byte tokens that is not whole
        # UTF-8 as one U+FFFD a byte; GPT-2's byte level as one per unfinished character
        self.marks_run = marks_run
        self.added = {i: token.content for i, token in tokenizer.added_tokens_decoder.items()}
        self.known: dict[int, bytes] = {}

    def __getitem__(self, token_id: int) -> bytes:
        if token_id not in self.known:
            added = self.added.get(token_id)
            # one id: its token, None for an id the vocabulary lacks
            token = cast(str | None, self.tokenizer.convert_ids_to_tokens(token_id))
            self.known[token_id] = added.encode() if added else self.spell(token or "")
        return self.known[token_id]


def token_byte_table(tokenizer: PreTrainedTokenizerBase) -> TokenBytes | None:
    """`TokenBytes` of a fast byte-level or byte-fallback tokenizer; None for any other."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    kinds = decoder_kinds(backend.decoder) if backend is not None else set()
    if "ByteLevel" in kinds:
        return TokenBytes(tokenizer, ByteLevelSpelling(), marks_run=False)
    if "ByteFallback" in kinds:
        return TokenBytes(tokenizer, spiece_token_bytes, marks_run=True)
    return None


def decoder_kinds(decoder: Decoder | None) -> set[str]:
    """The types of a `tokenizers` decoder and of the decoders a Sequence holds."""
    if decoder is None:
        return set()
    state = json.loads(decoder.__getstate__())
    return {part.get("type") for part in state.get("decoders", [state])}


class ByteLevelSpelling:
    """GPT-2's byte-level alphabet back to bytes."""

    def __init__(self) -> None:
        self.byte_of = {character: bytes([byte]) for byte, character in byte_alphabet().items()}

    def __call__(self, token: str) -> bytes:
        return b"".join(self.byte_of.get(c) or c.encode() for c in token)


def spiece_token_bytes(token: str) -> bytes:
    byte = BYTE_TOKEN.fullmatch(token)
    return bytes([int(byte.group(1), 16)]) if byte else token.replace(SPIECE_SPACE, " ").encode()


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet (`bytes_to_unicode` of transformers' slow-tokenizer
    converter, whose import costs every run 20 MB): printable Latin-1 bytes stand for
    themselves, the other 68 for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [byte for byte in range(256) if byte not in printable]
    return {
        **{byte: chr(byte) for byte in printable},
        **{byte: chr(256 + n) for n, byte in enumerate(others)},
    }
