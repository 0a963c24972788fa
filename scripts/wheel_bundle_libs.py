"""Copy a locally built wheel with shared libraries of this host added beside its own, as auditwheel's
`repair` does for a manylinux wheel: the serving image (Debian packages chosen for Python only) then
needs nothing the wheel does not carry.

    python scripts/wheel_bundle_libs.py IN.whl OUT_DIR PACKAGE/LIBDIR LIB [LIB ...]

Each LIB (e.g. libgomp.so.1, GCC's OpenMP runtime, which llama.cpp's ggml links) is found with the
host's dynamic linker cache and stored in PACKAGE/LIBDIR, where the wheel's own libraries find it
(their RUNPATH is $ORIGIN). RECORD is rewritten with the new files' hashes; the wheel's name gets
the build tag `1` (`name-version-1-py-abi-platform.whl`), so a wheelhouse holding it tells apart from
one holding the wheel as built, and the image's content key changes with it.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

BUILD_TAG = "1"  # the wheel's build number: bundled once


def host_library(name: str) -> Path:
    """The file the dynamic linker loads for `name` on this host (x86-64)."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        parts = line.strip().split(" => ")
        if len(parts) == 2 and parts[0].split(" ")[0] == name and "x86-64" in parts[0]:
            return Path(parts[1]).resolve()
    raise SystemExit(f"{name} is not installed on this host (install its Debian package, e.g. libgomp1)")


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def bundle(wheel: Path, out_dir: Path, lib_dir: str, names: list[str]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    dist, version, *tags = wheel.name.removesuffix(".whl").split("-")
    out = out_dir / ("-".join([dist, version, BUILD_TAG, *tags[-3:]]) + ".whl")
    added = {f"{lib_dir}/{name}": host_library(name).read_bytes() for name in names}
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(out.with_suffix(".tmp"), "w", zipfile.ZIP_DEFLATED) as dest:
        record = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        for info in source.infolist():
            if info.filename == record or info.filename in added:
                continue
            dest.writestr(info, source.read(info))
        for path, data in sorted(added.items()):
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            dest.writestr(info, data)
        lines = [line for line in source.read(record).decode().splitlines() if line and line.split(",")[0] not in added]
        lines[-1:-1] = [record_line(path, data) for path, data in sorted(added.items())]
        dest.writestr(record, "\n".join(lines) + "\n")
    out.with_suffix(".tmp").replace(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    print(bundle(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]))
