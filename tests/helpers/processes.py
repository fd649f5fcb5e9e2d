"""Child processes of the multi-process tests (jax.distributed over local CPU processes)."""

import socket


def free_port() -> int:
    """A TCP port free on this machine now, for a coordinator address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(process, timeout=600) -> tuple[int, str]:
    """Waits for a child started with stdout=PIPE (stderr merged) -> (exit code, output); a
    child past the timeout is killed."""
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, out
