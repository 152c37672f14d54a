#!/usr/bin/env bash
# Installs what the real-editor test (tests/it/vscode.rs) drives, once, into the cache:
# code-server (VS Code served to a browser) from npm, and PyPI's Playwright in a virtualenv,
# which drives Debian's Chromium (no browser download). Prints the folder.
#
# code-server's npm postinstall downloads ripgrep from the internet; it is skipped and Debian's
# `rg` put where it would go (../shared/stack-notes.md has the measured recipe, about 6 minutes
# on 2 cores). The install is trusted only after it proves itself (tests/editors/vscode_e2e.py check:
# code-server starts and Chromium shows its workbench); then `<cache>/vscode-e2e-path` names it.
set -euo pipefail
cd "$(dirname "$0")/.."
repository="$PWD"
# 4.100.3 is the last code-server for Node 20 (Debian 12's); later ones want Node 22 or 24.
code_server_version=4.100.3
playwright_version=1.65.3
cache_root="${TIERLS_CACHE:-$HOME/.cache/tierls}"
folder="$cache_root/vscode-e2e-$code_server_version-$playwright_version"
# What the test reads: written only after the check passed.
trusted_file="$cache_root/vscode-e2e-path"
rm -f "$trusted_file"

for tool in node npm rg chromium python3; do
    command -v "$tool" >/dev/null || {
        echo "tests/code-server.sh: \`$tool\` is missing: run tests/setup.sh (it installs Debian's nodejs, ripgrep and chromium)" >&2
        exit 1
    }
done

check() { "$folder/venv/bin/python" "$repository/tests/editors/vscode_e2e.py" check "$folder" >&2; }

if [ -f "$folder/installed" ]; then
    if check; then
        echo "$folder" > "$trusted_file"
        echo "$folder"
        exit 0
    fi
    echo "tests/code-server.sh: the cached code-server failed its check; installing it again" >&2
fi
rm -rf "$folder"
mkdir -p "$folder"
(
    cd "$folder"
    echo '{"name": "tierls-vscode-e2e", "private": true}' > package.json
    npm install --no-audit --no-fund --ignore-scripts "code-server@$code_server_version"
    npm_config_yes=true npm rebuild argon2
    cd node_modules/code-server/lib/vscode
    npm install --no-audit --no-fund --omit=dev --ignore-scripts
    # @vscode/ripgrep's postinstall downloads rg unless bin/ exists.
    mkdir -p node_modules/@vscode/ripgrep/bin
    cp "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
    # node-pty's install script runs `npx node-gyp`.
    npm_config_yes=true npm rebuild
    (cd extensions && npm install --no-audit --no-fund --omit=dev)
    # The links code-server's postinstall.sh would make.
    ln -sfn node_modules node_modules.asar
    ln -sfn code-linux.sh bin/remote-cli/code-server
    ln -sfn browser-linux.sh bin/helpers/browser.sh
) >&2
python3 -m venv "$folder/venv" >&2
"$folder/venv/bin/pip" install --quiet --no-cache-dir "playwright==$playwright_version" >&2
if ! check; then
    echo "tests/code-server.sh: the code-server just installed does not run here (see above)" >&2
    exit 1
fi
touch "$folder/installed"
echo "$folder" > "$trusted_file"
echo "$folder"
