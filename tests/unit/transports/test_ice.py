"""Advertising addresses to aioice (transports/ice.py): the public address offered on a locally bound
socket."""

from __future__ import annotations


async def test_nat_mapping_offers_the_public_address_on_a_locally_bound_socket():
    from aiortc import RTCPeerConnection

    from voxfleet.transports.ice import advertise_addresses

    advertise_addresses(["127.0.0.3/127.0.0.1"])  # "public" 127.0.0.3 mapped onto 127.0.0.1
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")]
        assert candidates and all(" 127.0.0.3 " in line and "typ host" in line for line in candidates)
        assert "c=IN IP4 127.0.0.3" in pc.localDescription.sdp
        connection = pc.getTransceivers()[0].sender.transport.transport._connection  # aioice, for the socket
        assert {p.transport.get_extra_info("sockname")[0] for p in connection._protocols} == {"127.0.0.1"}
    finally:
        await pc.close()
        advertise_addresses(["127.0.0.1"])
