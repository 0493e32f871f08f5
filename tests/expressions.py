"""GitHub Actions expressions (`${{ ... }}`), evaluated as the runner does, for the workflow rehearsal.

Literals, context access (a.b, a['b']), ! == != < <= > >= && || and parentheses, and the functions
the workflows can use. Unlike GitHub, a reference to something that was never set (a step output,
a matrix key, a job's output) is an error naming it, not an empty string: that is the mistake the
rehearsal is there to catch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d+)?)|(?P<string>'(?:[^']|'')*')|(?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,])"
    r"|(?P<name>[A-Za-z_][\w-]*))"
)


class ExpressionError(Exception):
    pass


class Missing(ExpressionError):
    """A reference to a value that was never set."""


class Lenient(dict[str, Any]):
    """What a step that did not succeed offers: its outputs, and '' (null) for any other name."""


class Context(dict[str, Any]):
    """A mapping whose missing keys are errors, with what was asked in the message."""

    def __init__(self, where: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.where = where

    def __missing__(self, key: str) -> Any:
        raise Missing(f"{self.where}.{key} is not set (set: {', '.join(sorted(self)) or 'nothing'})")


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"cannot read {text[position:]!r} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value == value  # NaN is falsy


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower()
    return value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()  # GitHub compares strings case-insensitively
    return bool(a == b)


def to_string(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Evaluator:
    def __init__(self, contexts: Mapping[str, Any], status: Mapping[str, Callable[[], bool]]) -> None:
        self.contexts = contexts
        self.status = status
        self.skipping = 0  # > 0 while reading an operand that && or || does not evaluate

    def evaluate(self, text: str) -> Any:
        self.tokens = _tokens(text)
        self.position = 0
        self.skipping = 0
        self.text = text
        value = self._or()
        if self.position != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.position][1]!r} in {text!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise ExpressionError(f"{self.text!r} ends early")
        token = self.tokens[self.position]
        if expected is not None and token[1] != expected:
            raise ExpressionError(f"expected {expected!r}, found {token[1]!r} in {self.text!r}")
        self.position += 1
        return token

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._take()
            right = self._skipped_if(truthy(value), self._and)
            value = value if truthy(value) else right
        return value

    def _and(self) -> Any:
        value = self._comparison()
        while self._peek() == "&&":
            self._take()
            right = self._skipped_if(not truthy(value), self._comparison)
            value = right if truthy(value) else value
        return value

    def _skipped_if(self, skip: bool, operand: Callable[[], Any]) -> Any:
        """Read the operand; when it is not evaluated (short-circuit), nothing in it may fail."""
        self.skipping += skip
        try:
            return operand()
        finally:
            self.skipping -= skip

    def _comparison(self) -> Any:
        value = self._unary()
        while self._peek() in ("==", "!=", "<", "<=", ">", ">="):
            op = self._take()[1]
            right = self._unary()
            if op == "==":
                value = _equal(value, right)
            elif op == "!=":
                value = not _equal(value, right)
            else:
                a, b = _coerce(value), _coerce(right)
                value = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return value

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._postfix(self._primary())

    def _primary(self) -> Any:
        kind, text = self._take()
        if text == "(":
            value = self._or()
            self._take(")")
            return value
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind != "name":
            raise ExpressionError(f"unexpected {text!r} in {self.text!r}")
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if self._peek() == "(":
            return self._call(text)
        if text not in self.contexts:
            if self.skipping:
                return None
            raise ExpressionError(f"unknown context {text!r} in {self.text!r}")
        return self.contexts[text]

    def _postfix(self, value: Any) -> Any:
        while self._peek() in (".", "["):
            if self._take()[1] == ".":
                key: Any = self._take()[1]
            else:
                key = self._or()
                self._take("]")
            value = None if self.skipping else self._index(value, key)
        return value

    @staticmethod
    def _index(value: Any, key: Any) -> Any:
        if isinstance(value, Lenient):
            return value.get(key)
        if isinstance(value, Context):
            return value[key]
        if isinstance(value, Mapping):
            if key not in value:
                raise Missing(f"{key!r} is not set (set: {', '.join(sorted(map(str, value)))})")
            return value[key]
        if isinstance(value, list) and isinstance(key, int):
            return value[key] if 0 <= key < len(value) else None
        raise Missing(f"cannot take {key!r} of {value!r}")

    def _call(self, name: str) -> Any:
        self._take("(")
        args = []
        while self._peek() != ")":
            args.append(self._or())
            if self._peek() == ",":
                self._take()
        self._take(")")
        if self.skipping:
            return None
        lowered = name.lower()
        if lowered in self.status:
            return self.status[lowered]()
        if lowered == "fromjson":
            try:
                return json.loads(args[0])
            except (TypeError, ValueError) as exc:
                raise ExpressionError(f"fromJSON({args[0]!r}): not JSON ({exc})") from exc
        if lowered == "tojson":
            return json.dumps(args[0], indent=2)
        if lowered == "contains":
            haystack, needle = args
            if isinstance(haystack, list):
                return any(_equal(item, needle) for item in haystack)
            return to_string(needle).lower() in to_string(haystack).lower()
        if lowered == "startswith":
            return to_string(args[0]).lower().startswith(to_string(args[1]).lower())
        if lowered == "endswith":
            return to_string(args[0]).lower().endswith(to_string(args[1]).lower())
        if lowered == "format":
            text = to_string(args[0])
            for index, arg in enumerate(args[1:]):
                text = text.replace("{" + str(index) + "}", to_string(arg))
            return text
        if lowered == "join":
            separator = to_string(args[1]) if len(args) > 1 else ","
            return separator.join(to_string(a) for a in args[0])
        raise ExpressionError(f"the rehearsal does not know the function {name}()")


def substitute(text: str, evaluator: Evaluator) -> Any:
    """A value with `${{ }}` in it: the expression's value when it is the whole value (so fromJSON
    gives a matrix), otherwise the text with each expression's string form put in."""
    whole = re.fullmatch(r"\s*\$\{\{(.*?)\}\}\s*", text, re.S)
    if whole:
        return evaluator.evaluate(whole.group(1))
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: to_string(evaluator.evaluate(m.group(1))), text, flags=re.S)
