"""For voxfleet's own tests and benchmarks only; nothing here is used by ``voxfleet serve``.

- ``ray_cluster``: a real multi-node Ray cluster on loopback addresses of this machine
  (the e2e tests' ``ray_cluster`` fixture and ``voxfleet bench ray``); needs ``voxfleet[ray]``.
- ``devrunner``: runs a bot under Pipecat's own dev runner, the benchmarks' point of comparison.
- ``plain_bot``: a plain offline Pipecat bot with no voxfleet hooks, served by ``voxfleet bench
  turn`` under both voxfleet and the dev runner.
- ``faulty_tone``: the tone bot made to raise, hold memory, or fail a phone call, and answering
  each sound with a tone (the fault tests and ``voxfleet bench chaos``).
"""
