"""Lambda's event filtering for SQS records: the FilterCriteria format, the rules, the body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.errors import WorkerError
from worker.handlers.filtering import (
    MAX_DEPTH,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    FilterCriteria,
    FilterError,
)

# The body of the SQS record in Lambda's documentation ("Using event filtering with an Amazon SQS
# event source"), and the record around it.
DOC_BODY = (
    '{\n "RecordNumber": 1234,\n "TimeStamp": "yyyy-mm-ddThh:mm:ss",\n "RequestCode": "AAAA"\n}'
)


def record(body: str = DOC_BODY, **overrides: Any) -> dict[str, Any]:
    """An SQS record as Lambda passes it to the function (and to the filter)."""
    return {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-west-2:123456789012:my-queue",
        "awsRegion": "us-west-2",
        **overrides,
    }


def passes(pattern: object, body: object) -> bool:
    """Whether one pattern lets a record through; a body that is not a string is sent as JSON."""
    text = body if isinstance(body, str) else json.dumps(body)
    return FilterCriteria.from_pattern(json.dumps(pattern)).matches(record(text))


def field(rules: list[Any], body: str) -> bool:
    """Whether ``{"body": {"field": rules}}`` matches a JSON body given as text."""
    return passes({"body": {"field": rules}}, body)


def criteria_text(*patterns: object) -> str:
    """Lambda's FilterCriteria JSON, each pattern serialised into a string as the API wants it."""
    return json.dumps({"Filters": [{"Pattern": json.dumps(pattern)} for pattern in patterns]})


def nested_pattern(depth: int) -> str:
    """``{"body": {"a": {"a": ... ["x"]}}}``: ``depth`` objects deep, counting the outermost."""
    return '{"body": ' + '{"a": ' * (depth - 1) + '["x"]' + "}" * depth


class TestFilterCriteriaFormat:
    """Lambda's ``{"Filters": [{"Pattern": "<JSON string>"}]}``, one pattern, or pattern strings."""

    def test_lambda_format_from_the_documentation(self) -> None:
        text = (
            '{"Filters": [{"Pattern": "{ \\"body\\" : { \\"RequestCode\\" : [ \\"BBBB\\" ] } }"}]}'
        )
        criteria = FilterCriteria.parse(text)
        assert criteria.patterns == ('{ "body" : { "RequestCode" : [ "BBBB" ] } }',)
        assert criteria.matches(record(DOC_BODY.replace("AAAA", "BBBB")))
        assert not criteria.matches(record(DOC_BODY))

    def test_from_pattern_takes_the_pattern_itself(self) -> None:
        criteria = FilterCriteria.from_pattern('{"body": {"RecordNumber": [1234]}}')
        assert criteria.patterns == ('{"body": {"RecordNumber": [1234]}}',)
        assert criteria.matches(record())

    def test_constructor_takes_pattern_strings(self) -> None:
        criteria = FilterCriteria(['{"body": {"RequestCode": ["AAAA"]}}'])
        assert criteria == FilterCriteria.parse(criteria_text({"body": {"RequestCode": ["AAAA"]}}))
        assert criteria.matches(record())

    def test_constructor_refuses_a_bare_string(self) -> None:
        with pytest.raises(TypeError, match="sequence of pattern strings"):
            FilterCriteria('{"body": ["x"]}')

    @pytest.mark.parametrize(
        "criteria",
        [
            pytest.param(FilterCriteria.parse("{}"), id="empty-object"),
            pytest.param(FilterCriteria.parse('{"Filters": []}'), id="empty-filters"),
            pytest.param(FilterCriteria(), id="no-patterns"),
        ],
    )
    def test_no_patterns_filter_nothing(self, criteria: FilterCriteria) -> None:
        # Lambda's API removes a mapping's criteria with an empty FilterCriteria.
        assert criteria.patterns == ()
        assert criteria.matches(record())
        assert criteria.matches(record("plain text"))

    @pytest.mark.parametrize("count", range(1, MAX_PATTERNS + 1))
    def test_up_to_five_patterns(self, count: int) -> None:
        patterns = [{"body": {"RecordNumber": [number]}} for number in range(count)]
        assert len(FilterCriteria.parse(criteria_text(*patterns)).patterns) == count

    def test_six_patterns_exceed_lambdas_quota(self) -> None:
        patterns = [{"body": {"RecordNumber": [number]}} for number in range(MAX_PATTERNS + 1)]
        message = "FilterCriteria: 6 filters, Lambda allows at most 5"
        with pytest.raises(FilterError) as parsed:
            FilterCriteria.parse(criteria_text(*patterns))
        assert str(parsed.value) == message
        with pytest.raises(FilterError) as built:
            FilterCriteria([json.dumps(pattern) for pattern in patterns])
        assert str(built.value) == message

    def test_quota_is_checked_before_the_patterns(self) -> None:
        text = json.dumps({"Filters": [{"Pattern": "not json"}] * 6})
        with pytest.raises(FilterError, match="6 filters"):
            FilterCriteria.parse(text)

    def test_equality_hash_and_repr(self) -> None:
        first = FilterCriteria.from_pattern('{"body": ["x"]}')
        second = FilterCriteria(['{"body": ["x"]}'])
        assert first == second
        assert hash(first) == hash(second)
        assert first != FilterCriteria.from_pattern('{"body": ["y"]}')
        assert first != '{"body": ["x"]}'
        assert repr(first) == """FilterCriteria(['{"body": ["x"]}'])"""

    def test_criteria_are_truthy_even_when_empty(self) -> None:
        # Callers test ``if criteria`` for "a filter was given"; that is not the number of patterns.
        assert FilterCriteria()

    def test_filter_error_is_a_value_error_under_the_worker_root(self) -> None:
        assert issubclass(FilterError, ValueError)
        assert issubclass(FilterError, WorkerError)


class TestOrAcrossPatterns:
    """A record passes when one or more patterns match it, and is dropped when none does."""

    CRITERIA = criteria_text(
        {"body": {"RequestCode": ["BBBB"]}},
        {"body": {"RecordNumber": [{"numeric": [">", 9999]}]}},
    )

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param({"RequestCode": "BBBB", "RecordNumber": 1}, True, id="first-only"),
            pytest.param({"RequestCode": "AAAA", "RecordNumber": 10000}, True, id="second-only"),
            pytest.param({"RequestCode": "BBBB", "RecordNumber": 10000}, True, id="both"),
            pytest.param({"RequestCode": "AAAA", "RecordNumber": 1}, False, id="neither"),
            pytest.param({}, False, id="empty-object"),
        ],
    )
    def test_patterns_are_ored(self, body: object, expected: bool) -> None:
        assert FilterCriteria.parse(self.CRITERIA).matches(record(json.dumps(body))) is expected

    def test_a_plain_pattern_and_a_json_pattern_together(self) -> None:
        criteria = FilterCriteria.parse(
            criteria_text({"body": [{"prefix": "ping"}]}, {"body": {"kind": ["ping"]}})
        )
        assert criteria.matches(record("ping 1"))
        assert criteria.matches(record('{"kind": "ping"}'))
        assert not criteria.matches(record('{"kind": "pong"}'))
        assert not criteria.matches(record("pong"))


