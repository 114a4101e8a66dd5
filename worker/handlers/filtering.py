"""Lambda's event filtering for SQS records, as pure logic.

An SQS event source mapping can carry ``FilterCriteria``: a message that matches none of its
patterns is deleted from the queue without invoking the function. The worker stands in for Lambda,
so it applies the same rules, taken from AWS's documentation:

- *Control which events Lambda sends to your function* (Lambda developer guide,
  ``invocation-eventfiltering``): the ``{"Filters": [{"Pattern": "<JSON>"}]}`` shape; five filters
  by default, ORed together; the table of comparison operators; exact matching without case folding
  or normalisation, numbers included ("300, 300.0, and 3.0e2 are not considered equal"); ``exists``
  sees leaf nodes only.
- *Using event filtering with an Amazon SQS event source* (``with-sqs-filtering``): SQS mappings
  filter on the ``body`` key only, and the body and its pattern must agree in format: a plain-string
  body is matched by a plain-string pattern (``{"body": ["text"]}``), a JSON body by a JSON pattern
  (``{"body": {"key": [...]}}``); on a mismatch Lambda drops the message.
- EventBridge's *Comparison operators for use in event patterns* and *Content filtering in event
  patterns*: the detail of each operator, and which forms EventBridge Pipes accept. Pipes filter
  "in the same way as ... Lambda event source mapping", so an operator that pipes do not support
  (``wildcard``; ``anything-but`` with ``prefix``, ``suffix``, ``equals-ignore-case`` or
  ``wildcard``) is refused here, as is ``cidr``, which Lambda's table does not list.

Where the documentation is silent this module chooses, and says so where it does.
"""

from __future__ import annotations

import decimal
import enum
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from functools import cached_property
from typing import Any, Final, NoReturn, Protocol

from worker.errors import WorkerError

__all__ = ["MAX_DEPTH", "MAX_PATTERNS", "MAX_PATTERN_LENGTH", "FilterCriteria", "FilterError"]

MAX_PATTERNS: Final = 5
"""Lambda's default quota of filters per event source mapping."""

MAX_PATTERN_LENGTH: Final = 4096
"""The longest ``Pattern`` string the Lambda API accepts."""

MAX_DEPTH: Final = 64
"""How deeply a pattern may nest objects and ``$or``: ours, not Lambda's, to bound recursion."""

_NUMERIC_LOWER: Final = frozenset({">", ">="})
_NUMERIC_UPPER: Final = frozenset({"<", "<="})
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_$@-]+")
# A JSON number with an exponent: sign, digits before and after the point, exponent.
_SCIENTIFIC: Final = re.compile(r"(-?)(\d+)(?:\.(\d+))?[eE]([+-]?\d+)")

# EventBridge operators that Lambda's filtering does not accept, with the reason given to the user.
_UNSUPPORTED: Final = {
    "wildcard": "EventBridge pipes and Lambda do not support it",
    "cidr": "it is not among Lambda's filter operators",
}


class FilterError(WorkerError, ValueError):
    """A ``FilterCriteria`` or pattern that Lambda would refuse.

    The message is one line that says what is wrong and where, for example
    ``pattern 2 at body.kind[0]: "prefix" takes a string or {"equals-ignore-case": string}``.
    """


class _Absent(enum.Enum):
    """Markers for values that are not there: a missing key, a body that is not JSON."""

    MISSING = enum.auto()
    NOT_JSON = enum.auto()


class _Number:
    """A JSON number as written.

    Exact matching compares the text (Lambda uses the string representation of numbers), numeric
    matching and ``anything-but`` compare the value.
    """

    __slots__ = ("text", "value")

    def __init__(self, text: str) -> None:
        self.text = text
        self.value = _value_of(text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Number) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return self.text


