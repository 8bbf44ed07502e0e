"""Twilio's REST API, for what voxfleet asks of a call: place it, end it, hand it to a number.

Through Twilio's own SDK (``twilio.rest.Client``), each request bounded by ``REST_TIMEOUT_S`` and
run off the event loop. Twilio's answers become voxfleet's errors here: a number Twilio refuses
names the request's field (``to``/``from``, 400); anything else Twilio or the network fails is a
``CarrierError`` (502) with Twilio's own message and code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from voxfleet.config import Settings
from voxfleet.exceptions import CarrierError, CarrierNotConfigured, InvalidRequest
from voxfleet.transports.call_progress import TWILIO_STATUS

log = logging.getLogger(__name__)

REST_TIMEOUT_S = 10.0
# Twilio error codes that are about one of the request's numbers (twilio.com/docs/api/errors)
TO_ERRORS = frozenset({21201, 21211, 21214, 21215, 21216, 21217, 21219, 21401, 13223, 13224})
FROM_ERRORS = frozenset({21210, 21212, 21213, 21606})


def client(settings: Settings) -> Any:
    """A Twilio REST client for the configured account; CarrierNotConfigured without one."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        raise CarrierNotConfigured("calls through Twilio's REST API need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; "
                                   "neither may be empty")
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    rest = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                  http_client=TwilioHttpClient(timeout=REST_TIMEOUT_S))
    if settings.telephony.twilio_api_base:
        rest.api.base_url = settings.telephony.twilio_api_base.rstrip("/")
    return rest


async def _run(settings: Settings, what: str, fields: dict[str, str], request: Any) -> Any:
    """Run ``request(client)`` in a thread; Twilio's errors as voxfleet's."""
    from requests import RequestException
    from twilio.base.exceptions import TwilioException, TwilioRestException

    rest = client(settings)
    try:
        return await asyncio.to_thread(request, rest)
    except TwilioRestException as exc:
        message = f"Twilio refused to {what}: {exc.msg} (error {exc.code}, HTTP {exc.status})"
        for field, codes in (("to", TO_ERRORS), ("from", FROM_ERRORS)):
            if exc.code in codes and field in fields:
                raise InvalidRequest(field, fields[field], message) from None
        raise CarrierError(message) from None
    except (TwilioException, RequestException, OSError) as exc:
        raise CarrierError(f"could not {what}: Twilio's REST API did not answer ({type(exc).__name__}: {exc})") from None


async def dial(settings: Settings, *, to: str, from_: str, answer_url: str, status_url: str, ring_timeout_s: int,
               machine_detection: str | None) -> dict[str, Any]:
    """Place a call (``POST /Calls``) whose answer asks `answer_url` for TwiML and whose progress
    is reported to `status_url`; returns Twilio's ``sid`` and the status (ours)."""
    def create(rest: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"machine_detection": machine_detection} if machine_detection else {}
        call = rest.calls.create(
            to=to, from_=from_, url=answer_url, method="POST", status_callback=status_url,
            status_callback_method="POST", status_callback_event=["initiated", "ringing", "answered", "completed"],
            timeout=ring_timeout_s, **options)
        return {"sid": call.sid, "status": TWILIO_STATUS.get(call.status or "", "queued")}

    return await _run(settings, f"call {to}", {"to": to, "from": from_}, create)  # type: ignore[no-any-return]


async def update(settings: Settings, call_sid: str, what: str, fields: dict[str, str] | None = None,
                 **changes: Any) -> None:
    """Update a live call (``POST /Calls/{sid}``): ``status="completed"`` / ``"canceled"`` ends it,
    ``twiml=`` replaces what it does (a transfer's ``<Dial>``)."""
    await _run(settings, what, fields or {}, lambda rest: rest.calls(call_sid).update(**changes))


async def end(settings: Settings, call_sid: str, canceled: bool) -> None:
    """Cancel a call still ringing, or end a live one."""
    await update(settings, call_sid, f"end call {call_sid}", status="canceled" if canceled else "completed")


async def transfer(settings: Settings, call_sid: str, to: str, from_: str | None) -> None:
    """Hand a live call to `to`: its TwiML becomes ``<Dial callerId=from_><Number>to</Number></Dial>``,
    and Twilio leaves the call's media stream for it."""
    from twilio.twiml.voice_response import VoiceResponse

    twiml = VoiceResponse()
    dial = twiml.dial(caller_id=from_) if from_ else twiml.dial()
    dial.number(to)
    await update(settings, call_sid, f"transfer call {call_sid} to {to}", {"to": to}, twiml=str(twiml))


async def hang_up_call(settings: Settings, call_sid: str) -> None:
    """The bot ended the call: end it at Twilio too (when credentials are configured)."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return
    try:
        await update(settings, call_sid, f"hang up call {call_sid}", status="completed")
        log.info("call %s: hung up through Twilio's REST API", call_sid)
    except (CarrierError, InvalidRequest) as exc:  # the call ends anyway when its stream closes
        log.warning("call %s: REST hang-up failed: %s", call_sid, exc)
