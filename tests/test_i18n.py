"""Languages: every string the code marks for translation (``_``/``N_`` calls, the
notification sentences of ``messages.TEXT``) has a Simplified Chinese translation with
the same placeholders; the language follows the config or the locale; the CLI, the
health check and the event texts come out in Chinese."""

from __future__ import annotations

import asyncio
import json
import re
import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from e2e import Home
from test_health import DEVICE, drive, records_of

from obdsync import i18n, messages
from obdsync.store import Store

PACKAGE = Path(i18n.__file__).parent
PO = PACKAGE / "locale" / "zh_CN" / "LC_MESSAGES" / "obdsync.po"


def marked() -> dict[str, str]:
    """msgid -> where: every literal passed to _(), N_() or ngettext() in the package."""
    out = {}
    for filename, lineno, message, _comments, _ctx in extract_from_dir(
            str(PACKAGE), method_map=[("**.py", "python")], keywords={"_": None, "N_": None, "ngettext": (1, 2)}):
        for m in (message if isinstance(message, tuple) else (message,)):
            if m:
                out[m] = f"{filename}:{lineno}"
    for key, m in messages.TEXT.items():
        out.setdefault(m, f"messages.TEXT[{key!r}]")
    return out


def catalogue() -> dict[str, str]:
    with PO.open("rb") as f:
        return {m.id: m.string for m in read_po(f) if m.id and not m.fuzzy}


def fields(s: str) -> set[str]:
    return {f for _lit, f, _spec, _conv in string.Formatter().parse(s) if f is not None}


def test_every_marked_string_has_a_chinese_translation():
    zh = catalogue()
    missing = {m: where for m, where in marked().items() if not zh.get(m)}
    assert not missing, "no zh-CN translation (add it to obdsync.po):\n" + "\n".join(
        f"  {where}: {m!r}" for m, where in sorted(missing.items(), key=lambda kv: kv[1]))


def test_translations_keep_the_placeholders():
    zh = catalogue()
    bad = {m: t for m, t in zh.items() if fields(m) != fields(t)}
    assert not bad, bad


def test_the_catalogue_holds_nothing_stale():
    stale = set(catalogue()) - set(marked())
    assert not stale, f"in obdsync.po but no longer in the code: {sorted(stale)}"


@pytest.mark.parametrize("tag, want", [("zh_CN.UTF-8", "zh-CN"), ("zh-cn", "zh-CN"), ("zh_Hans", "zh-CN"),
                                       ("zh_TW.UTF-8", "en"), ("de_DE.UTF-8", "en"), ("C", "en"), (None, "en")])
def test_the_locale_names_the_language(tag, want):
    assert i18n.normalize(tag) == want


def test_config_first_then_the_locale(monkeypatch):
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert i18n.resolve("auto") == "zh-CN" and i18n.resolve("en") == "en"
    monkeypatch.setenv("LANGUAGE", "en_GB:zh_CN")
    assert i18n.resolve("auto") == "en"  # LANGUAGE's first choice wins over LANG
    assert i18n._("Fuel low", "zh-CN") == "油量低"


def test_the_po_compiles_in_memory_from_a_fresh_clone():
    mo = i18n.compile_po(PO)
    assert mo[:4] in (b"\xde\x12\x04\x95", b"\x95\x04\x12\xde")  # a gettext .mo


def test_notifications_in_chinese_with_the_users_units():
    msg = {"type": "low_fuel", "severity": "warning", "values": {"level_pct": 9, "range_km": 48.3}}
    assert messages.notification(msg, messages.Units.of("metric"), "zh-CN") == ("油量低", "9 %，约可行驶 48 km")
    uk = messages.Units.of("metric", distance="mi", economy="mpg_uk")
    assert messages.notification(msg, uk, "en") == ("Fuel low", "9 %, ≈ 30 mi left")
    assert uk.economy(5.0) == "56.5 mpg (UK)" and messages.Units.of("imperial").economy(5.0) == "47.0 mpg"
    assert messages.Units.of("metric", economy="km_per_l").economy(5.0) == "20.0 km/L"
    assert messages.Units.of("metric", temperature="f").temperature(100) == "212 °F"
    due = {"type": "service_due", "severity": "warning",
           "values": {"by": "km", "item": "brake_fluid", "km_since_service": 30_100.0}}
    assert messages.notification(due, lang="zh-CN") == ("保养到期：刹车油", "距上次保养已行驶 30\u202f100 km")
    assert messages.notification(due, lang="en")[0] == "Service due: brake fluid"


def test_the_health_check_and_the_cli_speak_chinese(tmp_path):
    home = Home(tmp_path / "home")
    try:
        async def seed() -> None:
            home.db.parent.mkdir(parents=True, exist_ok=True)
            async with await Store.open(home.db) as store:
                await store.ingest(DEVICE, records_of(drive(ltft_pct=14.0, thermostat_c=76, warmup_factor=3.0)))

        asyncio.run(seed())
        home.write_config('[display]\nlanguage = "zh-CN"\n')
        p = home.cli("check")
        assert p.returncode == 0, p.stderr
        assert "健康检查" in p.stdout and "燃油修正" in p.stdout and "节温器" in p.stdout, p.stdout
        assert not re.search(r"runs lean|Usual causes|Slow warm-up", p.stdout), p.stdout
        data = json.loads(home.cli("check", "--json").stdout)
        lean = next(f for f in data["findings"] if f["id"] == "fuel_trim.bank1")
        assert lean["severity"] == "warning" and "偏稀" in lean["title"] and lean["values"]["lean"] is True
        # The locale chooses when the config says auto (the default).
        home.write_config("")
        home.env["LANG"] = "zh_CN.UTF-8"
        home.env.pop("LANGUAGE", None)
        home.env.pop("LC_ALL", None)
        assert "健康检查" in home.cli("check").stdout
        home.env["LANG"] = "C.UTF-8"
        assert "Health check" in home.cli("check").stdout
    finally:
        home.close()
