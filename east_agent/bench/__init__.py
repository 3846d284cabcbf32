"""`east-bench` (`python -m east_agent.bench`): the streaming decoder against a
reference-style loop and offline decoding.

    east-bench --model-path models/east-demo --testset multi30k.de-en --limit 100
    east-bench --random-model llama3-8b --device cuda --torch-dtype bfloat16 \\
        --testset wmt22.de-en --limit 100 --schedule schedule.json

In one run, on the same model, sentences and hardware:
- (a) `EastStreamDecoder` (greedy, and beam search with `--num-beams`);
- (b) the reference-style loop of the EAST paper's code, written here from its description:
      at every source word re-render and re-tokenize the whole text, call `generate()`
      for one READ-decision token with the cache passed in, and `generate()` again for
      each WRITE chunk;
- (c) offline decoding of the same sentences: prefill the offline prompt with the whole
      source once, then decode as many target tokens as (a) wrote.
For each: forward passes, tokens fed, tokens re-encoded and wall time per sentence. Per
step: milliseconds of a READ step (two new tokens and a decision) and of a WRITE token,
next to the weight-bandwidth floor (weight bytes over the device-to-device copy bandwidth
measured in the same run).

Random-weight models almost never choose end-of-read, so decisions can follow a schedule
(`--schedule`): a JSON file recorded by `--save-schedule` from a real model's run, or
`waitk:K` (read K units, then a two-token chunk per unit, the rest at the end). With a
schedule every forward still runs; only the READ/WRITE outcomes and chunk lengths are
imposed, on (a), (b) and (c) alike. A recorded file names its test set
(`{"testset": ..., "schedule": [...]}`; a file of the older form, the bare list, names
none) and is refused on another; with a --limit above the sentences it holds, they
are taken again in turn, and the report's header says so.

`--streams N ...` measures instead many streams at once against the sequential decoder
(`streams.py`). The package, a file an idea: `cli.py` (the command), `methods.py` ((a),
(b), (c)), `timing.py`, `step_costs.py`, `schedules.py`, `models.py` (random weights),
`streams.py`, `report.py` (the tables).
"""
