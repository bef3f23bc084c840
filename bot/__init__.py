"""Verdict's Telegram side: handlers, settings and the composition root."""
