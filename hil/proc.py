"""A subprocess whose output lines a thread collects, so a caller can wait for a
line with a deadline instead of sleeping: how the rig, the benchmarks and the
tests watch the firmware, the daemon and the other processes they start."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar, overload

T = TypeVar("T")
# What wait_line waits for: a prefix, a regex, or a predicate on the line.
Match = str | re.Pattern[str] | Callable[[str], object]


class LineProcess:
    """Started at construction; stdout and stderr merged, read line by line.
    `on_line` runs in the reader thread as each line arrives; `error` is the
    exception type raised when a wait fails (the process exited, or the deadline)."""

    def __init__(self, argv: list[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 on_line: Callable[[str], None] | None = None, error: type[Exception] = RuntimeError,
                 name: str | None = None) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.lines: list[str] = []
        self._on_line = on_line
        self._error = error
        self._q: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name=f"{self.name} output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if self._on_line is not None:
                try:
                    self._on_line(line)
                except Exception as e:  # noqa: BLE001 - reported as a line, the reader goes on
                    self._q.put(f"on_line failed: {e!r}")
            self._q.put(line)
        self._q.put(None)

    @overload
    def wait_line(self, match: str | Callable[[str], bool], timeout: float = 30.0) -> str: ...
    @overload
    def wait_line(self, match: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]: ...
    @overload
    def wait_line(self, match: Callable[[str], T | None], timeout: float = 30.0) -> T | str: ...

    def wait_line(self, match: Match, timeout: float = 30.0) -> object:
        """The next line that matches: a str is a prefix, a compiled regex searches
        (the match object is returned), a callable is a predicate (the line is returned
        when it returns True, else what it returned)."""
        if isinstance(match, str):
            test: Callable[[str], object] = lambda ln: ln.startswith(match)  # noqa: E731
        elif isinstance(match, re.Pattern):
            test = match.search
        else:
            test = match
        what = match if isinstance(match, str) else getattr(match, "pattern", "a matching line")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._error(f"{self.name} printed no {what!r} within {timeout:g} s; output:\n{self.tail()}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._q.put(None)  # it stays exited for the next wait
                raise self._error(f"{self.name} exited ({self.proc.wait()}) before {what!r}; output:\n{self.tail()}")
            got = test(line)
            if got:
                return line if got is True else got

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal it (SIGTERM by default), SIGKILL if it has not exited in time; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: kill -9, a power cut."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wait_until(cond: Callable[[], T], timeout: float, what: str, *, error: type[Exception] = AssertionError,
               poll_s: float = 0.02) -> T:
    """Poll cond() until it is truthy (and return it); `error` naming `what` at the
    deadline. The poll interval is a re-check, never a guess at how long things take."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll_s)
