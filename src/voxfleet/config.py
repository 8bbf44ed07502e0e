"""The one typed settings object, read once at start and passed down.

Sources, highest priority first: explicit overrides (CLI flags), environment variables
``VOXFLEET_*`` (nested with ``__``, e.g. ``VOXFLEET_LLM__BASE_URL``), a ``voxfleet.toml`` file
(path in ``VOXFLEET_CONFIG``, default ``./voxfleet.toml``), then the defaults below.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tempfile
from pathlib import Path
from typing import Any, Literal

from voxfleet.webhooks.signing import secret_bytes
from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from voxfleet.config_sections import RaySettings, RecordingSettings, recordings_dir
from voxfleet.exceptions import ConfigError
from voxfleet.transports.telnyx_auth import public_key as telnyx_public_key

BUILTIN_ASSISTANT = "voxfleet.bots.assistant"
_AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class AgentSpec(BaseModel):
    """One agent: a Pipecat bot file served under a name."""

    name: str = Field(description="URL-safe agent name (lower case, digits, '-', '_').")
    bot: str = Field(
        description="Path to a bot.py defining `async def bot(runner_args)`, or a dotted module name."
    )
    description: str = Field(default="", description="Shown in GET /v1/agents and on the website.")
    public: bool = Field(
        default=True,
        description="Anyone may start sessions of this agent without a key (the website's demo; per-client "
        "bounds apply); false: starting it needs a private key.")
    webhook_url: str | None = Field(
        default=None, description="Where session.started / .ended / .failed (and recording.ready) are POSTed."
    )
    webhook_secret: str | None = Field(
        default=None, repr=False, description="Standard Webhooks signing secret (whsec_<base64>)."
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be an http(s) URL (got {value!r})")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            secret_bytes(value)  # a malformed whsec_ secret fails at start, not at the first delivery
        return value
    profile: Literal["agent-1x", "agent-2x", "agent-3x"] = Field(
        default="agent-1x", description="Resources each bot reserves: 1x 0.5 vCPU/1 GiB, 2x 1/2, 3x 1.5/3."
    )
    kbps: int | None = Field(default=None, ge=1, description="Uplink per session (default: the profile's 40).")
    min_warm: int = Field(default=1, ge=0, description="Warm bots kept ready at all times (capacity allowing).")
    warm_pct: float = Field(default=0.0, ge=0, le=1000, description="Extra warm bots, in % of active sessions.")
    max_bots: int = Field(default=100, ge=1, description="Most bots (warm + active) of this agent.")
    pool_policy: Literal["predictive", "fixed"] = Field(
        default="predictive",
        description=(
            "predictive: size the warm pool from the forecast arrival rate and measured refill time "
            "(never below min_warm / warm_pct); fixed: min_warm and warm_pct only."
        ),
    )
    cold_start_target: float = Field(
        default=0.01, gt=0, lt=1, description="Predictive pool: target probability of a cold start."
    )
    preload_models: bool = Field(
        default=True,
        description="Warm bots build, before their session, the models (faster-whisper, Piper, ONNX Runtime "
        "sessions) this agent's bot built in its last session, and hand each to the bot's own call when "
        "the arguments match (local backend). false: every session's bot builds its own.",
    )
    record: bool = Field(default=False, description="Record every session: one stereo WAV, caller left, bot "
                         "right (settings: [recordings]; local backend only).")

    @field_validator("name")
    @classmethod
    def _name_is_url_safe(cls, value: str) -> str:
        if not _AGENT_NAME.match(value):
            raise ValueError(f"agent name {value!r} must match {_AGENT_NAME.pattern}")
        return value


class IceServer(BaseModel):
    """A STUN/TURN server, handed to clients in `iceConfig` and used by the bot's peer.

    A TURN server without `username`/`credential` gets credentials minted per session from
    `turn_secret` (coturn's `use-auth-secret`)."""

    urls: list[str] = Field(min_length=1, description="stun:, turn: or turns: URLs of one server.")
    username: str | None = Field(default=None, description="Static TURN username (long-term credentials).")
    credential: str | None = Field(default=None, repr=False, description="Static TURN password.")

    @field_validator("urls")
    @classmethod
    def _urls_parse(cls, urls: list[str]) -> list[str]:
        from voxfleet.transports.turn import parse_ice_url

        for url in urls:
            parse_ice_url(url)
        return urls

    @model_validator(mode="after")
    def _static_credentials_paired(self) -> "IceServer":
        if (self.username is None) != (self.credential is None):
            raise ValueError(f"{self.urls}: give both username and credential, or neither")
        return self


class LLMSettings(BaseModel):
    """Where the bots' LLM lives. With no `base_url`, voxfleet starts a local llama.cpp server."""

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint. None: run the bundled llama.cpp server locally.",
    )
    model: str = Field(default="gemma3-270m", description="Model name sent to the endpoint.")
    api_key: str = Field(default="not-needed", repr=False, description="API key for `base_url`.")
    local_model: Literal["smollm2", "gemma3-270m"] = Field(
        default="gemma3-270m",
        description=(
            "Which bundled GGUF the local llama.cpp server loads: Gemma 3 270M (base model, driven "
            "by a few-shot prompt; better answers) or SmolLM2-135M-Instruct (faster, weaker)."
        ),
    )
    local_port: int = Field(default=0, description="Port of the local llama.cpp server (0: pick one).")
    local_threads: int = Field(
        default=0, ge=0,
        description="CPU threads for the local LLM (0: one per CPU but one, at least 1, at most 4). llama.cpp's "
        "threads wait for each other at every step, so a thread that loses its core to a bot stalls them all: on "
        "2 cores, two calls at once answered after 7.4 and 10.0 s with 2 threads, 2.6 and 2.9 s with 1.",
    )
    local_ctx: int = Field(default=2048, ge=256, description="Context length of the local LLM.")


