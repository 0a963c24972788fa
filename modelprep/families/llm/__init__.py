"""The llm family: a GGUF language model (model.format gguf, model.task text-generation).

`family.FAMILY` is what the prep loop calls (see `modelprep.family`); `quantize` holds the variant
catalogue, `metadata` reads the GGUF, `evaluate` and `quality` compare a variant with the source,
`speed` times it, `session` ties them into one prep run, `run` measures and gates without the cache,
`tiny` writes the random Llama GGUF the tests use.
"""
