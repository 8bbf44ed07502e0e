"""Property-based fuzzing of the HTTP API over its own OpenAPI schema (schemathesis), against a
real `voxfleet serve` (no --dev) with its admin key: no generated request may get a 5xx or wait
longer than the bound a request to the control plane is answered in.

Bounded so CI stays quick: FUZZ_EXAMPLES cases per operation (the API has ~12 operations).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import Server
from voxfleet.bots import tone
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

FUZZ_EXAMPLES = 25
ANSWER_BOUND_S = 20.0  # the slowest honest answer: an offer waits for its bot (signaling_timeout_s 15)
seen = {"cases": 0, "server_errors": [], "slowest_s": 0.0}


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    advertise_addresses(["127.0.0.1"])
    config = tmp_path_factory.mktemp("fuzz") / "voxfleet.toml"
    config.write_text(f'queue_wait_s = 3\noffer_timeout_s = 3\n[[agents]]\nname = "tone"\n'
                      f'bot = "{Path(tone.__file__)}"\nmin_warm = 1\npool_policy = "fixed"\n')
    server = Server(env={"VOXFLEET_CONFIG": str(config)})
    yield server
    server.stop()
    print(f"\nAPI fuzz: {seen['cases']} cases, {len(seen['server_errors'])} server errors, "
          f"slowest answer {seen['slowest_s'] * 1000:.0f} ms")


def test_no_generated_request_gets_a_server_error_or_hangs(fuzzed_server):
    """Each operation of the published schema, FUZZ_EXAMPLES generated cases (hypothesis drives
    schemathesis' strategies here directly: its pytest plugin does not load on this pytest)."""
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, operations

    for operation in operations:
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def one(case) -> None:
            started = time.monotonic()
            response = case.call(base_url=fuzzed_server.url, headers=fuzzed_server.headers,
                                 timeout=ANSWER_BOUND_S + 5)
            elapsed = time.monotonic() - started
            seen["cases"] += 1
            seen["slowest_s"] = max(seen["slowest_s"], elapsed)
            where = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                seen["server_errors"].append((where, response.status_code))
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            assert elapsed < ANSWER_BOUND_S, f"{where} took {elapsed:.1f}s"
            content_type = response.headers.get("content-type") or ""
            content_type = content_type[0] if isinstance(content_type, list) else content_type
            # (a HEAD answer has a GET's headers and no body)
            if response.status_code >= 400 and content_type.startswith("application/json") \
                    and case.method.upper() != "HEAD":
                assert set(response.json()) >= {"error", "code"}, response.text  # every refusal says what and why

        one()
    assert seen["cases"] >= len(operations) * 5 and not seen["server_errors"]