class TelephonySettings(BaseModel):
    """Phone calls (Twilio media streams) and media WebSockets."""

    when_busy: Literal["hold", "hangup"] = Field(
        default="hold",
        description="No capacity for a call: hold (the caller waits in the queue, hearing busy_message, "
        "checked again every hold_check_s by TwiML <Redirect>, bounded by queue_wait_s) or hangup "
        "(say busy_message, then end the call).",
    )
    busy_message: str = Field(
        default="All of our agents are busy right now. Please hold, and we will be with you shortly.",
        min_length=1, max_length=500, description="What a caller hears when no agent is free.",
    )
    goodbye_message: str = Field(
        default="Sorry, no agent could take your call. Please call again later. Goodbye.",
        min_length=1, max_length=500, description="What a caller hears before a call is ended unserved.",
    )
    lost_message: str = Field(
        default="Sorry, something went wrong on our side and this call has to end. Please call again. Goodbye.",
        min_length=1, max_length=500,
        description="What a caller hears when the call's bot fails (crashes, raises, goes over its memory "
                    "limit, cannot start) before the call is ended.",
    )
    hold_check_s: int = Field(default=2, ge=1, le=30, description="Seconds between checks while a call holds.")
    ring_timeout_s: int = Field(default=30, ge=5, le=600,
                                description="How long an outbound call rings before it counts as not answered.")
    stream_token_ttl_s: float = Field(
        default=30.0, gt=0, le=600, description="Lifetime of a media stream's single-use token."
    )
    stream_token_secret: str | None = Field(
        default=None, repr=False, min_length=16,
        description="HMAC secret of stream tokens (default: random per run: tokens die with a restart).",
    )
    twilio_api_base: str | None = Field(
        default=None, description="Base URL of Twilio's REST API (default: Twilio's own); for an emulator.",
    )
    plivo_api_base: str | None = Field(
        default=None, description="Base URL of Plivo's REST API (default: https://api.plivo.com); for an emulator.",
    )
    telnyx_api_base: str | None = Field(
        default=None, description="Base URL of Telnyx's REST API v2 (default: https://api.telnyx.com/v2); "
        "for an emulator.",
    )
    telnyx_signature_tolerance_s: float = Field(
        default=300.0, gt=0, le=3600,
        description="How far a Telnyx webhook's telnyx-timestamp may be from now (older: refused as expired); "
        "a signature is also refused the second time within this window (a replay).",
    )


