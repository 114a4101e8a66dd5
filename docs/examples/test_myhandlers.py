"""Unit tests of myhandlers.py, with no queue: ``pytest test_myhandlers.py``."""

import pytest
from myhandlers import handle

from worker import NonRetryableError
from worker.testing import message


def test_an_order_is_charged(capsys: pytest.CaptureFixture[str]) -> None:
    handle(message({"order_id": "o-1", "amount": 5}))
    assert capsys.readouterr().out == "order o-1: charged 5\n"


def test_an_amount_that_is_not_a_number_goes_to_the_dlq_without_retries() -> None:
    with pytest.raises(NonRetryableError):
        handle(message({"order_id": "o-2", "amount": "lots"}))


def test_the_body_is_the_payload_through_an_sns_envelope_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(message({"order_id": "o-3", "amount": 7}, sns=True))
    assert capsys.readouterr().out == "order o-3: charged 7\n"
