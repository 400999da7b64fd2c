#!/usr/bin/env bash
# specwise map against a server nobody here wrote: llama-cpp-python's OpenAI server on
# the default GGUF, once plain (the baseline) and once with its prompt-lookup drafting.
# Its speculation is fixed at launch, so the two run side by side on two ports and the
# map compares them as --baseline-endpoint and --endpoint.
#
#   bash benchmarks/map_llamacpp.sh OUT_DIR [VENV]     # compiles llama.cpp once (8-15 min)
set -euo pipefail
out=${1:?give an output directory}
venv=${2:-/tmp/llamacpp-venv}
here=$(cd "$(dirname "$0")/.." && pwd)
model=$("$here/.venv/bin/python" -c 'from specwise.models.default import default_model_path; print(default_model_path())')
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'llama-cpp-python[server]'
fi
"$venv/bin/python" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)'
common=(--model "$model" --n_ctx 2048 --n_threads 2 --n_threads_batch 2 --host 127.0.0.1)
"$venv/bin/python" -m llama_cpp.server "${common[@]}" --port 8101 > "$out.plain.log" 2>&1 &
plain=$!
"$venv/bin/python" -m llama_cpp.server "${common[@]}" --port 8102 --draft_model prompt-lookup-decoding --draft_model_num_pred_tokens 4 > "$out.lookup.log" 2>&1 &
lookup=$!
trap 'kill $plain $lookup 2>/dev/null || true' EXIT
for port in 8101 8102; do
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null && break; sleep 1; done
done
# llama-cpp-python serves one request at a time, so only concurrency 1 means anything.
"$here/.venv/bin/specwise" map --endpoint http://127.0.0.1:8102 --baseline-endpoint http://127.0.0.1:8101 \
  --configs plain,fixed --concurrency 1 --output "$out"
