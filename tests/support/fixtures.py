"""Pytest fixtures shared by the whole suite (real sshd, sandbox pueue, ...)."""
