"""Vital-sign monitoring for psychedelic-assisted therapy sessions.

Decision support for session staff and medical monitors; not a certified medical device.
"""

__version__ = "0.1.0"
