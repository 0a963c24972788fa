"""A local Kubernetes cluster (`python -m harness.k8s.control_plane up DIR`) and throwaway stacks on it.

`cluster.py` is the record both halves read; `control_plane.py` starts etcd, the API server, the
controllers, kwok and a registry, and (with --real-node) `node.py`'s kubelet, cri-dockerd and kube-proxy.
"""
