"""The systemd unit, its environment file and sd_notify (systemd.py)."""

from __future__ import annotations

import socket
from pathlib import Path


def test_unit_env_file_and_notify(tmp_path, monkeypatch):
    from voxfleet import systemd

    unit = systemd.render_unit(systemd.UnitOptions(user="voxfleet", python="/opt/voxfleet/.venv/bin/python",
                                                   drain_timeout_s=60))
    assert "ExecStart=/opt/voxfleet/.venv/bin/python -m voxfleet.cli serve" in unit
    assert "User=voxfleet" in unit and "TimeoutStopSec=75" in unit and "Type=notify" in unit
    env = systemd.render_env_file({"VOXFLEET_TURN_SECRET": "abc"})
    assert "VOXFLEET_TURN_SECRET=abc\n" in env and "#DEEPGRAM_API_KEY=\n" in env

    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert systemd.notify("READY=1")
        assert listener.recv(100) == b"READY=1"
    finally:
        listener.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False
    assert Path(address).exists()
