"""The model server that runs in the image: HTTP/1.1 and gRPC front ends, V1 and V2 protocols, batcher, runtimes."""
