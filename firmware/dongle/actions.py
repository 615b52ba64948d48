"""What the daemon's commands do to the dongle: dongle.commands.Actions, implemented.

The Dongle owns one of these and hands it to its CommandHandler, so the command surface
is this file and nothing else: no other method of the application is reachable from BLE.
Each method returns a (status, payload) pair; the ones that need the adapter run as a
job of the scheduler's task (Dongle.elm_job), which owns the chip.
"""

from micropython import const

from protocol import control

from . import elm327
from .commands import Actions
from .plan import MAX_CHANNELS

# Annotations are for the type check (firmware/mypy.ini): MicroPython compiles them away
# and has no `typing`, so the names they use exist for the checker only.
_TYPE_CHECKING = const(0)  # private const: no global, and the block below compiles to nothing
if _TYPE_CHECKING:
    from .app import Dongle
    from .commands import Reply


class DongleActions(Actions):
    def __init__(self, dongle: Dongle) -> None:
        self._d = dongle
        # STATUS: the fixed fields ending in the count of rates, then (channel u8, centihertz
        # u16) per plan channel, written in place by Scheduler.rates_into (the one way to
        # write them, allocation-free).
        self._head = len(control.pack_status((0,) * len(control.STATUS_FIELDS), ()))
        self._status = bytearray(self._head + 3 * MAX_CHANNELS)

    def time_sync(self, wall_ms: int) -> Reply:
        d = self._d
        d.seal()
        log = d.log
        d.append_small(d.signer.anchor(d.small, log.next_seq, log.boot, d.clock.ms(), wall_ms))
        return control.OK, b""

    def ack(self, seq: int) -> Reply:
        log = self._d.log
        if seq >= log.first_unacked:
            if seq >= log.flushed_seq:  # flushed_seq is one past the last record ever sent
                return control.BAD_REQUEST, b""
            log.ack(seq)
        return control.OK, control.pack_pair(log.used, log.capacity)

    def stream(self) -> Reply:
        log = self._d.start_stream()
        return control.OK, control.pack_stream(log.first_unacked, log.next_seq, log.epoch)

    def set_plan(self, entries: list[tuple[int, int, int, int]]) -> Reply:
        d = self._d
        d.plan.apply_entries(entries, d.elm.pid_supported if d.elm.ecu else None)
        return control.OK, b""

    async def read_dtc(self, mode: int) -> Reply:
        elm = self._d.elm

        async def read() -> tuple[int, list[bytes], bytes]:
            # Copied inside the job: the next job (the housekeeping's DTC read) reuses elm.dtc
            # before this task resumes.
            st = await elm.read_dtcs(mode)
            return st, [bytes(elm.dtc[2 * i:2 * i + 2]) for i in range(elm.dtc_n)], bytes(elm.dtc_ecu[:elm.dtc_n])

        st, codes, ecus = await self._d.elm_job(read)
        if st == elm327.OK:
            return control.OK, control.pack_dtcs(mode, codes, ecus)
        # The driver's reason (NO_DATA, MALFORMED, CAN_ERROR ...) in the payload: never "none".
        return control.ADAPTER_ERROR, elm327.NAMES[st].encode()

    async def read_freeze(self) -> Reply:
        elm = self._d.elm
        st, entries = await self._d.elm_job(elm.read_freeze_frame)  # copied inside the job
        if st == elm327.OK and entries is not None:  # None goes with any other status
            return control.OK, control.pack_freeze(entries)
        return control.ADAPTER_ERROR, elm327.NAMES[st].encode()

    async def clear_dtc(self) -> Reply:
        # Mode 04 resets emissions monitors: never while the car moves, whatever the daemon
        # says. Not judged from the plan's last readings (a SET_PLAN can switch those off):
        # the dongle asks the car for its speed right before it clears (standstill.py).
        d = self._d
        elm = d.elm

        def seen() -> None:
            # The answer the decision rests on goes into the log like any poll.
            d.sink(d.clock.ms(), elm.res_n, elm.res_ch, elm.res_off, elm.res_len, elm.msg)

        async def clear() -> int | None:
            # Imported on the first clear: a rare command's code stays off the heap until then
            # where it is not frozen into flash (the unix port, a board without the image).
            from .standstill import clear_if_still

            return await clear_if_still(elm, seen, d.sched.batch_max > 1)

        st = await d.elm_job(clear)
        if st is None:
            return control.REFUSED_MOVING, b""
        if st != elm327.OK:
            return control.ADAPTER_ERROR, b""
        d.dtc_due = True
        return control.OK, b""

    async def read_vin(self) -> Reply:
        elm = self._d.elm

        async def read() -> tuple[int, bytes]:
            st = await elm.read_vin()
            return st, bytes(elm.vin[: elm.vin_n])  # before another job reuses elm.vin

        st, vin = await self._d.elm_job(read)
        if st != elm327.OK:
            return control.ADAPTER_ERROR, b""
        return control.OK, vin

    def status(self) -> Reply:
        d = self._d
        log = d.log
        # auth_failures: failed proofs, everything refused for want of authentication (AUTHs in a
        # lock-out, malformed handshakes, commands without a valid session MAC) and control writes
        # dropped unread (a flood overflows the receive queue): a flood shows. Saturates, never wraps.
        c = d.cmd
        failures = c.total_failures + c.rejected + d.gatt.dropped
        values = (d.power.millivolts, d.elm.protocol, d.power.state, d.clock.ms() // 1000, log.used,
                  log.capacity, log.first_unacked, log.next_seq, log.boot, min(failures, 0xFFFF))
        buf = self._status
        head = self._head
        buf[:head] = control.pack_status(values, ())  # with a count of 0 ...
        n = d.sched.rates_into(buf, head)
        buf[head - 1] = n  # ... which is its last byte
        return control.OK, bytes(buf[:head + 3 * n])