def _value_of(text: str) -> Decimal:
    """The value of a JSON number, whatever its exponent.

    ``Decimal`` holds exponents up to about 10^18 either way; JSON has no limit, and
    ``{"x": 1e99999999999999999999}`` is valid JSON that a producer can send. Beyond that range a
    number is taken as infinite, or as the smallest number of its sign, so that it still compares
    as it should with every bound a pattern can hold; zero stays zero.
    """
    try:
        return Decimal(text)
    except ArithmeticError:
        match = _SCIENTIFIC.fullmatch(text)
        if match is None:  # json hands over numbers only; anything else is not one
            raise ValueError(f"{text[:20]} is not a number") from None
        sign, whole, fraction, exponent = match.groups()
        if not (whole + (fraction or "")).strip("0"):
            return Decimal(f"{sign}0")
        if exponent.startswith("-"):
            return Decimal(f"{sign}1E{decimal.MIN_ETINY}")
        return Decimal(f"{sign}Infinity")


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _load_json(text: str) -> object:
    """Python's JSON, minus its extensions (NaN, Infinity), with numbers kept as written."""
    return json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_not_json)


def _kind(value: object) -> str:
    """How a JSON value is named in an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"  # ours, or int and float from the FilterCriteria envelope


def _join(path: str, key: str) -> str:
    """A key appended to a dotted path, quoted when it would not read as one word on one line."""
    step = key if _PLAIN_KEY.fullmatch(key) else f"[{json.dumps(key)}]"
    if not path or step.startswith("["):
        return path + step
    return f"{path}.{step}"


def _flatten(values: list[Any]) -> Iterator[object]:
    """The elements of an array and of the arrays nested in it, without recursion."""
    stack = [iter(values)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def _leaves(value: object) -> list[object]:
    """The leaf values under a key: none when it is missing or holds only objects.

    An array in the event matches when any of its elements does, so arrays are flattened. Objects
    are intermediate nodes, not leaves: the documentation says ``exists`` does not match them.
    """
    if value is _Absent.MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [item for item in _flatten(value) if not isinstance(item, dict)]
    return [value]


class _Matcher(Protocol):
    """One entry of a rule list; the list matches when any entry does."""

    def matches(self, leaves: Sequence[object]) -> bool: ...


class _Exact:
    """A bare value in a rule list: same JSON type and same text, no case folding, no arithmetic."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def matches(self, leaves: Sequence[object]) -> bool:
        if isinstance(self.value, bool) or self.value is None:
            return any(leaf is self.value for leaf in leaves)
        return any(type(leaf) is type(self.value) and leaf == self.value for leaf in leaves)


class _Affix:
    """``prefix`` or ``suffix``, optionally ignoring case; strings only."""

    __slots__ = ("fold", "suffix", "text")

    def __init__(self, text: str, *, suffix: bool, fold: bool) -> None:
        self.text = text.lower() if fold else text
        self.suffix = suffix
        self.fold = fold

    def matches(self, leaves: Sequence[object]) -> bool:
        for leaf in leaves:
            if isinstance(leaf, str):
                candidate = leaf.lower() if self.fold else leaf
                hit = candidate.endswith if self.suffix else candidate.startswith
                if hit(self.text):
                    return True
        return False


