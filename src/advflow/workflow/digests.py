"""What the Snakefile calls while Snakemake reads it, in the main process and in cluster jobs: the
environment every job inherits, the code digest of each rule (minimal reruns after a code change) and
the removal of a killed run's stale locks. No workflow script imports this module, so changing it
reruns nothing."""

from __future__ import annotations

import ast
import fcntl
import functools
import hashlib
import os
import socket
from pathlib import Path


def export_pythonpath(src: str) -> None:
    """Put ``src`` first on PYTHONPATH so every job (local, conda or cluster) imports this checkout."""
    others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *others])


def export_hdf5_locking(mode: bool | str) -> None:
    """Pass the config's ``hdf5_locking`` (true, false, "best-effort" or "auto") to every job."""
    from advflow.workflow.io import LOCKING_ENV

    os.environ[LOCKING_ENV] = str(mode).lower()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _module_file(package_root: Path, dotted: str) -> Path | None:
    """The source file of ``dotted`` (a module or package of the library), or None."""
    parts = dotted.split(".")
    if parts[0] != package_root.name:
        return None
    base = package_root.parent.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Every module an import statement anywhere in ``tree`` names, with the packages it runs
    (``from a.b import c`` imports ``a``, ``a.b`` and, if it is a module, ``a.b.c``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


@functools.lru_cache(maxsize=None)
def _read_module(path: Path, dotted: str) -> tuple[str, frozenset[str]]:
    """One source file, the module ``dotted`` ("" for a script), as (its normalized syntax tree, the
    modules it imports)."""
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return ast.unparse(tree), frozenset(_imported_modules(tree, package))


def _library_root(package_root: str | Path | None) -> Path:
    return Path(package_root) if package_root else Path(__file__).resolve().parents[1]  # src/advflow


def code_modules(script: str | Path, package_root: str | Path | None = None) -> dict[str, Path]:
    """The modules of this library a workflow script runs: those it imports, directly or through
    other modules (lazy imports inside functions included), as {dotted name: file}."""
    root = _library_root(package_root)
    pending, found = [(Path(script), "")], {}
    while pending:
        path, dotted = pending.pop()
        for name in _read_module(path, dotted)[1]:
            module = _module_file(root, name)
            if module is not None and name not in found:
                found[name] = module
                pending.append((module, name))
    return dict(sorted(found.items()))


@functools.lru_cache(maxsize=None)
def code_digest(script: str | Path, package_root: str | Path | None = None) -> str:
    """A digest of the code a workflow script runs: the script and every module of
    :func:`code_modules`. Comments, docstrings and formatting do not change it.

    The rules pass it as the ``code`` param, so Snakemake's params trigger reruns exactly the jobs
    whose code changed (and, through their outputs, what depends on them). docs/reruns.md.
    """
    digest = hashlib.sha256(_read_module(Path(script), "")[0].encode())
    for name, path in code_modules(script, package_root).items():
        digest.update(f"\0{name}\0".encode())
        digest.update(_read_module(path, name)[0].encode())
    return digest.hexdigest()[:16]


#: Held (shared) by every main Snakemake process of this workflow for its lifetime; see release_stale_locks.
RUNNING = "advflow-running"
_running_handle = None


def release_stale_locks(snakemake_dir: str | Path = ".snakemake", host: str | None = None) -> list[Path]:
    """Remove the directory locks of a Snakemake run that was killed, and mark this run as running.

    Called by the main Snakemake process when it reads the Snakefile. Each such process holds a
    shared ``flock`` on ``.snakemake/advflow-running`` until it exits; the kernel drops it when the
    process dies, SIGKILL included. Lock files in ``.snakemake/locks`` while nobody holds that flock
    were therefore left by a run that no longer exists: they are removed (what ``snakemake --unlock``
    does), so the next run goes on and rebuilds the killed jobs' outputs (``rerun-incomplete`` in the
    workflow profile). The file also lists the hosts of the runs since it was last reset; locks are
    only removed when all of them are this host, since on some shared filesystems a flock is seen by
    its own host only. Where the filesystem has no flock, nothing is removed and Snakemake's own
    message about ``--unlock`` stands. Returns the lock files removed.
    """
    global _running_handle
    if _running_handle is not None:  # this process's own earlier mark must not count as a live run
        _running_handle.close()
        _running_handle = None
    host = host or socket.gethostname()
    folder = Path(snakemake_dir)
    folder.mkdir(exist_ok=True)
    handle = open(folder / RUNNING, "a+")
    removed: list[Path] = []
    try:
        locks = sorted((folder / "locks").glob("*.lock"))
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run is alive: leave everything, add this host, share
            fcntl.flock(handle, fcntl.LOCK_SH)
            handle.write(f"{host}\n")
            handle.flush()
        else:  # no run alive that this host can see
            handle.seek(0)
            hosts = {line.strip() for line in handle if line.strip()}
            if hosts <= {host}:
                for lock in locks:
                    lock.unlink(missing_ok=True)
                    removed.append(lock)
            if hosts <= {host} or not locks:
                handle.seek(0)
                handle.truncate()
            handle.write(f"{host}\n")
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_SH)
    except OSError:
        handle.close()
        return removed
    _running_handle = handle
    return removed


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def user_model_digests(settings: dict) -> dict[str, str | None]:
    """``{"source_sha256", "checkpoint_sha256"}`` of a user's model (its factory's module file and its checkpoint,
    None where there is none): a rule's params, so that editing either reruns the model, and touching neither does.
    Hashed once per file per process."""
    from advflow.workflow.user_source import source_file

    out: dict[str, str | None] = {}
    for key, path in (("source_sha256", source_file(settings["module"])),
                      ("checkpoint_sha256", settings.get("checkpoint"))):
        if path is None or not Path(path).is_file():
            out[key] = None
            continue
        stat = Path(path).stat()
        out[key] = _content_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    return out


def dataset_digest(path: str | Path) -> str | None:
    """SHA-256 of a user's dataset: an npz file's content, or every file under an image folder (relative name and
    content), None when the path is missing (the dataset's own check says so)."""
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return _content_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(_content_digest(str(file.resolve()), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()
