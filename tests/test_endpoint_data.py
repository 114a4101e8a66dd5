"""The lean endpoint table: what it keeps must be exactly what botocore would have loaded, so
that every endpoint the worker resolves is the one a stock session resolves."""

from __future__ import annotations

import gzip
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import botocore
import botocore.exceptions
import pytest
from aiobotocore.session import get_session
from botocore.regions import EndpointResolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from worker.config import Settings
from worker.consume.sqs import aws_session, open_sns, open_sqs
from worker.endpoint_data import SERVICES, LeanEndpointsFileLoader, lean_loader, read_endpoints

ENDPOINTS_JSON = Path(botocore.__file__).parent / "data" / "endpoints.json"
PROPERTIES = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def full_table() -> Any:
    return json.loads(ENDPOINTS_JSON.read_text(encoding="utf-8"), object_pairs_hook=OrderedDict)


def only(table: Any, services: frozenset[str]) -> Any:
    """``table`` with each partition's services cut down to ``services``: the expected result."""
    partitions = [
        {**partition, "services": {k: v for k, v in partition["services"].items() if k in services}}
        for partition in table["partitions"]
    ]
    return {**table, "partitions": partitions}


@pytest.fixture(scope="module")
def tables() -> tuple[Any, Any]:
    """(botocore's whole table, the lean one), both read from the installed file."""
    full = full_table()
    lean = read_endpoints(ENDPOINTS_JSON.read_text(encoding="utf-8"), SERVICES)
    return full, lean


def resolve(  # noqa: PLR0917 -- one call's every input
    resolver: EndpointResolver, service: str, region: str, partition: str, fips: bool, dual: bool
) -> Any:
    """What the resolver makes of it: an endpoint, or the error it raises."""
    try:
        return resolver.construct_endpoint(
            service,
            region,
            partition_name=partition,
            use_fips_endpoint=fips,
            use_dualstack_endpoint=dual,
        )
    except botocore.exceptions.BotoCoreError as exc:
        return repr(exc)


class TestInstalledTable:
    """The table botocore ships, read the lean way."""

    def test_keeps_exactly_the_kept_services(self, tables: tuple[Any, Any]) -> None:
        full, lean = tables
        assert lean == only(full, SERVICES)
        assert {"sqs", "sns", "sts"} <= set(lean["partitions"][0]["services"])
        assert len(lean["partitions"]) == len(full["partitions"]) > 1

    def test_drops_the_other_services(self, tables: tuple[Any, Any]) -> None:
        full, lean = tables
        kept = sum(len(p["services"]) for p in lean["partitions"])
        everything = sum(len(p["services"]) for p in full["partitions"])
        assert kept <= len(SERVICES) * len(full["partitions"]) < everything

    @pytest.mark.parametrize("service", sorted(SERVICES))
    def test_resolves_every_region_and_variant_as_botocore_does(
        self, tables: tuple[Any, Any], service: str
    ) -> None:
        full, lean = tables
        stock, ours = EndpointResolver(full), EndpointResolver(lean)
        checked = 0
        for partition in full["partitions"]:
            for region in [*partition["regions"], "made-up-1"]:
                for fips in (False, True):
                    for dualstack in (False, True):
                        how = (service, region, partition["partition"], fips, dualstack)
                        assert resolve(ours, *how) == resolve(stock, *how), how
                        checked += 1
        assert checked > 100


