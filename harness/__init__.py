"""What tests, demos and benchmarks run beside the product, never part of it.

`pulumi up` (stacks/*/__main__.py → iac.deploy) and the serving image (serving/) never import this
package; tests/deploy/test_harness_apart.py holds that line. Here: throwaway stacks driven through the
real Pulumi CLI (`sandbox.py`, `k8s/sandbox.py`), a local Kubernetes cluster for `make k8s-demo` and the
k8s tests (`k8s/`), and the processes and ports they start (`processes.py`).
"""
