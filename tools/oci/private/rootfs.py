"""Build the Python runtime layer from pinned Debian .debs (no base image, nothing pulled).

Each .deb is unpacked with `dpkg-deb -x`; what the (never run) maintainer scripts would have
produced is written here instead: merged-/usr links, /etc/passwd and /etc/group with the app user,
nsswitch.conf, the CA bundle, /etc/ld.so.cache (`ldconfig -r`), and a dpkg status.d entry per
package (so image scanners see the versions). Documentation other than copyright files, man
pages, locales and the stdlib parts neither image uses (UNUSED) are dropped. The result is written by tarball.write_layer (deterministic).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The directory of this script (not on sys.path under PYTHONSAFEPATH, which Bazel's stub sets).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tarball import Entry, finish_layer, require_fixed_hash_seed  # noqa: E402

APP_UID = 10001
DROP = ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
        "usr/share/bug", "usr/share/doc-base", "usr/share/menu", "usr/share/gcc", "usr/share/gdb",
        "var/cache/ldconfig", "var/lib/dpkg")
STDLIB = "usr/lib/python3.14/"
DYNLOAD = STDLIB + "lib-dynload/"
# What neither image uses (globs; each group's reason). The libraries these modules link are
# not unpacked at all (base_lock.py: UNUSED_BY_THE_IMAGES); the image contents test checks
# that every remaining ELF file finds the libraries it needs, the container and end-to-end
# tests that both images still run. About 18 MB of the layer's 71.
UNUSED = (
    # CPython's own test suite and test extension modules
    STDLIB + "test", DYNLOAD + "_test*", DYNLOAD + "_ctypes_test*", DYNLOAD + "xx*",
    DYNLOAD + "_xxtestfuzz*",
    # help() topics, attaching a debugger to a running process (_pyrepl stays: pydoc imports
    # its pager, and pyarrow imports pydoc)
    STDLIB + "pydoc_data", DYNLOAD + "_remote_debugging*",
    # terminal UI and line editing (their ncurses/readline libraries are not installed)
    STDLIB + "curses", DYNLOAD + "_curses*", DYNLOAD + "readline*",
    # sqlite3 and dbm.ndbm (their libraries are not installed; dbm.dumb stays)
    STDLIB + "sqlite3", STDLIB + "dbm/sqlite3.py", DYNLOAD + "_sqlite3*", DYNLOAD + "_dbm*",
    # glibc's iconv modules: Python decodes with its own codecs
    "usr/lib/x86_64-linux-gnu/gconv",
    # command-line tools of the packages (the image has no shell to run them from)
    "usr/bin/pdb3*", "usr/bin/pydoc3*", "usr/bin/pygettext3*", "usr/bin/py3clean", "usr/bin/py3compile",
    "usr/bin/py3versions",
    "usr/sbin/update-ca-certificates",
)
MERGED_USR = ("bin", "sbin", "lib", "lib64")
ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                  f"app:x:{APP_UID}:{APP_UID}:app:/app:/usr/sbin/nologin\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "etc/group": f"root:x:0:\napp:x:{APP_UID}:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\nservices: files\n",
}
# (path, mode, uid): directories the runtime needs; /var/lib/churn is the app's data root.
DIRS = (("tmp", 0o1777, 0), ("var/tmp", 0o1777, 0), ("app", 0o755, 0), ("root", 0o700, 0),
        ("proc", 0o555, 0), ("sys", 0o555, 0), ("dev", 0o755, 0), ("var/lib/churn", 0o755, APP_UID))
# OpenSSL looks in /usr/lib/ssl (the `openssl` package, pruned, ships these links).
SSL_LINKS = {"usr/lib/ssl/certs": "/etc/ssl/certs",
             "usr/lib/ssl/cert.pem": "/etc/ssl/certs/ca-certificates.crt"}


def run(*args: str) -> str:
    proc = subprocess.run(args, text=True, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"rootfs: {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def unpack(debs: list[Path], root: Path) -> list[str]:
    """Unpacks every .deb into `root`; returns their control stanzas (for dpkg status.d)."""
    stanzas = []
    for deb in debs:
        run("dpkg-deb", "-x", str(deb), str(root))
        control = run("dpkg-deb", "-f", str(deb)).rstrip("\n")
        stanzas.append(control.replace("\nDescription:", "\nStatus: install ok installed\nDescription:", 1))
    return stanzas


def merge_usr(root: Path) -> None:
    """/bin -> usr/bin etc. (the ELF interpreter is /lib64/ld-linux-x86-64.so.2)."""
    for name in MERGED_USR:
        top, usr = root / name, root / "usr" / name
        usr.mkdir(parents=True, exist_ok=True)
        if top.is_dir() and not top.is_symlink():
            shutil.copytree(top, usr, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(top)
        if not top.is_symlink():
            top.symlink_to("usr/" + name)


def prune(root: Path) -> None:
    """Drops documentation (keeping copyright files), man pages, locales, package caches, and
    the parts of the stdlib and of the packages that neither image uses (UNUSED)."""
    for rel in DROP:
        shutil.rmtree(root / rel, ignore_errors=True)
    for pattern in UNUSED:
        for path in sorted(root.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    doc = root / "usr/share/doc"
    for path in sorted(doc.rglob("*"), reverse=True) if doc.exists() else []:
        if path.is_symlink() or path.is_file():
            if path.name != "copyright":
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def configure(root: Path, stanzas: list[str]) -> None:
    """Writes what maintainer scripts would have: users, CA bundle, SSL links, ld.so.cache."""
    for rel, text in ETC_FILES.items():
        (root / rel).write_text(text)
    certs = sorted((root / "usr/share/ca-certificates").rglob("*.crt"))
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs))
    for rel, target in SSL_LINKS.items():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(link):
            link.symlink_to(target)
    ldconfig = shutil.which("ldconfig", path="/usr/sbin:/sbin:/usr/bin:/bin") or "ldconfig"
    run(ldconfig, "-r", str(root))
    shutil.rmtree(root / "var/cache/ldconfig", ignore_errors=True)  # aux-cache holds inode data
    status = root / "var/lib/dpkg/status.d"
    status.mkdir(parents=True)
    for stanza in stanzas:
        name = stanza.split("\n", 1)[0].removeprefix("Package: ")
        (status / name).write_text(stanza + "\n")


def tree_entries(root: Path) -> list[Entry]:
    """Entries for everything under `root`, with Debian's modes kept; hard links detected."""
    entries, seen = [], {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath, name)
            rel, st = str(path.relative_to(root)), path.lstat()
            mode = st.st_mode & 0o7777
            if path.is_symlink():
                entries.append(Entry(rel, "symlink", 0o777, target=os.readlink(path)))
                if name in dirnames:
                    dirnames.remove(name)  # os.walk does not follow it anyway
            elif path.is_dir():
                entries.append(Entry(rel, "dir", mode))
            elif path.is_file():
                entries.append(Entry(rel, "file", mode, source=str(path)))
                seen.setdefault((st.st_dev, st.st_ino), []).append(rel)
            else:
                raise SystemExit(f"rootfs: unsupported file type: /{rel}")
    return _hardlinks(entries, seen)


def _hardlinks(entries: list[Entry], inodes: dict) -> list[Entry]:
    """Turns all but the first (sorted) name of a multiply-linked file into hard links."""
    first = {}
    for names in inodes.values():
        names = sorted(names)
        for other in names[1:]:
            first[other] = names[0]
    return [Entry(e.path, "hardlink", e.mode, target=first[e.path]) if e.path in first else e
            for e in entries]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="layer blob (.tar.gz) to write")
    parser.add_argument("--descriptor", type=Path, required=True, help="descriptor JSON to write")
    parser.add_argument("--compile", action="store_true", help="add unchecked-hash .pyc files")
    parser.add_argument("debs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.compile:
        require_fixed_hash_seed()
    with tempfile.TemporaryDirectory(prefix="rootfs.") as tmp:
        root = Path(tmp, "root")
        root.mkdir()
        stanzas = unpack(sorted(args.debs), root)
        merge_usr(root)
        prune(root)
        configure(root, stanzas)
        entries = tree_entries(root)
        entries += [Entry(path, "dir", mode, uid=uid, gid=uid) for path, mode, uid in DIRS]
        finish_layer(entries, args.out, args.descriptor, args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
