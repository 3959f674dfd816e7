#!/usr/bin/env bash
# Installs what building and running ndc needs on a Debian 12 machine, and
# nothing that is already there. Sourced by scripts/test.sh and scripts/up.sh.
#   - apt: protobuf-compiler, libprotobuf-dev, libclang-dev, clang (the build);
#     postgresql (databases); etcd-server/etcd-client (benchmarks, tests);
#     kubernetes-client only when no kubectl is on PATH.
#   - Garage, the S3 object store, built once per machine into
#     ~/.cache/ndc-tools (about 10 minutes), then reused.

ndc_setup() {
  local need=()
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
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "==> system packages: all present"
  fi

  local version=2.5.0
  local tools="${NDC_TOOLS_DIR:-$HOME/.cache/ndc-tools}"
  if [ -z "${NDC_GARAGE_BIN:-}" ] && ! command -v garage >/dev/null 2>&1 \
    && ! "$tools/bin/garage" --version 2>/dev/null | grep -q "$version"; then
    echo "==> building Garage $version into $tools (once per machine, about 10 minutes)"
    cargo install --locked garage --version "$version" --root "$tools" --target-dir "$tools/build"
  fi
  # PostgreSQL refuses to run as root; ndc runs it as the postgres user.
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "error: running as root but there is no postgres user (install the postgresql package)" >&2
    return 2
  fi
}
