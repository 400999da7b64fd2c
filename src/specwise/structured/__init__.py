"""Structured output: constraints (JSON Schema, regex, Lark grammar, choice) kept exact under speculation."""

from specwise.structured.constraint import Constraint, compile_grammar, constraint_from_fields

__all__ = ["Constraint", "compile_grammar", "constraint_from_fields"]
