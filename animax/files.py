"""Writing files and folders so that a reader never sees half of one.

Every writer of animax goes through here: the output is made under a hidden temporary name
beside its target (same file system, so the final rename is atomic) and renamed into place only
when complete; on any error the temporary is removed and an earlier target stays as it was.

    with AtomicFile("out/track.glb") as tmp:      # or atomic_write(path, lambda tmp: ...)
        tmp.write_bytes(data)
    with AtomicFolder("out/horse") as tmp:        # replaces out/horse as a whole
        np.save(tmp / "betas.npy", betas)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class AtomicFile:
    """A temporary file beside `path` (suffix kept, so writers that go by it still work):
    `commit()` renames it onto `path`, `discard()` removes it. As a context manager it yields the
    temporary path and commits when the block succeeds, discards when it raises."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=self.path.suffix)
        os.close(fd)
        os.chmod(tmp, 0o644)          # mkstemp's files are owner-only; a plain open's are not
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, value, traceback):
        self.commit() if kind is None else self.discard()


def atomic_write(path, write) -> None:
    """Calls write(tmp_path) and renames the result onto `path`, so no half file is left."""
    with AtomicFile(path) as tmp:
        write(tmp)


class AtomicFolder:
    """An empty hidden folder beside `path` to fill: `commit()` puts it in place of `path` as a
    whole (`replace_folder`), `discard()` deletes it. As a context manager it yields the folder
    and commits when the block succeeds, discards when it raises."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"))
        # mkdtemp's folders are owner-only; a plain mkdir's are readable by all (reading the umask
        # instead would change it for the other export threads).
        self.tmp.chmod(0o755)

    def commit(self) -> None:
        replace_folder(self.tmp, self.path)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise


def replace_folder(new, target) -> None:
    """Renames folder `new` onto `target` on the same file system. An existing target is moved
    aside first (os.replace cannot replace a non-empty folder), put back if the swap fails, and
    deleted once it succeeded: a reader sees the old folder or the new one, never a mix."""
    new, target = Path(new), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        os.replace(target, aside / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        if aside is not None:
            os.replace(aside / target.name, target)
            aside.rmdir()
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
