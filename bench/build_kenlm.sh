#!/usr/bin/env bash
# Build KenLM's lmplz (n-gram LM estimation) and build_binary from the kenlm source package on PyPI:
# the maintained way to turn a text file into an ARPA LM for `speechdistill evaluate --lm`.
#   bash bench/build_kenlm.sh DIR            -> DIR/bin/lmplz, DIR/bin/build_binary
#   DIR/bin/lmplz -o 3 --discount_fallback < text.txt > lm.arpa
# Needs cmake, a C++ compiler, and Boost (program_options, system, thread) and zlib headers; on Debian/Ubuntu:
#   apt-get install cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev zlib1g-dev
set -euo pipefail
out=$(realpath -m "${1:-kenlm}")
version=${KENLM_VERSION:-0.3.0}
mkdir -p "$out"
python -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$out" "kenlm==$version"
tar xzf "$out/kenlm-$version.tar.gz" -C "$out"
cmake -S "$out/kenlm-$version" -B "$out/build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$out/build" --target lmplz build_binary -j "$(nproc)"
mkdir -p "$out/bin"
cp "$out/build/bin/lmplz" "$out/build/bin/build_binary" "$out/bin/"
echo "built $out/bin/lmplz and $out/bin/build_binary"
