"""Which code made a number: the commit of the checkout ("+dirty" where its code has local changes) and
`code_tree`, a content identity of the source as it was, uncommitted changes included.

`code_tree` is the git tree id of the code paths (CODE_PATHS: the packages and pyproject.toml), hashed
here from the files themselves as git hashes blobs and trees. So it needs no .git: a device's copy of the
tree with a stale .git, or an unpacked archive, gets the same id as the commit whose code it holds, and a
dirty run whose code was committed later can be traced to that commit (`commits_by_code_tree`).
Imports nothing of ours: the environment, the gate and the report all use it.
"""
from __future__ import annotations

import functools
import hashlib
import os
import stat
import subprocess
from pathlib import Path

# The repository root: this file is bench/store/code_identity.py in a source checkout.
REPO = Path(__file__).resolve().parents[2]
# What "the code" is; results/, tests/ and the docs can change without changing a measurement.
CODE_PATHS = ("bench", "datasets", "models", "pyproject.toml")
# Files a checkout holds that git does not track (build and cache output), left out where there is no git.
UNTRACKED_PARTS = ("__pycache__", ".egg-info", ".pytest_cache", "build", ".benchmarks")
UNTRACKED_SUFFIXES = (".pyc", ".pyo", ".so")
# Data files inside the packages (the gate's baseline) are results, not code.
NOT_CODE_SUFFIXES = (".json",)
NOT_CODE_PATHSPEC = ":(exclude,glob)**/*.json"


def git(root: Path, *args: str) -> str | None:
    """git's stdout, stripped; None where git is missing, `root` is no checkout, or the command fails."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(root: Path = REPO) -> str | None:
    """The checkout's commit, suffixed '+dirty' if the code (CODE_PATHS) has local changes or new files; None
    without git.

    Changes under results/ (a run writes its own records) or tests do not count: the code is as it was."""
    commit = git(root, "rev-parse", "HEAD")
    if commit is None:
        return None
    return commit + ("+dirty" if code_changed(root) else "")


def code_changed(root: Path = REPO) -> bool | None:
    """Whether the code (CODE_PATHS, results and baselines aside) differs from HEAD, new files included: the
    one definition of "dirty" that records and the gate's baselines share; None without git."""
    status = git(root, "status", "--porcelain", "--", *CODE_PATHS, NOT_CODE_PATHSPEC)
    return None if status is None else bool(status)


def is_dirty(commit: str | None) -> bool:
    return bool(commit) and str(commit).endswith("+dirty")


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _tree_id(entries: list[tuple[str, str, str]]) -> str:
    """git's id of a tree of (mode, name, id) entries; git sorts a sub-tree's name as if it ended in '/'."""
    body = b"".join(f"{mode} {name}".encode() + b"\0" + bytes.fromhex(object_id)
                    for mode, name, object_id in sorted(entries, key=lambda e: e[1] + ("/" if e[0] == "40000" else "")))
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def _tracked_files(root: Path) -> list[str] | None:
    """The files under CODE_PATHS that git tracks or would track (new ones not ignored), as they are in
    the work tree (deleted ones left out); None where `root` is no git checkout."""
    listing = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CODE_PATHS,
                   NOT_CODE_PATHSPEC)
    if listing is None:
        return None
    return [name for name in listing.split("\0") if name and (root / name).is_file()]


def _walked_files(root: Path) -> list[str]:
    """The files under CODE_PATHS without git: everything but build and cache output."""
    found = []
    for path in CODE_PATHS:
        top = root / path
        if top.is_file():
            found.append(path)
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not any(part in d for part in UNTRACKED_PARTS)]
            for name in files:
                if not name.endswith(UNTRACKED_SUFFIXES + NOT_CODE_SUFFIXES):
                    found.append(Path(folder, name).relative_to(root).as_posix())
    return found


def code_tree(root: Path = REPO) -> str | None:
    """The git tree id of CODE_PATHS as the work tree holds them now (what `git add` of the code paths would
    commit, where git knows the checkout, else every source file); None where none of the paths exists."""
    root = Path(root)
    files = _tracked_files(root)
    if files is None:
        files = _walked_files(root)
    if not files:
        return None
    return _hash_files([(name, "100755" if (root / name).stat().st_mode & stat.S_IXUSR else "100644",
                         _blob_id((root / name).read_bytes())) for name in files])


def _hash_files(files: list[tuple[str, str, str]]) -> str:
    """The tree id of (path, mode, blob id) files, their folders made into sub-trees as git makes them."""
    tree: dict = {}
    for name, mode, blob in files:
        node = tree
        *folders, leaf = name.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = (mode, blob)
    return _hash_tree(tree)


def _hash_tree(node: dict) -> str:
    entries = [("40000", name, _hash_tree(child)) if isinstance(child, dict) else (child[0], name, child[1])
               for name, child in node.items()]
    return _tree_id(entries)


def commit_code_tree(commit: str, root: Path = REPO) -> str | None:
    """`code_tree` of a commit's own files, from git's tree ids (no checkout needed)."""
    listing = git(root, "ls-tree", "-r", commit, "--", *CODE_PATHS)
    if not listing:
        return None
    files = []
    for line in listing.splitlines():
        meta, name = line.split("\t", 1)
        mode, _, object_id = meta.split()
        if not name.endswith(NOT_CODE_SUFFIXES):
            files.append((name, mode, object_id))
    return _hash_files(files)


@functools.lru_cache(maxsize=4)
def commits_by_code_tree(root: Path = REPO) -> dict[str, str]:
    """{code_tree: the oldest commit of the current history with that code}: a dirty run's tree found here
    names the commit that holds its code. {} without git."""
    log = git(Path(root), "log", "--format=%H", "--reverse")
    found: dict[str, str] = {}
    for commit in (log or "").split():
        tree = commit_code_tree(commit, Path(root))
        if tree is not None:
            found.setdefault(tree, commit)
    return found
