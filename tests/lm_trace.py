"""A tracing wrapper around an LM backend: it mirrors every row's ids through every protocol
operation and records each forward's logits next to the ids the row then holds, so that a
test can recompute them from scratch. It observes; it changes nothing."""

from __future__ import annotations

import torch


class TracingLM:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.ids: dict[int, list[int]] = {}
        self.seen: list[tuple[list[int], torch.Tensor]] = []  # (row ids, its logits)
        self.forwards = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, rows, tokens):
        for row in rows:
            held = self.ids.get(row, [])
            assert len(held) == self.inner.length(row), f"row {row}: the trace lost track"
        logits = self.inner.forward(rows, tokens)
        self.forwards += 1
        for row, ids, row_logits in zip(rows, tokens, logits):
            self.ids[row] = self.ids.get(row, []) + list(ids)
            self.seen.append((list(self.ids[row]), row_logits.clone()))
        return logits

    def feed(self, token_ids, row=0):
        return self.forward([row], [token_ids])[0]

    def crop(self, row, length):
        self.ids[row] = self.ids.get(row, [])[:length]
        return self.inner.crop(row, length)

    def fork(self, source, targets):
        for target in targets:
            self.ids[target] = list(self.ids[source])
        self.inner.fork(source, targets)

    def copy_rows(self, rows, sources, starts):
        copies = [list(self.ids.get(source, [])) for source in sources]
        for row, source, start in zip(rows, sources, starts):  # the protocol's promise
            held = self.ids.get(row, [])
            assert held[:start] == self.ids.get(source, [])[:start], f"{row} is not {source}"
        for row, ids in zip(rows, copies):
            self.ids[row] = ids
        self.inner.copy_rows(rows, sources, starts)

    def save(self, row, start):
        return self.inner.save(row, start), start, list(self.ids[row][start:])

    def load(self, row, saved):
        inner_saved, start, suffix = saved
        self.ids[row] = self.ids[row][:start] + suffix
        self.inner.load(row, inner_saved)

    def release(self, rows):
        for row in rows:  # a released row is only used again after a fork
            self.ids[row] = []
        self.inner.release(rows)

    def reset(self):
        self.ids = {}
        self.inner.reset()


def full_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()


def assert_trace_matches_full_recompute(model, trace: TracingLM, atol=1e-5) -> None:
    assert trace.seen
    for ids, logits in trace.seen:
        torch.testing.assert_close(logits, full_logits(model, ids), atol=atol, rtol=atol)


def generate_chunk(model, prefix, num_beams, max_new_tokens, ids) -> list[int]:
    """A WRITE chunk by the installed transformers' `generate()` (beam search when
    `num_beams` > 1) after `prefix`, with EAST's stops and suppressed ids (`ids`:
    `east_token_ids`); its new ids, the stop excluded."""
    with torch.no_grad():
        output = model.generate(
            torch.tensor([list(prefix)]),
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(ids.write_stops),
            pad_token_id=ids.end_of_write,
            suppress_tokens=list(ids.write_suppressed),
            length_penalty=1.0,
            early_stopping=False,
        )[0, len(prefix) :].tolist()
    while output and output[-1] in ids.write_stops:
        output.pop()
    return output
