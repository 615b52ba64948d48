"""The dongle firmware: ELM327 driver, poll plan and scheduler, and the parts around them."""


def unload(name: str) -> None:
    """Forget the submodule dongle.<name> (sys.modules and this package's attribute), so that
    nothing refers to its code and the next collection frees it; the next import loads it
    again. For code that runs once (the boot, a log's recovery) or rarely: on a board running
    .mpy a loaded module keeps all its bytecode in the GC heap, used or not."""
    import sys

    sys.modules.pop("dongle." + name, None)
    globals().pop(name, None)
