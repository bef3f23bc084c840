"""Imported by the fork server before it forks workers, so that they share these pages."""

from model.worker import preload

preload()
