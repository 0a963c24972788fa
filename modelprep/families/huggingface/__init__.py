"""The huggingface family (see `family.py`): text encoders in Hugging Face format to ONNX variants."""

from modelprep.families.huggingface.family import FAMILY

__all__ = ["FAMILY"]
