#!/usr/bin/env bash
# The main job, end to end on this machine: start moto's Parameter Store on loopback,
# create the four Qlarius SecureString parameters with the AWS CLI, and launch a command
# through qlarius-env that shows which variables arrived and their lengths (never the
# values). Then delete one parameter and show that nothing starts.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="$(scripts/venv.sh)"
echo "==> building qlarius-env (release)"
cargo build --release --locked --quiet
bin="$PWD/target/release/qlarius-env"

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null; rm -rf "$work"' EXIT

# Everything below talks to the local moto only: fake keys, no profile files, no
# instance metadata.
export AWS_ACCESS_KEY_ID=AKIDDEMOONLY AWS_SECRET_ACCESS_KEY=demo-secret-key
export AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE="$work/config"
export AWS_SHARED_CREDENTIALS_FILE="$work/credentials"
unset AWS_PROFILE AWS_REGION AWS_SESSION_TOKEN
: >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"

for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
done
echo "==> moto's Parameter Store is listening on $AWS_ENDPOINT_URL"

# Values go to the AWS CLI on stdin (file:///dev/stdin), never on its command line.
put() {
    printf '%s' "$2" | "$venv/bin/aws" ssm put-parameter --name "$1" --type SecureString \
        --key-id alias/aws/ssm --value file:///dev/stdin --overwrite >/dev/null
    echo "    created $1 (SecureString)"
}
echo "==> creating the four Qlarius parameters"
put /qlarius/twilio/account-sid "ACdemo0000000000000000000000000000"
put /qlarius/twilio/auth-token "demo-auth-token-not-real"
put /qlarius/twilio/verify-service-sid "VAdemo0000000000000000000000000000"
put /qlarius/cloak-key "$(head -c 32 /dev/urandom | base64)"

show_lengths='for name in TWILIO_ACCOUNT_SID TWILIO_AUTH_TOKEN TWILIO_VERIFY_SERVICE_SID CLOAK_KEY; do
    eval "value=\${$name-}"
    printf "    %-26s %3d characters\n" "$name" "${#value}"
done'

echo "==> qlarius-env -- sh -c '<print each variable's length>'"
"$bin" -- sh -c "$show_lengths"

echo "==> deleting /qlarius/cloak-key and launching again: nothing may start"
"$venv/bin/aws" ssm delete-parameter --name /qlarius/cloak-key
status=0
"$bin" -- sh -c 'echo "the command started: this must not happen"' || status=$?
echo "==> qlarius-env exited with $status (66: a required parameter is missing)"
test "$status" -eq 66
