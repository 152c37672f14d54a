"""The real-editor test's driver: code-server (VS Code) with the packaged tierls.vsix, driven by
Playwright through Debian's Chromium. Everything is checked from what VS Code shows (the DOM)
and does (files on disk); every wait is for a condition, with a bound.

    vscode_e2e.py check FOLDER      proves an install runs: code-server starts, the workbench shows
    vscode_e2e.py flow|missing      the test itself; its inputs come from the environment
                                    (see tests/it/vscode.rs) and it writes RESULT as JSON

Screenshots of each step go to ARTEFACTS.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

GHOST = ".ghost-text-decoration, .ghost-text"
# The ghost text as VS Code shows it: the part on the cursor's line is split into a span per
# token; lines after it come in a view zone of their own.
GHOST_TEXT = """() => {
    const inline = [...document.querySelectorAll('.ghost-text-decoration')].map((e) => e.textContent).join('');
    const below = [...document.querySelectorAll('.suggest-preview-text .view-line')].map((e) => e.textContent);
    return [inline, ...below].join('\\n');
}"""
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Failed(Exception):
    pass


def wait_until(what, condition, timeout=60.0, interval=0.1):
    """Polls `condition` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


class CodeServer:
    """code-server on loopback, its user data and extensions in `home`."""

    def __init__(self, install, home, settings, vsix=None, env=None):
        self.entry = Path(install) / "node_modules/code-server/out/node/entry.js"
        self.home = Path(home)
        self.user_data = self.home / "user-data"
        self.extensions = self.home / "extensions"
        (self.user_data / "User").mkdir(parents=True, exist_ok=True)
        (self.user_data / "User/settings.json").write_text(json.dumps(settings, indent=2))
        self.env = dict(os.environ, **(env or {}))
        # code-server's own config and state stay out of the user's home.
        self.env["XDG_CONFIG_HOME"] = str(self.home / "config")
        self.env["XDG_DATA_HOME"] = str(self.home / "data")
        self.log = open(self.home / "code-server.log", "w")
        if vsix:
            installed = subprocess.run(
                ["node", str(self.entry), *self.dirs(), "--install-extension", str(vsix)],
                env=self.env, stdout=self.log, stderr=subprocess.STDOUT, timeout=180,
            )
            if installed.returncode != 0:
                raise Failed(f"code-server --install-extension failed: see {self.log.name}")
        self.port = free_port()
        self.process = None

    def dirs(self):
        return ["--user-data-dir", str(self.user_data), "--extensions-dir", str(self.extensions)]

    def start(self, folder):
        self.process = subprocess.Popen(
            [
                "node", str(self.entry), *self.dirs(),
                "--auth", "none", "--bind-addr", f"127.0.0.1:{self.port}",
                "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
                "--disable-getting-started-override", "--ignore-last-opened", str(folder),
            ],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )

        def healthy():
            if self.process.poll() is not None:
                raise Failed(f"code-server exited with {self.process.returncode}: see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        wait_until("code-server to answer /healthz", healthy, timeout=60)
        return f"http://127.0.0.1:{self.port}/?folder={folder}"

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class Browser:
    """Chromium through Playwright, with a screenshot per step and one of a failure."""

    def __init__(self, playwright, artefacts):
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # The closed network: no background connections to refuse.
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            timeout=60_000,
        )
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 900})
        self.artefacts = Path(artefacts)
        self.artefacts.mkdir(parents=True, exist_ok=True)
        self.shots = 0

    def shot(self, name):
        self.shots += 1
        self.page.screenshot(path=str(self.artefacts / f"{self.shots:02}-{name}.png"))

    def close(self):
        if sys.exc_info()[0] is not None:
            try:
                self.shot("failure")
            except Exception:  # noqa: BLE001 - the failure itself is what gets reported
                pass
        self.browser.close()


def open_workbench(browser, url):
    page = browser.page
    page.goto(url, timeout=60_000)
    page.wait_for_selector(".monaco-workbench .part.editor", timeout=120_000)
    page.wait_for_selector(".part.statusbar", timeout=60_000)
    # Ready for keys: the explorer has listed the folder.
    page.wait_for_selector(".explorer-folders-view .monaco-list-row", timeout=60_000)


