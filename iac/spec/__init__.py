"""The spec stage: what the user wrote in model.yaml, its defaults, and errors located at file:line.

Importing this package pulls in pydantic and yaml only, never Pulumi, Docker or TensorFlow, so
every stage (modelprep included) can take its section of the spec as a typed object.
"""
