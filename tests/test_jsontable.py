"""The paired-dongle and adapter registries share one file format (obdsync.jsontable): written
whole, read back as written, and a damaged file is a named error, never an AttributeError."""

from __future__ import annotations

import pytest

from obdsync import devices, jsontable
from obdsync.direct import registry

DEVICE = "0123456789abcdef"


def test_both_registries_round_trip_through_the_one_format(tmp_path):
    devices.add(DEVICE, "AA:BB:CC:DD:EE:FF", bytes(32), "car", base=tmp_path)
    registry.add("/dev/ttyUSB0", "van", base=tmp_path)
    assert devices.load(tmp_path) == [devices.Paired(DEVICE, "AA:BB:CC:DD:EE:FF", "car")]
    assert registry.load(tmp_path) == [registry.Adapter("/dev/ttyUSB0", "serial", "van")]
    assert jsontable.load(devices.registry_path(tmp_path), "dongles") == {
        DEVICE: {"address": "AA:BB:CC:DD:EE:FF", "name": "car"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters.json", "paired.json", "secrets"]  # no temporaries


def test_a_missing_file_is_an_empty_table(tmp_path):
    assert jsontable.load(tmp_path / "none.json", "dongles") == {}
    assert devices.load(tmp_path) == [] and registry.load(tmp_path) == []


@pytest.mark.parametrize("text, says", [
    ("{not json", "not JSON"),
    ("[1, 2]", "holds list, not an object"),
    ('{"dongles": []}', "'dongles' is list"),
    ('{"dongles": {"0123456789abcdef": "AA:BB"}}', "dongles.0123456789abcdef is not an object of strings"),
    ('{"dongles": {"0123456789abcdef": {"address": 5}}}', "not an object of strings"),
])
def test_a_damaged_file_is_a_named_error(tmp_path, text, says):
    devices.registry_path(tmp_path).write_text(text)
    with pytest.raises(devices.PairingError, match=says):
        devices.load(tmp_path)
    registry.registry_path(tmp_path).write_text(text.replace("dongles", "adapters"))
    with pytest.raises(jsontable.TableError, match=says.replace("dongles", "adapters")):
        registry.load(tmp_path)


def test_a_dongle_entry_without_an_address_or_with_a_bad_id_is_a_pairing_error(tmp_path):
    devices.registry_path(tmp_path).write_text('{"dongles": {"0123456789abcdef": {"name": "car"}}}')
    with pytest.raises(devices.PairingError, match="without 'address'"):
        devices.load(tmp_path)
    devices.registry_path(tmp_path).write_text('{"dongles": {"../x": {"address": "AA"}}}')
    with pytest.raises(devices.PairingError, match="16 hex digits"):
        devices.load(tmp_path)
