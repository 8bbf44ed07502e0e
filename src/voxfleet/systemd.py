"""Running voxfleet as a systemd service: the unit file, its environment file, readiness notice.

``voxfleet service install`` writes a unit for the current install (this Python interpreter,
so this virtualenv) and an environment file for secrets (mode 0600, kept if it exists). The
unit is ``Type=notify``: ``voxfleet serve`` tells systemd ``READY=1`` once every template (and
the local LLM) is ready, so ``systemctl start`` returns when calls can be taken. SIGTERM
drains (see ``control/server.py``); ``KillMode=mixed`` sends it to the control plane only,
which ends its bots itself, and ``TimeoutStopSec`` leaves room for the drain.
"""

from __future__ import annotations

import os
import pwd
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from voxfleet.exceptions import ConfigError

# Secrets that belong in the environment file rather than in voxfleet.toml.
SECRET_VARIABLES = (
    ("VOXFLEET_TURN_SECRET", "coturn's static-auth-secret (TURN credentials are minted per session from it)"),
    ("VOXFLEET_LLM__API_KEY", "API key of an OpenAI-compatible LLM endpoint (VOXFLEET_LLM__BASE_URL)"),
    ("OPENAI_API_KEY", "OpenAI services in your own bots"),
    ("DEEPGRAM_API_KEY", "Deepgram speech-to-text"),
    ("CARTESIA_API_KEY", "Cartesia text-to-speech"),
)


@dataclass(frozen=True)
class UnitOptions:
    """What a unit for this install needs to know."""

    name: str = "voxfleet"
    user: str = "root"
    python: str = sys.executable
    config: Path = Path("/etc/voxfleet/voxfleet.toml")
    env_file: Path = Path("/etc/voxfleet/voxfleet.env")
    drain_timeout_s: float = 30.0
    start_timeout_s: float = 600.0  # the first start assembles model files from packages


def render_unit(options: UnitOptions) -> str:
    """The text of ``<name>.service``."""
    stop_timeout = int(options.drain_timeout_s) + 15
    return f"""\
# Written by `voxfleet service install` for the install at {options.python}.
# Settings: {options.config}; secrets: {options.env_file} (mode 0600).
# After editing either: systemctl restart {options.name}. Logs: journalctl -u {options.name}
[Unit]
Description=voxfleet voice agents (Pipecat bots over WebRTC)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
User={options.user}
ExecStart={options.python} -m voxfleet.cli serve
Environment=VOXFLEET_CONFIG={options.config}
Environment=VOXFLEET_RUNTIME_DIR=%t/{options.name}
Environment=VOXFLEET_MODEL_CACHE_DIR=%C/{options.name}/models
Environment=PYTHONUNBUFFERED=1
EnvironmentFile=-{options.env_file}
RuntimeDirectory={options.name}
CacheDirectory={options.name}
StateDirectory={options.name}
WorkingDirectory=%S/{options.name}
# SIGTERM to the control plane only: it drains live calls, then ends its bots itself.
KillMode=mixed
TimeoutStartSec={int(options.start_timeout_s)}
TimeoutStopSec={stop_timeout}
Restart=on-failure
RestartSec=2
LimitNOFILE=65536
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
StandardOutput=journal
StandardError=journal
SyslogIdentifier={options.name}

[Install]
WantedBy=multi-user.target
"""


def render_env_file(environ: dict[str, str]) -> str:
    """The environment file: secrets found in `environ` are written, the others shown commented."""
    lines = [
        "# Secrets for voxfleet, read by systemd (EnvironmentFile=). Keep this file mode 0600.",
        "# One VARIABLE=value per line; every voxfleet setting can also be given here as VOXFLEET_<NAME>.",
    ]
    for name, what in SECRET_VARIABLES:
        lines.append(f"# {what}")
        value = environ.get(name)
        lines.append(f"{name}={value}" if value else f"#{name}=")
    return "\n".join(lines) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    """VARIABLE=value lines of an existing environment file (comments and blanks skipped)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name and not name.startswith("#"):
            values[name.strip()] = value.strip().strip('"').strip("'")
    return values


def check_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--user: no user named {user!r} on this machine; create it first, e.g. "
                          f"useradd --system --home-dir /var/lib/voxfleet --shell /usr/sbin/nologin {user}") from None


def install(options: UnitOptions, unit_dir: Path, environ: dict[str, str], *, force: bool = False) -> list[str]:
    """Write the unit and (unless it exists) the environment file; return what was done."""
    check_user(options.user)
    done = []
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = unit_dir / f"{options.name}.service"
    unit_path.write_text(render_unit(options))
    unit_path.chmod(0o644)
    done.append(f"wrote {unit_path}")
    env_file = options.env_file
    env_file.parent.mkdir(parents=True, exist_ok=True)
    if env_file.exists() and not force:
        env_file.chmod(0o600)
        done.append(f"kept {env_file} (it exists; --force rewrites it)")
    else:
        # Created 0600 from the start, so a secret is never readable by others, even briefly.
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(render_env_file(environ))
        env_file.chmod(0o600)
        done.append(f"wrote {env_file} (mode 0600)")
    return done


def notify(state: str) -> bool:
    """Tell systemd about our state (sd_notify(3), e.g. "READY=1"); no-op outside a notify unit."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True
