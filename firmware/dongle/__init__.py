"""The dongle firmware: ELM327 driver, poll plan and scheduler, and the parts around them."""


def unload(module: str) -> None:
    """Forget a package's submodule (its dotted name: sys.modules and the package's attribute),
    so that nothing refers to its code and the next collection frees it; the next import loads
    it again. For code that runs once (the boot, a log's recovery) or rarely: on a board running
    .mpy a loaded module keeps all its bytecode in the GC heap, used or not."""
    import sys

    sys.modules.pop(module, None)
    i = module.rfind(".")
    pkg = sys.modules.get(module[:i])
    if pkg is not None and hasattr(pkg, module[i + 1:]):
        delattr(pkg, module[i + 1:])
