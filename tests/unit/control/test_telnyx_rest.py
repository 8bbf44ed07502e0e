"""What voxfleet asks of Telnyx's TeXML REST API, without a network: the settings it needs, the
TeXML of a transfer, and which of Telnyx's errors are about one of the request's numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from voxfleet.config import Settings
from voxfleet.control import telnyx_rest
from voxfleet.exceptions import CarrierNotConfigured


def test_placing_needs_the_key_the_account_and_the_texml_application_and_says_which_is_missing():
    with pytest.raises(CarrierNotConfigured, match="not set: TELNYX_ACCOUNT_SID, TELNYX_TEXML_APP_ID"):
        telnyx_rest.check(Settings(telnyx_api_key="KEY"))
    telnyx_rest.check(Settings(telnyx_api_key="KEY", telnyx_account_sid="acct"), placing=False)  # end/transfer
    telnyx_rest.check(Settings(telnyx_api_key="KEY", telnyx_account_sid="acct", telnyx_texml_app_id="app"))


def test_a_transfer_is_a_dial_of_the_number_with_the_caller_id():
    root = ET.fromstring(telnyx_rest.dial_texml("+13125550999", "+13125550006"))
    dial = root.find("Dial")
    assert dial is not None and dial.get("callerId") == "+13125550006"
    assert [n.text for n in dial.findall("Number")] == ["+13125550999"]
    assert ET.fromstring(telnyx_rest.dial_texml("+13125550999", None)).find("Dial").get("callerId") is None


@pytest.mark.parametrize(("errors", "field"), [
    ([{"code": "10002", "title": "Invalid phone number", "source": {"pointer": "/To"}}], "to"),
    ([{"code": "10015", "title": "Bad Request", "source": {"pointer": "/From"}}], "from"),
    ([{"code": "10016", "title": "Phone number must be in +E.164 format", "detail": "From is not"}], "from"),
    ([{"code": "10001", "title": "Inactive phone number"}], "to"),
    ([{"code": "10009", "title": "Authentication failed"}], None),
    (["not an object"], None),
])
def test_telnyx_errors_about_a_number_name_the_field(errors, field):
    assert telnyx_rest._error_field(errors, {"to": "+1", "from": "+2"}) == field
