"""Fitting and exporting model versions (fastai); never talks to Telegram."""
