"""Import TensorFlow quietly; every module that needs it goes through here."""

from __future__ import annotations

import os
from types import ModuleType


def tensorflow() -> ModuleType:
    # C++ INFO/WARNING lines would drown the progress output users read.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # also silences the banner; deterministic numerics
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf
