"""Storage: the job store (TinyDB) and the result store (relative keys <-> files)."""