def check(install):
    """Proves an install runs here: code-server starts and Chromium shows its workbench."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as home:
        folder = Path(home) / "folder"
        folder.mkdir()
        (folder / "hello.txt").write_text("hello\n")
        server = CodeServer(install, home, {"security.workspace.trust.enabled": False})
        try:
            url = server.start(folder)
            with sync_playwright() as playwright:
                browser = Browser(playwright, Path(home) / "shots")
                try:
                    open_workbench(browser, url)
                finally:
                    browser.close()
        finally:
            server.stop()
    print("vscode_e2e: code-server and Chromium run here", file=sys.stderr)


# ---- the test --------------------------------------------------------------------------------


def settings_for(server_path, model):
    return {
        "security.workspace.trust.enabled": False,
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "workbench.enableExperiments": False,
        "telemetry.telemetryLevel": "off",
        "extensions.autoUpdate": False,
        "extensions.autoCheckUpdates": False,
        "extensions.ignoreRecommendations": True,
        "update.mode": "none",
        "git.enabled": False,
        "chat.commandCenter.enabled": False,
        "files.autoSave": "off",
        # Only tierls' ghost text: no suggest widget or bracket to compete for Tab.
        "editor.inlineSuggest.enabled": True,
        "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.suggestOnTriggerCharacters": False,
        "editor.wordBasedSuggestions": "off",
        "editor.autoClosingBrackets": "never",
        "editor.autoIndent": "none",
        "editor.parameterHints.enabled": False,
        "tierls.server.path": server_path,
        "tierls.tiers.fast.model": model,
        # A suite running beside this test slows the model: a longer budget keeps suggestions
        # whole rather than cut to nothing (the figures are measured, not bounded).
        "tierls.completion.budgetMs": 4000,
        "tierls.log.level": "debug",
    }


class Editor:
    def __init__(self, browser):
        self.browser = browser
        self.page = browser.page

    def command(self, title):
        """Runs a command from the palette by its title."""
        page = self.page
        page.keyboard.press("F1")
        box = page.wait_for_selector(".quick-input-widget input", state="visible", timeout=30_000)
        box.fill(">" + title)
        row = f'.quick-input-list .monaco-list-row[aria-label*="{title}"]'
        page.wait_for_selector(row, timeout=30_000)
        page.keyboard.press("Enter")

    def open_file(self, name):
        page = self.page
        page.keyboard.press("Control+P")
        box = page.wait_for_selector(".quick-input-widget input", state="visible", timeout=30_000)
        box.fill(name)
        page.wait_for_selector(f'.quick-input-list .monaco-list-row[aria-label*="{name}"]', timeout=30_000)
        page.keyboard.press("Enter")
        page.wait_for_selector(f'.tab.active[data-resource-name="{name}"]', timeout=30_000)
        page.wait_for_selector(".monaco-editor.focused", timeout=30_000)

    def go_to_line(self, line):
        page = self.page
        page.keyboard.press("Control+G")
        box = page.wait_for_selector(".quick-input-widget input", state="visible", timeout=30_000)
        box.fill(f":{line}")
        page.keyboard.press("Enter")
        page.wait_for_selector(".quick-input-widget", state="hidden", timeout=30_000)

    def status_text(self):
        """The tierls status bar item's text, or None."""
        return self.page.evaluate(
            """() => {
                for (const item of document.querySelectorAll('.part.statusbar .statusbar-item')) {
                    const text = item.innerText.trim();
                    if (/^tierls\\b/.test(text) || item.id.includes('tierls')) {
                        const icon = item.querySelector('.codicon');
                        const name = icon ? [...icon.classList].find((c) => c.startsWith('codicon-') && c !== 'codicon-modifier-spin') : '';
                        return (name ? `$(${name.slice(8)}) ` : '') + text;
                    }
                }
                return null;
            }"""
        )

    def notifications(self):
        return self.page.evaluate(
            """() => [...document.querySelectorAll('.notifications-toasts .notification-list-item-message, .notifications-center .notification-list-item-message')].map((e) => e.innerText)"""
        )

    def ghost_text(self):
        return self.page.evaluate(GHOST_TEXT)

    def save(self):
        self.page.keyboard.press("Control+S")


RECORDER = """() => {
    // Times from a key press to the first ghost text after it, and every text the status bar
    // showed: both as the page saw them, not as the driver polled them.
    window.__tierls = { pressed: 0, shown: 0, statusbar: [] };
    document.addEventListener('keydown', () => {
        window.__tierls.pressed = performance.now();
        window.__tierls.shown = 0;
    }, true);
    const seen = window.__tierls.statusbar;
    new MutationObserver(() => {
        const state = window.__tierls;
        if (state.pressed && !state.shown && (%s)().trim()) {
            state.shown = performance.now();
        }
        const bar = document.querySelector('.part.statusbar');
        if (bar) {
            const text = [...bar.querySelectorAll('.statusbar-item')]
                .map((item) => `${item.id}=${item.innerText.replace(/\\s+/g, ' ').trim()}`).join(' | ');
            if (seen[seen.length - 1] !== text) seen.push(text);
        }
    }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
}""" % GHOST_TEXT