class _EqualsIgnoreCase:
    """``equals-ignore-case``: the whole string, compared lower-cased; strings only."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text.lower()

    def matches(self, leaves: Sequence[object]) -> bool:
        return any(isinstance(leaf, str) and leaf.lower() == self.text for leaf in leaves)


class _AnythingBut:
    """``anything-but``: a value that is present and is not one of those listed.

    A missing key has no value, so it does not match. Listed numbers are compared by value (100
    excludes 100.0), as EventBridge's ruler does; the documentation does not say. A value of
    another type than those listed (a number against listed strings, true, null) matches.
    """

    __slots__ = ("numbers", "strings")

    def __init__(self, strings: frozenset[str], numbers: frozenset[Decimal]) -> None:
        self.strings = strings
        self.numbers = numbers

    def matches(self, leaves: Sequence[object]) -> bool:
        return any(not self._excluded(leaf) for leaf in leaves)

    def _excluded(self, leaf: object) -> bool:
        if isinstance(leaf, str):
            return leaf in self.strings
        if isinstance(leaf, _Number):
            return leaf.value in self.numbers
        return False


class _Numeric:
    """``numeric``: a JSON number (not a numeric string) within the bounds, compared by value."""

    __slots__ = ("lower", "lower_inclusive", "upper", "upper_inclusive")

    def __init__(
        self,
        lower: Decimal | None,
        lower_inclusive: bool,
        upper: Decimal | None,
        upper_inclusive: bool,
    ) -> None:
        self.lower = lower
        self.lower_inclusive = lower_inclusive
        self.upper = upper
        self.upper_inclusive = upper_inclusive

    def matches(self, leaves: Sequence[object]) -> bool:
        return any(isinstance(leaf, _Number) and self._within(leaf.value) for leaf in leaves)

    def _within(self, value: Decimal) -> bool:
        if self.lower is not None and (
            value < self.lower or (value == self.lower and not self.lower_inclusive)
        ):
            return False
        return self.upper is None or (
            value < self.upper or (value == self.upper and self.upper_inclusive)
        )


class _Exists:
    """``exists``: whether the key holds at least one leaf value (null counts, objects do not)."""

    __slots__ = ("present",)

    def __init__(self, present: bool) -> None:
        self.present = present

    def matches(self, leaves: Sequence[object]) -> bool:
        return bool(leaves) is self.present


class _Leaf:
    """A rule list, ``"key": [ ... ]``: matches when any of its entries matches."""

    __slots__ = ("matchers",)

    def __init__(self, matchers: tuple[_Matcher, ...]) -> None:
        self.matchers = matchers

    def matches(self, value: object) -> bool:
        leaves = _leaves(value)
        return any(matcher.matches(leaves) for matcher in self.matchers)


class _Node:
    """A nested object, ``"key": { ... }``: every field matches, and one branch of each ``$or``.

    Against an array, some single element must match the whole object, so that two fields are
    never satisfied by two different elements. Against anything that is not an object, each field
    is looked up as missing (so that ``exists: false`` still holds).
    """

    __slots__ = ("any_of", "fields")

    def __init__(
        self, fields: tuple[tuple[str, _Leaf | _Node], ...], any_of: tuple[tuple[_Node, ...], ...]
    ) -> None:
        self.fields = fields
        self.any_of = any_of

    def matches(self, value: object) -> bool:
        if isinstance(value, list):
            elements = list(_flatten(value))
            if elements:
                return any(self._matches_one(element) for element in elements)
            value = _Absent.MISSING
        return self._matches_one(value)

    def _matches_one(self, value: object) -> bool:
        members: Mapping[str, object] = value if isinstance(value, dict) else {}
        return all(
            rule.matches(members.get(key, _Absent.MISSING)) for key, rule in self.fields
        ) and all(any(branch._matches_one(value) for branch in group) for group in self.any_of)


class _Body:
    """A record's body, decoded at most once however many patterns look at it."""

    def __init__(self, text: str | None) -> None:
        self.text = text

    @cached_property
    def document(self) -> object:
        """The body as JSON when it is a JSON object or array, else ``NOT_JSON``.

        A bare JSON scalar (``42``, ``"x"``, ``true``) counts as a plain string: the documentation
        speaks of messages "in JSON format" and patterns by key, which need an object or array.
        NaN and Infinity are not JSON; a body nested too deeply for Python's parser is not either.
        """
        if self.text is None:
            return _Absent.NOT_JSON
        try:
            document = _load_json(self.text)
        except (ValueError, RecursionError):
            return _Absent.NOT_JSON
        return document if isinstance(document, dict | list) else _Absent.NOT_JSON

    def satisfies(self, rule: _Leaf | _Node) -> bool:
        """Lambda's format check first (a mismatch drops the message), then the rule itself."""
        if self.text is None:
            return False
        if isinstance(rule, _Leaf):
            return self.document is _Absent.NOT_JSON and rule.matches(self.text)
        return self.document is not _Absent.NOT_JSON and rule.matches(self.document)


class _RecordPattern:
    """One compiled pattern: a rule on ``body`` and the ``$or`` groups at the top level."""

    __slots__ = ("any_of", "body")

    def __init__(
        self, body: _Leaf | _Node | None, any_of: tuple[tuple[_RecordPattern, ...], ...]
    ) -> None:
        self.body = body
        self.any_of = any_of

    def matches(self, body: _Body) -> bool:
        if self.body is not None and not body.satisfies(self.body):
            return False
        return all(any(branch.matches(body) for branch in group) for group in self.any_of)


