#!/usr/bin/env python3
"""Runs the examples of the docs against the real server, so that a doc
that drifts from the code fails CI.

Only blocks marked as runnable run: an HTML comment on the line before the
fence, `<!-- doc-test -->`, or with options, `<!-- doc-test: server timeout=2 -->`.
The blocks of one Markdown file run in order, in one bash session (a
variable set in one block is there in the next), against a server of
their own. Everything in tests/docs/README.md; in short:

- `sh`/`bash` blocks run in bash. A command followed directly (no blank
  line) by `# ` comment lines shows its output: the comments are compared
  with what it printed, `…` matching any text, a cursor-shaped word
  (`1yc1r9r-2`) any cursor and a number of 10 or more digits any such
  number. Other commands must only succeed (exit 0).
- `python` blocks run with python-client/src on the path, `php` blocks with
  php, from a directory holding php-client/ and python-client/.
- `server`: the block starts the server; it runs in the background and the
  next block waits until `/health` answers. A file with no server block
  runs against one started as the README starts it.
- `timeout=N`: each command of the block is stopped after N seconds (for
  streams), which is not a failure.
- Every `127.0.0.1:PORT` (and `--port PORT`) is moved to a free port (below
  the ephemeral range: tests/support/cometbox_testing.py), the same one
  throughout the file (a server is ready once its /health answers from a
  listener of this file's own processes), and `cargo run --release --`
  becomes the binary under test ($COMETBOX_BIN).

Usage: run_docs.py [FILE.md ...]   (default: README.md, docs/*.md, deploy/README.md,
                                    php-client/README.md, python-client/README.md)
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))
import cometbox_testing  # noqa: E402  (free ports, whose listener is ours)

MARKER = re.compile(r"^<!--\s*doc-test(?::\s*(?P<opts>[^>]*?))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>```+)\s*(?P<lang>[\w+-]*)")
PORT = re.compile(r"(?P<pre>(?:127\.0\.0\.1|localhost):|--port )(?P<port>\d{4,5})\b")
RUN_BINARY = re.compile(r"cargo run --release(?: --)?")
# The documented defaults: the server a file without a server block gets.
DEFAULT_PUBLIC, DEFAULT_INGEST = 8480, 8481
DEFAULT_SERVER = "COMETBOX_AUTH__SECRET=change-me cargo run --release --"
# Each file's whole run is bounded; a server must answer /health within this.
FILE_TIMEOUT_S = 120
READY_TRIES = 150  # of 0.1 s


@dataclasses.dataclass
class Block:
    """One marked code block."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    server: bool = False
    timeout: float | None = None


@dataclasses.dataclass
class Step:
    """A command (or a whole non-shell block) and the output it must show."""

    block: Block
    code: str
    expected: list[str] | None  # None: only the exit status counts


