# The dongle's advertising payloads (firmware/dongle/gatt.py) for names of every length,
# ASCII and multi-byte UTF-8. Prints one JSON line per name: [name, adv hex, resp hex];
# last line ["end", null].
import json

import bluetooth

from dongle.gatt import _adv_payloads
from protocol import uuids

service = bluetooth.UUID(uuids.SERVICE)
for n in range(41):
    for name in ("o" * n, "\u00e9" * n):
        adv, resp = _adv_payloads(name, service)
        print(json.dumps([name, adv.hex(), resp.hex()]))
print(json.dumps(["end", None]))