class TestExactValues:
    """Strings, numbers, booleans and null match exactly, by JSON type and text; a list is an OR."""

    @pytest.mark.parametrize(
        ("rules", "body", "expected"),
        [
            pytest.param(["Alice"], '{"field": "Alice"}', True, id="string-equal"),
            pytest.param(["Alice"], '{"field": "Bob"}', False, id="string-different"),
            pytest.param(["Alice"], '{"field": "alice"}', False, id="string-no-case-folding"),
            pytest.param(["Alice"], '{"field": "Alice "}', False, id="string-no-trimming"),
            pytest.param(["café"], '{"field": "caf\\u00e9"}', True, id="string-unicode-escape"),
            pytest.param([""], '{"field": ""}', True, id="empty-string"),
            pytest.param([""], "{}", False, id="empty-string-not-missing"),
            pytest.param([""], '{"field": null}', False, id="empty-string-not-null"),
            pytest.param([None], '{"field": null}', True, id="null"),
            pytest.param([None], "{}", False, id="null-not-missing"),
            pytest.param([None], '{"field": "null"}', False, id="null-not-the-string"),
            pytest.param([None], '{"field": ""}', False, id="null-not-empty-string"),
            pytest.param([True], '{"field": true}', True, id="true"),
            pytest.param([True], '{"field": "true"}', False, id="true-not-the-string"),
            pytest.param([True], '{"field": 1}', False, id="true-not-one"),
            pytest.param([False], '{"field": false}', True, id="false"),
            pytest.param([False], '{"field": 0}', False, id="false-not-zero"),
            pytest.param([False], '{"field": null}', False, id="false-not-null"),
            pytest.param([1], '{"field": true}', False, id="one-not-true"),
            pytest.param([300], '{"field": 300}', True, id="number-same-text"),
            pytest.param([300], '{"field": 300.0}', False, id="number-300-not-300.0"),
            pytest.param([300], '{"field": 3.0e2}', False, id="number-300-not-3.0e2"),
            pytest.param([300], '{"field": "300"}', False, id="number-not-numeric-string"),
            pytest.param(["300"], '{"field": 300}', False, id="string-not-number"),
            pytest.param([-0.5], '{"field": -0.5}', True, id="negative-decimal"),
            pytest.param([12345678901234567890], '{"field": 12345678901234567890}', True, id="big"),
            pytest.param(["Credit", "Debit"], '{"field": "Debit"}', True, id="or-second"),
            pytest.param(["Credit", "Debit"], '{"field": "Cash"}', False, id="or-none"),
            pytest.param([1, "1", None], '{"field": "1"}', True, id="or-mixed-types"),
            pytest.param([1, "1", None], '{"field": null}', True, id="or-mixed-null"),
            pytest.param([1, "1", None], '{"field": 2}', False, id="or-mixed-none"),
        ],
    )
    def test_exact_values(self, rules: list[Any], body: str, expected: bool) -> None:
        assert field(rules, body) is expected

    def test_numbers_as_written_in_the_pattern(self) -> None:
        # The pattern's own text counts too: 3.0e2 in the pattern matches 3.0e2 only.
        pattern = '{"body": {"field": [3.0e2]}}'
        assert FilterCriteria.from_pattern(pattern).matches(record('{"field": 3.0e2}'))
        assert not FilterCriteria.from_pattern(pattern).matches(record('{"field": 300}'))


class TestNestedKeys:
    """Nested objects follow the record's structure; every field of a pattern must match (AND)."""

    @pytest.mark.parametrize(
        ("pattern", "body", "expected"),
        [
            pytest.param(
                {"body": {"Location": ["New York"], "Day": ["Monday"]}},
                {"Location": "New York", "Day": "Monday"},
                True,
                id="and-both",
            ),
            pytest.param(
                {"body": {"Location": ["New York"], "Day": ["Monday"]}},
                {"Location": "New York", "Day": "Friday"},
                False,
                id="and-one-fails",
            ),
            pytest.param(
                {"body": {"Location": ["New York"], "Day": ["Monday"]}},
                {"Location": "New York"},
                False,
                id="and-one-missing",
            ),
            pytest.param(
                {"body": {"Keys": {"Number": {"N": ["4567"]}}}},
                {"Keys": {"ID": {"S": "ABCD"}, "Number": {"N": "4567"}}},
                True,
                id="three-levels",
            ),
            pytest.param(
                {"body": {"Keys": {"Number": {"N": ["4567"]}}}},
                {"Keys": {"ID": {"S": "ABCD"}, "Number": {"N": "1234"}}},
                False,
                id="three-levels-other-value",
            ),
            pytest.param(
                {"body": {"Keys": {"Number": {"N": ["4567"]}}}},
                {"Keys": {"ID": {"S": "ABCD"}}},
                False,
                id="missing-intermediate",
            ),
            pytest.param(
                {"body": {"Keys": {"Number": {"N": ["4567"]}}}},
                {"Keys": "4567"},
                False,
                id="scalar-where-object-expected",
            ),
            pytest.param(
                {"body": {"Keys": ["4567"]}},
                {"Keys": {"N": "4567"}},
                False,
                id="object-where-value-expected",
            ),
            pytest.param(
                {"body": {"a": {"b": ["x"]}, "c": ["y"]}},
                {"a": {"b": "x", "other": 1}, "c": "y", "d": "ignored"},
                True,
                id="unlisted-fields-ignored",
            ),
            pytest.param(
                {"body": {"a.b": ["x"]}},
                {"a": {"b": "x"}},
                False,
                id="dotted-key-is-one-key",
            ),
            pytest.param(
                {"body": {"a.b": ["x"]}},
                {"a.b": "x"},
                True,
                id="dotted-key-literal",
            ),
        ],
    )
    def test_nested(self, pattern: object, body: object, expected: bool) -> None:
        assert passes(pattern, body) is expected


