"""What the benches share: starting servers as child processes, the gateway in front of an upstream,
moto, and a bare SigV4-signing S3 client. The test suite starts its servers with the same code
(``tests/support/process.py``, ``tests/support/moto.py``); benches never import from ``tests``.

Every server of this project (and the bench servers) prints ``listening on http(s)://HOST:PORT``
once it accepts connections; started with ``--listen 127.0.0.1:0``, the real port is read from it.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LISTEN_LINE = re.compile(r"listening on (https?://[^\s]+)")
MIB = 1 << 20
BUCKET = "bench"
REGION = "us-east-1"
CLIENT_KEY = ("AKIABENCHGATEWAY0001", "bench-gateway-secret")
UPSTREAM_KEY = ("AKIABENCHUPSTREAM001", "bench-upstream-secret")
MOTO_KEY = ("test", "test")  # moto without IAM authentication accepts any key


# --- child processes ------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for programs that cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class Server:
    """A running child process, the URL it serves and its output (stdout and stderr, merged)."""

    proc: subprocess.Popen
    url: str
    output: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return "".join(self.output)


class ServerDidNotStart(RuntimeError):
    """The child exited or stayed silent; ``server`` holds what it printed."""

    def __init__(self, message: str, server: Server) -> None:
        super().__init__(message)
        self.server = server


def spawn(args: list[str], env: Mapping[str, str] | None = None,
          cwd: str | os.PathLike | None = None) -> tuple[subprocess.Popen, list[str], threading.Event, list[str]]:
    """Run ``args`` (stdout+stderr merged, drained into a list by a thread) with the venv first on
    PATH; returns the process, its output, and the event and holder its ``listening on`` URL sets."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=full_env, cwd=cwd, start_new_session=True)
    output: list[str] = []
    holder: list[str] = []
    found = threading.Event()
    threading.Thread(target=_pump, args=(proc, output, found, holder), daemon=True).start()
    return proc, output, found, holder


def _pump(proc: subprocess.Popen, sink: list[str], found: threading.Event, holder: list[str]) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        sink.append(line)
        if not found.is_set():
            m = LISTEN_LINE.search(line)
            if m:
                holder.append(m.group(1))
                found.set()
    found.set()


def start_server(args: list[str], env: Mapping[str, str] | None = None, timeout: float = 30.0,
                 cwd: str | os.PathLike | None = None) -> Server:
    """Run ``args`` and wait for its ``listening on URL`` line (``ServerDidNotStart`` otherwise)."""
    proc, output, found, holder = spawn(args, env, cwd)
    if not found.wait(timeout) or not holder:
        proc.kill()
        proc.wait()
        raise ServerDidNotStart(f"{args[0]} did not start:\n{''.join(output)}", Server(proc, "", output))
    return Server(proc=proc, url=holder[0], output=output)


def start_moto(env: Mapping[str, str] | None = None, timeout: float = 30.0, port: int | None = None) -> Server:
    """moto's S3 server on loopback (on a free port unless ``port`` names one: a test restarts it there), PUT
    bodies kept raw (``gateway.devupstream.serve_moto``). moto prints its own banner, not ``listening on``:
    wait for the port instead."""
    port = port or free_port()
    launch = "import sys; from gateway.devupstream import serve_moto; serve_moto(sys.argv[1:])"
    proc, output, _, _ = spawn([sys.executable, "-c", launch, "-H", "127.0.0.1", "-p", str(port)],
                               {"MOTO_ALLOW_NONEXISTENT_REGION": "true", **(env or {})}, cwd=REPO_ROOT)
    server = Server(proc=proc, url=f"http://127.0.0.1:{port}", output=output)
    try:
        wait_for_port("127.0.0.1", port, timeout=timeout)
    except TimeoutError:
        server.kill()
        raise ServerDidNotStart(f"moto_server did not start:\n{server.log()}", server) from None
    return server


# --- the benches' servers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where a bench sends its requests, under which name, with which key."""

    name: str
    url: str
    credentials: tuple[str, str]


def start_bench_server(stack: ExitStack, module: str, *args: str) -> Server:
    """``python -m bench.<module> --listen 127.0.0.1:0 ARGS``, stopped when ``stack`` closes."""
    server = start_server([sys.executable, "-m", f"bench.{module}", "--listen", "127.0.0.1:0", *args],
                          cwd=REPO_ROOT)
    stack.callback(server.stop)
    return server


