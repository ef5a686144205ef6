#!/usr/bin/env bash
# Creates .venv with moto's server and the AWS CLI, unless it already matches
# scripts/requirements.txt. Prints the venv's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements"

if [ ! -x "$venv/bin/moto_server" ] || ! cmp -s "$root/scripts/requirements.txt" "$stamp"; then
    echo "scripts/venv.sh: installing moto and the AWS CLI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/requirements.txt"
    cp "$root/scripts/requirements.txt" "$stamp"
fi
echo "$venv"
