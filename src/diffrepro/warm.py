"""The warm interpreter: a pipeline's jobs run as forks of one process that has imported torch already.

Every stage job is a fresh `diffrepro <stage>` process, and importing torch and the plotting and
table libraries is most of a short job's start-up (about 1.5 of its 1.6 s on a 2-core machine; the
stage's own modules take 0.2 s). While a pipeline runs, one process (`python -m diffrepro.warm
SOCKET`) holds those libraries imported, and nothing of diffrepro itself, so a job always runs the
project's code as it is on disk at that moment.

A job's command (the `diffrepro` console script, for a stage; never `cli.main` called with arguments)
finds the socket in DIFFREPRO_WARM, hands over its command line, working folder, environment and its
standard streams (the descriptors themselves: output and log go where the engine sent them) and
waits. A fork of the warm process runs the job in a session of its own; the command forwards the
signals it gets (SIGTERM, SIGINT, SIGHUP) and exits with the job's status, and should the command
itself be killed, the job is killed with it.

What a job computes does not change: the fork has imported torch as a fresh process does and has
computed nothing (no thread pool, no CUDA context yet). A command whose environment differs from the
warm process's in anything read when libraries load (OpenMP, MKL, CUDA, torch, matplotlib, Python's
and the linker's variables: LOAD_TIME_PREFIXES) is refused and runs as its own process, while a warm
process for that environment starts beside this one for the commands after it (Snakemake gives each
job OMP_NUM_THREADS and the like; DVC does not). A command also runs as its own process when the
socket is missing, DIFFREPRO_WARM is unset or `off`, or it runs under torchrun.

Who starts one, on Linux: the Snakefile (onstart, unless DIFFREPRO_WARM is set already) and the test
suite (one per worker); `diffrepro warm COMMAND...` runs any command with one (`diffrepro warm dvc
repro`). What differs for a job: its process id and session, and Snakemake's benchmark columns for CPU
and memory, which measure the waiting command (the wall seconds are the job's).
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ENV = "DIFFREPRO_WARM"
OFF = ("", "0", "off", "no", "false")
# variables a library reads when it loads (in the warm process: once, at its start)
LOAD_TIME_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "DNNL_", "ONEDNN_", "CUDA_", "NVIDIA_",
                      "TORCH", "PYTORCH_", "TRITON_", "NCCL_", "HIP_", "ROCR_", "LD_", "PYTHON", "MALLOC",
                      "MPL", "MATPLOTLIB")
PRELOAD = ("torch", "numpy", "matplotlib.pyplot", "pandas", "yaml", "jsonschema", "tqdm", "safetensors.torch")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_HEADER = struct.Struct("!I")


def load_time_env(env) -> dict:
    """The variables of `env` that a library may read when it loads (LOAD_TIME_PREFIXES)."""
    return {k: v for k, v in env.items() if k.startswith(LOAD_TIME_PREFIXES)}


# ----- the command's side ------------------------------------------------------------------------

def delegate(argv: list) -> int | None:
    """Run `diffrepro ARGV` in the warm process named by DIFFREPRO_WARM and return its exit code;
    None when there is none to run it (no socket, refused): the caller runs the job itself."""
    path = os.environ.get(ENV, "")
    if path.lower() in OFF or "WORLD_SIZE" in os.environ:
        return None
    request = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ),
                          "python": _python(), "path": sys.path, "started": _process_started()}).encode()
    for _ in range(2):  # the warm process for this environment, or the one it names for it
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            socket.send_fds(conn, [_HEADER.pack(len(request)) + request], [0, 1, 2])
            answer = _read_line(conn)
        except (OSError, ValueError) as exc:
            conn.close()
            return _missed(f"{path}: {exc.strerror or exc}")
        if answer.startswith("run "):
            break
        conn.close()
        if not answer.startswith("redirect "):
            return _missed(answer.partition(" ")[2] or "no answer")
        path = answer.partition(" ")[2]
    else:
        return _missed("redirected twice")
    pid = int(answer.split()[1])
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, frame: _signal(pid, signum))
    status = _read_line(conn)
    kind, _, value = status.partition(" ")
    if kind == "exit":
        return int(value)
    if kind == "signal":  # die the way the job died
        signal.signal(int(value), signal.SIG_DFL)
        os.kill(os.getpid(), int(value))
        return 128 + int(value)
    print(f"diffrepro: error: the warm interpreter ({path}) lost the job (process {pid})", file=sys.stderr)
    return 1


def _missed(why: str) -> None:
    """Why the job runs as its own process although DIFFREPRO_WARM names a warm process (cli.main
    hands it to runtime.process_age: the log says it beside the start-up)."""
    global MISSED
    MISSED = why


MISSED: str | None = None


def _python() -> list:
    """The interpreter and its environment (a venv shares its interpreter with others)."""
    return [os.path.realpath(sys.executable), sys.prefix]


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _read_line(conn) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _process_started() -> float | None:
    """This process's start, epoch seconds (Linux: /proc), so the job's start-up counts from here."""
    from .runtime import process_age_seconds  # the harness; this module is not a stage's code

    age = process_age_seconds()
    return None if age is None else time.time() - age


# ----- the warm process --------------------------------------------------------------------------

def serve(path: str) -> None:
    """Import PRELOAD, then run each request on `path` as a fork until the parent process ends. A
    request from another environment (LOAD_TIME_PREFIXES) is sent to a warm process of its own,
    started on the first such request (which runs as its own process meanwhile)."""
    parent = os.getppid()
    _die_with_parent()
    # a terminal's Ctrl-C reaches the commands (each forwards it to its job), not this process or the
    # handlers forked from it, which end with their parent (the engine) and their job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for name in [m for m in sys.modules if m == "diffrepro" or m.startswith("diffrepro.")]:
        del sys.modules[name]  # a job imports the project's code afresh, as it is on disk
    mine = _key(os.environ)
    others: dict = {}  # key -> the warm process for that environment
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    os.chmod(path + ".tmp", 0o600)
    listener.listen(64)
    os.replace(path + ".tmp", path)  # connectable once listening
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-job handlers are reaped by the kernel
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], 1.0)
        if not ready:
            continue
        conn, _ = listener.accept()
        fds = []
        try:
            conn.settimeout(10)
            request, fds = _receive(conn)
            if request is None:
                continue
            conn.settimeout(None)
            if request["python"] != _python():
                conn.sendall(b"refused another Python\n")
            elif _key(request["env"]) != mine:
                conn.sendall(f"{_other(others, request, os.path.dirname(path))}\n".encode())
            elif os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                try:
                    _handle(conn, fds, request)
                finally:
                    os._exit(0)
        except (OSError, ValueError):
            pass
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


def _key(env) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(sorted(load_time_env(env).items())).encode()).hexdigest()[:16]


def _other(others: dict, request, folder: str, most: int = 4) -> str:
    """The answer for a request from another environment: the warm process for it, started now if
    there is none (this request is refused meanwhile); at most `most` of them."""
    key = _key(request["env"])
    sock = os.path.join(folder, key)
    mine, theirs = load_time_env(os.environ), load_time_env(request["env"])
    differ = ", ".join(sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)))
    pid = others.get(key)
    if pid is not None:
        try:
            os.kill(pid, 0)
            return f"redirect {sock}" if os.path.exists(sock) else f"refused warming up for {differ}"
        except ProcessLookupError:  # it ended: start another
            del others[key]
    if len(others) >= most:
        return "refused too many environments"
    others[key] = _spawn(sock, request["env"]).pid
    return f"refused warming up for {differ}"


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the loop's parent check ends it within a second


def _receive(conn):
    """(request, [stdin, stdout, stderr] descriptors) from a command of this user; (None, [])
    for anything else."""
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    if uid != os.getuid():
        return None, []
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < _HEADER.size or len(fds) != 3:
        return None, fds
    size = _HEADER.unpack(data[:_HEADER.size])[0]
    data = data[_HEADER.size:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None, fds
        data += chunk
    return json.loads(data), fds


def _handle(conn, fds, request) -> None:
    """In a fork of the warm process: fork the job, watch the job and the command, report the status."""
    pid = os.fork()
    if pid == 0:
        _become_job(request, fds, conn)
    for fd in fds:  # the job's now; a reader of the command's output sees its end when the job ends
        os.close(fd)
    conn.sendall(f"run {pid}\n".encode())
    _watch(conn, pid)


def _watch(conn, pid: int) -> None:
    """Wait for the job; the command's end of the connection closing first means the command was
    killed: the job and its children are killed too. Then the command gets the job's status."""
    try:
        watched = os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3: look every 50 ms
        watched = None
    listening = [conn]
    while True:
        waiting = listening + ([watched] if watched is not None else [])
        ready, _, _ = select.select(waiting, [], [], None if watched is not None else 0.05)
        if conn in ready and not conn.recv(64):
            listening = []
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if watched is None or watched in ready:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
    if os.WIFSIGNALED(status):
        message = f"signal {os.WTERMSIG(status)}"
    else:
        message = f"exit {os.waitstatus_to_exitcode(status)}"
    try:
        conn.sendall((message + "\n").encode())
    except OSError:
        pass


