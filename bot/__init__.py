"""Verdict's Telegram side: handlers, settings, the composition root and the sandbox."""
