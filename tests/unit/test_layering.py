"""Importing synco, or its pure core, does no I/O as a side effect: none of the modules that
talk to processes, sockets, event loops, peers or DNS is loaded (import-linter checks the
core's imports statically; this checks what an import really loads)."""

from __future__ import annotations

import subprocess
import sys

IO_MODULES = ("subprocess", "socket", "asyncio", "grpc", "dns", "psutil", "asyncinotify", "selectors")


def test_importing_synco_and_its_core_loads_no_io_module() -> None:
    program = (
        "import sys, importlib, pkgutil\n"
        "import synco, synco.core\n"
        "for module in pkgutil.iter_modules(synco.core.__path__):\n"
        "    importlib.import_module('synco.core.' + module.name)\n"
        f"print(','.join(m for m in {IO_MODULES!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
