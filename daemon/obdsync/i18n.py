"""The language obdsync speaks to a person in: English (the source strings) and
Simplified Chinese, through gettext catalogues.

The catalogues are ``locale/<ll_CC>/LC_MESSAGES/obdsync.po`` beside this file, the
source of truth in git. A compiled ``.mo`` beside it is used when it is at least as new
as the ``.po``; otherwise the ``.po`` is compiled in memory with Babel (the ecosystem's
tool; the same one that writes the ``.mo`` for a release: ``pybabel compile -d
daemon/obdsync/locale -D obdsync``), so a fresh clone speaks Chinese without a build step.

The language: ``display.language`` in the config (``auto`` by default: the locale's,
from ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``), set once per process with
:func:`use`; :func:`_` translates into it::

    from obdsync.i18n import _
    print(_("{n} hard brakes").format(n=3))
"""

from __future__ import annotations

import gettext
import io
import os
from functools import cache
from pathlib import Path

DOMAIN = "obdsync"
LOCALE_DIR = Path(__file__).parent / "locale"
#: The languages there is a catalogue for (English is the source text).
LANGUAGES = ("en", "zh-CN")
_current = "auto"


def normalize(tag: str | None) -> str:
    """``zh_CN.UTF-8``, ``zh-cn``, ``zh_Hans`` → ``zh-CN``; anything else we have no
    catalogue for → ``en``."""
    t = (tag or "").split(".")[0].split("@")[0].replace("_", "-").lower()
    if t.startswith("zh") and not t.startswith(("zh-tw", "zh-hk", "zh-hant", "zh-mo")):
        return "zh-CN"
    return "en"


def from_environment() -> str:
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:
            return normalize(value.split(":")[0])
    return "en"


def resolve(language: str | None) -> str:
    """``auto`` (or None) → the locale's language; a configured one as it is."""
    return from_environment() if language in (None, "", "auto") else normalize(language)


def use(language: str | None) -> str:
    """Speak ``language`` (a config value) in this process from now on; returns it resolved."""
    global _current
    _current = resolve(language)
    return _current


def current() -> str:
    return resolve(_current)


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalogue of ``language`` (``en``: the source strings)."""
    lang = normalize(language)
    if lang == "en":
        return gettext.NullTranslations()
    folder = LOCALE_DIR / lang.replace("-", "_") / "LC_MESSAGES"
    po, mo = folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo"
    if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as f:
            return gettext.GNUTranslations(f)
    return gettext.GNUTranslations(io.BytesIO(compile_po(po)))


def compile_po(po: Path) -> bytes:
    """A ``.po`` file as ``.mo`` bytes (Babel's reader and writer; fuzzy entries left out)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as f:
        catalog = read_po(f)
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def _(message: str, language: str | None = None) -> str:
    """``message`` in ``language`` (default: this process's); the English source when the
    catalogue lacks it (tests/test_i18n.py fails the build for any such gap in zh-CN)."""
    return translations(language or current()).gettext(message)


def ngettext(singular: str, plural: str, n: int, language: str | None = None) -> str:
    return translations(language or current()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a string in a table for the catalogue; translated where it is shown with ``_``."""
    return message
