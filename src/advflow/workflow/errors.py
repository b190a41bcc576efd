"""The error every config check raises, at the ground floor so that any stage's settings can raise it."""


class ConfigError(ValueError):
    """The config breaks the schema or the workflow's rules; the message says how to fix it."""
