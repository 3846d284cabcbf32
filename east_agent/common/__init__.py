"""Chores every command shares: flags, files written atomically, line readers, run-folder
locks, child processes, and the entry-point wrapper."""
