# dongle.bonds from the pairing IRQ: set() writes nothing to flash itself, the scheduled
# callback (micropython.schedule on the board) or flush() does. One JSON line per case;
# last line ["end", null].
#   micropython bonds_irq.py DIR
import json
import os
import sys

from dongle.bonds import Bonds

root = sys.argv[1]


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def emit(name, obs):
    print(json.dumps([name, obs]))


pending = []
path = root + "/bonds.json"
b = Bonds(path, schedule=lambda f, a: pending.append((f, a)))
b.set(1, b"\x01\x02", b"secret-1")
in_irq = {"file": exists(path), "get": b.get(1, 0, b"\x01\x02") == b"secret-1", "scheduled": len(pending)}
for f, a in pending:
    f(a)
after = {"file": exists(path), "reloaded": Bonds(path).get(1, 0, b"\x01\x02") == b"secret-1"}
emit("scheduled", {"in_irq": in_irq, "after": after})


def full(f, a):
    raise RuntimeError("schedule queue full")


path2 = root + "/bonds2.json"
b2 = Bonds(path2, schedule=full)
b2.set(2, b"\x03", b"secret-2")
in_irq = exists(path2)
b2.flush()
emit("queue_full", {"in_irq": in_irq, "after_flush": Bonds(path2).get(2, 0, b"\x03") == b"secret-2"})
print(json.dumps(["end", None]))
