"""The dynamic-linking facts of an ELF file, read with the stdlib (no binutils in the toolchain).

Why: the runtime layer leaves out libraries whose stdlib modules neither image uses
(tools/oci/private/rootfs.py); the image test must prove that every ELF file left in an image
still finds every library it names, as the dynamic loader would look for it.
"""

from __future__ import annotations

import posixpath
import struct
from dataclasses import dataclass

SHT_DYNAMIC = 6
DT_NULL, DT_NEEDED, DT_RPATH, DT_RUNPATH = 0, 1, 15, 29
# Where the loader looks after RPATH/RUNPATH (ld.so.cache is built from these), merged-/usr.
SYSTEM_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64")


@dataclass(frozen=True)
class Dynamic:
    """DT_NEEDED names and the RPATH/RUNPATH search directories of one ELF file."""

    needed: tuple[str, ...]
    search: tuple[str, ...]


def dynamic_section(data: bytes) -> Dynamic | None:
    """The dynamic section of a 64-bit little-endian ELF file; None for anything else
    (not ELF, statically linked, no section headers)."""
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":
        return None
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for section in sections:
        if section[1] != SHT_DYNAMIC:
            continue
        strtab = sections[section[6]]
        strings = data[strtab[4]:strtab[4] + strtab[5]]
        needed, search = [], []
        for offset in range(section[4], section[4] + section[5], 16):
            tag, value = struct.unpack_from("<qQ", data, offset)
            if tag == DT_NULL:
                break
            if tag in (DT_NEEDED, DT_RPATH, DT_RUNPATH):
                text = strings[value:strings.index(b"\0", value)].decode()
                if tag == DT_NEEDED:
                    needed.append(text)
                else:
                    search.extend(p for p in text.split(":") if p)
        return Dynamic(tuple(needed), tuple(search))
    return None


def missing_libraries(path: str, dynamic: Dynamic, present: set[str]) -> list[str]:
    """The DT_NEEDED names of the file at image path `path` (no leading /) that the loader
    would not find among the image paths `present` (files and links)."""
    origin = posixpath.dirname(path)
    dirs = [posixpath.normpath(d.replace("$ORIGIN", "/" + origin).replace("${ORIGIN}", "/" + origin)).lstrip("/")
            for d in dynamic.search] + list(SYSTEM_DIRS)
    return [name for name in dynamic.needed
            if not any(posixpath.join(_merged_usr(d), name) in present for d in dirs)]


def _merged_usr(directory: str) -> str:
    """/lib/... and /lib64/... are links into /usr in these images."""
    first, _, rest = directory.partition("/")
    return posixpath.join("usr", first, rest).rstrip("/") if first in ("lib", "lib64", "bin", "sbin") else directory
