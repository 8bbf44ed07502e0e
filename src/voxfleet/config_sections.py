"""Sections of the one settings object (``config.Settings``) that stand on their own: the Ray
backend and recordings. ``config`` re-exports them; read them as ``settings.ray`` and
``settings.recordings``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

DATA_DIR = Path.home() / ".local" / "share" / "voxfleet"


class RaySettings(BaseModel):
    """The Ray backend (``backend = "ray"``): bots are actors on the nodes of a Ray cluster.
    See docs/ray.md for the node labels and resources voxfleet expects."""

    address: str = Field(
        default="auto", description="Ray cluster to join as a driver: GCS 'HOST:PORT', or 'auto' (the local one)."
    )
    namespace: str = Field(default="voxfleet", description="Ray namespace of voxfleet's actors.")
    region_label: str = Field(default="region", description="Node label that names a node's region.")
    default_region: str | None = Field(
        default=None, description="Region for sessions that ask for none (None: the most free capacity anywhere)."
    )
    nearest_regions: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Fallback order per region, nearest first, e.g. {eu = ['us']}; a region not listed falls "
        "back to every other region.",
    )
    placement_timeout_s: float = Field(
        default=20.0, gt=0,
        description="How long Ray may take to place and start a bot actor before the session is answered "
        "'unplaceable' (Ray itself would wait forever).",
    )
    node_check_s: float = Field(
        default=1.0, gt=0, description="How often the cluster's node list is read (Ray has no node-change event "
        "for drivers); a node found dead ends its sessions with node_lost.",
    )


class RecordingSettings(BaseModel):
    """Recordings of sessions (agents with ``record = true``): one stereo WAV per session, the
    caller left and the bot right, written by the platform (docs: README, Recordings)."""

    dir: Path | None = Field(
        default=None,
        description="Where recordings are kept (default: 'recordings' in the data directory, the SQLite "
        "database's directory; ~/.local/share/voxfleet/recordings with PostgreSQL).",
    )
    retention_days: float = Field(
        default=30.0, ge=0,
        description="Recordings finished longer ago than this are deleted (checked at start and hourly); "
        "0: kept forever.",
    )


def recordings_dir(recordings: RecordingSettings, database_url: str) -> Path:
    """The recordings' directory: the configured one, else beside the SQLite database."""
    from sqlalchemy.engine import make_url

    if recordings.dir is not None:
        return recordings.dir.expanduser()
    try:
        url = make_url(database_url)
    except Exception:  # noqa: BLE001 - a bad URL is the store's to report, at start
        return DATA_DIR / "recordings"
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().parent / "recordings"
    return DATA_DIR / "recordings"
