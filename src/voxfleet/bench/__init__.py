"""``voxfleet bench ...``: the benchmarks, and the real caller peers they (and the tests) use.

One module per benchmark command: ``ttfw``, ``turn``, ``stt``, ``start``, ``phone``, ``flood``,
``capacity``, ``chaos`` (its I/O-free core in ``chaos_core``), ``on_ray`` (``voxfleet bench
ray``). The peers call voxfleet the way real clients do: ``webrtc_client`` (an aiortc caller
speaking Pipecat's SmallWebRTC signaling), ``twilio_caller`` (signed webhook, TwiML, media stream
in real time), ``ws_client`` (Pipecat's protobuf frames over a WebSocket), with
``conversation`` (pacing audio out, waiting for the bot's answer) and ``speech`` (spoken
questions from the bundled Piper voice, transcripts with the bundled Whisper).

Nothing here is imported by ``voxfleet serve``.
"""
