"""Fetch a data archive from a local copy or its URL, always checking its sha256."""
import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_archive(
    dest: Path,
    *,
    sha256: str,
    local_dirs: Sequence[Path] = (),
    url: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Put the archive at `dest`: keep it if its checksum is right, else copy it from the first
    local directory that has it, else download it; verify the sha256 in every case.

    dest (Path): Where the archive goes (its name is looked for in each local dir).
    sha256 (str): The expected checksum.
    local_dirs (Sequence[Path]): Directories that may hold a copy.
    url (Optional[str]): Public download address, tried when no local copy exists.
    RETURNS (Path): dest.
    """
    dest = Path(dest)
    tried: List[str] = []
    if dest.exists():
        if sha256_of(dest) == sha256:
            log(f"{dest}: present, sha256 ok")
            return dest
        tried.append(f"{dest} (checksum mismatch)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for folder in local_dirs:
        candidate = Path(folder) / dest.name
        if not candidate.is_file():
            tried.append(f"{candidate} (not found)")
            continue
        actual = sha256_of(candidate)
        if actual != sha256:
            raise ValueError(
                f"{candidate}: sha256 is {actual}, expected {sha256}: the file is damaged or not "
                "the expected release"
            )
        _atomic_copy(candidate, dest)
        log(f"{dest}: copied from {candidate}, sha256 ok")
        return dest
    if url:
        tmp = dest.with_name(f".{dest.name}.download")
        try:
            urllib.request.urlretrieve(url, tmp)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            tried.append(f"{url} ({err})")
        else:
            actual = sha256_of(tmp)
            if actual != sha256:
                tmp.unlink()
                raise ValueError(f"{url}: downloaded file has sha256 {actual}, expected {sha256}")
            tmp.replace(dest)
            log(f"{dest}: downloaded from {url}, sha256 ok")
            return dest
    raise FileNotFoundError(
        f"Could not get {dest.name}; looked in: " + "; ".join(tried)
        + ". Put the file in one of these places (or set the data location in project.yml vars)."
    )


def _atomic_copy(src: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    Path(tmp).unlink()
    try:
        shutil.copyfile(src, tmp)
        Path(tmp).replace(dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def extract_flat(archive: Path, out_dir: Path, members: Sequence[str]) -> List[Path]:
    """Extract the named files (by base name, wherever they sit in the zip) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(archive) as zf:
        by_name = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        missing = [m for m in members if m not in by_name]
        if missing:
            raise ValueError(f"{archive}: missing {missing}; it holds {sorted(by_name)}")
        for member in members:
            target = out_dir / member
            with zf.open(by_name[member]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append(target)
    return written
