# The simulated `bluetooth` module's API without a central; output compared with blesim_api.py.exp.
import bluetooth

_FLAG_READ = bluetooth.FLAG_READ
_FLAG_WRITE = bluetooth.FLAG_WRITE
_FLAG_NOTIFY = bluetooth.FLAG_NOTIFY


def err(f, *a, **k):
    try:
        f(*a, **k)
        return "ok"
    except OSError as e:
        return "OSError " + str(e.errno)
    except Exception as e:
        return type(e).__name__


print(bluetooth.UUID(0x2902), bluetooth.UUID("0bd50001-5d5c-4f1e-9b8a-6f6264737963"))
print(bluetooth.UUID(0x2902) == bluetooth.UUID(b"\x02\x29"), bytes(bluetooth.UUID(0x180F)))
print(err(bluetooth.UUID, "123"), err(bluetooth.UUID, 0x10000))
print(hasattr(bluetooth, "FLAG_READ_ENCRYPTED"), bluetooth.FLAG_WRITE_NO_RESPONSE, bluetooth.FLAG_INDICATE)

ble = bluetooth.BLE()
print(ble is bluetooth.BLE(), ble.active())
print("inactive:", err(ble.gap_advertise, 100000), err(ble.config, "mac"))
print(ble.active(True))
print(ble.config("mac"), ble.config("mtu"), ble.config("gap_name"))
ble.config(gap_name="obd-0001", mtu=185)
print(ble.config("gap_name"), ble.config("mtu"))
print(err(ble.config, mtu=600), err(ble.config, "bond"), err(ble.config, bogus=1))

svc = bluetooth.UUID("0bd50001-5d5c-4f1e-9b8a-6f6264737963")
a = (bluetooth.UUID("0bd50002-5d5c-4f1e-9b8a-6f6264737963"), _FLAG_READ | _FLAG_NOTIFY)
b = (bluetooth.UUID("0bd50003-5d5c-4f1e-9b8a-6f6264737963"), _FLAG_WRITE,
     ((bluetooth.UUID(0x2901), _FLAG_READ),))
handles = ble.gatts_register_services(((svc, (a, b)),))
print(handles)
((ha, hb, hd),) = handles

ble.gatts_write(ha, b"0123456789012345678901234")  # longer than 20: a local write grows the value
print(ble.gatts_read(ha))
ble.gatts_set_buffer(hb, 4, True)
print(ble.gatts_read(hb))
print(err(ble.gatts_read, 999), err(ble.gatts_notify, 5, ha, b"x"), err(ble.gap_passkey, 5, 3, 1))
print(ble.gap_disconnect(5))
print(err(ble.gap_advertise, 100000, b"x" * 32))
ble.gap_advertise(100000, b"\x02\x01\x06")
print(err(ble.gatts_register_services, ((svc, (a,)),)))
ble.gap_advertise(None)
ble.active(False)
print(ble.active())