def normal(text):
    return text.replace("\u00a0", " ").replace("\u200b", "")


def settled(log, start):
    """A condition: the server answered an inline completion after byte `start` of its log, and
    the log has not grown for half a second."""
    last = {"size": -1, "since": time.monotonic()}

    def condition():
        size = os.path.getsize(log)
        if size != last["size"]:
            last.update(size=size, since=time.monotonic())
            return False
        with open(log, encoding="utf-8", errors="replace") as file:
            file.seek(start)
            answered = "inline completion answered" in file.read()
        return answered and time.monotonic() - last["since"] > 0.5

    return condition


def server_latencies(log, start):
    """The server's own elapsed times (ms) for the inline completions it answered with a
    suggestion, logged after byte `start` of its log."""
    with open(log, encoding="utf-8", errors="replace") as file:
        file.seek(start)
        text = file.read()
    return [int(found) for found in re.findall(r"elapsed_ms=(\d+) suggested=true", text)]


def flow(env, result):
    from playwright.sync_api import sync_playwright

    workspace = Path(env["WORKSPACE"])
    geometry = workspace / "src/geometry.rs"
    home = Path(env["HOME_DIR"])
    server_log = home / "tierls.log"
    wrapper = home / "tierls"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec "{env["TIERLS_BIN"]}" "$@" --scripted-models "{env["SCRIPT"]}" 2>>"{server_log}"\n'
    )
    wrapper.chmod(0o755)
    server_log.write_text("")
    server = CodeServer(
        env["VSCODE_E2E"], home, settings_for(str(wrapper), env["TEST_MODEL"]), vsix=env["VSIX"],
        env={"TIERLS_CONFIG_DIR": "/nonexistent", "XDG_STATE_HOME": str(home / "state"),
             "TIERLS_LOG": "warn,tierls=debug"},
    )
    started = time.monotonic()
    try:
        url = server.start(workspace)
        with sync_playwright() as playwright:
            browser = Browser(playwright, env["ARTEFACTS"])
            try:
                editor = Editor(browser)
                page = browser.page
                open_workbench(browser, url)
                page.evaluate(RECORDER)
                browser.shot("workbench")

                # The extension activates on a Rust file and shows the tiers.
                editor.open_file("geometry.rs")
                status = wait_until(
                    "the status bar to show the fast tier ready",
                    lambda: (text := editor.status_text()) and "fast ●" in text and text,
                    timeout=180,
                )
                result["status"] = status
                browser.shot("status-bar")

                # Ghost text while typing, accepted with Tab.
                page.keyboard.press("Control+End")
                page.keyboard.press("Enter")
                page.keyboard.type("pub fn perimeter(", delay=40)
                ghost = wait_until("ghost text after `pub fn perimeter(`", lambda: normal(editor.ghost_text()).strip() and editor.ghost_text(), timeout=90)
                result["ghost"] = normal(ghost)
                browser.shot("ghost-text")
                page.keyboard.press("Tab")
                wait_until("the ghost text to be accepted", lambda: not editor.ghost_text().strip() or editor.ghost_text() != ghost, timeout=10)
                browser.shot("accepted")
                editor.save()
                first_line = normal(ghost).split("\n")[0]
                line = wait_until(
                    "the accepted suggestion on disk",
                    lambda: next((l for l in geometry.read_text().splitlines() if l.startswith("pub fn perimeter(") and len(l) > len("pub fn perimeter(")), None),
                    timeout=20,
                )
                result["accepted_line"] = line
                result["ghost_first_line"] = first_line

                # Keystroke to ghost text, ten times, against the server's own time.
                result["latency"] = latencies(editor, server_log)
                browser.shot("latency")
                # Leave the file as it was on disk before the plan.
                page.keyboard.press("Control+A")
                page.keyboard.press("Delete")
                page.keyboard.insert_text(Path(env["ORIGINAL"]).read_text())
                editor.save()
                wait_until("the file restored on disk", lambda: geometry.read_text() == Path(env["ORIGINAL"]).read_text(), timeout=20)

                # Plan refactor… from the palette, the instruction in the input box.
                # The cursor in `Circle::area`: the plan's focus.
                editor.go_to_line(10)
                editor.command("tierls: Plan refactor")
                page.wait_for_selector('.quick-input-widget:has-text("tierls: Plan refactor")', timeout=30_000)
                browser.shot("plan-input")
                page.keyboard.type("use std::f64::consts::PI in area")
                page.keyboard.press("Enter")
                page.wait_for_selector('.notifications-toasts .monaco-button:text-is("Execute")', timeout=60_000)
                # The server writes the plan to its cache folder and asks VS Code to show it.
                page.wait_for_selector('.tab[data-resource-name^="plan-"][data-resource-name$=".md"]', timeout=30_000)
                result["plan_document"] = normal(wait_until(
                    "the plan document's text",
                    lambda: page.evaluate("""() => [...document.querySelectorAll('.editor-group-container')]
                        .map((group) => group.querySelector('.tab.active[data-resource-name^="plan-"]') && group.querySelector('.view-lines'))
                        .filter(Boolean).map((lines) => lines.innerText).join('')"""),
                    timeout=30,
                ))
                result["plan_summary"] = [n for n in editor.notifications() if "step" in n.lower()]
                browser.shot("plan-shown")
                page.click('.notifications-toasts .monaco-button:text-is("Execute")')
                # `$/progress`: VS Code's own window progress entry, not tierls' status item.
                seen = wait_until(
                    "the execution's progress in the status bar",
                    lambda: [entry for entry in statusbar_entries(page) if "tierls: executing" in entry and not entry.startswith(OWN_ITEM)],
                    timeout=60,
                )
                result["progress_seen"] = sorted(set(seen))
                browser.shot("executing")
                wait_until(
                    "the plan applied",
                    lambda: any("applied" in n.lower() for n in editor.notifications()),
                    timeout=90,
                )
                browser.shot("executed")
                # VS Code applies the edit to the open document; saving writes it.
                editor.command("File: Save All")
                expected = env["EXPECTED"]
                wait_until("the edited file on disk", lambda: geometry.read_text() == Path(expected).read_text(), timeout=30)
                result["executed_on_disk"] = True
                result["notes_after_execute"] = editor.notifications()
                browser.shot("saved")

                # Restart: the status bar leaves "running" and comes back with the tiers.
                before = len(page.evaluate("() => window.__tierls.statusbar"))
                editor.command("tierls: Restart the server")
                wait_until(
                    "the status bar to show the restarted server",
                    lambda: restarted(page.evaluate("() => window.__tierls.statusbar")[before:]),
                    timeout=180,
                )
                result["restart_statusbar"] = [own_item(t) for t in page.evaluate("() => window.__tierls.statusbar")[before:]]
                result["status_after_restart"] = editor.status_text()
                browser.shot("restarted")
            finally:
                browser.close()
    finally:
        server.stop()
    result["seconds"] = round(time.monotonic() - started, 1)


