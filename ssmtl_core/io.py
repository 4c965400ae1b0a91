"""Small I/O helpers shared by every cache: atomic writes, stable hashes, provenance.

Every artifact of the study says what made it (design rule): caches are keyed by their settings and carry a
JSON of metadata; writes go to a temporary file in the same folder and are renamed into place, so an
interrupted run never leaves a half-written file that a rerun would mistake for finished work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import SSMTLError

#: errno values that mean "the disk is full" (ENOSPC, and EDQUOT: over quota).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: errno values that mean "this folder cannot be written" (read-only file system, no permission).
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def os_error_message(exc: OSError, path: str | Path | None = None) -> str:
    """One line for a failed file operation: what failed, on which file, and what to do about it.

    Args:
        exc: the error.
        path: the file being written, when the error itself does not name one.
    """
    name = exc.filename or path
    where = f" {name}" if name else ""
    if exc.errno in DISK_FULL:
        return (f"no space left on the disk while writing{where}. Free some space (or point --cache / --out at a "
                "larger disk) and rerun: finished work is kept and nothing half-written was left.")
    if exc.errno in NOT_WRITABLE:
        return (f"cannot write{where}: {exc.strerror or 'permission denied'} (read-only or not yours). Pass a "
                "writable --cache / --out, or fix the folder's permissions.")
    return f"{exc.strerror or type(exc).__name__} ({'errno ' + str(exc.errno) if exc.errno else 'I/O error'}):{where}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temps(folder: str | Path, stem: str | None = None) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when its process died (kill -9, power).

    Only files of this machine whose writing process is gone are removed, so a live writer's file is safe.
    Files that cannot be removed (a read-only cache) are left alone.

    Args:
        folder: where to look.
        stem: only the temporary files of this destination (``stem`` of its name); None: all of them, and the
            :class:`Claim` files that no live process holds.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    pattern = re.compile(rf"^\.{re.escape(stem) if stem is not None else '.+'}\.tmp(\d+)@{re.escape(_HOST)}\.")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        elif stem is None and entry.name.startswith(".") and entry.name.endswith(".claim"):
            # A claim file nobody holds: its run died after finishing (or before starting) its work.
            claim = Claim(folder / entry.name[1:-len(".claim")])
            with contextlib.suppress(SSMTLError, OSError):
                if claim.acquire():
                    claim.release()
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path`` atomically.

    The temporary file is named ``.<stem>.tmp<pid>@<host>.<random><suffix>``, so the next write of the same
    destination removes what a killed writer left (:func:`remove_stale_temps`). A full disk or a folder that
    cannot be written ends in :class:`SSMTLError` naming ``path``; no partial file is left either way.

    Args:
        path: the final destination.
        suffix: suffix for the temporary file (some writers, e.g. ``np.savez``, insist on one).
    """
    path = Path(path)
    suffix = suffix if suffix is not None else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.stem)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp{os.getpid()}@{_HOST}.", suffix=suffix or ".tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise SSMTLError(os_error_message(exc, path)) from None
    os.close(fd)
    # mkstemp creates files readable by the owner only; give them the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        # The disk filled up, or the folder is read-only: one message naming the destination. Other errors
        # about other files (an unreadable input) keep their own type.
        if exc.errno in DISK_FULL or (exc.errno in NOT_WRITABLE and exc.filename in (None, str(tmp_path))):
            raise SSMTLError(os_error_message(exc, path)) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