class _Compiler:
    """Turns one pattern into matchers, failing on the first thing Lambda would refuse."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._operators: dict[str, Callable[[object, str], _Matcher]] = {
            "prefix": lambda operand, path: self._affix("prefix", operand, path),
            "suffix": lambda operand, path: self._affix("suffix", operand, path),
            "equals-ignore-case": self._equals_ignore_case,
            "anything-but": self._anything_but,
            "numeric": self._numeric,
            "exists": self._exists,
        }

    def error(self, path: str, problem: str) -> FilterError:
        """One line: which pattern, where in it (a dotted path with list indexes), what is wrong."""
        where = f"{self._label} at {path}" if path else self._label
        return FilterError(f"{where}: {problem}")

    def record(self, value: object, path: str = "", depth: int = 1) -> _RecordPattern:
        """The top level, where SQS allows ``body`` only (and ``$or`` of such objects).

        Refusing other keys, rather than matching them, keeps a pattern that Lambda would not
        apply from silently deciding which messages the worker deletes.
        """
        members = self._object(value, path, depth)
        body: _Leaf | _Node | None = None
        any_of: list[tuple[_RecordPattern, ...]] = []
        for key, member in members.items():
            if key == "$or":
                branches = self._branches(member, _join(path, key))
                any_of.append(tuple(self.record(b, where, depth + 1) for where, b in branches))
            elif key == "body":
                body = self._rule(member, _join(path, key), depth + 1)
            else:
                raise self.error(
                    path,
                    f"{json.dumps(key)} cannot be filtered: "
                    'Lambda filters SQS messages on "body" only',
                )
        return _RecordPattern(body, tuple(any_of))

    def _object(self, value: object, path: str, depth: int) -> dict[str, Any]:
        """An object of the pattern; EventBridge's ruler refuses empty ones, and so does this."""
        if depth > MAX_DEPTH:
            raise self.error("", f"nests deeper than {MAX_DEPTH} levels")
        if not isinstance(value, dict):
            raise self.error(path, f"must be a JSON object, not {_kind(value)}")
        if not value:
            raise self.error(path, "an empty object is not allowed")
        return value

    def _branches(self, value: object, path: str) -> list[tuple[str, object]]:
        """The objects of an ``$or``: at least two, as EventBridge's ruler requires."""
        if not isinstance(value, list) or len(value) < 2:
            raise self.error(path, '"$or" takes a list of at least two objects')
        return [(f"{path}[{index}]", branch) for index, branch in enumerate(value)]

    def _rule(self, value: object, path: str, depth: int) -> _Leaf | _Node:
        """A field's value in a pattern: a rule list, or an object that descends a level."""
        if isinstance(value, list):
            return self._leaf(value, path)
        if isinstance(value, dict):
            return self._node(value, path, depth)
        raise self.error(path, f'must be a list such as ["value"] or an object, not {_kind(value)}')

    def _node(self, value: object, path: str, depth: int) -> _Node:
        members = self._object(value, path, depth)
        fields: list[tuple[str, _Leaf | _Node]] = []
        any_of: list[tuple[_Node, ...]] = []
        for key, member in members.items():
            if key == "$or":
                branches = self._branches(member, _join(path, key))
                any_of.append(tuple(self._node(b, where, depth + 1) for where, b in branches))
            else:
                fields.append((key, self._rule(member, _join(path, key), depth + 1)))
        return _Node(tuple(fields), tuple(any_of))

    def _leaf(self, values: list[Any], path: str) -> _Leaf:
        """A rule list: bare values and operator objects. An empty one could never match."""
        if not values:
            raise self.error(path, "an empty list is not allowed: it would match nothing")
        matchers: list[_Matcher] = []
        for index, value in enumerate(values):
            where = f"{path}[{index}]"
            if isinstance(value, dict):
                matchers.append(self._operator(value, where))
            elif isinstance(value, list):
                raise self.error(where, "a rule list holds values and operators, not lists")
            else:
                matchers.append(_Exact(value))
        return _Leaf(tuple(matchers))

    def _operator(self, value: dict[str, Any], path: str) -> _Matcher:
        """One operator object; EventBridge-only operators get their own message."""
        if len(value) != 1:
            names = ", ".join(json.dumps(name) for name in value) or "none"
            raise self.error(path, f"an operator object has exactly one operator, found {names}")
        ((name, operand),) = value.items()
        if name in _UNSUPPORTED:
            raise self.error(path, f"{json.dumps(name)} is not supported: {_UNSUPPORTED[name]}")
        compile_operator = self._operators.get(name)
        if compile_operator is None:
            raise self.error(path, f"unknown operator {json.dumps(name)}")
        return compile_operator(operand, path)

    def _affix(self, name: str, operand: object, path: str) -> _Matcher:
        suffix = name == "suffix"
        if isinstance(operand, str):
            return _Affix(operand, suffix=suffix, fold=False)
        if isinstance(operand, dict) and list(operand) == ["equals-ignore-case"]:
            text = operand["equals-ignore-case"]
            if isinstance(text, str):
                return _Affix(text, suffix=suffix, fold=True)
        raise self.error(path, f'"{name}" takes a string or {{"equals-ignore-case": string}}')

    def _equals_ignore_case(self, operand: object, path: str) -> _Matcher:
        if not isinstance(operand, str):
            raise self.error(path, f'"equals-ignore-case" takes a string, not {_kind(operand)}')
        return _EqualsIgnoreCase(operand)

    def _exists(self, operand: object, path: str) -> _Matcher:
        if not isinstance(operand, bool):
            raise self.error(path, f'"exists" takes true or false, not {_kind(operand)}')
        return _Exists(operand)

    def _anything_but(self, operand: object, path: str) -> _Matcher:
        """A string, a number, or a non-empty list of only strings or only numbers (EventBridge)."""
        if isinstance(operand, dict) and len(operand) == 1:
            (name,) = operand
            raise self.error(
                path,
                f'"anything-but" with {json.dumps(name)} is not supported: '
                "EventBridge pipes and Lambda do not support it",
            )
        values: list[object] = list(operand) if isinstance(operand, list) else [operand]
        if not values:
            raise self.error(path, '"anything-but" takes a non-empty list')
        strings = [value for value in values if isinstance(value, str)]
        numbers = [value.value for value in values if isinstance(value, _Number)]
        if len(strings) == len(values):
            return _AnythingBut(frozenset(strings), frozenset())
        if len(numbers) == len(values):
            return _AnythingBut(frozenset(), frozenset(numbers))
        if len(strings) + len(numbers) == len(values):
            raise self.error(path, '"anything-but" takes only strings or only numbers, not both')
        odd = next(value for value in values if not isinstance(value, str | _Number))
        raise self.error(
            path, f'"anything-but" takes strings or numbers, or a list of either, not {_kind(odd)}'
        )

    def _numeric(self, operand: object, path: str) -> _Matcher:
        """``["=", n]``, one bound, or a lower bound then an upper one, lower below upper.

        The order and the strict ``lower < upper`` are EventBridge's ruler's. Its numeric limits
        (documented as +/-1e9, later 5e9) are not applied: the documents disagree.
        """
        if not isinstance(operand, list) or not operand or len(operand) % 2:
            raise self.error(
                path, '"numeric" takes operator and number pairs, such as [">", 0, "<=", 5]'
            )
        pairs = [
            self._comparison(operand[i], operand[i + 1], path) for i in range(0, len(operand), 2)
        ]
        if len(pairs) > 2:
            raise self.error(path, '"numeric" takes at most two comparisons')
        (first, low), *rest = pairs
        if first == "=":
            if rest:
                raise self.error(path, '"numeric": "=" cannot be combined with another comparison')
            return _Numeric(low.value, True, low.value, True)
        if first in _NUMERIC_UPPER and not rest:
            return _Numeric(None, False, low.value, first == "<=")
        if first not in _NUMERIC_LOWER or (rest and rest[0][0] not in _NUMERIC_UPPER):
            raise self.error(
                path,
                '"numeric": a range is a lower bound (">" or ">=") then an upper one ("<" or "<=")',
            )
        if not rest:
            return _Numeric(low.value, first == ">=", None, False)
        last, high = rest[0]
        if low.value >= high.value:
            raise self.error(path, f'"numeric": {low.text} is not below {high.text}')
        return _Numeric(low.value, first == ">=", high.value, last == "<=")

    def _comparison(self, operator: object, number: object, path: str) -> tuple[str, _Number]:
        if not isinstance(operator, str) or operator not in {"=", *_NUMERIC_LOWER, *_NUMERIC_UPPER}:
            shown = json.dumps(operator) if isinstance(operator, str) else _kind(operator)
            raise self.error(path, f'"numeric": {shown} is not one of "=", "<", "<=", ">", ">="')
        if not isinstance(number, _Number):
            raise self.error(path, f'"numeric": "{operator}" takes a number, not {_kind(number)}')
        return operator, number


