"""The driver against the emulator behind one adapter profile (argv[1]: the pty): init, the
plan's PIDs (batched where the bus is CAN, a batch refused falling back to single PIDs), the
three DTC modes, the VIN. One line per request: what the driver kept, for the oracle.
argv[2] == "raw": headers on after init (ATH1), and each request's raw reply printed too, so
python-OBD can parse the very bytes the driver parsed."""

import asyncio
import sys

from dongle import elm327 as E
from dongle.uart import open_pty

PIDS = (0x0C, 0x0D, 0x04, 0x05, 0x11, 0x0F, 0x10, 0x2F, 0x31, 0x01, 0x42, 0x5E)


def hx(b):
    return "".join("%02x" % x for x in b)


RAW = len(sys.argv) > 2 and sys.argv[2] == "raw"


def raw(elm):
    if RAW:
        print("raw", hx(elm.rx[:elm.rx_n]))


async def ask(elm, pids):
    st = await elm.query_pids(pids)
    raw(elm)
    print("pids", hx(pids), E.NAMES[st], " ".join(
        "%02x:%02x:%s" % (elm.res_ch[i], elm.res_ecu[i], hx(elm.msg[elm.res_off[i]:elm.res_off[i] + elm.res_len[i]]))
        for i in range(elm.res_n)))
    return st


async def main():
    elm = E.ELM327(open_pty(sys.argv[1]))
    st = await elm.init()
    print("init", E.NAMES[st], elm.protocol, int(elm.is_can), int(elm.is_legacy()), elm.shape, hx(elm.supported[:8]))
    if RAW:
        # the test's own AT command (the driver's API sends none from outside): headers on
        print("h1", E.NAMES[await elm._cmd(b"ATH1", 0, 1000)])
        await ask(elm, b"\x00")
    want = [p for p in PIDS if elm.pid_supported(p)]
    if elm.is_can:
        for i in range(0, len(want), 6):
            batch = bytes(want[i:i + 6])
            st = await ask(elm, batch)
            if st in (E.NO_DATA, E.UNKNOWN, E.BUFFER_FULL) and len(batch) > 1:
                print("fallback", E.NAMES[st])
                for p in batch:
                    await ask(elm, bytes((p,)))
    else:
        for p in want:
            await ask(elm, bytes((p,)))
    for mode in (3, 7, 0x0A):
        st = await elm.read_dtcs(mode)
        raw(elm)
        print("dtc", mode, E.NAMES[st], " ".join("%02x:%s" % (elm.dtc_ecu[i], hx(elm.dtc[2 * i:2 * i + 2]))
                                                  for i in range(elm.dtc_n)))
    st = await elm.read_vin()
    print("vin", E.NAMES[st], bytes(elm.vin[:elm.vin_n]).decode())
    print("counters", elm.garbage, elm.truncated, elm.unsolicited)


asyncio.run(main())
