"""The huggingface family (`family.py`): text encoders in Hugging Face format to ONNX variants."""
