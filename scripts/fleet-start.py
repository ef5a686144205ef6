#!/usr/bin/env python3
"""Fleet-start simulation: many qlarius-env launches at once against a fake Parameter
Store on loopback that throttles above a fixed request rate, as the real service does
(about 40 requests a second shared by the get calls by default).

Prints one Markdown table row per scenario: launches, how many started, exit codes of
the others, time from the first launch to the last start, requests sent and requests
throttled. The first line of each distinct error goes to stderr with its count. Everything stays on 127.0.0.1; the number of launches and the run time are
bounded.

Usage: scripts/fleet-start.py [--launches 200] [--rate 40] [--parameters 4]
           [--scenario NAME:ARGS:ENV ...] [--binary target/release/qlarius-env]
A scenario is a label, extra qlarius-env arguments and extra environment variables,
for example 'splay 5s:--splay 5s:' or 'adaptive::AWS_RETRY_MODE=adaptive'.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Upper bound on one scenario, so that a hung launch cannot keep the script running.
SCENARIO_TIME_LIMIT = 180


class ThrottlingStore:
    """Accepts at most `rate` requests in any one-second window; throttles the rest.
    Throttled requests do not count against the window."""

    def __init__(self, rate, parameters):
        self.rate = rate
        self.lock = threading.Lock()
        self.accepted = collections.deque()
        self.requests = 0
        self.throttled = 0
        names = [f"/app/p{i:02}" for i in range(1, parameters + 1)]
        self.pages = [names[i:i + 10] for i in range(0, len(names), 10)] or [[]]

    def admit(self):
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            while self.accepted and now - self.accepted[0] >= 1.0:
                self.accepted.popleft()
            if len(self.accepted) >= self.rate:
                self.throttled += 1
                return False
            self.accepted.append(now)
            return True

    def page(self, token):
        index = int(token) if token else 0
        parameters = [
            {"Name": n, "Value": "fake-value", "Type": "String", "Version": 1, "DataType": "text"}
            for n in self.pages[index]
        ]
        body = {"Parameters": parameters}
        if index + 1 < len(self.pages):
            body["NextToken"] = str(index + 1)
        return body


def make_handler(store):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(length) or b"{}")
            if store.admit():
                status, body = 200, store.page(request.get("NextToken"))
            else:
                status, body = 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def run_scenario(binary, launches, rate, parameters, extra_args, extra_env):
    store = ThrottlingStore(rate, parameters)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(store))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent/config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "AKIDFLEETTEST",
        "AWS_SECRET_ACCESS_KEY": "fleet-test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "QLARIUS_ENV_LOG": "off",
    }
    env.update(extra_env)
    command = [binary, "--path", "/app", *extra_args, "--", "true"]

    started = time.monotonic()
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(launches)
    ]
    finished = {}
    errors = collections.Counter()
    while len(finished) < launches and time.monotonic() - started < SCENARIO_TIME_LIMIT:
        for i, process in enumerate(processes):
            if i not in finished and process.poll() is not None:
                finished[i] = (process.returncode, time.monotonic() - started)
                errors[process.stderr.read().decode(errors="replace").split("\n")[0][:100]] += 1
        time.sleep(0.01)
    for i, process in enumerate(processes):
        if i not in finished:
            process.kill()
            process.wait()
            finished[i] = ("killed", SCENARIO_TIME_LIMIT)
    server.shutdown()

    codes = collections.Counter(code for code, _ in finished.values())
    successes = [t for code, t in finished.values() if code == 0]
    return {
        "started": len(successes),
        "failed": {str(c): n for c, n in codes.items() if c != 0},
        "last_start": max(successes) if successes else None,
        "requests": store.requests,
        "throttled": store.throttled,
        "errors": {e: n for e, n in errors.items() if e},
    }


def parse_scenario(text):
    label, args, env = (text.split(":", 2) + ["", ""])[:3]
    extra_env = dict(item.split("=", 1) for item in env.split(",") if item)
    return label, args.split(), extra_env


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/qlarius-env")
    parser.add_argument("--launches", type=int, default=200)
    parser.add_argument("--rate", type=int, default=40)
    parser.add_argument("--parameters", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scenario", action="append", default=[])
    options = parser.parse_args()
    if not 1 <= options.launches <= 500:
        sys.exit("--launches must be between 1 and 500")
    scenarios = [parse_scenario(s) for s in options.scenario] or [("default", [], {})]

    print(f"{options.launches} launches, {options.parameters} parameters, "
          f"fake endpoint throttles above {options.rate} requests/s")
    print("| scenario | started | failed (exit code: count) | last start (s) | requests | throttled |")
    print("|---|---|---|---|---|---|")
    for label, args, env in scenarios:
        for _ in range(options.repeat):
            r = run_scenario(options.binary, options.launches, options.rate, options.parameters, args, env)
            failed = ", ".join(f"{c}: {n}" for c, n in r["failed"].items()) or "none"
            last = f"{r['last_start']:.1f}" if r["last_start"] is not None else "-"
            print(f"| {label} | {r['started']}/{options.launches} | {failed} | {last} | "
                  f"{r['requests']} | {r['throttled']} |", flush=True)
            for error, count in r["errors"].items():
                print(f"    {label}: {count} x {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