class TestClients:
    """The worker's own clients resolve AWS endpoints as stock clients do."""

    @pytest.mark.parametrize(
        "region", ["us-east-1", "eu-west-1", "us-gov-west-1", "cn-north-1", "us-iso-east-1"]
    )
    async def test_sqs_and_sns_urls_match_a_stock_session(self, region: str) -> None:
        key, secret = "key", "not-a-secret"
        settings = Settings(
            region=region, aws_access_key_id=SecretStr(key), aws_secret_access_key=SecretStr(secret)
        )
        stock = get_session()
        async with (
            open_sqs(settings) as sqs,
            open_sns(settings) as sns,
            stock.create_client(
                "sqs", region_name=region, aws_access_key_id=key, aws_secret_access_key=secret
            ) as stock_sqs,
            stock.create_client(
                "sns", region_name=region, aws_access_key_id=key, aws_secret_access_key=secret
            ) as stock_sns,
        ):
            assert sqs.meta.endpoint_url == stock_sqs.meta.endpoint_url
            assert sns.meta.endpoint_url == stock_sns.meta.endpoint_url
            assert sqs.meta.region_name == stock_sqs.meta.region_name == region

    async def test_the_worker_session_knows_only_the_kept_services(self) -> None:
        ours, stock = aws_session(), get_session()
        for service in ("sqs", "sns"):
            regions = await ours.get_available_regions(service)
            assert regions == await stock.get_available_regions(service)
            assert "eu-west-1" in regions
        assert await stock.get_available_regions("ec2")
        assert await ours.get_available_regions("ec2") == []

    def test_the_loader_honours_aws_data_path(self, tmp_path: Path) -> None:
        """A table of one's own (AWS_DATA_PATH) is found first, and trimmed the same way."""
        table = {
            "version": 3,
            "partitions": [
                {"partition": "custom", "services": {"sqs": {"endpoints": {}}, "ec2": {}}}
            ],
        }
        (tmp_path / "endpoints.json").write_text(json.dumps(table), encoding="utf-8")
        loader = lean_loader(str(tmp_path))
        loaded, path = loader.load_data_with_path("endpoints")
        assert path == str(tmp_path / "endpoints")
        assert loaded == only(table, SERVICES)

    def test_a_compressed_table_is_read_too(self, tmp_path: Path) -> None:
        table = {"partitions": [{"partition": "aws", "services": {"sns": {}, "s3": {}}}]}
        (tmp_path / "endpoints.json.gz").write_bytes(gzip.compress(json.dumps(table).encode()))
        loaded = LeanEndpointsFileLoader(SERVICES).load_file(str(tmp_path / "endpoints"))
        assert loaded == only(table, SERVICES)

    def test_other_data_files_load_as_botocore_loads_them(self, tmp_path: Path) -> None:
        (tmp_path / "_retry.json").write_text('{"retry": {"sqs": 1}}', encoding="utf-8")
        loader = LeanEndpointsFileLoader(SERVICES)
        assert loader.load_file(str(tmp_path / "_retry")) == {"retry": {"sqs": 1}}
        assert loader.load_file(str(tmp_path / "missing")) is None
        assert loader.load_file(str(tmp_path / "endpoints")) is None


class TestUnexpectedShapes:
    """Text not shaped like a table is parsed whole, as botocore would parse it."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("[1, 2]", [1, 2]),
            ('{"partitions": 5}', {"partitions": 5}),
            ('{"partitions": [1]}', {"partitions": [1]}),
            (
                '{"partitions": [{"services": ["sqs", "ec2"]}]}',
                {"partitions": [{"services": ["sqs", "ec2"]}]},
            ),
            (
                '{"partitions": [{"services": {"sqs": 1, "ec2": 2}}]}',
                {"partitions": [{"services": {"sqs": 1}}]},
            ),
            ("{}", {}),
            (' \n{"version": 3}\n ', {"version": 3}),
        ],
    )
    def test_reads_what_it_can_and_parses_the_rest_whole(self, text: str, expected: Any) -> None:
        assert read_endpoints(text, SERVICES) == expected

    @pytest.mark.parametrize("text", ["", "{", '{"partitions": [', '{"a": 1} trailing', "{'a': 1}"])
    def test_broken_text_fails_as_json_does(self, text: str) -> None:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        with pytest.raises(json.JSONDecodeError):
            read_endpoints(text, SERVICES)


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_names = st.sampled_from(["sqs", "sns", "sts", "ec2", "s3", "sq", 'a"b', "é"])
_partition = st.dictionaries(
    st.sampled_from(["partition", "regions", "defaults"]), _json, max_size=3
).flatmap(
    lambda rest: st.dictionaries(_names, _json, max_size=5).map(
        lambda services: {**rest, "services": services}
    )
)
_tables = st.fixed_dictionaries(
    {"partitions": st.lists(_partition, max_size=3)}, optional={"version": st.integers()}
)


class TestAnyTable:
    """For any table and any layout of its text, the lean reading is the whole one, trimmed."""

    @PROPERTIES
    @given(table=_tables, indent=st.sampled_from([None, 0, 1, 2, "\t"]), keep=st.sets(_names))
    def test_lean_is_whole_then_trimmed(
        self, table: dict[str, Any], indent: int | str | None, keep: set[str]
    ) -> None:
        text = json.dumps(table, indent=indent, ensure_ascii=bool(indent))
        assert read_endpoints(text, frozenset(keep)) == only(table, frozenset(keep))
