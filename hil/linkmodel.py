"""The link model: a pty relay that makes the emulator's pty behave like a UART to an
ELM327 on a real car.

    client (firmware, python-OBD) ⇄ [our pty] ⇄ LinkModel ⇄ [emulator's pty] ⇄ ELM327-emulator

- Pacing: every byte, both ways, takes 10 bits at `baud` (38400 by default; 0 = no
  pacing). A byte reaches the other side when its stop bit would have.
- ECU latency: each OBD request (not AT/ST commands) holds its reply back `latency_s`
  (30 ms by default) from the moment its CR reached the "chip" — one per request,
  however many PIDs it carries, as on CAN.
- Counting: bytes each way as seen by the client, OBD requests, AT commands, faults.
- Faults, on demand (`inject(kind)`: applies to the next OBD reply) or from a seeded
  schedule (`FaultPlan`), printed as the ELM327 prints them:
    garbage         a few random bytes (never '>') inserted in the reply
    drop            the whole reply, prompt included, is lost (the client must time out)
    can_error       `CAN ERROR`
    bus_init_error  `BUS INIT: ...ERROR`
    stopped         `STOPPED`
    unknown         `?`
    truncate        the reply is cut mid-line, then the prompt
    reset           the adapter resets mid-reply: part of the reply, then the
                    `ELM327 v1.5` banner and prompt; its settings are forgotten (the relay
                    sends ATZ to the emulator and passes on its banner, not its echo)
  A replaced reply keeps the echoed CR when echo is on, as the chip would.
- An adapter profile (`adapter=`, hil.adapter; `--adapter NAME`): the clone's habits on
  the wire — replies in lower case, NULs before the prompt, an echo ATE0 does not stop, a
  reply longer than its buffer cut short by `BUFFER FULL` — and the profile's own baud and
  latency a request when none are given.

In-process: `with LinkModel(emu.pty) as link: link.pty …; link.inject("can_error");
link.stats()`. As a process: `python -m hil.linkmodel --upstream PTY [--baud N]
[--latency-ms MS] [--fault-rate P --fault-seed N --fault-kinds a,b] [--control SOCK]`
prints the client-side pty path on its first stdout line; with `--control`, a Unix
socket takes lines `fault KIND` (→ `ok`) and `stats` (→ one JSON line); see
`LinkControl`. It stops on SIGINT/SIGTERM and when its parent dies.

Not modelled: `STOPPED` on input while the chip works (input is queued), ATBRD baud
switching (the rate stays `baud`).
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import pty
import random
import select
import signal
import socket
import sys
import threading
import time
import tty
from dataclasses import dataclass, field

from hil.adapter import Profile, load_profile

FAULT_KINDS = ("garbage", "drop", "can_error", "bus_init_error", "stopped", "unknown", "truncate", "reset")
_REPLACE = {
    "can_error": b"CAN ERROR",
    "bus_init_error": b"BUS INIT: ...ERROR",
    "stopped": b"STOPPED",
    "unknown": b"?",
}
BITS_PER_BYTE = 10  # start + 8 data + stop


class LinkError(RuntimeError):
    pass


@dataclass
class FaultPlan:
    """A seeded schedule: each OBD request gets a fault with probability `rate`, kind
    drawn from `kinds`. Same seed, same faults on the same request numbers."""
    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be 0..1, got {self.rate!r}")
        bad = [k for k in self.kinds if k not in FAULT_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"unknown fault kind(s) {bad}; known: {list(FAULT_KINDS)}")
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        hit = self._rng.random() < self.rate
        kind = self._rng.choice(self.kinds)  # drawn every time: request n's fault does not depend on rate hits
        return kind if hit else None


@dataclass
class _Reply:
    obd: bool
    release_at: float
    fault: str | None = None
    swallow_echo: bytes = b""     # the ATZ the relay sent for a reset: strip its echo
    buf: bytearray = field(default_factory=bytearray)
    done: bool = False
    sent: int = 0                 # bytes of buf already queued to the client
    loose: bool = False           # bytes between replies (echo), kept in order


class LinkModel:
    """A paced, fault-injecting relay between a client pty and the emulator's pty."""

    def __init__(self, upstream: str, baud: int | None = None, latency_s: float | None = None,
                 plan: FaultPlan | None = None, seed: int = 0, adapter: Profile | str | None = None):
        self.adapter = load_profile(adapter) if isinstance(adapter, str) else adapter
        if baud is None:
            baud = self.adapter.baud if self.adapter else 38400
        if latency_s is None:
            latency_s = self.adapter.latency_s if self.adapter else 0.030
        if baud < 0 or latency_s < 0:
            raise ValueError("baud and latency_s must be >= 0")
        ad = self.adapter
        # replies the profile rewrites are held whole, then paced (not streamed as they come)
        self._rewrite: Profile | None = ad if ad and (ad.case == "lower" or ad.nul or ad.buffer_bytes) else None
        self.upstream = upstream
        self.baud = baud
        self.latency_s = latency_s
        self.plan = plan
        self._rng = random.Random(seed)
        self._byte_s = BITS_PER_BYTE / baud if baud else 0.0
        self._lock = threading.Lock()
        self._pending_faults: collections.deque[str] = collections.deque()
        self._stats: collections.Counter[str] = collections.Counter()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._pty: str | None = None
        self._fds: list[int] = []

    # -- public API ----------------------------------------------------------------------

    @property
    def pty(self) -> str:
        """The client's side: open this like the adapter's serial port (once started)."""
        if self._pty is None:
            raise LinkError("the link model is not started: it has no pty yet")
        return self._pty

    def start(self) -> LinkModel:
        if self._thread is not None:
            return self
        try:
            self._up = os.open(self.upstream, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise LinkError(f"cannot open upstream {self.upstream}: {e}") from None
        self._fds.append(self._up)
        tty.setraw(self._up)
        self._cm, self._cs = pty.openpty()
        self._fds += [self._cm, self._cs]
        # we keep the client side open too, so a client closing and reopening it does not
        # make reads on our master fail with EIO
        tty.setraw(self._cs)
        os.set_blocking(self._cm, False)
        self._pty = os.ttyname(self._cs)
        self._wake_r, self._wake_w = os.pipe()
        self._fds += [self._wake_r, self._wake_w]
        self._thread = threading.Thread(target=self._run, name="linkmodel", daemon=True)
        self._thread.start()
        return self

    def inject(self, kind: str) -> None:
        """Queue a fault for the next OBD reply (several queue up in order)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {list(FAULT_KINDS)}")
        with self._lock:
            self._pending_faults.append(kind)

    def stats(self) -> dict[str, int]:
        """Counters: bytes_to_elm, bytes_from_elm (as the client sees them), obd_requests,
        at_commands, and fault_<kind> for each fault applied."""
        with self._lock:
            out = dict(self._stats)
        for k in ("bytes_to_elm", "bytes_from_elm", "obd_requests", "at_commands"):
            out.setdefault(k, 0)
        return out

    def close(self) -> None:
        if self._thread is None:
            return
        self._closed.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(5.0)
        self._thread = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def __enter__(self) -> LinkModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the relay -----------------------------------------------------------------------

    def _run(self) -> None:
        # (due, byte, ours) → emulator; `ours` marks the relay's own ATZ (a reset fault)
        self._down: collections.deque[tuple[float, int, bool]] = collections.deque()
        self._upq: collections.deque[tuple[float, int, bool]] = collections.deque()   # (due, byte, _) → client
        self._down_free = 0.0
        self._up_free = 0.0
        self._replies: collections.deque[_Reply] = collections.deque()
        self._line = bytearray()
        self._last_cmd_obd = False
        self._echo = True
        self._down_out = bytearray()
        self._up_out = bytearray()
        try:
            while not self._closed.is_set():
                now = time.monotonic()
                self._flush(now)
                timeout = self._next_event(now)
                try:
                    r, _, _ = select.select([self._cm, self._up, self._wake_r], [], [], timeout)
                except OSError:
                    break
                now = time.monotonic()
                if self._cm in r:
                    data = self._read(self._cm)
                    if data:
                        self._from_client(data, now)
                if self._up in r:
                    data = self._read(self._up)
                    if data:
                        self._from_elm(data, now)
                if self._wake_r in r:
                    self._read(self._wake_r)
        except Exception as e:  # pragma: no cover - a relay bug must be visible, not silent
            print(f"hil.linkmodel: relay stopped: {e!r}", file=sys.stderr)
            raise

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno in (errno.EIO, errno.EBADF):
                time.sleep(0.01)  # the other end is not open (yet): nothing to read
                return b""
            raise

    def _next_event(self, now: float) -> float:
        t = 1.0
        if self._down:
            t = min(t, self._down[0][0] - now)
        if self._upq:
            t = min(t, self._upq[0][0] - now)
        if self._down_out or self._up_out:
            t = min(t, 0.005)
        for rep in self._replies:
            if rep.buf and rep.sent < len(rep.buf):
                t = min(t, rep.release_at - now)
            break
        return max(0.0, t)

    def _pace(self, q: collections.deque[tuple[float, int, bool]], free: float, data: bytes, now: float,
              ours: bool = False) -> float:
        """Queue `data` behind what the line already carries; returns when it is free."""
        if not self._byte_s:
            q.extend((now, b, ours) for b in data)
            return now
        t = max(free, now)
        for b in data:
            t += self._byte_s
            q.append((t, b, ours))
        return t

    def _flush(self, now: float) -> None:
        # emulator-bound bytes whose stop bit has passed
        while self._down and self._down[0][0] <= now:
            _, b, ours = self._down.popleft()
            self._down_out.append(b)
            if ours:
                if b == 0x0D:  # our ATZ: its reply is passed on without its echo
                    self._replies.append(_Reply(False, 0.0, None, swallow_echo=b"ATZ\r"))
            elif b == 0x0D:
                self._command_sent(now)
            else:
                self._line.append(b)
        self._down_out = self._write(self._up, self._down_out)
        # replies whose latency has passed
        self._release(now)
        while self._upq and self._upq[0][0] <= now:
            _, b = self._upq.popleft()[:2]
            self._up_out.append(b)
        if self._up_out:
            # counted under the lock that stats() takes, so a client that has read the
            # bytes never sees a count without them
            with self._lock:
                n = len(self._up_out)
                self._up_out = self._write(self._cm, self._up_out)
                self._stats["bytes_from_elm"] += n - len(self._up_out)

    @staticmethod
    def _write(fd: int, buf: bytearray) -> bytearray:
        if not buf:
            return buf
        try:
            n = os.write(fd, buf)
        except (BlockingIOError, InterruptedError):
            return buf
        except OSError as e:
            if e.errno in (errno.EIO, errno.EBADF):
                return bytearray()  # nobody on the other end: the bytes are lost, as on a wire
            raise
        return buf[n:]

    # client → emulator

    def _from_client(self, data: bytes, now: float) -> None:
        with self._lock:
            self._stats["bytes_to_elm"] += len(data)
        self._down_free = self._pace(self._down, self._down_free, data, now, False)

    def _command_sent(self, now: float) -> None:
        """A CR reached the chip: classify the command, expect its reply."""
        raw = bytes(self._line)
        cmd = raw.replace(b" ", b"").upper()
        self._line.clear()
        if self.adapter and self.adapter.echo == "always" and not self._echo:
            # a clone that keeps echoing after ATE0: the command and its CR come back first
            self._replies.append(_Reply(False, 0.0, None, buf=bytearray(raw + b"\r"), done=True, loose=True))
        if not cmd:
            obd = self._last_cmd_obd  # a lone CR repeats the last command
        else:
            obd = not (cmd.startswith(b"AT") or cmd.startswith(b"ST"))
            self._last_cmd_obd = obd
            if cmd in (b"ATE0", b"ATE1"):
                self._echo = cmd == b"ATE1"
            elif cmd in (b"ATZ", b"ATD", b"ATWS"):
                self._echo = True
        fault = None
        with self._lock:
            if obd:
                self._stats["obd_requests"] += 1
                if self._pending_faults:
                    fault = self._pending_faults.popleft()
                elif self.plan is not None:
                    fault = self.plan.draw()
                if fault:
                    self._stats["fault_" + fault] += 1
            else:
                self._stats["at_commands"] += 1
        self._replies.append(_Reply(obd, now + (self.latency_s if obd else 0.0), fault))

    # emulator → client

    def _from_elm(self, data: bytes, now: float) -> None:
        for b in data:
            rep = self._current()
            if rep is None:
                # not part of a reply (the echo of a command being typed): it still must
                # not overtake a reply held back for latency
                last = self._replies[-1] if self._replies else None
                if last is None:
                    self._up_free = self._pace(self._upq, self._up_free, bytes([b]), now)
                elif last.done and last.loose:
                    last.buf.append(b)
                else:
                    self._replies.append(_Reply(False, 0.0, None, buf=bytearray([b]), done=True, loose=True))
                continue
            rep.buf.append(b)
            if b == 0x3E:  # '>': the chip is ready again
                rep.done = True
        self._release(now)

    def _current(self) -> _Reply | None:
        for rep in self._replies:
            if not rep.done:
                return rep
        return None

    def _release(self, now: float) -> None:
        while self._replies:
            rep = self._replies[0]
            if now < rep.release_at:
                return
            if rep.fault is None and not rep.swallow_echo and not (self._rewrite is not None and not rep.loose):
                # stream as it comes: pacing starts before the emulator has finished
                if rep.sent < len(rep.buf):
                    chunk = bytes(rep.buf[rep.sent:])
                    rep.sent = len(rep.buf)
                    self._up_free = self._pace(self._upq, self._up_free, chunk, now)
                if not rep.done:
                    return
                self._replies.popleft()
                continue
            if not rep.done:
                return
            self._replies.popleft()
            out = self._apply(rep)
            if out:
                self._up_free = self._pace(self._upq, self._up_free, out, now)

    def _apply(self, rep: _Reply) -> bytes:
        out = self._fault(rep)
        return self._clone(out, rep, self._rewrite) if self._rewrite is not None and not rep.loose else out

    def _clone(self, buf: bytes, rep: _Reply, ad: Profile) -> bytes:
        """The profile's clone habits on one reply (its echo, if any, left as it was)."""
        echo = buf[:buf.index(b"\r") + 1] if (self._echo and b"\r" in buf) else b""
        body = buf[len(echo):]
        if ad.buffer_bytes and rep.obd:
            data = body.rstrip(b">").rstrip(b"\r")
            if len(data) > ad.buffer_bytes:
                body = data[:ad.buffer_bytes] + b"\rBUFFER FULL\r\r>"
                with self._lock:
                    self._stats["buffer_full"] += 1
        if ad.case == "lower":
            body = body.lower()
        if ad.nul and body.endswith(b">"):
            body = body[:-1] + b"\x00>"
        return echo + body

    def _fault(self, rep: _Reply) -> bytes:
        buf = bytes(rep.buf)
        if rep.swallow_echo:
            return buf[len(rep.swallow_echo):] if buf.startswith(rep.swallow_echo) else buf
        # with echo on the reply starts with (the rest of) the command and its CR
        echo = buf[:buf.index(b"\r") + 1] if (self._echo and b"\r" in buf) else b""
        body = buf[len(echo):]
        k = rep.fault
        if k in _REPLACE:
            return echo + _REPLACE[k] + b"\r\r>"
        if k == "drop":
            return b""
        data = body.rstrip(b">").rstrip(b"\r")
        if k == "garbage":
            junk = bytes(self._rng.choice([c for c in range(1, 256) if c != 0x3E])
                         for _ in range(self._rng.randint(2, 6)))
            at = self._rng.randint(0, len(data))
            return echo + data[:at] + junk + data[at:] + b"\r\r>"
        cut = self._rng.randint(1, max(1, len(data) - 1)) if data else 0
        if k == "truncate":
            return echo + data[:cut] + b"\r\r>"
        if k == "reset":
            # the chip restarts: it forgets its settings; the emulator must too
            self._echo = True
            self._down_free = self._pace(self._down, self._down_free, b"ATZ\r", time.monotonic(), True)
            return echo + data[:cut]
        return buf


class LinkControl:
    """Client of a subprocess relay's `--control` socket."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout

    def _ask(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        reply = buf.decode().strip()
        if reply.startswith("error"):
            raise LinkError(reply)
        return reply

    def inject(self, kind: str) -> None:
        self._ask(f"fault {kind}")

    def stats(self) -> dict[str, int]:
        got = json.loads(self._ask("stats"))
        if not isinstance(got, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in got.items()):
            raise LinkError(f"the relay's stats are not counters: {got!r}")
        return got


def _control_socket(path: str) -> socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(0.5)
    return srv


def _serve_control(link: LinkModel, srv: socket.socket, path: str, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    line = conn.makefile("rb").readline(256).decode(errors="replace").split()
                    if len(line) == 2 and line[0] == "fault":
                        link.inject(line[1])
                        reply = "ok"
                    elif line == ["stats"]:
                        reply = json.dumps(link.stats())
                    else:
                        reply = "error: expected 'fault KIND' or 'stats'"
                except (ValueError, OSError) as e:
                    reply = f"error: {e}"
                try:
                    conn.sendall(reply.encode() + b"\n")
                except OSError:
                    pass
    finally:
        srv.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.linkmodel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="the emulator's pty path")
    ap.add_argument("--baud", type=int, help="0 = unpaced (default: the adapter profile's, else 38400)")
    ap.add_argument("--latency-ms", type=float, help="ECU latency per OBD request (default: the profile's, else 30)")
    ap.add_argument("--adapter", help="adapter profile (hil/adapters/NAME.toml): the clone's habits on the wire")
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--fault-seed", type=int, default=0)
    ap.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    ap.add_argument("--control", help="Unix socket path for 'fault KIND' / 'stats'")
    args = ap.parse_args(argv)
    try:
        plan = None
        if args.fault_rate:
            plan = FaultPlan(args.fault_rate, args.fault_seed, tuple(k for k in args.fault_kinds.split(",") if k))
        link = LinkModel(args.upstream, baud=args.baud,
                         latency_s=None if args.latency_ms is None else args.latency_ms / 1000.0, plan=plan,
                         seed=args.fault_seed, adapter=args.adapter).start()
    except (ValueError, LinkError) as e:
        print(f"hil.linkmodel: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ppid = os.getppid()
    ctl = None
    if args.control:
        # bound before the pty line is printed: a caller may use it at once
        try:
            srv = _control_socket(args.control)
        except OSError as e:
            link.close()
            print(f"hil.linkmodel: control socket {args.control}: {e}", file=sys.stderr)
            return 2
        ctl = threading.Thread(target=_serve_control, args=(link, srv, args.control, stop), daemon=True)
        ctl.start()
    print(link.pty, flush=True)
    try:
        while not stop.wait(0.5):
            if os.getppid() != ppid:  # orphaned: nobody will stop us
                break
    finally:
        stop.set()
        if ctl is not None:
            ctl.join(2.0)
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