def marked_blocks(path: Path) -> list[Block]:
    """The blocks of `path` preceded by a doc-test marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        marker = MARKER.match(lines[i].strip())
        if not marker:
            i += 1
            continue
        j = i + 1
        fence = FENCE.match(lines[j]) if j < len(lines) else None
        if not fence:
            raise SystemExit(f"{path}:{i + 1}: a doc-test marker must be followed by a ``` block")
        end = j + 1
        while end < len(lines) and lines[end].strip() != fence["fence"]:
            end += 1
        block = Block(path, j + 1, fence["lang"] or "sh", "\n".join(lines[j + 1 : end]))
        for opt in (marker["opts"] or "").split():
            if opt == "server":
                block.server = True
            elif opt.startswith("timeout="):
                block.timeout = float(opt.split("=", 1)[1])
            else:
                raise SystemExit(f"{path}:{i + 1}: unknown doc-test option {opt!r}")
        blocks.append(block)
        i = end + 1
    return blocks


def shell_steps(block: Block) -> list[Step]:
    """Splits a shell block into commands, each with the output it shows.

    A command's output is the run of `#` lines right after it; a comment
    after a blank line (or before any command) is prose and stays as is.
    """
    steps: list[Step] = []
    code: list[str] = []
    expected: list[str] | None = None
    continued = False
    for line in block.text.splitlines():
        is_comment = line.lstrip().startswith("#") and not continued
        if is_comment and code and expected is not None:
            expected.append(re.sub(r"^\s*# ?", "", line))
            continue
        if is_comment and code and last_is_command(code):
            expected = [re.sub(r"^\s*# ?", "", line)]
            continue
        if expected is not None:
            steps.append(Step(block, "\n".join(code), expected))
            code, expected = [], None
        code.append(line)
        continued = line.rstrip().endswith("\\")
    if code:
        steps.append(Step(block, "\n".join(code), expected))
    return steps


def last_is_command(code: list[str]) -> bool:
    last = code[-1].strip()
    return bool(last) and not last.startswith("#")


def expected_pattern(line: str) -> re.Pattern[str]:
    """An output line as shown in a doc, with its placeholders."""
    pattern = ""
    for token in re.split(r"(…|\b[0-9a-z]{5,}-\d+\b|\b\d{10,}\b)", line):
        if token == "…":
            pattern += ".*"
        elif re.fullmatch(r"[0-9a-z]{5,}-\d+", token) and re.search(r"[a-z]", token):
            pattern += r"[0-9a-z]+-\d+"
        elif re.fullmatch(r"\d{10,}", token):
            pattern += r"\d{10,}"
        else:
            pattern += re.escape(token)
    return re.compile(pattern)


def output_matches(expected: list[str], actual: str) -> bool:
    got = [l.rstrip() for l in actual.rstrip("\n").split("\n")] if actual.strip() else []
    want = [l.rstrip() for l in expected]
    while want and not want[-1]:
        want.pop()
    while got and not got[-1]:
        got.pop()
    return len(got) == len(want) and all(
        expected_pattern(w).fullmatch(g) for w, g in zip(want, got)
    )


class PortMap:
    """The same free port for every mention of one documented port."""

    def __init__(self) -> None:
        self.ports: dict[int, int] = {}

    def __getitem__(self, port: int) -> int:
        if port not in self.ports:
            self.ports[port] = cometbox_testing.free_port()
        return self.ports[port]

    def rewrite(self, text: str) -> str:
        return PORT.sub(lambda m: f"{m['pre']}{self[int(m['port'])]}", text)


def adapt(text: str, ports: PortMap) -> str:
    """The block as it runs here: free ports, the binary under test."""
    return RUN_BINARY.sub('"$DOCS_BIN"', ports.rewrite(text))


def server_script(command: str, ports: PortMap) -> str:
    """Starts `command` (a server block, or the default server) in the
    background on the file's ports, and waits until it answers."""
    listen = ""
    if "COMETBOX_PUBLIC__LISTEN" not in command:
        listen += f"COMETBOX_PUBLIC__LISTEN=127.0.0.1:{ports[DEFAULT_PUBLIC]} "
    if "COMETBOX_INGEST__LISTEN" not in command:
        listen += f"COMETBOX_INGEST__LISTEN=127.0.0.1:{ports[DEFAULT_INGEST]} "
    ingest = re.search(r"COMETBOX_INGEST__LISTEN=127\.0\.0\.1:(\d+)", command)
    health_port = ingest[1] if ingest else ports[DEFAULT_INGEST]
    health = f"http://127.0.0.1:{health_port}/health"
    # What answers on the port must be a process of this file's session (the
    # script runs in a session of its own, $$): the port was chosen before
    # the server bound it, and another test's server could hold it.
    owned = f'"$DOCS_PYTHON" "$DOCS_SUPPORT" listens-in-session $$ {health_port}'
    command = " ".join(command.replace("\\\n", " ").split())
    return f"""
if [ -n "${{DOCS_SERVER:-}}" ]; then kill "$DOCS_SERVER"; wait "$DOCS_SERVER" || true; fi
{listen}{adapt(command, ports)} >>"$DOCS_OUT/server.log" 2>&1 &
DOCS_SERVER=$!
for _ in $(seq {READY_TRIES}); do
  curl -fs -o /dev/null {health} && {owned} && break
  kill -0 "$DOCS_SERVER" 2>/dev/null || {{ echo "the server exited" >&2; exit 1; }}
  sleep 0.1
done
curl -fsS -o /dev/null {health}
{owned} || {{ echo "{health} answers, but the listener is not this file's server" >&2; exit 1; }}
"""


def step_script(n: int, step: Step, ports: PortMap, out: Path) -> str:
    """One step, its output and status in files named by its number."""
    code, block = adapt(step.code, ports), step.block
    if block.lang in ("python", "py"):
        (out / f"{n}.py").write_text(code)
        run = f'python3 "$DOCS_OUT/{n}.py"'
    elif block.lang == "php":
        if not code.lstrip().startswith("<?php"):
            code = "<?php\n" + code
        (out / f"{n}.php").write_text(code)
        run = f'php "$DOCS_OUT/{n}.php"'
    elif block.timeout is not None:
        # A child bash sees the session's variables: `set -a` exports them.
        run = f"timeout -k 1 {block.timeout} bash -c {shlex.quote(code)}"
    else:
        run = "{\n" + code + "\n}"
    return (
        f'{run} >"$DOCS_OUT/{n}.out" 2>"$DOCS_OUT/{n}.err" </dev/null\n'
        f'echo $? >"$DOCS_OUT/{n}.rc"\n'
    )


