"""Data root layout, atomic writes, digests and file locks: `paths`, `files`, `lock`."""
