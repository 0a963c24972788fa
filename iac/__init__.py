"""modelstack's generator: the spec, build and deploy stages, the CLI and the Pulumi language host (see docs/architecture.md)."""