def file_script(blocks: list[Block], ports: PortMap, out: Path) -> tuple[str, list[Step]]:
    """The bash script of one file, and its steps in order."""
    script = ["set -a", 'cd "$DOCS_WORK"']
    if not any(b.server for b in blocks):
        script.append(server_script(DEFAULT_SERVER, ports))
    steps: list[Step] = []
    for block in blocks:
        if block.server:
            script.append(server_script(block.text, ports))
            continue
        block_steps = (
            shell_steps(block) if block.lang in ("sh", "bash", "shell") else [Step(block, block.text, None)]
        )
        for step in block_steps:
            n = len(steps)
            steps.append(step)
            script.append(step_script(n, step, ports, out))
            # Stop at the first failure: later steps build on earlier ones.
            ok = "0 124" if block.timeout is not None else "0"
            script.append(f'case " {ok} " in *" $(cat "$DOCS_OUT/{n}.rc") "*) ;; *) exit 0;; esac')
    return "\n".join(script) + "\n", steps


def run_file(path: Path, binary: str) -> list[str]:
    """Runs the marked blocks of one file; returns its failures."""
    blocks = marked_blocks(path)
    if not blocks:
        return []
    rel = Path(os.path.relpath(path, REPO))
    print(f"--- {rel}: {len(blocks)} block(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="cometbox-docs-") as tmp:
        out, work = Path(tmp) / "out", Path(tmp) / "work"
        out.mkdir()
        work.mkdir()
        for client in ("php-client", "python-client"):
            (work / client).symlink_to(REPO / client)
        ports = PortMap()
        script, steps = file_script(blocks, ports, out)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMETBOX_")}
        env.update(
            DOCS_BIN=binary,
            DOCS_OUT=str(out),
            DOCS_WORK=str(work),
            PYTHONPATH=str(REPO / "python-client" / "src"),
            DOCS_PYTHON=sys.executable,
            DOCS_SUPPORT=cometbox_testing.__file__,
        )
        failures = run_script(script, env, rel)
        failures += check_steps(steps, out)
        if failures:
            log = out / "server.log"
            if log.exists():
                print(f"server log of {rel} (last lines):\n" + "\n".join(log.read_text().splitlines()[-30:]))
        return failures


def run_script(script: str, env: dict[str, str], rel: Path) -> list[str]:
    """Runs a file's script in a process group of its own, ended whole:
    servers, streams and a Redis the doc started go with it."""
    proc = subprocess.Popen(["bash", "-c", script], env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=FILE_TIMEOUT_S)
        failures = [] if code == 0 else [f"{rel}: the run exited with {code}"]
    except subprocess.TimeoutExpired:
        failures = [f"{rel}: the run took over {FILE_TIMEOUT_S} s"]
    end_group(proc.pid)
    return failures


def end_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            subprocess.run(["sleep", "0.1"])


def check_steps(steps: list[Step], out: Path) -> list[str]:
    failures = []
    for n, step in enumerate(steps):
        where = f"{os.path.relpath(step.block.path, REPO)}:{step.block.line}"
        rc_file = out / f"{n}.rc"
        if not rc_file.exists():
            failures.append(f"{where}: not run (an earlier step failed)")
            break
        rc = int(rc_file.read_text())
        stdout = (out / f"{n}.out").read_text(errors="replace")
        stderr = (out / f"{n}.err").read_text(errors="replace")
        allowed = (0, 124) if step.block.timeout is not None else (0,)
        problem = None
        if rc not in allowed:
            problem = f"exited with {rc}"
        elif step.expected is not None and not output_matches(step.expected, stdout):
            problem = "printed other output than the doc shows"
        if problem:
            failures.append(
                f"{where}: {problem}\n  command:\n{indent(step.code)}\n"
                + (f"  expected:\n{indent(chr(10).join(step.expected))}\n" if step.expected is not None else "")
                + f"  stdout:\n{indent(stdout)}\n  stderr:\n{indent(stderr)}"
            )
    return failures


def indent(text: str) -> str:
    return "\n".join("    " + l for l in text.rstrip("\n").split("\n"))


def default_files() -> list[Path]:
    return [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        REPO / "deploy" / "README.md",
        REPO / "php-client" / "README.md",
        REPO / "python-client" / "README.md",
    ]


def main() -> int:
    binary = os.environ.get("COMETBOX_BIN") or str(REPO / "target" / "debug" / "cometbox")
    if not os.access(binary, os.X_OK):
        print(f"no server binary at {binary} (cargo build, or set COMETBOX_BIN)", file=sys.stderr)
        return 1
    files = [Path(f).resolve() for f in sys.argv[1:]] or default_files()
    failures, ran = [], 0
    for path in files:
        blocks = marked_blocks(path)
        ran += len(blocks)
        failures += run_file(path, binary)
    for f in failures:
        print("FAIL " + f, file=sys.stderr)
    print(f"docs: {ran} block(s) in {len(files)} file(s), {len(failures)} failure(s)")
    if ran == 0:
        print("no doc-test block found: nothing was checked", file=sys.stderr)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