# The id VS Code gives the extension's status bar item in the DOM.
OWN_ITEM = "tierls.tierls="


def statusbar_entries(page):
    """Every status bar entry the page has shown, as `id=text`."""
    return [entry.strip() for text in page.evaluate("() => window.__tierls.statusbar") for entry in text.split(" | ")]


def own_item(statusbar):
    """tierls' item in one recorded status bar: its text, or None when it was not there."""
    return next((entry.strip()[len(OWN_ITEM):] for entry in statusbar.split(" | ") if entry.strip().startswith(OWN_ITEM)), None)


def restarted(texts):
    """A restart shows a state other than ready (starting or stopped), then the tiers again."""
    items = [own_item(text) or "" for text in texts]
    left = next((i for i, item in enumerate(items) if "fast ●" not in item), None)
    return left is not None and any("fast ●" in item for item in items[left:])


# Ten statements begun on a fresh line of a function body; the last key of each is measured.
STATEMENTS = [
    "let diameter = ", "let circumference = ", "let half = ", "let doubled = ", "let squared = ",
    "let scaled = ", "let offset = ", "let ratio = ", "let width = ", "let height = ",
    "let depth = ", "let area = ", "let count = ", "let first = ", "let last = ",
    "let middle = ", "let total = ", "let average = ", "let largest = ", "let smallest = ",
]