def _become_job(request, fds, conn) -> None:
    """In the fork: take the command's streams, folder, environment and arguments; run the stage."""
    import atexit
    import importlib
    import traceback

    code = 1
    try:
        os.setsid()  # the command forwards signals; a terminal's Ctrl-C reaches the job once
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            if fd > 2:
                os.close(fd)
        conn.close()
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        sys.argv = ["diffrepro", *request["argv"]]
        importlib.invalidate_caches()
        sys.stdout.reconfigure(line_buffering=os.isatty(1))

        from diffrepro import cli, runtime

        runtime.JOB_STARTED = request["started"] or time.time()
        code = cli.main(request["argv"]) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - what the process would print before exiting with 1
        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if code == -signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code & 0xFF)


# ----- starting and stopping one -----------------------------------------------------------------

class Warm:
    """A warm process started by `start`; `stop()` ends it and removes its socket."""

    def __init__(self, proc: subprocess.Popen, folder: str):
        self.proc, self.folder = proc, folder
        self.path = os.path.join(folder, "socket")

    def ready(self, timeout: float = 30.0) -> bool:
        """Wait until it accepts jobs (it imports torch first: a second or two)."""
        deadline = time.time() + timeout
        while not os.path.exists(self.path) and self.proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        return os.path.exists(self.path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def start(env=None) -> Warm:
    """Start a warm process for jobs whose environment is `env` (default: this one) and return it
    at once: jobs that start before it is ready run as their own processes."""
    env = os.environ if env is None else env
    folder = tempfile.mkdtemp(prefix="diffrepro-warm-")  # mode 0700: this user's alone
    if len(os.path.join(folder, "socket")) > 100:  # a Unix socket's path has room for about 107 bytes
        os.rmdir(folder)
        folder = tempfile.mkdtemp(prefix="diffrepro-warm-", dir="/tmp")
    return Warm(_spawn(os.path.join(folder, "socket"), env), folder)


def _spawn(sock: str, env) -> subprocess.Popen:
    """A warm process listening on `sock`, with `env` (less DIFFREPRO_WARM) as its environment."""
    env = {k: v for k, v in env.items() if k != ENV}
    return subprocess.Popen([sys.executable, "-m", "diffrepro.warm", sock], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# what Snakemake sets for each job to its `threads` (snakemake.shell)
SNAKEMAKE_THREAD_VARS = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def start_for_jobs(snakemake_threads: int | None = None, wait: float = 30.0) -> Warm | None:
    """A warm process for the jobs this process starts (DIFFREPRO_WARM set in its environment),
    unless DIFFREPRO_WARM is set already (`off`, or one the caller started). `snakemake_threads`:
    the jobs are Snakemake's with that many threads, whose thread variables it starts with. Waits
    up to `wait` seconds for it to be ready, so that every job finds it (about 1.5 s of one core)."""
    if ENV in os.environ or not sys.platform.startswith("linux"):  # it uses Linux's /proc, pidfd, peer creds
        return None
    env = dict(os.environ)
    if snakemake_threads is not None:
        env.update(dict.fromkeys(SNAKEMAKE_THREAD_VARS, str(snakemake_threads)))
        from .runtime import passive_wait

        if "OMP_WAIT_POLICY" not in env and passive_wait(snakemake_threads):  # as each job's command sets it
            env["OMP_WAIT_POLICY"] = "PASSIVE"
    warm = start(env)
    os.environ[ENV] = warm.path
    if wait:
        warm.ready(wait)
    return warm


class WarmTool:
    HELP = "run a command (dvc repro, a shell script) with a warm interpreter for the diffrepro jobs it starts"

    @staticmethod
    def add_arguments(p):
        import argparse

        p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")

    @staticmethod
    def run(args) -> int:
        if not args.command:
            print("diffrepro warm: error: give a command to run (diffrepro warm dvc repro)", file=sys.stderr)
            return 2
        warm = start_for_jobs()
        try:
            return subprocess.call(args.command)
        except FileNotFoundError:
            print(f"diffrepro warm: error: command not found: {args.command[0]}", file=sys.stderr)
            return 127
        finally:
            if warm is not None:
                warm.stop()
                os.environ.pop(ENV, None)


if __name__ == "__main__":
    serve(sys.argv[1])
