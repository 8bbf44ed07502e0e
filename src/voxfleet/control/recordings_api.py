"""``GET /v1/sessions/{id}/recording``: a session's recording, a stereo WAV (caller left, bot right),
with a private key. Starlette's FileResponse answers HEAD and byte ranges (a browser's player
seeks with them). Every refusal is a 404 whose code says why (``RecordingNotFound``)."""

from __future__ import annotations


from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from voxfleet.control.state import State, require_private
from voxfleet.exceptions import RecordingNotFound
from voxfleet.storage import recordings

router = APIRouter()


@router.api_route("/v1/sessions/{session_id}/recording", methods=["GET", "HEAD"], tags=["v1"],
                  dependencies=[Depends(require_private)],
                  response_class=FileResponse,
                  responses={200: {"content": {"audio/wav": {}}, "description": "The session's recording (WAV)."}})
async def get_recording(session_id: str, state: State) -> FileResponse:
    """The session's recording: one WAV, 16-bit stereo, the caller left and the bot right."""
    session = await state.public_session(session_id)
    recording = session.get("recording") or {}
    agent = next((a for a in state.settings.agents if a.name == session["agent"]), None)
    if not recording and (agent is None or not agent.record):
        raise RecordingNotFound(session_id, "off", session["agent"])
    if not recording:  # live, or ended a moment ago: the control plane is finishing its WAV
        raise RecordingNotFound(session_id, "not_ready")
    if recording.get("state") in ("expired", "empty"):
        raise RecordingNotFound(session_id, recording["state"])
    path = recordings.wav_path(state.settings.recordings_dir, session_id)
    if not path.is_file():
        raise RecordingNotFound(session_id, "missing")
    return FileResponse(path, media_type="audio/wav", filename=f"{session_id}.wav")
