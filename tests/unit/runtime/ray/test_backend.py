"""The Ray backend's pure parts (runtime/ray/backend.py): the bot nodes of a cluster listing."""

from __future__ import annotations


def test_bot_nodes_are_the_alive_ones_offering_bandwidth_with_their_region_label():
    from voxfleet.runtime.ray.backend import RayBackend

    backend = RayBackend({}, profiles={}, address="unused", region_label="zone")
    listed = [
        {"NodeID": "head", "Alive": True, "NodeManagerAddress": "10.0.0.2",
         "Resources": {"memory": 8 * 2**30}, "Labels": {}},
        {"NodeID": "eu-1", "Alive": True, "NodeManagerAddress": "10.0.1.7",
         "Resources": {"CPU": 8.0, "memory": 14 * 2**30, "bandwidth_kbps": 50000.0}, "Labels": {"zone": "eu"}},
        {"NodeID": "gone", "Alive": False, "NodeManagerAddress": "10.0.1.8",
         "Resources": {"CPU": 8.0, "memory": 2**30, "bandwidth_kbps": 50000.0}, "Labels": {"zone": "eu"}},
        {"NodeID": "plain", "Alive": True, "NodeManagerAddress": "10.0.3.1",
         "Resources": {"CPU": 2.0, "memory": 2**31, "bandwidth_kbps": 100.0}, "Labels": {}},
    ]
    nodes = backend.bot_nodes(listed)
    assert sorted(nodes) == ["eu-1", "plain"]
    eu = nodes["eu-1"]
    assert (eu.region, eu.address, eu.cpu_millis, eu.mem_mb, eu.kbps) == ("eu", "10.0.1.7", 8000, 14336, 50000)
    assert nodes["plain"].region == "default"
