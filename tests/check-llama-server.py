#!/usr/bin/env python3
"""Proves that a llama-server binary runs on this machine before the tests trust it.

Usage: check-llama-server.py LLAMA_SERVER MODEL.gguf

1. Its CPU libraries hold no AVX-512 or AMX instructions (such a binary runs only on some
   CPUs of a kind; the tests must pass on every one).
2. It starts on a loopback port with the test model, answers /health, and generates one token
   through /completion.

Every wait is bounded. Exits 0 when both hold; otherwise prints why and exits 1.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

START_SECONDS = 120
REQUEST_SECONDS = 60
# Instructions only some x86-64 CPUs (or kernels) allow: AMX tiles and AVX-512's registers.
NON_PORTABLE = ("ldtilecfg", "tdpb", "tileloadd", "%zmm")


def fail(message):
    print(f"check-llama-server: {message}", file=sys.stderr)
    sys.exit(1)


def non_portable_instructions(binary):
    libraries = [binary] + sorted(str(p) for p in binary.parent.glob("libggml*.so*"))
    for library in libraries:
        if Path(library).is_symlink():
            continue
        try:
            dump = subprocess.run(
                ["objdump", "-d", "--no-show-raw-insn", library],
                capture_output=True, text=True, timeout=300, check=False,
            )
        except FileNotFoundError:
            return None  # no objdump: the run below still proves the binary on this CPU
        for line in dump.stdout.splitlines():
            for needle in NON_PORTABLE:
                if needle in line:
                    return f"{library} contains `{line.strip()}`"
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe_exit(status):
    if status < 0:
        name = signal.Signals(-status).name
        hint = " (an instruction this CPU cannot run)" if -status == signal.SIGILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {status}"


def generate_one_token(binary, model):
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [str(binary), "-m", model, "--host", "127.0.0.1", "--port", str(port),
             "--ctx-size", "512", "--parallel", "1", "--threads", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            base = f"http://127.0.0.1:{port}"
            while True:
                status = server.poll()
                if status is not None:
                    log.seek(0)
                    tail = log.read()[-1500:].decode("utf-8", "replace")
                    fail(f"{binary} {describe_exit(status)} before serving; its last output:\n{tail}")
                if time.monotonic() > deadline:
                    fail(f"{binary} did not answer /health within {START_SECONDS} s")
                try:
                    with urllib.request.urlopen(base + "/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.2)
            body = json.dumps({"prompt": "fn main() {", "n_predict": 1}).encode()
            request = urllib.request.Request(
                base + "/completion", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as answer:
                    reply = json.load(answer)
            except OSError as error:
                status = server.poll()
                if status is not None:
                    fail(f"{binary} {describe_exit(status)} while generating")
                fail(f"{binary} gave no completion: {error}")
            predicted = reply.get("tokens_predicted", reply.get("timings", {}).get("predicted_n", 0))
            if predicted < 1:
                fail(f"{binary} generated no token: {json.dumps(reply)[:300]}")
        finally:
            server.kill()
            server.wait(timeout=30)


def main():
    if len(sys.argv) != 3:
        fail("usage: check-llama-server.py LLAMA_SERVER MODEL.gguf")
    binary, model = Path(sys.argv[1]), sys.argv[2]
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        fail(f"{binary} is not an executable file")
    found = non_portable_instructions(binary)
    if found:
        fail(f"the build is not portable: {found}")
    generate_one_token(binary, model)
    print(f"check-llama-server: {binary} generated a token from {model}", file=sys.stderr)


if __name__ == "__main__":
    main()
