"""The connector's two kinds of failure, below every layer of the data path (export, store, sql, superset).

An :class:`AmplitudeError` is a refusal fit for the SQL user (never containing a secret); an
:class:`AmplitudeFault` is a failure of the system (the network, Amplitude's servers, the store).
"""

from __future__ import annotations


class AmplitudeError(Exception):
    """An Export API failure, with a message fit for the SQL user (never contains the secret)."""


class AmplitudeFault(AmplitudeError):
    """A failure of the system, not of the query or the connection's settings (the network, Amplitude's servers,
    the store): servers log it with its traceback, while a refused query is one log line."""


class AuthenticationError(AmplitudeError):
    """403: wrong API key / secret key, or a project of the other data region; or a secret the store refuses."""