def _compile(text: str, label: str) -> _RecordPattern:
    """One ``Pattern`` string, checked the way Lambda checks it when the mapping is created."""
    compiler = _Compiler(label)
    if len(text) > MAX_PATTERN_LENGTH:
        raise compiler.error(
            "", f"{len(text)} characters long, Lambda allows at most {MAX_PATTERN_LENGTH}"
        )
    try:
        document = _load_json(text)
    except RecursionError:
        raise compiler.error("", f"nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise compiler.error("", f"not valid JSON ({exc})") from None
    return compiler.record(document)


class FilterCriteria:
    """Lambda's ``FilterCriteria`` for an SQS event source: patterns ORed together.

    Build it from Lambda's JSON with :meth:`parse`, from one pattern with :meth:`from_pattern`, or
    from pattern strings directly. Every pattern is validated when the criteria are built, so that
    a pattern Lambda would refuse stops the worker at start-up rather than dropping messages.
    Criteria without patterns filter nothing, as a mapping without ``FilterCriteria`` does.
    """

    __slots__ = ("_compiled", "patterns")

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        if isinstance(patterns, str):
            raise TypeError("patterns is a sequence of pattern strings, not one string")
        if len(patterns) > MAX_PATTERNS:
            raise FilterError(
                f"FilterCriteria: {len(patterns)} filters, Lambda allows at most {MAX_PATTERNS}"
            )
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._compiled = tuple(
            _compile(text, f"pattern {number}") for number, text in enumerate(self.patterns, 1)
        )

    @classmethod
    def parse(cls, text: str) -> FilterCriteria:
        """Lambda's format: ``{"Filters": [{"Pattern": "<pattern as a JSON string>"}, ...]}``.

        ``{}`` and ``{"Filters": []}`` are accepted and filter nothing: that is how Lambda's API
        removes the criteria of a mapping.
        """
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise FilterError(f"FilterCriteria: not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise FilterError(
                'FilterCriteria: must be a JSON object such as {"Filters": [{"Pattern": "..."}]}'
            )
        for key in document:
            if key != "Filters":
                raise FilterError(
                    f'FilterCriteria: unknown key {json.dumps(key)}, the only key is "Filters"'
                )
        filters = document.get("Filters", [])
        if not isinstance(filters, list):
            raise FilterError(f'FilterCriteria: "Filters" must be a list, not {_kind(filters)}')
        if len(filters) > MAX_PATTERNS:
            raise FilterError(
                f"FilterCriteria: {len(filters)} filters, Lambda allows at most {MAX_PATTERNS}"
            )
        return cls([_pattern_text(entry, number) for number, entry in enumerate(filters, 1)])

    @classmethod
    def from_pattern(cls, text: str) -> FilterCriteria:
        """One pattern given directly as JSON, as the Lambda console and operators write it."""
        return cls([text])

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether Lambda would pass this SQS record (``body``, ``messageId``...) to the function.

        The body is decoded once, whatever the number of patterns; a record whose ``body`` is not
        a string matches no pattern that has a rule on ``body``.
        """
        if not self._compiled:
            return True
        text = record.get("body")
        body = _Body(text if isinstance(text, str) else None)
        return any(pattern.matches(body) for pattern in self._compiled)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterCriteria) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def __repr__(self) -> str:
        return f"FilterCriteria({list(self.patterns)!r})"


def _pattern_text(entry: object, number: int) -> str:
    """The ``Pattern`` string of one ``Filters`` entry."""
    label = f"pattern {number}"
    if not isinstance(entry, dict):
        raise FilterError(f'{label}: a filter is an object such as {{"Pattern": "..."}}')
    for key in entry:
        if key != "Pattern":
            raise FilterError(
                f'{label}: unknown key {json.dumps(key)}, a filter has only "Pattern"'
            )
    if "Pattern" not in entry:
        raise FilterError(f'{label}: "Pattern" is missing')
    pattern = entry["Pattern"]
    if not isinstance(pattern, str):
        raise FilterError(f'{label}: "Pattern" must be a string holding JSON, not {_kind(pattern)}')
    return pattern
