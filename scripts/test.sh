#!/usr/bin/env bash
# The test command of ndc. On a fresh Debian 12 machine (as root) it installs
# what is missing, then checks formatting and lints and runs the whole test
# suite. Safe to run again: it installs nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ndc-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
dpkg -s libprotobuf-dev >/dev/null 2>&1 || need+=(libprotobuf-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  need+=(postgresql)
fi
# The image's kubectl is newer than Debian's; install Debian's only when none is there.
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)

if ((${#need[@]})); then
  echo "==> installing with apt-get: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
else
  echo "==> system packages: all present"
fi

# Garage, the S3 server the provisioning tests run against: built once per
# machine into a cache outside the clone (about 10 minutes), then reused.
GARAGE_VERSION=2.5.0
TOOLS="${NDC_TOOLS_DIR:-$HOME/.cache/ndc-tools}"
if [ -z "${NDC_GARAGE_BIN:-}" ] && ! command -v garage >/dev/null 2>&1 \
  && ! "$TOOLS/bin/garage" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  echo "==> building Garage $GARAGE_VERSION into $TOOLS (once per machine)"
  cargo install --locked garage --version "$GARAGE_VERSION" --root "$TOOLS" \
    --target-dir "$TOOLS/build"
fi
# PostgreSQL refuses to run as root; the tests run it as the postgres user.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "error: running as root but there is no postgres user (install the postgresql package)" >&2
  exit 2
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
