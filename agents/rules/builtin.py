"""Import every shipped rule module so its @register runs."""

from . import circuit_dark, lamp, offline, threshold  # noqa: F401
