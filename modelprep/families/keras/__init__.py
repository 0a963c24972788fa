"""The keras family (see `family.py`): Keras / TensorFlow models to LiteRT and ONNX variants."""

from modelprep.families.keras.family import FAMILY

__all__ = ["FAMILY"]
