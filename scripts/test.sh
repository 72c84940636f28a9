#!/usr/bin/env bash
# The test command (README, CI): installs the servers the end-to-end tests
# need, fetches and checks the pose model, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ci-services.sh
scripts/setup-models.sh
cargo test --workspace --locked "$@"
