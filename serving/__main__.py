"""``python -m serving``: run the model server (same as ``python -m serving.server``)."""

import sys

from serving.server import main

sys.exit(main())
