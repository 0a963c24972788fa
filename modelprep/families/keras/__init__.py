"""The keras family (`family.py`): Keras / TensorFlow models to LiteRT and ONNX variants."""
