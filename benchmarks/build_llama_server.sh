#!/usr/bin/env bash
# Build llama.cpp's llama-server from the sources vendored in the llama-cpp-python sdist that
# insieme pins (same llama.cpp revision as insieme's engine), without AMX (it faults on this
# CPU family), into benchmarks/out/llama.cpp. Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
binary="$out/llama.cpp/build/bin/llama-server"
if [ -x "$binary" ]; then echo "$binary"; exit 0; fi
mkdir -p "$out"
python="${PYTHON:-python3}"
if [ ! -d "$out/llama_cpp_python-$version" ]; then
    "$python" -m pip download --quiet --no-deps --no-binary :all: -d "$out" \
        "llama-cpp-python==$version" >&2
    tar -xzf "$out/llama_cpp_python-$version.tar.gz" -C "$out"
fi
rm -rf "$out/llama.cpp"
cp -r "$out/llama_cpp_python-$version/vendor/llama.cpp" "$out/llama.cpp"
flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$out/llama.cpp" -B "$out/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$out/llama.cpp/build" --target llama-server llama-batched-bench -j "$(nproc)" >&2
echo "$binary"
