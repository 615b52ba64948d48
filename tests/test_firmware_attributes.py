"""Every attribute a firmware or protocol/ object ever has is made in its __init__.

On MicroPython an instance's attributes live in a hash table sized as they are added: one
first set in a later method grows it at run time, a block of ~1.2 KB (for the ELM327
driver's ~90 attributes) that a fragmented heap may not have. That MemoryError ended the
scheduler's task in ELM327.init (its message-assembly state, first set by _finish) in
2 of 4 runs of the reminders drive (tests/test_e2e_reminders.py) here; the same class of growth, in the
notify path's table of views, was the theft_overnight flake (tests/test_firmware_sender.py).
A check of the source: each `self.x = ...` outside __init__ names an attribute __init__ set."""

from __future__ import annotations

import ast

import pytest

from hil import mpy

SOURCES = sorted((mpy.ROOT / "firmware" / "dongle").glob("*.py")) + sorted((mpy.ROOT / "protocol").glob("*.py"))


def self_attributes(fn: ast.AST) -> set[str]:
    """The names assigned as self.<name> in a function (plain, annotated or augmented)."""
    out = set()
    for node in ast.walk(fn):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                    out.add(sub.attr)
    return out


def late_attributes(source: str) -> dict[str, dict[str, str]]:
    """{class: {attribute: the method that first sets it}} for attributes __init__ never sets."""
    found = {}
    for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)):
        methods = [f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        made = set().union(*(self_attributes(f) for f in methods if f.name == "__init__"))
        late = {}
        for f in methods:
            if f.name != "__init__":
                for a in sorted(self_attributes(f) - made):
                    late.setdefault(a, f.name)
        if late:
            found[cls.name] = late
    return found


def test_the_check_sees_an_attribute_first_set_outside_init():
    src = ("class A:\n    def __init__(self):\n        self.a = 0\n"
           "    def f(self):\n        self.a += 1\n        self.b: int = 2\n        (self.c, x) = (3, 4)\n")
    assert late_attributes(src) == {"A": {"b": "f", "c": "f"}}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_attribute_is_made_in_init(path):
    assert late_attributes(path.read_text()) == {}, f"{path}: set them in __init__"
