"""The ELM327 driver's rare reads (dongle.elm327): the VIN (mode 09 PID 02, once a drive) and
the freeze frame (mode 02, on a command). Apart because they are rare: ELM327 imports this
for such a read and unloads it after (dongle.unload), so on a board running .mpy their
bytecode (~1.2 KB of the GC heap) does not stay in RAM for the rest of the drive. The
functions work on the driver's own fields: they are its code, only kept in another file
(as dongle.flashlog_boot is the log's). The daemon's direct mode runs them unchanged.
"""

from dongle.elm327 import FREEZE_PIDS, MAX_PIDS, NO_DATA, OK
from protocol.channels import DATA_LEN

# Annotations are for the type checks, as in dongle.elm327.
_TYPE_CHECKING = False
if _TYPE_CHECKING:
    from dongle.elm327 import ELM327


async def read_freeze_frame(elm: "ELM327") -> "tuple[int, list[tuple[int, int, bytes]] | None]":
    """ELM327.read_freeze_frame: frame 0, PID 02 first, then each FREEZE_PIDS PID the car lists."""
    out = []
    for pid in FREEZE_PIDS:
        if pid != 2 and not elm.pid_supported(pid):
            continue
        st = await elm.read_freeze(pid)
        if st == NO_DATA and pid != 2:
            continue
        if st != OK:
            return st, None
        for i in range(elm.res_n):
            o = elm.res_off[i]
            out.append((elm.res_ecu[i], pid, bytes(elm.msg[o:o + elm.res_len[i]])))
        if pid == 2 and not any(d != b"\x00\x00" for _e, _p, d in out):
            break  # 00 00: no code stored a frame
    return OK, out


def take_freeze(elm: "ELM327", o: int, n: int) -> None:
    """One mode 02 message, msg[o:o+n]: its value in res_* (one per ECU)."""
    m = elm.msg
    p = elm.req[0]
    if n < 3 or m[o] != 0x42 or m[o + 1] != p or m[o + 2] != 0:
        elm.unsolicited += 1  # another mode's, PID's or frame's answer
        return
    ln = 2 if p == 2 else DATA_LEN[p]
    if n - 3 != ln:
        elm._flaw()  # a value of the wrong length cannot be decoded as the PID
        return
    for j in range(elm.res_n):
        if elm.res_ecu[j] == elm._mecu:
            elm.unsolicited += 1  # the same ECU twice: the first answer stands
            return
    r = elm.res_n
    if r < MAX_PIDS:
        elm.res_ch[r] = p
        elm.res_off[r] = o + 3
        elm.res_len[r] = ln
        elm.res_ecu[r] = elm._mecu
        elm.res_n = r + 1


def take_vin(elm: "ELM327", o: int, n: int) -> None:
    """One mode 09 PID 02 message, msg[o:o+n]: its VIN bytes appended to vin."""
    m = elm.msg
    if n < 3 or m[o] != 0x49 or m[o + 1] != 0x02:
        elm.unsolicited += 1
        return
    if elm.vin_n and elm._mecu != elm._vin_ecu:
        elm.unsolicited += 1  # a second ECU's VIN: the first one is kept
        return
    elm._vin_ecu = elm._mecu
    # CAN: 49 02 <count 01> + 17 bytes; legacy: 49 02 <frame no.> + 4 bytes, 5 messages
    v = elm.vin
    for i in range(o + 3, o + n):
        b = m[i]
        if b == 0 and elm.vin_n == 0:
            continue  # legacy's leading fill
        if elm.vin_n < len(v):
            v[elm.vin_n] = b
            elm.vin_n += 1
