#!/usr/bin/env bash
# ndc's main job on embedded defaults: builds `ndc` (sharing the test build's
# target dir) and runs `ndc up`. Extra arguments go to `ndc up`, e.g. --check.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ndc-target}"
if ! command -v protoc >/dev/null 2>&1 || ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "==> installing build packages: protobuf-compiler libclang-dev clang"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev libclang-dev clang
fi
exec cargo run --quiet --locked --bin ndc -- up "$@"
