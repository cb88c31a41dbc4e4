"""Errors raised by the IR; each message names the op or value at fault."""


class IRError(ValueError):
    """A malformed sGraph, a bad size, or a violated structural rule."""


class SchemaError(IRError):
    """Serialized IR whose schema or version this release cannot read."""
