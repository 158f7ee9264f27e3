"""Authentication: app-password credential checkers and login throttling, shared by IMAP, POP3
and submission."""

from haitatsu.auth.checker import AppPasswordChecker
from haitatsu.auth.throttle import LoginThrottle, ThrottledPortal, ThrottlePolicy

__all__ = ["AppPasswordChecker", "LoginThrottle", "ThrottledPortal", "ThrottlePolicy"]
