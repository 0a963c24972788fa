"""modelprep: compress a trained model, measure it, and refuse what loses too much accuracy.

No Pulumi, no Docker. TensorFlow is imported lazily, only by the stages that need it.
"""
