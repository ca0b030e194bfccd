"""A stored secret key is bound to the API key and destination it was given for, and is used nowhere else.

Superset keeps a connection's secret encrypted and shows it masked; saving a form with the mask left in place
keeps the stored secret, whatever else changed. So what Superset stores is not the bare secret but a *bound* one
(:func:`bind`, done by :mod:`shillelagh_amplitude.superset.secret_store` whenever a secret is typed):

    ``amplitude-bound-v1 <tag> <destination> <secret>``

where ``tag`` is an HMAC keyed by the secret itself over the API key and the canonical destination. Whoever edits
the connection sees only the mask: they can neither read the secret nor compute a tag for another destination.
Every use of the settings (:func:`usable_secret`, called by the dialect for queries, the connection test and the
background sync, and by the adapter) checks the tag against where the request would go, and refuses a secret
bound elsewhere before any request is made. A secret given bare (typed for a connection test, a plain
``create_engine``) is used as given: it is the caller's own.
"""

from __future__ import annotations

import hashlib
import hmac

from ..export.client import AuthenticationError

PREFIX = "amplitude-bound-v1 "
_CONTEXT = "shillelagh-amplitude: the destination of a secret key, v1"


class SecretDestinationChanged(AuthenticationError):
    """A stored secret key would go to another API key or destination than it was given for."""


def _tag(secret: str, api_key: str, destination: str) -> str:
    message = f"{_CONTEXT}\n{api_key}\n{destination}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def is_bound(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)


def _parts(value: str) -> tuple[str, str, str]:
    """(tag, destination, secret) of a bound value."""
    tag, destination, secret = value[len(PREFIX):].split(" ", 2)
    return tag, destination, secret


def bind(secret: str, api_key: str, destination: str) -> str:
    """The secret bound to ``api_key`` at ``destination`` (a bound secret is re-bound: its bare secret is used)."""
    if is_bound(secret):
        secret = _parts(secret)[2]
    return f"{PREFIX}{_tag(secret, api_key, destination)} {destination} {secret}"


def bound_to(value: str, api_key: str, destination: str) -> bool:
    """True if a bound value was bound to this API key and destination."""
    try:
        tag, _, secret = _parts(value)
    except ValueError:
        return False
    return hmac.compare_digest(tag, _tag(secret, api_key, destination))


def saved_for(value: str) -> str:
    """The destination a bound value names (as written in it: for messages only, never trusted)."""
    try:
        return _parts(value)[1]
    except ValueError:
        return "another destination"


def changed_message(saved_for: str, destination: str) -> str:
    """Why a stored secret is not used at ``destination`` (never the secret itself)."""
    return (
        f"The stored secret key was saved for {saved_for} with another API key or destination; it is not sent to "
        f"{destination}. Type the secret key again (Password, or secret_key in the Secure extra) to use it there."
    )


def usable_secret(value: str | None, api_key: str | None, destination: str) -> str | None:
    """The bare secret to send with ``api_key`` to ``destination``; :class:`SecretDestinationChanged` when it is
    bound to another API key or destination."""
    if not is_bound(value):
        return value
    if not api_key or not bound_to(value, api_key, destination):
        raise SecretDestinationChanged(changed_message(saved_for(value), destination))
    return _parts(value)[2]
