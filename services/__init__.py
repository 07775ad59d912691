"""Axon serving side: the shared runtime (``services.runtime``) and the model services.

Nothing under ``services/`` imports ``torch``, ``pickle`` or ``training``.
"""
