"""Inference side of Verdict: the learner, its worker processes and the records about it.

Nothing imported here at package level pulls in torch or fastai: the bot process imports
``model.types`` and ``model.pool``, and only worker processes load the learner.
"""