def gateway_config(directory: Path, upstream_url: str, upstream_key: tuple[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    path.write_text(f"""
[gateway]
data_dir = "{directory / 'data'}"
region = "{REGION}"

[[gateway.credentials]]
access_key = "{CLIENT_KEY[0]}"
secret_key = "{CLIENT_KEY[1]}"

[upstream]
url = "{upstream_url}"
region = "{REGION}"
access_key = "{upstream_key[0]}"
secret_key = "{upstream_key[1]}"
""")
    return path


def start_gateway(stack: ExitStack, directory: Path, upstream: Target,
                  env: Mapping[str, str] | None = None) -> Server:
    """``gateway serve`` in front of ``upstream`` (embedded key service, data under ``directory``),
    logging warnings and errors only unless ``env`` says otherwise; stopped when ``stack`` closes."""
    config = gateway_config(directory, upstream.url, upstream.credentials)
    server = start_server([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                           "--listen", "127.0.0.1:0"],
                          env={"GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_WORKERS": "1", **(env or {})},
                          timeout=60, cwd=REPO_ROOT)
    stack.callback(server.stop)
    return server


def start_moto_target(stack: ExitStack) -> Target:
    """moto as a bench target (no IAM authentication: any key is accepted), stopped with ``stack``."""
    server = start_moto()
    stack.callback(server.stop)
    return Target("moto", server.url, MOTO_KEY)


# --- the client ------------------------------------------------------------------------------------
class _UnsignedPayloadSigner(S3SigV4Auth):
    """botocore's S3 signer with ``UNSIGNED-PAYLOAD``: a streamed body cannot be hashed up front."""

    def payload(self, request: AWSRequest) -> str:
        return UNSIGNED_PAYLOAD


class S3Client:
    """A bare aiohttp S3 client: each request is signed afresh, bodies are streamed both ways."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    def signed(self, target: Target, method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
        request = AWSRequest(method=method, url=f"{target.url}{path}", headers=headers)
        _UnsignedPayloadSigner(Credentials(*target.credentials), "s3", REGION).add_auth(request)
        return dict(request.headers.items())

    async def put(self, target: Target, path: str, body: bytes | AsyncIterator[bytes], size: int,
                  extra_headers: Mapping[str, str] | None = None) -> None:
        headers = self.signed(target, "PUT", path, {"Content-Length": str(size), **(extra_headers or {})})
        async with self.session.put(f"{target.url}{path}", data=body, headers=headers) as response:
            await _expect(response, 200, f"PUT {target.name}{path}")

    async def get(self, target: Target, path: str) -> int:
        """GET and count the body (reading it is the work; keeping it is not)."""
        headers = self.signed(target, "GET", path, {})
        received = 0
        async with self.session.get(f"{target.url}{path}", headers=headers) as response:
            await _expect(response, 200, f"GET {target.name}{path}")
            async for chunk in response.content.iter_any():
                received += len(chunk)
        return received

    async def request(self, target: Target, method: str, path: str, expected: int) -> None:
        headers = self.signed(target, method, path, {})
        async with self.session.request(method, f"{target.url}{path}", headers=headers) as response:
            await _expect(response, expected, f"{method} {target.name}{path}")


async def _expect(response: aiohttp.ClientResponse, status: int, what: str) -> None:
    if response.status != status:
        raise RuntimeError(f"{what}: HTTP {response.status}: {(await response.text())[:500]}")


# --- figures ---------------------------------------------------------------------------------------
class RssSampler:
    """Samples a process's VmRSS in the background; ``peak()`` is the highest since the last reset."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self._peak = 0
        self._task: asyncio.Task | None = None

    def status(self, field_name: str) -> int:
        """A ``/proc/PID/status`` memory field in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field_name)

    async def _run(self) -> None:
        while True:
            self._peak = max(self._peak, self.status("VmRSS"))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def reset(self) -> None:
        self._peak = self.status("VmRSS")

    def peak(self) -> int:
        return max(self._peak, self.status("VmRSS"))


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a server and its workers (``--workers N``): the process's own and its
    reaped children's, plus each live child's (Linux /proc)."""
    def fields(p: int) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
    own = fields(pid)
    ticks = sum(int(own[i]) for i in (11, 12, 13, 14))
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            ticks += sum(int(fields(int(child))[i]) for i in (11, 12))
        except FileNotFoundError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def percent(a: float | None, b: float | None) -> str:
    """a/b as a percentage for the tables, '-' when either is missing."""
    return f"{a / b * 100:5.1f}%" if a and b else "    -"
