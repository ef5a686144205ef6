#!/usr/bin/env bash
# Runs the whole test suite: installs the Python test tools into .venv, then runs
# cargo test. Extra arguments go to cargo test (for example: scripts/test.sh --test launch).
set -euo pipefail
cd "$(dirname "$0")/.."

QLARIUS_TEST_VENV="$(scripts/venv.sh)"
export QLARIUS_TEST_VENV
# The syscall test traces a launch with strace.
if ! command -v strace >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/test.sh: installing strace" >&2
    apt-get update -qq && apt-get install -y -qq strace >/dev/null
fi

# No test may reach real AWS or instance metadata, whatever the caller's environment.
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN

cargo test --locked "$@"
