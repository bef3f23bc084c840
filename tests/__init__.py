"""Tests: the bot end to end over HTTP against the sandbox, the model with the real learner."""
