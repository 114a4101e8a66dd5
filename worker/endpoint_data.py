"""botocore's endpoint table, read for the services this worker calls and no others.

Every botocore session loads ``endpoints.json``: the legacy endpoint entries of every AWS service
in every partition. Parsed the way botocore parses it, that table is about 7 MB of Python objects,
a tenth of the worker's memory, and the worker resolves endpoints for two services. The loader
made here reads the same file, walks its partitions, and parses each service's entry on its own,
keeping only the services this process can create clients for: SQS and SNS, and the services
botocore's credential providers call themselves (STS for assumed roles and web identity, SSO,
sign-in). What it keeps is exactly what botocore would have loaded for those services, so
endpoints, signing regions and FIPS or dual-stack variants resolve as they would; a service
left out falls back to its partition's defaults, as a service botocore does not list does.

A file whose shape this reader does not expect (a future format, a custom ``AWS_DATA_PATH``
table) is parsed whole, as botocore would: the trimming saves memory and never changes an
endpoint the worker's clients resolve.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from botocore.loaders import JSONFileLoader, Loader, create_loader

SERVICES = frozenset({"sqs", "sns", "sts", "sso", "sso-oidc", "signin"})
"""The services whose endpoint entries are kept."""

_ENDPOINTS = "endpoints"  # the data name botocore's session loads its endpoint table by
_FORMATS: tuple[tuple[str, Callable[[bytes], bytes]], ...] = (  # as botocore looks for them
    (".json", lambda data: data),
    (".json.gz", gzip.decompress),
)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(object_pairs_hook=OrderedDict)  # as botocore decodes its data


def lean_loader(data_path: str | None, services: frozenset[str] = SERVICES) -> Loader:
    """A botocore data loader (for ``AWS_DATA_PATH`` ``data_path``) whose endpoint table is lean."""
    loader = create_loader(data_path)
    loader.file_loader = LeanEndpointsFileLoader(services)
    return loader


class LeanEndpointsFileLoader(JSONFileLoader):
    """botocore's JSON file loader, except that ``endpoints`` keeps only some services."""

    def __init__(self, services: frozenset[str]) -> None:
        self.services = services

    def load_file(self, file_path: str) -> Any:
        """Load ``file_path`` (without its extension) as botocore would, trimming the table."""
        if Path(file_path).name != _ENDPOINTS:
            return super().load_file(file_path)
        for extension, decompress in _FORMATS:
            path = Path(file_path + extension)
            if path.is_file():
                return read_endpoints(decompress(path.read_bytes()).decode(), self.services)
        return None


def read_endpoints(text: str, services: frozenset[str]) -> Any:
    """Parse an endpoint table, keeping in each partition only the entries of ``services``.

    Each service's entry is parsed and dropped before the next, so the whole table never exists
    in memory at once. Text not shaped like a table is parsed whole.
    """
    try:
        return _Reader(text).table(services)
    except (ValueError, IndexError, TypeError):
        return json.loads(text, object_pairs_hook=OrderedDict)


class _Reader:
    """Just enough of a JSON reader to walk an object's members and parse each value on its own."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def table(self, services: frozenset[str]) -> OrderedDict[str, Any]:
        table: OrderedDict[str, Any] = OrderedDict()
        for key in self.members():
            if key == "partitions":
                table[key] = [self.partition(services) for _ in self.elements()]
            else:
                table[key] = self.value()
        self.skip_whitespace()
        if self.pos != len(self.text):
            raise ValueError("text after the table")
        return table

    def partition(self, services: frozenset[str]) -> OrderedDict[str, Any]:
        partition: OrderedDict[str, Any] = OrderedDict()
        for key in self.members():
            if key != "services":
                partition[key] = self.value()
                continue
            kept: OrderedDict[str, Any] = OrderedDict()
            for service in self.members():
                entry = self.value()
                if service in services:
                    kept[service] = entry
            partition[key] = kept
        return partition

    def members(self) -> Iterator[str]:
        """Yield each key of the object here; the caller reads its value before the next."""
        for _ in self.items("{", "}"):
            key = self.value()
            if not isinstance(key, str):
                raise TypeError(f"a key that is not a string at {self.pos}")
            self.expect(":")
            yield key

    def elements(self) -> Iterator[None]:
        """Yield once per element of the array here; the caller reads it before the next."""
        return self.items("[", "]")

    def items(self, opening: str, closing: str) -> Iterator[None]:
        """Yield once per item of the object or array here, between its commas."""
        self.expect(opening)
        if self.peek() == closing:
            self.pos += 1
            return
        while True:
            yield None
            if self.peek() != ",":
                break
            self.pos += 1
        self.expect(closing)

    def value(self) -> Any:
        self.skip_whitespace()
        value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        return value

    def peek(self) -> str:
        self.skip_whitespace()
        return self.text[self.pos]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r} at {self.pos}")
        self.pos += 1

    def skip_whitespace(self) -> None:
        self.pos = _WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
