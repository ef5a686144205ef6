"""Measure what one launch costs: requests, CPU time, wall time and peak memory.

Run through scripts/bench.sh, which builds the release binary and uses the project's
virtual environment (moto, the AWS CLI and the cryptography package come with it).

Starts moto on loopback, creates the four Qlarius SecureString parameters, and times
`true`, `qlarius-env -- true` over http:// and over https:// (a TLS front on loopback
with a self-signed certificate passed through SSL_CERT_FILE), and the AWS CLI doing the
same fetch. CPU and peak memory come from wait4(2) for each child, so they count only
the measured process, not moto. Sends nothing beyond 127.0.0.1.
"""

import datetime
import ipaddress
import os
import platform
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "qlarius-env")
VENV_BIN = os.path.dirname(sys.executable)
RUNS = int(os.environ.get("BENCH_RUNS", "50"))
CLI_RUNS = int(os.environ.get("BENCH_CLI_RUNS", "5"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def certificate(subject, issuer, public_key, signing_key, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def self_signed(directory):
    """Writes a throw-away CA and a server certificate for 127.0.0.1 signed by it.

    Returns the paths of the CA certificate (for SSL_CERT_FILE), the server certificate
    and its key.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qlarius-env benchmark CA")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    leaf = certificate(name, ca_name, key.public_key(), ca_key, False)

    paths = [os.path.join(directory, f) for f in ("ca.pem", "cert.pem", "key.pem")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def tls_front(cert_path, key_path, backend_port):
    """Accepts TLS on a loopback port and relays the bytes to moto; returns the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def pump(source, target):
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.close()
                except OSError:
                    pass

    def serve():
        while True:
            client, _ = listener.accept()
            try:
                tls = context.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                client.close()
                continue
            backend = socket.create_connection(("127.0.0.1", backend_port))
            for s in (tls, backend):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pump, args=(tls, backend), daemon=True).start()
            threading.Thread(target=pump, args=(backend, tls), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def measure(argv, env, runs):
    """Runs argv `runs` times; returns per-run CPU ms, wall ms, peak RSS in KiB, stderr.

    Each run goes through GNU time, which forks from its own small image: a child forked
    straight from Python would report Python's resident size as its peak. CPU comes from
    wait4 on the time process, which includes its waited-for child; the `true` row shows
    what time itself adds.
    """
    cpu, wall, rss = [], [], []
    last_stderr = b""
    peak_file = tempfile.NamedTemporaryFile(prefix="qlarius-bench-peak-")
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", peak_file.name, *argv],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        last_stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall.append((time.perf_counter() - started) * 1000)
        if process.returncode != 0:
            raise SystemExit(f"{argv[0]} failed ({process.returncode}): {last_stderr.decode()}")
        cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
        with open(peak_file.name) as f:
            rss.append(int(f.read().split()[-1]))
    return cpu, wall, max(rss), last_stderr.decode()


def summary(values):
    return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"


def main():
    work = tempfile.mkdtemp(prefix="qlarius-bench-")
    moto_port = free_port()
    moto = subprocess.Popen(
        [os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(moto_port)
        ca_path, cert_path, key_path = self_signed(work)
        tls_port = tls_front(cert_path, key_path, moto_port)

        config = os.path.join(work, "config")
        open(config, "w").close()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": work,
            "AWS_ACCESS_KEY_ID": "AKIDBENCHONLY",
            "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": config,
            "AWS_SHARED_CREDENTIALS_FILE": config,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        }
        aws = os.path.join(VENV_BIN, "aws")
        for name, value in [
            ("/qlarius/twilio/account-sid", "ACbench000000000000000000000000000"),
            ("/qlarius/twilio/auth-token", "bench-auth-token"),
            ("/qlarius/twilio/verify-service-sid", "VAbench000000000000000000000000000"),
            ("/qlarius/cloak-key", "YmVuY2gtY2xvYWsta2V5LWZha2UtMzItYnl0ZXMhIQ=="),
        ]:
            subprocess.run(
                [aws, "ssm", "put-parameter", "--name", name, "--type", "SecureString",
                 "--value", "file:///dev/stdin", "--overwrite"],
                input=value.encode(), env=env, check=True, stdout=subprocess.DEVNULL,
            )

        https_env = dict(env, AWS_ENDPOINT_URL=f"https://127.0.0.1:{tls_port}",
                         SSL_CERT_FILE=ca_path)
        true = "/bin/true"
        rows = []
        for label, argv, run_env, runs in [
            ("`true` alone", [true], env, RUNS),
            ("`qlarius-env -- true`, http://", [BINARY, "--", true], env, RUNS),
            ("`qlarius-env -- true`, https://", [BINARY, "--", true], https_env, RUNS),
            ("AWS CLI `ssm get-parameters-by-path`",
             [aws, "ssm", "get-parameters-by-path", "--path", "/qlarius", "--recursive",
              "--with-decryption"], env, CLI_RUNS),
        ]:
            for _ in range(2):  # warm the page cache
                measure(argv, run_env, 1)
            cpu, wall, rss, stderr = measure(argv, run_env, runs)
            requests = re.search(r"\((\d+) requests?\)", stderr)
            rows.append((label, runs, cpu, wall, rss, requests.group(1) if requests else "-"))

        cli_cpu = statistics.median(rows[3][2])
        launch_cpu = statistics.median(rows[1][2])
        size = os.path.getsize(BINARY)
        cpu_model = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
             if line.startswith("model name")), platform.processor())

        print("| what | runs | CPU ms (user+sys), median | wall ms, median | peak RSS MiB | requests |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, runs, cpu, wall, rss, requests in rows:
            print(f"| {label} | {runs} | {summary(cpu)} | {summary(wall)} | {rss / 1024:.1f} | {requests} |")
        print()
        print(f"- Stripped release binary: {size / 1e6:.2f} MB ({size} bytes).")
        print(f"- CPU ratio, AWS CLI to qlarius-env over http://: {cli_cpu / launch_cpu:.0f}x.")
        print(f"- Machine: {os.cpu_count()} cores, {cpu_model}, {platform.platform()}.")
        print(f"- Date: {datetime.date.today().isoformat()}.")
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    main()
