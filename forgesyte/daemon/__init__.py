"""The daemon: watching the inbox, settling files, scheduling jobs onto workers."""
