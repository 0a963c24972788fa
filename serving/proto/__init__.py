"""The Open Inference Protocol gRPC definition and its generated stubs (scripts/gen_proto.sh)."""
