#!/usr/bin/env bash
# MarkLLM (the peer toolkit benchmarked in peers.py) pins old packages (openai 0.28,
# Pillow 9.4), so it gets its own virtual environment: benchmarks/.venv-markllm. The venv
# sees this machine's torch and transformers (--system-site-packages): torch installs from
# local disk here, and MarkLLM's KGW needs nothing newer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-markllm"
python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q "markllm==0.1.5"
"$venv/bin/python" -c "import markllm.watermark.kgw.kgw" && echo "MarkLLM ready: $venv/bin/python"
