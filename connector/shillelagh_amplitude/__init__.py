"""Amplitude's Export API as SQL tables (``amplitude_events``, ``amplitude_sessions``, ``amplitude_user_sessions``)
through shillelagh."""

__version__ = "0.1.0"
