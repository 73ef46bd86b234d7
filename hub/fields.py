"""marshmallow fields that compile operator expressions when the configuration loads."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields

from .rules import Mapping, Rule
from .templates import Template


class _Compiled(fields.Field):
    compile = staticmethod(lambda value: value)
    kind = "string"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError(f"must be a {self.kind} string")
        try:
            return self.compile(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else getattr(value, "expression", getattr(value, "source", value))


class RuleField(_Compiled):
    """A JMESPath expression over the report, compiled to a ``Rule``."""

    compile = staticmethod(Rule)
    kind = "JMESPath"


class TemplateField(_Compiled):
    """A Jinja2 template over the report, compiled to a sandboxed ``Template``."""

    compile = staticmethod(Template)
    kind = "template"


class MappingField(fields.Field):
    """A table of ``name = "jmespath"``, compiled to a ``Mapping``."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValidationError('must be a table of name = "jmespath expression"')
        try:
            return Mapping(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else {k: r.expression for k, r in value.rules.items()}


class EmptyConfig(Schema):
    """For a destination type without settings of its own: every key is unknown."""


__all__ = ["RuleField", "TemplateField", "MappingField", "EmptyConfig", "ValidationError", "Schema", "fields"]
