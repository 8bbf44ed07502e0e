"""The WebSocket relay's latency samples (runtime/streams.py)."""


def test_relay_latency_samples_stay_bounded_and_count_every_frame():
    from voxfleet.runtime.streams import LatencySamples

    samples = LatencySamples(keep=100)
    for i in range(10_000):
        samples.add(float(i % 100))
    summary = samples.summary()
    assert summary["frames"] == 10_000 and len(samples.samples) == 100
    assert 30 <= summary["p50"] <= 70 and summary["p99"] >= 90
    assert LatencySamples().summary() == {"frames": 0}
