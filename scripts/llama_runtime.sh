#!/usr/bin/env bash
# The text-generation runtime: llama.cpp through llama-cpp-python (MIT), which PyPI serves here
# as an sdist only. Builds it once into a wheel (installed into .venv and, with GCC's OpenMP runtime
# added, put into the serving wheelhouse) and, with --server (for benchmarks/llm_bench.py only),
# llama.cpp's own `llama-server` from the same vendored tree. Both are cached outside the clone,
# keyed by version and build flags, with a stamp, so a second run (or a second clone) costs nothing.
# Idempotent.
#
# Why these flags (../docs/llm.md, notes/generative.md):
# - GCC 12's native build compiles ggml's AMX path but drops the tile configuration: every
#   multi-token decode dies with SIGSEGV on AMX CPUs. -mno-amx-int8 removes that path.
# - -DLLAMA_USE_PREBUILT_UI=OFF: otherwise llama-server's CMake downloads its web UI.
# - LLAVA_BUILD=OFF: the multimodal library is imported lazily and not used here.
# MODELSTACK_LLAMA_CMAKE overrides the CPU flags (e.g. -DGGML_NATIVE=OFF for a portable wheel).
# llama-server is built only with --server (benchmarks/llm_bench.py needs it; setup does not).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv"
wheelhouse="${MODELSTACK_WHEELHOUSE:-$here/.cache/wheelhouse}"
version="0.3.36"
cpu_flags="${MODELSTACK_LLAMA_CMAKE:--DGGML_NATIVE=ON -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8}"
wheel_flags="$cpu_flags -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF"
server_flags="$cpu_flags -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_BUILD_TYPE=Release"
key="$(printf '%s\n%s\n%s\n' "$version" "$wheel_flags" "$server_flags" | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/modelstack/llama-cpp/$version-$key"
jobs="${MODELSTACK_BUILD_JOBS:-2}"
log() { printf '[setup:llama-runtime] %s\n' "$*" >&2; }

mkdir -p "$cache"
sdist="$cache/llama_cpp_python-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
  log "downloading the llama-cpp-python $version sdist (77 MB)"
  "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary :all: "llama-cpp-python==$version" -d "$cache.tmp"
  mv "$cache.tmp/llama_cpp_python-$version.tar.gz" "$sdist"
  rm -rf "$cache.tmp"
fi

# 1. The Python wheel (llama.cpp shared libraries + ctypes bindings).
if [[ ! -f "$cache/wheel.stamp" ]] || ! ls "$cache"/wheels/llama_cpp_python-*.whl >/dev/null 2>&1; then
  log "building the llama-cpp-python wheel (4 minutes on 2 quiet cores, 35 under heavy load)"
  rm -rf "$cache/wheels"
  CMAKE_ARGS="$wheel_flags" CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
    "$venv/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    "$sdist" -w "$cache/wheels" >&2
  touch "$cache/wheel.stamp"
fi
wheel="$(ls "$cache"/wheels/llama_cpp_python-*.whl | head -1)"
if [[ "$(cat "$venv/.llama-runtime.key" 2>/dev/null)" != "$version-$key" ]]; then
  # Its pure-Python dependencies (numpy, typing-extensions, diskcache, jinja2) from the index.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
  echo "$version-$key" > "$venv/.llama-runtime.key"
fi
# The serving image's copy carries GCC's OpenMP runtime (libgomp.so.1, which ggml links) beside
# llama.cpp's libraries: the base image has Python's packages only (scripts/wheel_bundle_libs.py).
if [[ ! -f "$cache/image-wheel.stamp" ]] || ! ls "$cache"/image-wheels/llama_cpp_python-"$version"-1-*.whl >/dev/null 2>&1; then
  rm -rf "$cache/image-wheels"
  "$venv/bin/python" "$here/scripts/wheel_bundle_libs.py" "$wheel" "$cache/image-wheels" llama_cpp/lib libgomp.so.1 >/dev/null
  touch "$cache/image-wheel.stamp"
fi
if [[ -d "$wheelhouse" ]]; then
  rm -f "$wheelhouse"/llama_cpp_python-*.whl
  cp "$cache"/image-wheels/llama_cpp_python-*.whl "$wheelhouse/"
fi

# 2. llama.cpp's own server, static, for the side-by-side benchmark only.
if [[ "${1:-}" == "--server" && ! ( -f "$cache/server.stamp" && -x "$cache/bin/llama-server" ) ]]; then
  log "building llama-server from the vendored llama.cpp (10 minutes on 2 quiet cores, far more under load)"
  rm -rf "$cache/src" "$cache/server-build"
  mkdir -p "$cache/src"
  tar -xzf "$sdist" -C "$cache/src" --strip-components=1
  # shellcheck disable=SC2086  # the flags are a list of words
  cmake -S "$cache/src/vendor/llama.cpp" -B "$cache/server-build" -G Ninja $server_flags >/dev/null
  cmake --build "$cache/server-build" --target llama-server -j "$jobs" >/dev/null
  mkdir -p "$cache/bin"
  cp "$cache/server-build/bin/llama-server" "$cache/bin/"
  rm -rf "$cache/src" "$cache/server-build"
  touch "$cache/server.stamp"
fi
# A stable path for the benchmark (and engineer tools) to find the binary.
ln -sfn "$cache" "${XDG_CACHE_HOME:-$HOME/.cache}/modelstack/llama-cpp/current"
