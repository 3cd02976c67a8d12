"""Errors the CLI maps to exit codes (see README: 2 = bad configuration or data)."""


class UserInputError(Exception):
    """Bad configuration or data: the message names the field, file or column."""

    exit_code = 2


class ConfigError(UserInputError):
    """The configuration is invalid; the message names the dotted field path."""


class DataError(UserInputError):
    """A data file is missing, unreadable or lacks a required column."""