class TestArrays:
    """An array in the event matches when any of its elements does."""

    @pytest.mark.parametrize(
        ("rules", "body", "expected"),
        [
            pytest.param(["b"], '{"field": ["a", "b", "c"]}', True, id="element-matches"),
            pytest.param(["z"], '{"field": ["a", "b", "c"]}', False, id="no-element-matches"),
            pytest.param(["x", "b"], '{"field": ["a", "b"]}', True, id="pattern-or-event-array"),
            pytest.param(["b"], '{"field": [["a"], [["b"]]]}', True, id="nested-arrays"),
            pytest.param(["a"], '{"field": []}', False, id="empty-array"),
            pytest.param([5], '{"field": [1, 5, "5"]}', True, id="number-element"),
            pytest.param([{"prefix": "im"}], '{"field": ["no", "img"]}', True, id="prefix"),
            pytest.param([{"numeric": [">", 3]}], '{"field": [1, 2, 4]}', True, id="numeric"),
            pytest.param([{"numeric": [">", 3]}], '{"field": [1, 2, 3]}', False, id="numeric-none"),
            pytest.param([None], '{"field": [1, null]}', True, id="null-element"),
            pytest.param(["a"], '{"field": [{"x": "a"}]}', False, id="objects-are-not-leaves"),
        ],
    )
    def test_arrays_of_values(self, rules: list[Any], body: str, expected: bool) -> None:
        assert field(rules, body) is expected

    @pytest.mark.parametrize(
        ("pattern", "body", "expected"),
        [
            pytest.param(
                {"body": {"items": {"sku": ["B"]}}},
                {"items": [{"sku": "A"}, {"sku": "B"}]},
                True,
                id="some-object-matches",
            ),
            pytest.param(
                {"body": {"items": {"sku": ["C"]}}},
                {"items": [{"sku": "A"}, {"sku": "B"}]},
                False,
                id="no-object-matches",
            ),
            pytest.param(
                {"body": {"items": {"sku": ["A"], "qty": [2]}}},
                {"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]},
                True,
                id="both-fields-in-one-element",
            ),
            pytest.param(
                {"body": {"items": {"sku": ["A"], "qty": [1]}}},
                {"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]},
                False,
                id="fields-from-different-elements",
            ),
            pytest.param(
                {"body": {"a": {"b": {"c": ["x"]}}}},
                {"a": [{"b": [{"c": "y"}, {"c": ["z", "x"]}]}]},
                True,
                id="arrays-at-every-level",
            ),
            pytest.param(
                {"body": {"items": {"sku": ["A"]}}},
                {"items": []},
                False,
                id="empty-array-of-objects",
            ),
        ],
    )
    def test_arrays_of_objects(self, pattern: object, body: object, expected: bool) -> None:
        assert passes(pattern, body) is expected

    def test_json_array_body(self) -> None:
        assert passes({"body": {"kind": ["b"]}}, [{"kind": "a"}, {"kind": "b"}])
        assert not passes({"body": {"kind": ["c"]}}, [{"kind": "a"}, {"kind": "b"}])


class TestPrefixAndSuffix:
    """``prefix`` and ``suffix`` on strings, also with ``equals-ignore-case``."""

    @pytest.mark.parametrize(
        ("rule", "value", "expected"),
        [
            pytest.param({"prefix": "us-"}, "us-east-1", True, id="prefix"),
            pytest.param({"prefix": "us-"}, "eu-west-1", False, id="prefix-other"),
            pytest.param({"prefix": "us-"}, "US-east-1", False, id="prefix-case-sensitive"),
            pytest.param({"prefix": "us-"}, "us-", True, id="prefix-whole-value"),
            pytest.param(
                {"prefix": "us-east-1a"}, "us-east-1", False, id="prefix-longer-than-value"
            ),
            pytest.param({"prefix": ""}, "anything", True, id="prefix-empty"),
            pytest.param({"prefix": "1"}, 123, False, id="prefix-not-on-numbers"),
            pytest.param({"prefix": "t"}, True, False, id="prefix-not-on-booleans"),
            pytest.param({"prefix": "n"}, None, False, id="prefix-not-on-null"),
            pytest.param({"suffix": ".png"}, "photo.png", True, id="suffix"),
            pytest.param({"suffix": ".png"}, "photo.jpg", False, id="suffix-other"),
            pytest.param({"suffix": ".png"}, "photo.PNG", False, id="suffix-case-sensitive"),
            pytest.param({"suffix": ".png"}, "png", False, id="suffix-longer-than-value"),
            pytest.param({"suffix": "3"}, 123, False, id="suffix-not-on-numbers"),
            pytest.param(
                {"prefix": {"equals-ignore-case": "EventB"}}, "eventbridge", True, id="prefix-ic"
            ),
            pytest.param(
                {"prefix": {"equals-ignore-case": "EventB"}}, "EVENTBUS", True, id="prefix-ic-upper"
            ),
            pytest.param(
                {"prefix": {"equals-ignore-case": "EventB"}}, "Events", False, id="prefix-ic-other"
            ),
            pytest.param(
                {"suffix": {"equals-ignore-case": "tBridge"}}, "EVENTBRIDGE", True, id="suffix-ic"
            ),
            pytest.param(
                {"suffix": {"equals-ignore-case": ".png"}}, "a.jpg", False, id="suffix-ic-other"
            ),
        ],
    )
    def test_affixes(self, rule: dict[str, Any], value: object, expected: bool) -> None:
        assert field([rule], json.dumps({"field": value})) is expected

    def test_missing_key_never_matches(self) -> None:
        assert not field([{"prefix": ""}], "{}")
        assert not field([{"suffix": ""}], "{}")


class TestEqualsIgnoreCase:
    """``equals-ignore-case`` compares whole strings without regard to case."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("alice", True, id="same"),
            pytest.param("Alice", True, id="capitalised"),
            pytest.param("ALICE", True, id="upper"),
            pytest.param("Alicia", False, id="other"),
            pytest.param("alice ", False, id="not-trimmed"),
            pytest.param("alic", False, id="prefix-only"),
            pytest.param(["bob", "ALICE"], True, id="array-element"),
            pytest.param(None, False, id="null"),
        ],
    )
    def test_equals_ignore_case(self, value: object, expected: bool) -> None:
        rules = [{"equals-ignore-case": "aLiCe"}]
        assert field(rules, json.dumps({"field": value})) is expected

    def test_numbers_are_not_strings(self) -> None:
        assert not field([{"equals-ignore-case": "1"}], '{"field": 1}')

    def test_missing_key(self) -> None:
        assert not field([{"equals-ignore-case": "x"}], "{}")


class TestAnythingBut:
    """``anything-but``: a present value that is none of those listed."""

    @pytest.mark.parametrize(
        ("operand", "value", "expected"),
        [
            pytest.param("Raining", "Sunny", True, id="string-other"),
            pytest.param("Raining", "Raining", False, id="string-same"),
            pytest.param("Raining", "raining", True, id="string-case-sensitive"),
            pytest.param(["stopped", "overloaded"], "running", True, id="list-other"),
            pytest.param(["stopped", "overloaded"], "stopped", False, id="list-first"),
            pytest.param(["stopped", "overloaded"], "overloaded", False, id="list-second"),
            pytest.param(123, 124, True, id="number-other"),
            pytest.param(123, 123, False, id="number-same"),
            pytest.param([100, 200, 300], 250, True, id="numbers-other"),
            pytest.param([100, 200, 300], 200, False, id="numbers-listed"),
            pytest.param("Raining", 5, True, id="string-rule-number-value"),
            pytest.param("Raining", None, True, id="string-rule-null-value"),
            pytest.param("Raining", False, True, id="string-rule-boolean-value"),
            pytest.param(123, "123", True, id="number-rule-string-value"),
            pytest.param(["a", "b"], ["a", "b"], False, id="array-all-excluded"),
            pytest.param(["a", "b"], ["a", "c"], True, id="array-one-not-excluded"),
            pytest.param("a", [], False, id="empty-array"),
            pytest.param("a", {"x": "b"}, False, id="object-is-not-a-value"),
        ],
    )
    def test_anything_but(self, operand: object, value: object, expected: bool) -> None:
        assert field([{"anything-but": operand}], json.dumps({"field": value})) is expected

    @pytest.mark.parametrize(
        ("operand", "body"),
        [
            pytest.param("[100]", '{"field": 100.0}', id="100.0"),
            pytest.param("[100]", '{"field": 1e2}', id="1e2"),
            pytest.param("1.50", '{"field": 1.5}', id="1.5"),
        ],
    )
    def test_numbers_are_excluded_by_value(self, operand: str, body: str) -> None:
        pattern = f'{{"body": {{"field": [{{"anything-but": {operand}}}]}}}}'
        assert not FilterCriteria.from_pattern(pattern).matches(record(body))

    def test_missing_key_does_not_match(self) -> None:
        assert not field([{"anything-but": "Raining"}], "{}")
        assert not field([{"anything-but": [1, 2]}], '{"other": 3}')

    def test_combined_with_exists_false_to_allow_missing(self) -> None:
        rules = [{"anything-but": "Raining"}, {"exists": False}]
        assert field(rules, "{}")
        assert field(rules, '{"field": "Sunny"}')
        assert not field(rules, '{"field": "Raining"}')


class TestNumeric:
    """``numeric``: JSON numbers compared by value against ``=`` or a range of one or two bounds."""

    @pytest.mark.parametrize(
        ("comparisons", "value", "expected"),
        [
            pytest.param(["=", 100], "100", True, id="equals"),
            pytest.param(["=", 100], "100.0", True, id="equals-100.0"),
            pytest.param(["=", 100], "1e2", True, id="equals-1e2"),
            pytest.param(["=", 100], "100.000001", False, id="equals-near"),
            pytest.param(["=", 0], "-0", True, id="equals-negative-zero"),
            pytest.param([">", 10], "10", False, id="gt-boundary"),
            pytest.param([">", 10], "10.5", True, id="gt-above"),
            pytest.param([">=", 10], "10", True, id="ge-boundary"),
            pytest.param([">=", 10], "9.999", False, id="ge-below"),
            pytest.param(["<", 10], "10", False, id="lt-boundary"),
            pytest.param(["<", 10], "-1e9", True, id="lt-far-below"),
            pytest.param(["<=", 10], "10", True, id="le-boundary"),
            pytest.param(["<=", 10], "10.000001", False, id="le-above"),
            pytest.param([">", 10, "<=", 20], "10", False, id="range-open-bottom"),
            pytest.param([">", 10, "<=", 20], "15", True, id="range-inside"),
            pytest.param([">", 10, "<=", 20], "20", True, id="range-closed-top"),
            pytest.param([">", 10, "<=", 20], "20.1", False, id="range-above"),
            pytest.param([">=", 10, "<", 20], "10", True, id="range-closed-bottom"),
            pytest.param([">=", 10, "<", 20], "20", False, id="range-open-top"),
            pytest.param([">", -5.5, "<", -1], "-3", True, id="range-negative"),
            pytest.param([">", 0, "<", 0.3], "0.1", True, id="range-decimal-exact"),
            pytest.param([">", 0.1, "<", 1], "0.1", False, id="decimal-boundary-exact"),
            pytest.param([">", 9999], "12345678901234567890", True, id="huge-integer"),
            pytest.param([">", 0], '"5"', False, id="numeric-string"),
            pytest.param([">", 0], "true", False, id="boolean"),
            pytest.param([">=", 0], "null", False, id="null"),
            pytest.param([">", 0], "[-1, 3]", True, id="array-element"),
            pytest.param([">", 0], "[-1, -3]", False, id="array-no-element"),
            pytest.param([">", 0], '{"n": 1}', False, id="object"),
        ],
    )
    def test_numeric(self, comparisons: list[Any], value: str, expected: bool) -> None:
        assert field([{"numeric": comparisons}], f'{{"field": {value}}}') is expected

    def test_missing_key_does_not_match(self) -> None:
        assert not field([{"numeric": [">", 0]}], "{}")

    def test_record_number_example(self) -> None:
        # "process only those records where RecordNumber is greater than 9999"
        pattern = {"body": {"RecordNumber": [{"numeric": [">", 9999]}]}}
        assert not passes(pattern, DOC_BODY)
        assert passes(pattern, DOC_BODY.replace("1234", "10000"))

    @pytest.mark.parametrize(
        ("value", "positive"),
        [
            pytest.param("1e99999999999999999999", True, id="huge"),
            pytest.param("-1e99999999999999999999", False, id="huge-negative"),
            pytest.param("1e-99999999999999999999", True, id="tiny"),
            pytest.param("-2.5e-99999999999999999999", False, id="tiny-negative"),
            pytest.param("0.0e99999999999999999999", False, id="zero"),
        ],
    )
    def test_exponents_beyond_decimal_range(self, value: str, positive: bool) -> None:
        # Valid JSON that Decimal cannot hold: once raised InvalidOperation out of the matcher,
        # which killed the poller that had received it.
        assert field([{"numeric": [">", 0]}], f'{{"field": {value}}}') is positive
        assert field([{"numeric": ["<", 0]}], f'{{"field": {value}}}') is (
            not positive and "0.0" not in value
        )

    def test_a_bound_beyond_decimal_range(self) -> None:
        pattern = '{"body": {"field": [{"numeric": ["<", 1e99999999999999999999]}]}}'
        assert FilterCriteria.from_pattern(pattern).matches(record('{"field": 5e300}'))

    def test_several_ranges_are_ored(self) -> None:
        rules = [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]
        assert field(rules, '{"field": -1}')
        assert field(rules, '{"field": 101}')
        assert not field(rules, '{"field": 50}')


class TestExists:
    """``exists`` tests for a leaf value: null is one, an object or an empty array is not."""

    @pytest.mark.parametrize(
        ("value", "exists", "not_exists"),
        [
            pytest.param('"x"', True, False, id="string"),
            pytest.param('""', True, False, id="empty-string"),
            pytest.param("0", True, False, id="zero"),
            pytest.param("false", True, False, id="false"),
            pytest.param("null", True, False, id="null"),
            pytest.param('["x"]', True, False, id="array"),
            pytest.param("[]", False, True, id="empty-array"),
            pytest.param('{"street": "x"}', False, True, id="object-is-intermediate"),
            pytest.param('[{"street": "x"}]', False, True, id="array-of-objects"),
            pytest.param('[{"street": "x"}, 1]', True, False, id="array-with-a-leaf"),
        ],
    )
    def test_present_value(self, value: str, exists: bool, not_exists: bool) -> None:
        body = f'{{"field": {value}}}'
        assert field([{"exists": True}], body) is exists
        assert field([{"exists": False}], body) is not_exists

    def test_missing_key(self) -> None:
        assert not field([{"exists": True}], '{"other": 1}')
        assert field([{"exists": False}], '{"other": 1}')

    def test_documented_intermediate_node(self) -> None:
        # Lambda's documentation: "address" is an intermediate node, so exists: true fails.
        body = {"person": {"name": "John Doe", "address": {"street": "123 Main St"}}}
        assert not passes({"body": {"person": {"address": [{"exists": True}]}}}, body)
        assert passes({"body": {"person": {"address": [{"exists": False}]}}}, body)
        assert passes({"body": {"person": {"address": {"street": [{"exists": True}]}}}}, body)

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({}, id="parent-missing"),
            pytest.param({"person": "John"}, id="parent-is-a-string"),
            pytest.param({"person": []}, id="parent-is-an-empty-array"),
            pytest.param({"person": [{"name": "x"}]}, id="no-element-has-it"),
        ],
    )
    def test_not_exists_under_a_missing_parent(self, body: object) -> None:
        assert passes({"body": {"person": {"age": [{"exists": False}]}}}, body)
        assert not passes({"body": {"person": {"age": [{"exists": True}]}}}, body)

    def test_exists_false_with_other_fields(self) -> None:
        pattern = {"body": {"kind": ["order"], "deleted": [{"exists": False}]}}
        assert passes(pattern, {"kind": "order"})
        assert not passes(pattern, {"kind": "order", "deleted": True})
        assert not passes(pattern, {"kind": "refund"})


class TestOrOperator:
    """``$or`` matches when any of its objects does, at the top level or inside ``body``."""

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param({"Location": "New York", "Day": "Friday"}, True, id="first-branch"),
            pytest.param({"Location": "Paris", "Day": "Monday"}, True, id="second-branch"),
            pytest.param({"Location": "Paris", "Day": "Friday"}, False, id="no-branch"),
        ],
    )
    def test_inside_body(self, body: object, expected: bool) -> None:
        pattern = {"body": {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}}
        assert passes(pattern, body) is expected

    def test_at_the_top_level(self) -> None:
        pattern = {"$or": [{"body": {"kind": ["a"]}}, {"body": [{"prefix": "kind=a"}]}]}
        assert passes(pattern, {"kind": "a"})
        assert passes(pattern, "kind=a; plain")
        assert not passes(pattern, {"kind": "b"})
        assert not passes(pattern, "kind=b")

    def test_and_with_the_other_fields(self) -> None:
        pattern = {"body": {"source": ["shop"], "$or": [{"a": [1]}, {"b": [2]}]}}
        assert passes(pattern, {"source": "shop", "b": 2})
        assert not passes(pattern, {"source": "bank", "b": 2})
        assert not passes(pattern, {"source": "shop", "c": 3})

    def test_two_groups_must_both_match(self) -> None:
        pattern = {
            "body": {"x": {"$or": [{"a": [1]}, {"b": [1]}]}, "$or": [{"c": [1]}, {"d": [1]}]}
        }
        assert passes(pattern, {"x": {"b": 1}, "d": 1})
        assert not passes(pattern, {"x": {"b": 1}})
        assert not passes(pattern, {"d": 1})

    def test_nested_or(self) -> None:
        pattern = {"body": {"$or": [{"a": [1]}, {"$or": [{"b": [1]}, {"c": [1]}]}]}}
        assert passes(pattern, {"c": 1})
        assert not passes(pattern, {"d": 1})

    def test_branches_see_the_same_array_element(self) -> None:
        pattern = {"body": {"items": {"sku": ["A"], "$or": [{"qty": [1]}, {"gift": [True]}]}}}
        assert passes(pattern, {"items": [{"sku": "A", "gift": True}]})
        assert not passes(pattern, {"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]})


class TestBodyFormats:
    """Lambda's table: a plain-string body needs a plain-string pattern, a JSON body a JSON one."""

    @pytest.mark.parametrize(
        ("body", "pattern", "expected"),
        [
            pytest.param("ERROR disk full", {"body": ["ERROR disk full"]}, True, id="plain-plain"),
            pytest.param(
                "ERROR disk full", {"body": [{"prefix": "ERROR"}]}, True, id="plain-prefix"
            ),
            pytest.param(
                "ERROR disk full", {"body": [{"suffix": "full"}]}, True, id="plain-suffix"
            ),
            pytest.param("ERROR disk full", {"body": ["ERROR"]}, False, id="plain-plain-other"),
            pytest.param(
                "ERROR disk full", {"body": {"level": ["ERROR"]}}, False, id="plain-json-dropped"
            ),
            pytest.param(
                "ERROR",
                {"body": {"level": [{"exists": False}]}},
                False,
                id="plain-json-exists-false",
            ),
            pytest.param(
                '{"level": "ERROR"}', {"body": {"level": ["ERROR"]}}, True, id="json-json"
            ),
            pytest.param(
                '{"level": "ERROR"}',
                {"body": ['{"level": "ERROR"}']},
                False,
                id="json-plain-dropped",
            ),
            pytest.param(
                '{"level": "ERROR"}', {"body": [{"prefix": "{"}]}, False, id="json-prefix-dropped"
            ),
            pytest.param(
                '{"level": "ERROR"}',
                {"body": [{"anything-but": "x"}]},
                False,
                id="json-anything-but-dropped",
            ),
            pytest.param('{"a": 1}', {"body": [{"exists": True}]}, False, id="json-exists-dropped"),
        ],
    )
    def test_format_table(self, body: str, pattern: object, expected: bool) -> None:
        assert passes(pattern, body) is expected

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param("42", id="number"),
            pytest.param('"quoted"', id="string"),
            pytest.param("true", id="true"),
            pytest.param("null", id="null"),
            pytest.param("NaN", id="nan"),
            pytest.param("Infinity", id="infinity"),
            pytest.param("{not json}", id="broken-object"),
            pytest.param('{"a": 1} trailing', id="trailing-text"),
            pytest.param("", id="empty"),
        ],
    )
    def test_bodies_read_as_plain_strings(self, body: str) -> None:
        # Bare JSON scalars, Python's NaN and broken JSON are plain text: matched whole, as text.
        assert passes({"body": [body]}, body)
        assert not passes({"body": {"a": [{"exists": False}]}}, body)

    def test_plain_number_body_is_text_not_a_number(self) -> None:
        assert passes({"body": ["42"]}, "42")
        assert not passes({"body": [42]}, "42")
        assert not passes({"body": [{"numeric": [">", 0]}]}, "42")

    def test_plain_body_operators(self) -> None:
        assert passes({"body": [{"equals-ignore-case": "ping"}]}, "PING")
        assert passes({"body": [{"anything-but": ["ping", "pong"]}]}, "other")
        assert not passes({"body": [{"anything-but": ["ping", "pong"]}]}, "ping")
        assert passes({"body": [{"exists": True}]}, "anything")
        assert not passes({"body": [{"exists": False}]}, "anything")

    def test_json_body_with_whitespace_around_it(self) -> None:
        assert passes({"body": {"a": [1]}}, '\n  {"a": 1}\n')

    def test_json_body_as_sent_by_sns_raw_delivery_off(self) -> None:
        envelope = {"Type": "Notification", "Message": '{"kind": "order"}', "Subject": None}
        assert passes({"body": {"Type": ["Notification"], "Subject": [None]}}, envelope)
        # The inner message is a string inside the envelope: only string rules reach it.
        assert passes({"body": {"Message": [{"prefix": '{"kind"'}]}}, envelope)
        assert not passes({"body": {"Message": {"kind": ["order"]}}}, envelope)

    def test_deeply_nested_body_is_not_an_error(self) -> None:
        body = "[" * 100_000 + "]" * 100_000
        assert not passes({"body": {"a": [{"exists": False}]}}, body)
        assert passes({"body": [{"prefix": "[[["}]}, body)

    @pytest.mark.parametrize(
        "changes",
        [
            pytest.param({"body": None}, id="null-body"),
            pytest.param({"body": b'{"a": 1}'}, id="bytes-body"),
        ],
    )
    def test_body_that_is_not_a_string(self, changes: dict[str, Any]) -> None:
        criteria = FilterCriteria.from_pattern('{"body": {"a": [{"exists": false}]}}')
        assert not criteria.matches(record(**changes))

    def test_record_without_body(self) -> None:
        criteria = FilterCriteria.from_pattern('{"body": [{"exists": false}]}')
        assert not criteria.matches({"messageId": "1"})
        assert FilterCriteria().matches({"messageId": "1"})

    def test_body_is_decoded_once_for_all_patterns(self) -> None:
        criteria = FilterCriteria.parse(
            criteria_text(*({"body": {"n": [number]}} for number in range(MAX_PATTERNS)))
        )
        assert criteria.matches(record('{"n": 4}'))
        assert not criteria.matches(record('{"n": 5}'))


