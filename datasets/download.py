"""`download(name)`: fetch a public set from its official address into data_dir/<name>/, checking sizes
and SHA-256 where we know them. Offline (or for sets behind a login) it fails saying where to put files."""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ctrbench.files import write_atomic

from .core import resolve_data_dir


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str                 # name under data_dir/<dataset>/ once fetched (and unpacked)
    sha256: str | None = None     # None: not published; we print the digest so it can be recorded


class DownloadError(RuntimeError):
    """Could not fetch; the message says what to download by hand and where to put it."""


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        write_atomic(target, lambda out: shutil.copyfileobj(response, out, length=1 << 22))


def _movielens_csv(archive: Path, target: Path) -> None:
    """ml-1m's ratings/users/movies (`::`-separated) joined into the sample's columns."""
    import pandas as pd
    with zipfile.ZipFile(archive) as z:
        def table(name, columns):
            with z.open(f"ml-1m/{name}") as f:
                return pd.read_csv(f, sep="::", engine="python", names=columns, encoding="latin-1")
        ratings = table("ratings.dat", ["user_id", "movie_id", "rating", "timestamp"])
        users = table("users.dat", ["user_id", "gender", "age", "occupation", "zip"])
        movies = table("movies.dat", ["movie_id", "title", "genres"])
    joined = ratings.merge(movies, on="movie_id").merge(users, on="user_id")
    columns = ["user_id", "movie_id", "rating", "timestamp", "title", "genres", "gender", "age", "occupation", "zip"]
    write_atomic(target, lambda out: joined[columns].to_csv(out, index=False))


def download(name: str, data_dir=None, timeout: float = 60.0) -> Path:
    """Fetch dataset `name` into data_dir/<name>/ and return that folder. Files already there and
    matching their checksum are kept."""
    from .registry import dataset_entry, list_datasets  # the datasets register their sources beside them
    folder = resolve_data_dir(data_dir) / name
    entry = dataset_entry(name)
    if entry.manual:
        raise DownloadError(entry.manual.format(folder=folder))
    if not entry.sources:
        entries = [dataset_entry(n) for n in list_datasets()]
        raise ValueError(f"no download for {name!r}; downloadable: {', '.join(e.name for e in entries if e.sources)} "
                         f"(fetched by hand: {', '.join(e.name for e in entries if e.manual)})")
    folder.mkdir(parents=True, exist_ok=True)
    for remote in entry.sources:
        target = folder / remote.filename
        if target.is_file() and (remote.sha256 is None or sha256_of(target) == remote.sha256):
            continue
        fetched = folder / Path(remote.url).name
        try:
            _fetch(remote.url, fetched, timeout)
        except (urllib.error.URLError, OSError) as error:
            raise DownloadError(
                f"could not fetch {remote.url} ({error}). Download it by hand and put "
                f"{remote.filename} in {folder}/ (or in DIR/{name}/ of a folder DIR of your choice, and name DIR "
                f"by $CTRBENCH_DATA_DIR, by --data-dir on the command line or data_dir=... in Python).") from None
        if fetched.suffixes[-2:] == [".tar", ".gz"]:
            with tarfile.open(fetched) as archive:
                member = next(m for m in archive.getmembers() if Path(m.name).name == remote.filename)
                with archive.extractfile(member) as source:
                    write_atomic(target, lambda out: shutil.copyfileobj(source, out, length=1 << 22))
            fetched.unlink()
        elif fetched.suffix == ".zip":
            _movielens_csv(fetched, target)
            fetched.unlink()
        digest = sha256_of(target)
        if remote.sha256 is not None and digest != remote.sha256:
            target.unlink()
            raise DownloadError(f"{remote.url}: SHA-256 {digest} does not match the expected {remote.sha256}")
        if remote.sha256 is None:
            print(f"{target}: sha256 {digest} (no published checksum to compare)")
    return folder
