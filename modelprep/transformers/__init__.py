"""Transformer models in Hugging Face format: load without PyTorch, export to ONNX with pooling inside, quantize, measure, gate."""
