"""Authentication: app-password credential checkers shared by IMAP, POP3 and submission."""

from haitatsu.auth.checker import AppPasswordChecker

__all__ = ["AppPasswordChecker"]
