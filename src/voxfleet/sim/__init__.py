"""Warm-pool simulator: seeded, reproducible, pure (no asyncio, no I/O but the CLI and plot).

- :mod:`voxfleet.sim.traces` — session arrivals (Poisson, bursty, diurnal, replayed from a file)
  and session lengths;
- :mod:`voxfleet.sim.engine` — the discrete-event simulation of one node's warm pool;
- :mod:`voxfleet.sim.policies` — the policies compared (Pipecat Cloud's, LiveKit's, voxfleet's);
- :mod:`voxfleet.sim.report` — running them side by side; table, JSON, plot;
- :mod:`voxfleet.sim.cli` — the ``voxfleet simulate`` subcommand.
"""
