"""Run a Pulumi plugin module and exit when the CLI that started it is gone.

    python -m iac.pulumi_host.plugin_guard pulumi.dynamic ARGS...

A CLI killed with SIGKILL cannot stop its plugins, and a Python plugin serving gRPC would
otherwise live on forever (an interrupted rollout's provider kept running). Everything the
providers do is idempotent, so stopping one mid-way is safe: the next `pulumi up` converges.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def main() -> None:
    module, args = sys.argv[1], sys.argv[2:]
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
