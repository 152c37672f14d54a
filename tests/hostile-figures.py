#!/usr/bin/env python3
"""Figures for hostile files: runs `TIERLS serve` once per (file, entry point) and counts
hangs, reads outside the root and peak memory. Compare two builds side by side:

    tests/hostile-figures.py target/debug/tierls [OTHER_TIERLS]

Each server gets a 3 GiB address-space ceiling (so a runaway read cannot take the
machine) and 5 s per answer; a case whose request gets no answer in time is a hang.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAIT = 5.0
CEILING = 3 << 30
HOSTILE = {
    "fifo": "src/pipe.rs",
    "link to /dev/zero": "src/zero.rs",
    "link out of the root": "src/out.rs",
    "dangling link": "src/dangling.rs",
    "sparse 3 GB file": "src/huge.rs",
    "folder named .rs": "src/dir.rs",
    "file outside the root": None,
}
ENTRY_POINTS = ["didChangeWatchedFiles", "didCreateFiles", "didRenameFiles", "didOpen+didClose", "viewDocument"]


def frame(message):
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def make_workspace(base):
    root = Path(base, "ws")
    outside = Path(base, "outside")
    (root / "src").mkdir(parents=True)
    outside.mkdir()
    (root / "src/ok.rs").write_text("fn inside_ok() {}\n")
    (outside / "secret.rs").write_text("fn outside_secret() {}\n")
    os.mkfifo(root / "src/pipe.rs")
    os.symlink("/dev/zero", root / "src/zero.rs")
    os.symlink(outside / "secret.rs", root / "src/out.rs")
    os.symlink(root / "src/gone.rs", root / "src/dangling.rs")
    with open(root / "src/huge.rs", "wb") as huge:
        huge.truncate(3 << 30)
    (root / "src/dir.rs").mkdir()
    return root.resolve(), outside.resolve()


class Server:
    def __init__(self, binary, root):
        limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (CEILING, CEILING))
        self.process = subprocess.Popen(
            [binary, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, preexec_fn=limit,
            env=dict(os.environ, TIERLS_CONFIG_DIR=str(root / ".none"), TIERLS_LOG="error"),
        )
        os.set_blocking(self.process.stdout.fileno(), False)
        self.buffer = b""
        self.next_id = 100

    def send(self, message):
        try:
            self.process.stdin.write(frame(message))
            self.process.stdin.flush()
        except BrokenPipeError:
            pass

    def notify(self, method, params):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method, params):
        """The response, answering the server's own requests meanwhile; None on a hang."""
        self.next_id += 1
        wanted = self.next_id
        self.send({"jsonrpc": "2.0", "id": wanted, "method": method, "params": params})
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for message in self.read():
                if "method" in message and "id" in message:
                    self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
                elif message.get("id") == wanted:
                    return message
            if self.process.poll() is not None:
                return None
            time.sleep(0.01)
        return None

    def read(self):
        try:
            chunk = self.process.stdout.read()
        except (BlockingIOError, ValueError):
            chunk = None
        if chunk:
            self.buffer += chunk
        messages = []
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = int(head.split(b":")[1])
            if len(rest) < length:
                break
            messages.append(json.loads(rest[:length]))
            self.buffer = rest[length:]
        return messages

    def peak_kib(self):
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        self.process.kill()
        self.process.wait()


def run_case(binary, root, outside, path, entry):
    server = Server(binary, root)
    uri = (root / path).as_uri() if path else (outside / "secret.rs").as_uri()
    hung = server.request("initialize", {"processId": None, "rootUri": root.as_uri(),
                                          "capabilities": {}, "initializationOptions": {"index": {"enabled": True}}}) is None
    server.notify("initialized", {})
    time.sleep(0.3)  # the start-up scan
    if entry == "didChangeWatchedFiles":
        server.notify("workspace/didChangeWatchedFiles", {"changes": [{"uri": uri, "type": 1}]})
    elif entry == "didCreateFiles":
        server.notify("workspace/didCreateFiles", {"files": [{"uri": uri}]})
    elif entry == "didRenameFiles":
        server.notify("workspace/didRenameFiles", {"files": [{"oldUri": uri, "newUri": (root / "src/moved.rs").as_uri()}]})
    elif entry == "didOpen+didClose":
        server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "rust", "version": 1, "text": "fn x() {}\n"}})
        server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    elif entry == "viewDocument":
        hung |= server.request("tierls/viewDocument", {"uri": uri}) is None
    answer = server.request("workspace/symbol", {"query": "outside_secret"})
    hung |= answer is None
    outside_read = bool(answer and answer.get("result"))
    alive = server.request("workspace/symbol", {"query": "inside_ok"})
    hung |= alive is None
    peak = server.peak_kib()
    died = server.process.poll() is not None
    server.stop()
    return hung or died, outside_read, peak


def figures(binary):
    with tempfile.TemporaryDirectory() as base:
        root, outside = make_workspace(base)
        rows = {}
        for name, path in HOSTILE.items():
            cases = [run_case(binary, root, outside, path, entry) for entry in ENTRY_POINTS]
            rows[name] = (
                len(cases),
                sum(1 for hung, _, _ in cases if hung),
                sum(1 for _, outside_read, _ in cases if outside_read),
                max(peak for _, _, peak in cases),
            )
        return rows


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    results = [figures(binary) for binary in binaries]
    header = "| class | cases |" + "".join(f" hangs ({b}) | outside reads | peak MiB |" for b in binaries)
    print(header)
    print("|" + " --- |" * (2 + 3 * len(binaries)))
    for name in HOSTILE:
        cells = [name, str(results[0][name][0])]
        for rows in results:
            count, hangs, outside_reads, peak = rows[name]
            cells += [str(hangs), str(outside_reads), f"{peak / 1024:.0f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
