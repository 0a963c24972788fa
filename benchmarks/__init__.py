"""Committed benchmarks: prep, serving, V2/gRPC, rollout, text models and Kubernetes scale (results in docs/)."""