def latencies(editor, server_log):
    """Keystrokes to ghost text, each the last key of a statement typed on a fresh line with no
    ghost text showing, timed by the page's own clock from the key's `keydown`, beside the
    server's own time for the request that answered it (its log). Two kinds: a key that
    continues the suggestion the server last made (its cache answers) and one that departs
    from it (the model runs). Ten of the second kind are the headline figure."""
    page = editor.page
    model = {"editor": [], "server": []}
    cached = {"editor": [], "server": []}

    def measure(key, into):
        page.keyboard.press("Escape")
        wait_until("the ghost text to go", lambda: not editor.ghost_text().strip(), timeout=10)
        start = os.path.getsize(server_log)
        page.keyboard.type(key)
        try:
            wait_until("ghost text", lambda: page.evaluate("() => window.__tierls.shown"), timeout=8)
            state = page.evaluate("() => window.__tierls")
            # The server logs its answer before VS Code can show it.
            times = wait_until("the server's log line", lambda: server_latencies(server_log, start), timeout=5)
        except Failed:
            return False  # the model had nothing to say here
        into["editor"].append(state["shown"] - state["pressed"])
        into["server"].append(times[-1])
        return True

    for statement in STATEMENTS:
        if len(model["editor"]) == 10:
            break
        page.keyboard.press("End")
        page.keyboard.press("Enter")
        typed = os.path.getsize(server_log)
        page.keyboard.type("    " + statement, delay=20)
        wait_until("the server to answer the typing", settled(server_log, typed), timeout=15)
        suggestion = normal(editor.ghost_text())
        if suggestion.strip():
            if measure(suggestion[0], cached):
                page.keyboard.press("Escape")
                page.keyboard.press("Backspace")
                wait_until("the server to answer the typing", settled(server_log, os.path.getsize(server_log)), timeout=15)
            # A key the suggestion does not begin with: the cache cannot answer it.
            measure(next(key for key in "2x(" if not suggestion.startswith(key)), model)
        # The line goes, so every statement has the same context.
        page.keyboard.press("Escape")
        page.keyboard.press("Control+Shift+K")
        page.keyboard.press("Control+End")
    if len(model["editor"]) < 10:
        raise Failed(f"ghost text came after only {len(model['editor'])} of {len(STATEMENTS)} statements")

    def summary(samples):
        if not samples["editor"]:
            return None
        editor_ms = statistics.median(samples["editor"])
        server_ms = statistics.median(samples["server"])
        return {
            "samples": len(samples["editor"]),
            "editor_median_ms": round(editor_ms, 1),
            "server_median_ms": server_ms,
            "overhead_ms": round(editor_ms - server_ms, 1),
            "editor_ms": [round(s, 1) for s in samples["editor"]],
            "server_ms": samples["server"],
        }

    return {"model": summary(model), "cached": summary(cached)}


def missing(env, result):
    """A server binary that does not exist: one message, whatever is opened, and no restarts."""
    from playwright.sync_api import sync_playwright

    workspace = Path(env["WORKSPACE"])
    home = Path(env["HOME_DIR"])
    absent = str(home / "no-such-tierls")
    server = CodeServer(env["VSCODE_E2E"], home, settings_for(absent, env["TEST_MODEL"]), vsix=env["VSIX"])
    try:
        url = server.start(workspace)
        with sync_playwright() as playwright:
            browser = Browser(playwright, env["ARTEFACTS"])
            try:
                editor = Editor(browser)
                open_workbench(browser, url)
                editor.open_file("geometry.rs")
                wait_until("the message about the missing server", lambda: any("was not found" in n for n in editor.notifications()), timeout=120)
                browser.shot("missing-binary")
                # More Rust files, and time for a restart loop to show itself if there were one.
                editor.open_file("lib.rs")
                deadline = time.monotonic() + 5
                wait_until("five quiet seconds", lambda: time.monotonic() > deadline, timeout=10)
                browser.shot("still-one-message")
                page = browser.page
                page.keyboard.press("Control+Shift+P")  # the palette hides toasts; the center lists them all
                page.keyboard.press("Escape")
                editor.command("Notifications: Show Notifications")
                page.wait_for_selector(".notifications-center.visible", timeout=30_000)
                browser.shot("notification-center")
                result["messages"] = [n for n in editor.notifications() if "tierls" in n]
                result["status"] = editor.status_text()
            finally:
                browser.close()
    finally:
        server.stop()


def main():
    if sys.argv[1] == "check":
        check(sys.argv[2])
        return
    env = os.environ
    result = {"ok": False}
    try:
        {"flow": flow, "missing": missing}[sys.argv[1]](env, result)
        result["ok"] = True
    except Exception as error:  # noqa: BLE001 - reported to the Rust test, which fails with it
        result["error"] = f"{type(error).__name__}: {error}"
        result["trace"] = traceback.format_exc()
    Path(env["RESULT"]).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
