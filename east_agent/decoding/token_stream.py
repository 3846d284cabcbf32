"""The token ids of one EAST conversation, built piece by piece without re-tokenizing it.

The reference decoder re-tokenizes the whole rendered text at every step. Added tokens
(the chat template's headers, `<|end-of-read|>`, `<|end-of-write|>`) are split off before
a tokenizer sees the text around them, so the ids of the text after the last added token
depend only on that text. A `TokenStream` therefore re-tokenizes only the current *run*:
the text from the last added token on (the token included, so that prefix-space rules see
it). When a new piece changes how the end of the run tokenizes (a Chinese character that
merges with the one before, say), `append_text` reports the first position whose id
changed, and the caller rolls its KV cache back to there.

Generated ids are kept exactly as generated: they are never re-tokenized.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from east_agent.decoding.units import (
    SourceError,
    control_token_in,
    control_token_problem,
    control_tokens,
    token_pattern,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# A point to come back to: (length, run start, run text, the run's ids up to the length)
Mark = tuple[int, "int | None", str, tuple[int, ...]]


class TokenStream:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)  # fast tokenizers
        self.added_token_ids = frozenset(tokenizer.added_tokens_decoder)
        controls = control_tokens(tokenizer)
        self._control = token_pattern(controls)
        self._longest_control = max(map(len, controls), default=0)
        self.ids: list[int] = []
        self._run_start: int | None = None  # index of the run's first id; None: no open run
        self._run_text = ""
        self._prompt_mark: Mark | None = None

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:  # the same ids, without the Python wrapper's cost
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def start(self, prompt: str) -> None:
        """Begin with the rendered prompt; `rewind_to_prompt` comes back to this point."""
        if self._backend is not None and self.encode(prompt) != self._wrapped(prompt):
            self._backend = None  # a wrapper that does more than its backend: use it
        self.ids = self.encode(prompt)
        self._run_start, self._run_text = self._last_run(prompt, self.ids)
        self._prompt_mark = self.mark()

    def _wrapped(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def mark(self) -> Mark:
        start = self._run_start
        run_ids = () if start is None else tuple(self.ids[start:])
        return (len(self.ids), start, self._run_text, run_ids)

    def restore(self, mark: Mark) -> int:
        """Come back to an earlier `mark()`: the ids after it are dropped, and so is what
        text appended since did to the run's ids before it (the mark's last word and the
        next text may tokenize as one); return the first index whose id changed."""
        length, start, self._run_text, run_ids = mark
        self._run_start = start
        if start is None:  # text appended since opened a run after the mark
            del self.ids[length:]
            return length
        held = self.ids[start:length]  # only the run's ids can have changed
        self.ids[start:] = run_ids
        differs = next((i for i, (old, new) in enumerate(zip(held, run_ids)) if old != new), None)
        return start + (len(held) if differs is None else differs)

    @property
    def prompt_length(self) -> int:
        return 0 if self._prompt_mark is None else self._prompt_mark[0]

    def rewind_to_prompt(self) -> int:
        """`restore` the prompt's mark; the first index whose id changed."""
        if self._prompt_mark is None:
            raise RuntimeError("TokenStream.start was never called")
        return self.restore(self._prompt_mark)

    def _last_run(self, prompt: str, prompt_ids: list[int]) -> tuple[int, str]:
        """Open the run at the prompt's last added token if its text tokenizes back to its ids."""
        for index in range(len(prompt_ids) - 1, -1, -1):
            if prompt_ids[index] not in self.added_token_ids:
                continue
            token_text = cast(str, self.tokenizer.convert_ids_to_tokens(prompt_ids[index]))
            offset = prompt.rfind(token_text)
            if offset >= 0 and self.encode(prompt[offset:]) == prompt_ids[index:]:
                return index, prompt[offset:]
            break
        return 0, prompt

    def check_source(self, text: str) -> None:
        """Refuse source text holding a control token's text, which the tokenizer would
        make into that token (a source `<|eot_id|>` ended the user turn); or completing one
        with the run's text before it, as Chinese and Japanese units, joined without a
        space, can (`<|eot` then `_id|>`; before, fed as that token)."""
        token = control_token_in(text, self._control)
        if token is not None:
            raise SourceError(f"the source unit {text.strip()!r} {control_token_problem(token)}")
        if self._control is None or self._run_start is None:
            return
        # the run's end, as far back as a token could begin (not the whole run at every
        # unit); a match that ends before `text` is the run's opening token
        before = self._run_text[-(self._longest_control - 1) :]
        found = (m for m in self._control.finditer(before + text) if m.end() > len(before))
        if (match := next(found, None)) is not None:
            raise SourceError(
                f"the source unit {text.strip()!r} completes {match.group()!r} with the units "
                "before it (written together, no space between), one of the checkpoint's "
                "control tokens: the model would read it as that token; remove it from the source"
            )

    def append_text(self, text: str) -> int:
        """Append `text` to the current run; return the first index whose id changed or is new."""
        if self._run_start is None:
            self._run_start, self._run_text = len(self.ids), ""
        run_ids = self.encode(self._run_text + text)
        old_run_ids = self.ids[self._run_start :]
        if self._run_start < len(self.ids) and run_ids[:1] != old_run_ids[:1]:
            raise SourceError(
                f"appending {text!r} re-tokenized the added token that opens the run "
                f"({old_run_ids[:1]} became {run_ids[:1]}): the tokenizer does not split "
                "added tokens"
            )
        common = 0
        for old_id, new_id in zip(old_run_ids, run_ids):
            if old_id != new_id:
                break
            common += 1
        self.ids[self._run_start :] = run_ids
        self._run_text += text
        return self._run_start + common

    def append_added_token(self, token_id: int) -> None:
        """Append an added token (end-of-read, end-of-write); it opens a new run."""
        self.ids.append(token_id)
        self._run_start = len(self.ids) - 1
        self._run_text = cast(str, self.tokenizer.convert_ids_to_tokens(token_id))  # one id: a str

    def append_generated(self, token_ids: list[int]) -> None:
        """Append model-generated ids verbatim; text can only follow after an added token."""
        self.ids.extend(token_ids)
        self._run_start, self._run_text = None, ""