class TestOnlyBodyIsFiltered:
    """SQS mappings filter on ``body`` only: other record keys are refused, and never consulted."""

    @pytest.mark.parametrize(
        ("pattern", "message"),
        [
            pytest.param(
                {"attributes": {"ApproximateReceiveCount": ["1"]}},
                'pattern 1: "attributes" cannot be filtered: '
                'Lambda filters SQS messages on "body" only',
                id="attributes",
            ),
            pytest.param(
                {"messageAttributes": {"kind": {"stringValue": ["order"]}}},
                'pattern 1: "messageAttributes" cannot be filtered: '
                'Lambda filters SQS messages on "body" only',
                id="message-attributes",
            ),
            pytest.param(
                {"body": {"a": [1]}, "messageId": ["059f36b4"]},
                'pattern 1: "messageId" cannot be filtered: '
                'Lambda filters SQS messages on "body" only',
                id="message-id-beside-body",
            ),
            pytest.param(
                {"$or": [{"body": ["x"]}, {"eventSource": ["aws:sqs"]}]},
                'pattern 1 at $or[1]: "eventSource" cannot be filtered: '
                'Lambda filters SQS messages on "body" only',
                id="inside-top-level-or",
            ),
            pytest.param(
                {"Body": ["x"]},
                'pattern 1: "Body" cannot be filtered: Lambda filters SQS messages on "body" only',
                id="key-is-case-sensitive",
            ),
        ],
    )
    def test_other_keys_are_refused(self, pattern: object, message: str) -> None:
        with pytest.raises(FilterError) as caught:
            FilterCriteria.from_pattern(json.dumps(pattern))
        assert str(caught.value) == message

    def test_rest_of_the_record_is_ignored(self) -> None:
        criteria = FilterCriteria.from_pattern('{"body": {"RequestCode": ["AAAA"]}}')
        assert criteria.matches(record(attributes={}, messageAttributes={"x": 1}, awsRegion="x"))

    def test_a_body_key_named_like_a_record_key(self) -> None:
        # Inside the body, any key is fine: these are the message's own fields.
        pattern = {"body": {"messageAttributes": {"kind": ["order"]}, "attributes": [None]}}
        assert passes(pattern, {"messageAttributes": {"kind": "order"}, "attributes": None})


