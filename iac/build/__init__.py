"""The build stage: a spec and a prep artifact become a Docker build context (Dockerfile, server, config, proxy config)."""