class Settings(BaseSettings):
    """Everything voxfleet can be told. Read once at start; passed down, never re-read."""

    model_config = SettingsConfigDict(
        env_prefix="VOXFLEET_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=7860, ge=0, le=65535, description="HTTP port (0: pick a free one).")
    agents: list[AgentSpec] = Field(
        default_factory=lambda: [
            AgentSpec(
                name="assistant",
                bot=BUILTIN_ASSISTANT,
                description="Offline voice assistant: Silero VAD, Whisper tiny.en, Gemma 3 270M, Piper.",
                # what `voxfleet bench capacity` measured: 2 cores serve one of its calls at a time within
                # 1.3x of a lone call's voice-to-voice p95 (two at once: 2.3x), so each reserves 1.5 vCPU
                profile="agent-3x",
            )
        ],
        description="Agents served; the first is the default for /start.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Other origins whose pages may call the public routes (start, signaling, agents) from a "
        "browser; the website's own origin needs none. '*' allows any. Private routes never answer CORS.",
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list, description="STUN/TURN servers for clients and bots (none by default)."
    )
    advertised_addresses: list[str] = Field(
        default_factory=list,
        description=(
            "IP addresses a bot offers as ICE host candidates. Empty: every interface address plus "
            "127.0.0.1 (loopback calls from this machine work, and so do LAN ones). Behind 1:1 NAT: "
            "'PUBLIC/LOCAL' binds LOCAL and offers PUBLIC (coturn's external-ip syntax)."
        ),
    )
    # -- deployment: TLS, reverse proxy, TURN, media ports, logs (docs/deploy.md) ------------
    ssl_certfile: Path | None = Field(
        default=None, description="TLS certificate chain (PEM): serve HTTPS directly. Needs ssl_keyfile."
    )
    ssl_keyfile: Path | None = Field(default=None, description="Private key (PEM) of ssl_certfile.")
    proxy_headers: bool = Field(
        default=True,
        description="Behind a reverse proxy: take the client address and scheme from X-Forwarded-For / "
        "X-Forwarded-Proto, from the addresses in forwarded_allow_ips only.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Comma-separated proxy addresses or networks whose X-Forwarded-* headers are trusted "
        "('*': any; only when nothing else can reach the port).",
    )
    turn_secret: str | None = Field(
        default=None,
        repr=False,
        description="coturn's static-auth-secret: TURN servers in ice_servers without a username get "
        "per-session credentials minted from it (TURN REST API). Never sent to clients or bots.",
    )
    turn_credential_ttl_s: float | None = Field(
        default=None, gt=0,
        description="Lifetime of minted TURN credentials (default: max_session_s + queue_wait_s + "
        "offer_timeout_s + 5 minutes, so no call outlives its credential).",
    )
    media_ports: str | None = Field(
        default=None,
        description="UDP port range 'FIRST-LAST' for bots' media (ICE host candidates and TURN client "
        "sockets), so a firewall can open exactly it. None: any ephemeral port.",
    )
    log_format: Literal["auto", "text", "journald", "json"] = Field(
        default="auto",
        description="text: timestamped lines on stderr; journald: '<priority>' prefixed lines on stdout, "
        "no timestamps; json: one JSON object per line on stderr (ts, level, process, session_id for a "
        "bot's lines, logger, msg); auto: journald when stdout/stderr is connected to the journal.",
    )
    llm: LLMSettings = Field(default_factory=LLMSettings)
    backend: Literal["local", "ray"] = Field(
        default="local", description="Where bots run: forked on this machine, or as actors on a Ray cluster."
    )
    ray: RaySettings = Field(default_factory=RaySettings)
    capacity_cpu_millis: int | None = Field(
        default=None, ge=1, description="CPU to hand out, in millicores (default: from cgroup/affinity)."
    )
    capacity_mem_mb: int | None = Field(
        default=None, ge=1, description="Memory to hand out, in MiB (default: from cgroup/MemTotal)."
    )
    uplink_kbps: int = Field(default=100_000, ge=1, description="Network uplink to hand out, kbit/s.")
    queue_max: int = Field(default=20, ge=0, description="Sessions that may wait for capacity at once.")
    queue_wait_s: float = Field(default=30.0, gt=0, description="Longest wait in the queue before 429.")
    refill_concurrency: int = Field(default=1, ge=1, description="Warm bots initialised at the same time.")
    warm_nice: int = Field(
        default=10, ge=0, le=19,
        description="Nice value of a warm bot while it warms up and waits; back to 0 when it takes a session "
        "(0: never lowered; only lowered where the bot may raise it again: root or RLIMIT_NICE). A refill "
        "forked during a call then takes only CPU the call leaves idle.",
    )
    max_session_s: float = Field(default=3600.0, gt=0, description="A session is ended after this long.")
    cpu_shares: bool = Field(
        default=True, description="Give each bot a CPU share by profile through cgroups where writable."
    )
    idle_timeout_s: float = Field(
        default=60.0, gt=0, description="A session with no packet from the caller for this long is ended."
    )
    memory_check_s: float = Field(
        default=1.0, gt=0, description="How often bots' memory (PSS) is sampled against their profile."
    )
    reconnect_s: float = Field(
        default=15.0, ge=0,
        description="How long a bot in a call whose control link broke (the control plane restarted or "
                    "died) tries to rejoin it on the same socket before ending the session (control_lost).",
    )
    resume_window_s: float = Field(
        default=15.0, ge=0,
        description="After a restart, how long bots still in calls have to rejoin before their sessions "
                    "are recorded as ended (control_restart).",
    )
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long running sessions may finish before exit."
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest accepted request body.")
    offer_timeout_s: float = Field(
        default=10.0, gt=0,
        description="A session whose caller has not connected (WebRTC offer, media stream) this long after its bot "
        "is ready is ended (timeout): a start that never connects holds its reservation no longer.",
    )
    max_ice_candidates: int = Field(
        default=64, ge=1, description="ICE candidates one session may trickle (PATCH .../api/offer); over it: 409.")
    ice_candidate_deny: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8",
                                 "224.0.0.0/4", "ff00::/8", "240.0.0.0/4"],
        description="Networks a caller's ICE candidates may not point the bot at (loopback, link-local such as "
        "cloud metadata at 169.254.169.254, multicast, reserved); such candidates are dropped, in the offer's SDP "
        "and trickled.")
    client_rate_per_s: float = Field(
        default=2.0, gt=0, description="Session starts one client (API key, else address) may make per second, "
        "sustained; over it: 429 RATE_LIMITED.")
    client_burst: int = Field(default=10, ge=1, description="Session starts one client may make at once.")
    client_max_pending: int = Field(
        default=4, ge=1, description="Sessions of one client not yet connected (or queued) at once; over it: "
        "429 TOO_MANY_PENDING.")
    client_share: float = Field(
        default=0.5, gt=0, le=1, description="Most of an agent's capacity, and of the queue, one client without a "
        "private key may hold; over it: 429 CLIENT_SHARE.")
    signaling_timeout_s: float = Field(
        default=15.0, gt=0, description="How long the bot may take to answer an offer."
    )
    bot_start_timeout_s: float = Field(
        default=20.0, gt=0, description="How long a forked bot may take to report in."
    )
    ended_sessions_kept: int = Field(
        default=1000, ge=0, description="Ended sessions kept in memory for GET /v1/sessions/{id}."
    )
    model_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "voxfleet" / "models",
        description="Where model files assembled from packages are kept (the Gemma GGUF).",
    )
    database_url: str = Field(
        default="sqlite:///~/.local/share/voxfleet/voxfleet.db",
        description="Where sessions, API keys and the webhook outbox live: sqlite:///PATH or postgresql://...",
    )
    auth: Literal["required", "off"] = Field(
        default="required",
        description=(
            "API keys: required (private routes need a private key, always; a first start creates one and "
            "prints it once) or off (--dev: nobody is checked). 'auto' is read as required."
        ),
    )
    runtime_dir: Path | None = Field(
        default=None, description="Directory for control sockets (default: a fresh temp dir)."
    )
    log_level: str = Field(default="INFO", description="Log level of the control plane and bots.")
    public_url: str | None = Field(
        default=None,
        description="voxfleet's URL as callers and Twilio reach it (behind a proxy or tunnel), e.g. "
        "https://voice.example.com: the URL Twilio signs webhooks with and the base of stream URLs. "
        "Default: taken from each request.",
    )
    twilio_auth_token: str | None = Field(
        default=None, repr=False, validation_alias=AliasChoices("twilio_auth_token", "TWILIO_AUTH_TOKEN"),
        description="Twilio's auth token (env TWILIO_AUTH_TOKEN): checks X-Twilio-Signature on voice webhooks.",
    )
    twilio_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("twilio_account_sid", "TWILIO_ACCOUNT_SID"),
        description="Twilio account (env TWILIO_ACCOUNT_SID): with the auth token, voxfleet hangs up a call "
        "through Twilio's REST API when its bot ends it.",
    )
    plivo_auth_id: str | None = Field(
        default=None, validation_alias=AliasChoices("plivo_auth_id", "PLIVO_AUTH_ID"),
        description="Plivo Auth ID (env PLIVO_AUTH_ID, as Pipecat's Plivo serializer reads it): hangs up a call "
        "through Plivo's REST API when its bot ends it; Plivo webhooks are refused without it.",
    )
    plivo_auth_token: str | None = Field(
        default=None, repr=False, validation_alias=AliasChoices("plivo_auth_token", "PLIVO_AUTH_TOKEN"),
        description="Plivo Auth Token (env PLIVO_AUTH_TOKEN): checks X-Plivo-Signature-V3 on voice webhooks; "
        "Plivo webhooks are refused without it.",
    )
    exotel_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("exotel_api_key", "EXOTEL_API_KEY"),
        description="Exotel API key (env EXOTEL_API_KEY): with the API token, the Basic-auth credentials the "
        "Voicebot applet's URLs carry (https://KEY:TOKEN@host/...); unset: Exotel calls are refused.",
    )
    exotel_api_token: str | None = Field(
        default=None, repr=False, validation_alias=AliasChoices("exotel_api_token", "EXOTEL_API_TOKEN"),
        description="Exotel API token (env EXOTEL_API_TOKEN): checked as the password of that Basic auth.",
    )
    exotel_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("exotel_account_sid", "EXOTEL_ACCOUNT_SID"),
        description="Exotel account (env EXOTEL_ACCOUNT_SID): when set, a stream's start.account_sid must be it.",
    )
    telnyx_public_key: str | None = Field(
        default=None, validation_alias=AliasChoices("telnyx_public_key", "TELNYX_PUBLIC_KEY"),
        description="Telnyx account's public key, base64 (env TELNYX_PUBLIC_KEY, as Telnyx's SDK reads it): "
        "checks telnyx-signature-ed25519 on TeXML webhooks.",
    )
    telnyx_api_key: str | None = Field(
        default=None, repr=False, validation_alias=AliasChoices("telnyx_api_key", "TELNYX_API_KEY"),
        description="Telnyx API key (env TELNYX_API_KEY, as Pipecat's Telnyx serializer reads it): hangs up a call "
        "through Telnyx's REST API when its bot ends it; Telnyx webhooks are refused without it.",
    )
    telnyx_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("telnyx_account_sid", "TELNYX_ACCOUNT_SID"),
        description="Telnyx account id (env TELNYX_ACCOUNT_SID; a TeXML webhook's AccountSid): with "
        "TELNYX_TEXML_APP_ID, outbound calls and transfers through TeXML's REST API (/texml/Accounts/{id}/Calls).",
    )
    telnyx_texml_app_id: str | None = Field(
        default=None, validation_alias=AliasChoices("telnyx_texml_app_id", "TELNYX_TEXML_APP_ID"),
        description="The TeXML application outbound calls are placed with (env TELNYX_TEXML_APP_ID, its ApplicationSid).",
    )
    telephony: TelephonySettings = Field(default_factory=TelephonySettings)
    recordings: RecordingSettings = Field(default_factory=RecordingSettings)

    @model_validator(mode="after")
    def _agents_are_unique(self) -> "Settings":
        if not self.agents:
            raise ValueError("at least one agent must be configured")
        names = [a.name for a in self.agents]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"agent names must be unique; repeated: {', '.join(dupes)}")
        recorded = [a.name for a in self.agents if a.record]
        if recorded and self.backend == "ray":  # a Ray bot's file would be on its node, out of our reach
            raise ValueError(f"agents {', '.join(recorded)}: record = true needs backend = 'local' "
                             "(recordings are not supported on Ray yet)")
        return self

    @field_validator("ice_candidate_deny")
    @classmethod
    def _deny_are_networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network: {net!r} ({exc})") from None
        return value

    @field_validator("auth", mode="before")
    @classmethod
    def _auto_is_required(cls, value: object) -> object:
        return "required" if value == "auto" else value

    @field_validator("telnyx_public_key")
    @classmethod
    def _telnyx_public_key(cls, value: str | None) -> str | None:
        if value:
            try:
                telnyx_public_key(value)
            except ValueError as exc:
                raise ValueError(f"TELNYX_PUBLIC_KEY {exc}") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError(f"must be an http(s) URL without query, like https://voice.example.com (got {value!r})")
        return value.rstrip("/")

    @field_validator("media_ports")
    @classmethod
    def _media_ports_is_a_range(cls, value: str | None) -> str | None:
        from voxfleet.transports.media_ports import parse_port_range

        if value is None:
            return None
        first, last = parse_port_range(value)
        return f"{first}-{last}"

    @field_validator("advertised_addresses")
    @classmethod
    def _advertised_addresses_parse(cls, value: list[str]) -> list[str]:
        from voxfleet.transports.addresses import parse_advertised

        for entry in value:
            parse_advertised(entry)
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips_are_addresses(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} in {value!r} is not an IP address, a network or '*'") from None
        return value

    @model_validator(mode="after")
    def _deployment_settings_fit(self) -> "Settings":
        from voxfleet.transports.turn import SessionIceServers

        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            given = "ssl_certfile" if self.ssl_certfile is not None else "ssl_keyfile"
            raise ValueError(f"{given} is set but not its pair; HTTPS needs both ssl_certfile and ssl_keyfile")
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            _check_tls_files(self.ssl_certfile, self.ssl_keyfile)
        for i, server in enumerate(self.ice_servers):
            if SessionIceServers.mints_for(server.model_dump()) and not self.turn_secret:
                raise ValueError(f"ice_servers[{i}]: TURN server {server.urls} needs username and credential, "
                                 "or turn_secret for per-session credentials")
        if self.turn_credential_ttl_s is not None and self.turn_credential_ttl_s < self.max_session_s:
            raise ValueError(f"turn_credential_ttl_s: {self.turn_credential_ttl_s:g} is shorter than max_session_s "
                             f"{self.max_session_s:g}; relayed calls would drop when their credential expires")
        return self

    @property
    def media_port_range(self) -> tuple[int, int] | None:
        if self.media_ports is None:
            return None
        first, last = self.media_ports.split("-")
        return int(first), int(last)

    @property
    def turn_ttl_s(self) -> float:
        return self.turn_credential_ttl_s or (self.max_session_s + self.queue_wait_s + self.offer_timeout_s + 300)

    @property
    def recordings_dir(self) -> Path:
        return recordings_dir(self.recordings, self.database_url)

    @property
    def https(self) -> bool:
        return self.ssl_certfile is not None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("VOXFLEET_CONFIG", "voxfleet.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    def ensure_runtime_dir(self) -> Path:
        """A fixed directory per port, so bots in calls can rejoin a restarted control plane on
        the same socket; a fresh temporary one for port 0."""
        if self.runtime_dir is None:
            self.runtime_dir = (Path.home() / ".cache" / "voxfleet" / f"run-{self.port}" if self.port
                                else Path(tempfile.mkdtemp(prefix="voxfleet-")))
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        return self.runtime_dir


def _check_tls_files(certfile: Path, keyfile: Path) -> None:
    for name, path in (("ssl_certfile", certfile), ("ssl_keyfile", keyfile)):
        if not path.is_file():
            raise ValueError(f"{name}: no such file {str(path)!r}")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{name}: {str(path)!r} is not readable by this user")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        raise ValueError(f"ssl_certfile/ssl_keyfile: {str(certfile)!r} with key {str(keyfile)!r} do not load as a "
                         f"PEM certificate and its private key ({exc.reason or exc})") from None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one readable ConfigError."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


def llm_threads(configured: int) -> int:
    """The local LLM's thread count for `configured` (0: one per CPU but one, at least 1, at most 4)."""
    import os

    return configured or max(1, min(4, (os.cpu_count() or 1) - 1))