class TestLimits:
    """A Pattern is at most 4,096 characters (Lambda's API) and nests at most 64 levels (ours)."""

    def test_longest_pattern(self) -> None:
        head, tail = '{"body": ["', '"]}'
        longest = head + "x" * (MAX_PATTERN_LENGTH - len(head) - len(tail)) + tail
        assert len(longest) == MAX_PATTERN_LENGTH
        assert FilterCriteria.from_pattern(longest).patterns == (longest,)
        with pytest.raises(FilterError) as caught:
            FilterCriteria.from_pattern(longest.replace('["', '["x'))
        assert str(caught.value) == "pattern 1: 4097 characters long, Lambda allows at most 4096"

    def test_deepest_pattern(self) -> None:
        deepest = nested_pattern(MAX_DEPTH)
        body: object = "x"
        for _ in range(MAX_DEPTH - 1):
            body = {"a": body}
        assert FilterCriteria.from_pattern(deepest).matches(record(json.dumps(body)))
        with pytest.raises(FilterError) as caught:
            FilterCriteria.from_pattern(nested_pattern(MAX_DEPTH + 1))
        assert str(caught.value) == "pattern 1: nests deeper than 64 levels"

    def test_nesting_beyond_pythons_json_parser(self) -> None:
        with pytest.raises(FilterError) as caught:
            FilterCriteria.from_pattern('{"body": ' + "[" * 2000 + "]" * 2000 + "}")
        assert str(caught.value) == "pattern 1: nests deeper than 64 levels"


