#!/usr/bin/env bash
# ndc's main job on embedded defaults: installs what is missing (build
# packages, PostgreSQL, Garage: see scripts/setup.sh), builds `ndc` (sharing
# the test build's target dir) and runs `ndc up` in ./ndc-data. Extra
# arguments go to `ndc up`, e.g. --check.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ndc-target}"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
ndc_setup
exec cargo run --quiet --locked --bin ndc -- up "$@"
