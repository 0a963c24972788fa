"""The real model server with the test-only ``echo`` family registered (``serving.families``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import families
from serving.lifecycle import main

families.FAMILIES["echo"] = "echo_family"

if __name__ == "__main__":
    sys.exit(main())
