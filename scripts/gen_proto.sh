#!/usr/bin/env bash
# Regenerate serving/proto/grpc_service_pb2.py and _pb2_grpc.py from grpc_service.proto with
# grpcio-tools (a dev dependency): `make proto` or `bash scripts/gen_proto.sh`. The generated
# files are committed, so the serving image needs only grpcio and protobuf, not the tools.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
python="${PYTHON:-$here/.venv/bin/python}"
# -I . makes the generated modules import each other as serving.proto.*.
"$python" -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. serving/proto/grpc_service.proto
"$python" - <<'PY'
# Register the descriptors in a pool of their own instead of protobuf's default pool: a process
# that also loads another copy of the protocol (tritonclient's stubs in the tests, a client
# library in a user's process) would otherwise fail with "duplicate symbol inference.*".
from pathlib import Path

path = Path("serving/proto/grpc_service_pb2.py")
text = path.read_text()
default = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
assert text.count(default) == 1, "generated code changed: update scripts/gen_proto.sh"
path.write_text(text.replace(default, "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("))
PY
echo "generated serving/proto/grpc_service_pb2.py and serving/proto/grpc_service_pb2_grpc.py"
