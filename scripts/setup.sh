#!/usr/bin/env bash
# Installs the Debian packages moesim needs (only the missing ones), then configures and builds.
# Sourced by scripts/quickstart.sh and scripts/test.sh; BUILD_DIR defaults to build/.
# BUILD_TARGETS (space-separated) builds only those targets and what they need; default: all.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
PACKAGES=(cmake g++ make libboost-graph-dev libboost-program-options-dev libeigen3-dev libfmt-dev
          libyaml-cpp-dev libglpk-dev catch2 nlohmann-json3-dev libbenchmark-dev
          libopenmpi-dev openmpi-bin python3-matplotlib python3-jsonschema python3-dev python3-pybind11
          pybind11-dev python3-pytest libprotobuf-dev protobuf-compiler)
# EXTRA_PACKAGES: more of them (scripts/test.sh adds clang for the sanitizer and fuzz pass).
read -r -a extra <<< "${EXTRA_PACKAGES:-}"
PACKAGES+=("${extra[@]}")
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "moesim setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
WERROR=OFF
[ "${CI:-}" = "true" ] && WERROR=ON
# With ccache (scripts/test.sh installs it) a second build of the same sources, such as
# scripts/test_embed.sh's add_subdirectory build, reuses these objects.
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMOESIM_WERROR="${MOESIM_WERROR:-$WERROR}" \
      "${launcher[@]}" >/dev/null
read -r -a targets <<< "${BUILD_TARGETS:-}"
build_args=()
if [ ${#targets[@]} -gt 0 ]; then build_args=(--target "${targets[@]}"); fi
cmake --build "$BUILD_DIR" -j "$(nproc)" "${build_args[@]}"