class Claim:
    """An exclusive claim on producing one file, so that concurrent runs never do the same work twice.

    The claim is a lock file ``.<name>.claim`` next to ``target``, held with ``fcntl.flock``. The kernel drops
    the lock when its process ends, however it ends (kill -9 included), so a claim left by a dead run is stale
    by construction and the next :meth:`acquire` takes it over: there is no timeout to guess. The file records
    who holds it (host, pid, start time) for messages. Typical use::

        claim = Claim(cache_file)
        if claim.acquire():            # or acquire(wait=True) to wait for another process holding it
            try: ... write cache_file ...
            finally: claim.release()
        else: ...                      # another process is producing cache_file right now (claim.holder())

    Args:
        target: the file whose production is claimed.
    """

    def __init__(self, target: str | Path):
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.claim"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the claim."""
        return self._fd is not None

    def acquire(self, wait: bool = False) -> bool:
        """Take the claim; False (at once) when another live process holds it, unless ``wait``.

        Raises:
            SSMTLError: the folder cannot be written (read-only cache, full disk).
        """
        import fcntl  # POSIX only: imported where a claim is taken

        if self._fd is not None:
            return True
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise SSMTLError(os_error_message(exc, self.path)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            # The previous holder may have removed the file between our open and our lock: then we locked a
            # file nobody else will see, so start again on the current one.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds the claim, for messages (``process 1234 on host since ...``)."""
        try:
            info = json.loads(self.path.read_text())
            return f"process {info['pid']} on {info['host']} (since {info['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        """Give the claim up (and remove its file)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Claim:
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Save arrays to an uncompressed ``.npz``, atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` into a plain dict (the file is closed afterwards)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def stable_hash(data: Any, length: int = 10) -> str:
    """A short, stable hex digest of JSON-serialisable ``data`` (used in cache keys)."""
    text = json.dumps(data, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, or of every file in a folder (sorted by relative path)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, for provenance JSON."""
    versions = {"python": platform.python_version()}
    for name in ("ssmtl-study", "torch", "torchvision", "numpy", "opencv-python-headless", "scikit-learn",
                 "scipy", "ultralytics", "openvino"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


#: Tracked files whose uncommitted changes can change a number (the package, the notebooks, their parameters,
#: the benchmarks and the scripts that set the study up); results (reports/, bench/results/) and prose (*.md)
#: cannot, and regenerating committed reports must not make every later step look "dirty".
CODE_PATHS = ("ssmtl_core/", "notebooks/", "params/", "bench/", "scripts/", "pyproject.toml", "environment.yml",
              "run_all.sh")
NOT_CODE = ("bench/results/",)
#: How many changed files ``code_provenance`` names (the count says how many there were).
MAX_CHANGED_NAMED = 5
_PACKAGE_DIR = Path(__file__).resolve().parent
_CODE: dict[str, Any] | None = None


def code_provenance(refresh: bool = False) -> dict[str, Any]:
    """Which code made a result: the project's git commit, uncommitted changes, the package version and a digest
    of the package source, for every ``metrics.json``, summary, checkpoint, benchmark and report README.

    Computed once per process (the code a process imported does not change under it; ``refresh`` computes it
    again). Never raises: without git, outside a checkout (an installed wheel, a tarball, a copied tree) the
    commit is None, ``note`` says why, and ``source_digest`` still names the code.

    Returns:
        ``commit`` (full sha or None), ``dirty`` (uncommitted changes to tracked code files, see
        :data:`CODE_PATHS`; None when unknown), ``changed`` (up to five of those files) and ``changed_count``,
        ``package_version``, ``source_digest`` (sha256 of ``ssmtl_core/**/*.py``, see :func:`source_digest`).
    """
    global _CODE
    if _CODE is None or refresh:
        _CODE = describe_code(_PACKAGE_DIR)
    return {**_CODE, "changed": list(_CODE["changed"])}


def describe_code(package_dir: str | Path) -> dict[str, Any]:
    """:func:`code_provenance` for the package in ``package_dir`` (uncached; the checkout is its parent folder)."""
    package_dir = Path(package_dir).resolve()
    info: dict[str, Any] = {"commit": None, "dirty": None, "changed": [], "changed_count": None,
                            "package_version": __version__, "source_digest": source_digest(package_dir)}
    try:
        status = _git_status(package_dir.parent)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError) as exc:
        info["note"] = f"git failed: {type(exc).__name__}"
        return info
    if isinstance(status, str):
        info["note"] = status
        return info
    commit, changed = status
    code = [f for f in changed if f.startswith(CODE_PATHS) and not f.startswith(NOT_CODE) and not f.endswith(".md")]
    info.update(commit=commit, dirty=bool(code), changed=code[:MAX_CHANGED_NAMED], changed_count=len(code))
    if commit is None:
        info["note"] = "the checkout has no commit yet"
    return info


def _git_status(root: Path) -> tuple[str | None, list[str]] | str:
    """(HEAD's sha or None before the first commit, the tracked files with uncommitted changes) of the checkout
    whose top is ``root``, or why there is none (a string)."""
    git = shutil.which("git")
    if git is None:
        return "git is not installed"
    # The caller's git variables must not point us at another repository; optional locks off, so that reading
    # the status never takes index.lock from under a concurrent git command.
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env.update(GIT_OPTIONAL_LOCKS="0", LC_ALL="C")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([git, "-C", str(root), *args], capture_output=True, env=env, timeout=20)

    top = run("rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return f"not a git checkout: {root}"
    if Path(top.stdout.decode().strip()).resolve() != root:
        # e.g. a wheel installed into a virtualenv inside some checkout: that checkout's commit is not ours
        return f"not a git checkout: {root} lies inside {top.stdout.decode().strip()}"
    head = run("rev-parse", "--verify", "-q", "HEAD")
    commit = head.stdout.decode().strip() if head.returncode == 0 else None
    status = run("status", "--porcelain=v1", "-z", "--untracked-files=no")
    if status.returncode != 0:
        return f"git status failed: {status.stderr.decode(errors='replace').strip()[:200]}"
    changed, entries = [], iter(status.stdout.decode().split("\0"))
    for entry in entries:
        if len(entry) > 3:
            changed.append(entry[3:])
            if entry[0] in "RC":  # a staged rename or copy: the next entry is where it came from
                next(entries, None)
    return commit, sorted(changed)


def source_digest(package_dir: str | Path) -> str:
    """sha256 over the sorted relative paths and contents of every ``*.py`` under ``package_dir``: names the
    package's code where git cannot (an installed wheel, a tarball), and keys the runner's steps on it."""
    package_dir = Path(package_dir)
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py"), key=lambda p: p.relative_to(package_dir).as_posix()):
        with contextlib.suppress(OSError):
            content = path.read_bytes()
            digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
            digest.update(content + b"\0")
    return digest.hexdigest()


def machine_info() -> dict[str, Any]:
    """The CPU model, its flags that decide the fast paths, core count and GPU (if any), for benchmarks and reports.

    ``cpu_flags`` lists which of ``avx2``, ``avx512f``, ``avx512_vnni``, ``avx512_bf16``, ``amx_bf16`` and
    ``amx_int8`` the CPU has (empty where ``/proc/cpuinfo`` is missing): whether bf16 and int8 run natively.
    """
    cpu, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        pairs = [line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line]
        fields = {key.strip(): value.strip() for key, value in pairs}  # the last core's; all cores are alike
        cpu = fields.get("model name", cpu)
        flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    info: dict[str, Any] = {"cpu": cpu, "cpu_flags": [f for f in wanted if f in flags], "cores": os.cpu_count(),
                            "platform": platform.platform()}
    with contextlib.suppress(Exception):
        import torch  # heavy, and every module imports this one: only for the GPU's name

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info
