"""The driver against the real ELM327 emulator on a pty (argv[1]): init, protocol, supported
PIDs, a multi-PID poll, VIN, DTCs."""

import asyncio
import sys

from dongle import elm327 as E
from dongle.uart import open_pty


async def main():
    elm = E.ELM327(open_pty(sys.argv[1]))
    print("init", E.NAMES[await elm.init()], "protocol", elm.protocol, "can", elm.is_can, "volts", 11000 < elm.mv < 15000)
    print("supported", [hex(p) for p in (0x01, 0x04, 0x05, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x2F, 0x31, 0x42, 0x5E, 0xA6) if elm.pid_supported(p)])
    pids = b"\x0c\x0d\x04\x05\x11\x0f"
    st = await elm.query_pids(pids)
    print("multi", E.NAMES[st], sorted(elm.res_ch[i] for i in range(elm.res_n)),
          all(elm.res_len[i] == (2 if elm.res_ch[i] == 0x0C else 1) for i in range(elm.res_n)))
    st = await elm.query_pids(b"\x0c")
    print("single", E.NAMES[st], elm.res_n, elm.digit)
    st = await elm.query_pids(b"\xa6")
    print("odometer", E.NAMES[st], elm.res_n, elm.unsolicited)
    print("vin", E.NAMES[await elm.read_vin()], elm.vin_n, bytes(elm.vin[:elm.vin_n]).isalpha() or elm.vin_n == 17)
    for m in (3, 7, 0x0A):
        print("dtc", m, E.NAMES[await elm.read_dtcs(m)], elm.dtc_n)
    print("volts", 11000 < await elm.read_voltage() < 15000)


asyncio.run(main())