def _envelope_error(text: str) -> str:
    with pytest.raises(FilterError) as caught:
        FilterCriteria.parse(text)
    return str(caught.value)


def _pattern_error(pattern: str) -> str:
    with pytest.raises(FilterError) as caught:
        FilterCriteria.from_pattern(pattern)
    return str(caught.value)


class TestParseErrors:
    """Every malformed criteria or pattern is refused at parse time with a one-line message."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param(
                "{",
                "FilterCriteria: not valid JSON "
                "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
                id="not-json",
            ),
            pytest.param(
                "[]",
                'FilterCriteria: must be a JSON object such as {"Filters": [{"Pattern": "..."}]}',
                id="not-an-object",
            ),
            pytest.param(
                '{"filters": []}',
                'FilterCriteria: unknown key "filters", the only key is "Filters"',
                id="unknown-key",
            ),
            pytest.param(
                '{"Filters": {"Pattern": "{}"}}',
                'FilterCriteria: "Filters" must be a list, not an object',
                id="filters-not-a-list",
            ),
            pytest.param(
                '{"Filters": null}',
                'FilterCriteria: "Filters" must be a list, not null',
                id="filters-null",
            ),
            pytest.param(
                '{"Filters": ["{\\"body\\": [\\"x\\"]}"]}',
                'pattern 1: a filter is an object such as {"Pattern": "..."}',
                id="filter-is-a-string",
            ),
            pytest.param(
                '{"Filters": [{"Pattern": "{\\"body\\": [1]}"}, {"pattern": "{}"}]}',
                'pattern 2: unknown key "pattern", a filter has only "Pattern"',
                id="filter-unknown-key",
            ),
            pytest.param(
                '{"Filters": [{}]}',
                'pattern 1: "Pattern" is missing',
                id="pattern-missing",
            ),
            pytest.param(
                '{"Filters": [{"Pattern": {"body": ["x"]}}]}',
                'pattern 1: "Pattern" must be a string holding JSON, not an object',
                id="pattern-not-a-string",
            ),
            pytest.param(
                '{"Filters": [{"Pattern": 5}]}',
                'pattern 1: "Pattern" must be a string holding JSON, not a number',
                id="pattern-a-number",
            ),
            pytest.param(
                '{"Filters": [{"Pattern": "{\\"body\\": [\\"x\\"]}"}, {"Pattern": "{body}"}]}',
                "pattern 2: not valid JSON "
                "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
                id="second-pattern-not-json",
            ),
        ],
    )
    def test_criteria_errors(self, text: str, message: str) -> None:
        assert _envelope_error(text) == message

    @pytest.mark.parametrize(
        ("pattern", "message"),
        [
            pytest.param(
                "",
                "pattern 1: not valid JSON (Expecting value: line 1 column 1 (char 0))",
                id="empty-string",
            ),
            pytest.param(
                '{"body": [NaN]}',
                "pattern 1: not valid JSON (NaN is not JSON)",
                id="nan",
            ),
            pytest.param(
                '["body"]',
                "pattern 1: must be a JSON object, not a list",
                id="pattern-is-a-list",
            ),
            pytest.param("{}", "pattern 1: an empty object is not allowed", id="empty-pattern"),
            pytest.param(
                '{"body": {}}',
                "pattern 1 at body: an empty object is not allowed",
                id="empty-body-object",
            ),
            pytest.param(
                '{"body": "x"}',
                'pattern 1 at body: must be a list such as ["value"] or an object, not a string',
                id="body-is-a-string",
            ),
            pytest.param(
                '{"body": {"kind": "order"}}',
                'pattern 1 at body.kind: must be a list such as ["value"] or an object, '
                "not a string",
                id="field-is-a-string",
            ),
            pytest.param(
                '{"body": {"kind": null}}',
                'pattern 1 at body.kind: must be a list such as ["value"] or an object, not null',
                id="field-is-null",
            ),
            pytest.param(
                '{"body": {"kind": []}}',
                "pattern 1 at body.kind: an empty list is not allowed: it would match nothing",
                id="empty-list",
            ),
            pytest.param(
                '{"body": {"kind": [["a"]]}}',
                "pattern 1 at body.kind[0]: a rule list holds values and operators, not lists",
                id="list-in-list",
            ),
            pytest.param(
                '{"body": {"a b": {"c\\nd": []}}}',
                'pattern 1 at body["a b"]["c\\nd"]: an empty list is not allowed: '
                "it would match nothing",
                id="odd-keys-quoted-on-one-line",
            ),
            pytest.param(
                '{"body": {"kind": [{}]}}',
                "pattern 1 at body.kind[0]: an operator object has exactly one operator, "
                "found none",
                id="operator-empty",
            ),
            pytest.param(
                '{"body": {"kind": [{"prefix": "a", "suffix": "b"}]}}',
                "pattern 1 at body.kind[0]: an operator object has exactly one operator, "
                'found "prefix", "suffix"',
                id="operator-two-keys",
            ),
            pytest.param(
                '{"body": {"kind": ["x", {"contains": "a"}]}}',
                'pattern 1 at body.kind[1]: unknown operator "contains"',
                id="unknown-operator",
            ),
            pytest.param(
                '{"body": {"kind": [{"Prefix": "a"}]}}',
                'pattern 1 at body.kind[0]: unknown operator "Prefix"',
                id="operator-case-sensitive",
            ),
            pytest.param(
                '{"body": {"file": [{"wildcard": "*.png"}]}}',
                'pattern 1 at body.file[0]: "wildcard" is not supported: '
                "EventBridge pipes and Lambda do not support it",
                id="wildcard",
            ),
            pytest.param(
                '{"body": {"ip": [{"cidr": "10.0.0.0/24"}]}}',
                'pattern 1 at body.ip[0]: "cidr" is not supported: '
                "it is not among Lambda's filter operators",
                id="cidr",
            ),
            pytest.param(
                '{"body": {"kind": [{"prefix": 5}]}}',
                'pattern 1 at body.kind[0]: "prefix" takes a string or '
                '{"equals-ignore-case": string}',
                id="prefix-number",
            ),
            pytest.param(
                '{"body": {"kind": [{"suffix": ["a"]}]}}',
                'pattern 1 at body.kind[0]: "suffix" takes a string or '
                '{"equals-ignore-case": string}',
                id="suffix-list",
            ),
            pytest.param(
                '{"body": {"kind": [{"prefix": {"equals-ignore-case": 1}}]}}',
                'pattern 1 at body.kind[0]: "prefix" takes a string or '
                '{"equals-ignore-case": string}',
                id="prefix-ignore-case-number",
            ),
            pytest.param(
                '{"body": {"kind": [{"prefix": {"anything-but": "a"}}]}}',
                'pattern 1 at body.kind[0]: "prefix" takes a string or '
                '{"equals-ignore-case": string}',
                id="prefix-other-object",
            ),
            pytest.param(
                '{"body": {"kind": [{"equals-ignore-case": ["a"]}]}}',
                'pattern 1 at body.kind[0]: "equals-ignore-case" takes a string, not a list',
                id="equals-ignore-case-list",
            ),
            pytest.param(
                '{"body": {"kind": [{"exists": "true"}]}}',
                'pattern 1 at body.kind[0]: "exists" takes true or false, not a string',
                id="exists-string",
            ),
            pytest.param(
                '{"body": {"kind": [{"exists": 1}]}}',
                'pattern 1 at body.kind[0]: "exists" takes true or false, not a number',
                id="exists-number",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": []}]}}',
                'pattern 1 at body.kind[0]: "anything-but" takes a non-empty list',
                id="anything-but-empty",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": ["a", 1]}]}}',
                'pattern 1 at body.kind[0]: "anything-but" takes only strings or only numbers, '
                "not both",
                id="anything-but-mixed",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": null}]}}',
                'pattern 1 at body.kind[0]: "anything-but" takes strings or numbers, '
                "or a list of either, not null",
                id="anything-but-null",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": ["a", true]}]}}',
                'pattern 1 at body.kind[0]: "anything-but" takes strings or numbers, '
                "or a list of either, not true",
                id="anything-but-boolean-in-list",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": {}}]}}',
                'pattern 1 at body.kind[0]: "anything-but" takes strings or numbers, '
                "or a list of either, not an object",
                id="anything-but-empty-object",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": {"prefix": "init"}}]}}',
                'pattern 1 at body.kind[0]: "anything-but" with "prefix" is not supported: '
                "EventBridge pipes and Lambda do not support it",
                id="anything-but-prefix",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": {"suffix": ".png"}}]}}',
                'pattern 1 at body.kind[0]: "anything-but" with "suffix" is not supported: '
                "EventBridge pipes and Lambda do not support it",
                id="anything-but-suffix",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": {"equals-ignore-case": "x"}}]}}',
                'pattern 1 at body.kind[0]: "anything-but" with "equals-ignore-case" is not '
                "supported: EventBridge pipes and Lambda do not support it",
                id="anything-but-ignore-case",
            ),
            pytest.param(
                '{"body": {"kind": [{"anything-but": {"wildcard": "*/lib/*"}}]}}',
                'pattern 1 at body.kind[0]: "anything-but" with "wildcard" is not supported: '
                "EventBridge pipes and Lambda do not support it",
                id="anything-but-wildcard",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": 5}]}}',
                'pattern 1 at body.n[0]: "numeric" takes operator and number pairs, '
                'such as [">", 0, "<=", 5]',
                id="numeric-not-a-list",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": []}]}}',
                'pattern 1 at body.n[0]: "numeric" takes operator and number pairs, '
                'such as [">", 0, "<=", 5]',
                id="numeric-empty",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": [">", 0, "<"]}]}}',
                'pattern 1 at body.n[0]: "numeric" takes operator and number pairs, '
                'such as [">", 0, "<=", 5]',
                id="numeric-odd-length",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": ["=>", 0]}]}}',
                'pattern 1 at body.n[0]: "numeric": "=>" is not one of "=", "<", "<=", ">", ">="',
                id="numeric-unknown-operator",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": [0, ">"]}]}}',
                'pattern 1 at body.n[0]: "numeric": a number is not one of '
                '"=", "<", "<=", ">", ">="',
                id="numeric-swapped",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": [">", "5"]}]}}',
                'pattern 1 at body.n[0]: "numeric": ">" takes a number, not a string',
                id="numeric-string-operand",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": ["=", true]}]}}',
                'pattern 1 at body.n[0]: "numeric": "=" takes a number, not true',
                id="numeric-boolean-operand",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": ["=", 1, "<", 5]}]}}',
                'pattern 1 at body.n[0]: "numeric": "=" cannot be combined with another comparison',
                id="numeric-equals-combined",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": ["<", 5, ">", 1]}]}}',
                'pattern 1 at body.n[0]: "numeric": a range is a lower bound (">" or ">=") '
                'then an upper one ("<" or "<=")',
                id="numeric-upper-first",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": [">", 1, ">=", 5]}]}}',
                'pattern 1 at body.n[0]: "numeric": a range is a lower bound (">" or ">=") '
                'then an upper one ("<" or "<=")',
                id="numeric-two-lower",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": [">", 5, "<", 1]}]}}',
                'pattern 1 at body.n[0]: "numeric": 5 is not below 1',
                id="numeric-empty-range",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": [">=", 5, "<=", 5.0]}]}}',
                'pattern 1 at body.n[0]: "numeric": 5 is not below 5.0',
                id="numeric-point-range",
            ),
            pytest.param(
                '{"body": {"n": [{"numeric": [">", 0, "<", 5, "<", 6]}]}}',
                'pattern 1 at body.n[0]: "numeric" takes at most two comparisons',
                id="numeric-three-comparisons",
            ),
            pytest.param(
                '{"body": {"$or": [{"a": [1]}]}}',
                'pattern 1 at body.$or: "$or" takes a list of at least two objects',
                id="or-one-branch",
            ),
            pytest.param(
                '{"body": {"$or": {"a": [1]}}}',
                'pattern 1 at body.$or: "$or" takes a list of at least two objects',
                id="or-not-a-list",
            ),
            pytest.param(
                '{"body": {"$or": [{"a": [1]}, ["b"]]}}',
                "pattern 1 at body.$or[1]: must be a JSON object, not a list",
                id="or-branch-not-an-object",
            ),
            pytest.param(
                '{"body": {"$or": [{"a": [1]}, {}]}}',
                "pattern 1 at body.$or[1]: an empty object is not allowed",
                id="or-branch-empty",
            ),
            pytest.param(
                '{"$or": [{"body": ["a"]}, {"body": {"n": [{"numeric": ["<"]}]}}]}',
                'pattern 1 at $or[1].body.n[0]: "numeric" takes operator and number pairs, '
                'such as [">", 0, "<=", 5]',
                id="error-inside-top-level-or",
            ),
        ],
    )
    def test_pattern_errors(self, pattern: str, message: str) -> None:
        assert _pattern_error(pattern) == message

    def test_errors_name_the_pattern_that_failed(self) -> None:
        text = criteria_text(
            {"body": ["ok"]}, {"body": ["ok"]}, {"body": {"kind": [{"prefix": 1}]}}
        )
        assert _envelope_error(text).startswith("pattern 3 at body.kind[0]: ")

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param('{"Filters": [{"Pattern": "{\\"body\\": {\\"a\\nb\\": []}}"}]}', id="key"),
            pytest.param('{"Filters": [{"Pattern": "{\\n\\"body\\":\\n[}"}]}', id="json-error"),
            pytest.param('{"Filters": [{"Pattern": "{\\"\\u2028\\": [1]}"}]}', id="separator"),
        ],
    )
    def test_messages_are_one_line(self, text: str) -> None:
        message = _envelope_error(text)
        assert message.splitlines() == [message]
