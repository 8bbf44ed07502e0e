// voxfleet website: talk to an agent with the official Pipecat client, over WebRTC (default) or
// over a WebSocket with Pipecat's protobuf frames (?transport=websocket).
// Bundled at setup by esbuild (web/package.json); the libraries come from the npm registry.
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";
import {
  ProtobufFrameSerializer,
  WebSocketTransport,
  WavMediaManager as WsWavMediaManager,
} from "@pipecat-ai/websocket-transport";

const TRANSPORT = new URLSearchParams(location.search).get("transport") === "websocket" ? "websocket" : "webrtc";
document.body.dataset.transport = TRANSPORT;
if (TRANSPORT === "websocket") {
  document.getElementById("transport-name").textContent = "WebSocket";
  Object.assign(document.getElementById("transport-switch"), { href: "?", textContent: "use WebRTC" });
}

function makeTransport() {
  if (TRANSPORT === "websocket") {
    return new WebSocketTransport({
      serializer: new ProtobufFrameSerializer(),
      // the recorder must run at the rate the transport labels its audio with (16 kHz)
      mediaManager: new WsWavMediaManager(undefined, 16000),
      recorderSampleRate: 16000,
      playerSampleRate: 24000,
    });
  }
  return new SmallWebRTCTransport({ mediaManager: new WavMediaManager() });
}

const $ = (id) => document.getElementById(id);
const ui = {
  talk: $("talk"), talkLabel: $("talk-label"), state: $("state"), stateText: $("state-text"),
  agent: $("agent"), transcript: $("transcript"), empty: $("empty"), ttfw: $("ttfw"),
  session: $("session"), error: $("error"), audio: $("bot-audio"), meter: $("meter"),
};

let client = null;
// With API keys on (healthz says so), the page asks for one once and keeps it in this browser.
const KEY_STORE = "voxfleet-api-key";
const authHeaders = () => {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
};
let startedAt = 0;
let firstWordMs = null;
let botBubble = null;
let botSegments = new Map();
let userPartial = null;
let levelTimer = null;
let sessionId = null;

function setState(text, kind) {
  ui.stateText.textContent = text;
  ui.state.dataset.kind = kind;
  document.body.dataset.call = kind;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function bubble(role, text, partial = false) {
  ui.empty.hidden = true;
  const row = document.createElement("div");
  row.className = `line ${role}${partial ? " partial" : ""}`;
  row.innerHTML = `<span class="who">${role === "user" ? "You" : "Agent"}</span><p></p>`;
  row.querySelector("p").textContent = text;
  ui.transcript.appendChild(row);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
  return row;
}

function onUserTranscript(data) {
  if (!data.text?.trim()) return;
  if (!userPartial) userPartial = bubble("user", data.text, true);
  userPartial.querySelector("p").textContent = data.text;
  if (data.final) {
    userPartial.classList.remove("partial");
    userPartial = null;
    botBubble = null;
  }
}

function onBotOutput(data) {
  if (!data.text || data.aggregated_by === "word") return;
  if (!botBubble) {
    botBubble = bubble("bot", "");
    botSegments = new Map();
  }
  botSegments.set(data.segment_id ?? botSegments.size, data.text.trim());
  botBubble.querySelector("p").textContent = [...botSegments.values()].join(" ");
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function markFirstWord() {
  if (firstWordMs !== null || !startedAt) return;
  firstWordMs = Math.round(performance.now() - startedAt);
  ui.ttfw.textContent = `${firstWordMs} ms`;
  ui.ttfw.dataset.ready = "1";
  document.body.dataset.ttfwMs = String(firstWordMs);
}

// Time to first word = Talk pressed -> first non-silent audio from the bot, measured on the
// received track itself (not on a server event).
function watchBotAudio(track) {
  const stream = new MediaStream([track]);
  ui.audio.srcObject = stream;
  ui.audio.play().catch(() => {});
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  clearInterval(levelTimer);
  levelTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const s of samples) peak = Math.max(peak, Math.abs(s));
    ui.meter.style.setProperty("--level", Math.min(1, peak * 3).toFixed(2));
    if (peak > 0.02) markFirstWord();
  }, 20);
}

// While every bot is busy the server holds our offer; tell the user where they stand. The call
// may connect between two polls: then the live state stands (the poll must not overwrite it).
const isLive = () => ui.state.dataset.kind === "live";
async function followQueue(id, position) {
  setState(`All agents are busy — you are #${position} in line`, "queued");
  while (client && sessionId === id && !isLive()) {
    await new Promise((r) => setTimeout(r, 1000));
    const res = await fetch(`/sessions/${id}`).catch(() => null); // our own session: its id is the key
    if (!res?.ok || isLive()) return;
    const s = await res.json();
    if (s.state !== "queued") {
      if (s.state !== "ended" && !isLive()) setState("An agent is free — connecting…", "connecting");
      return;
    }
    setState(`All agents are busy — you are #${s.queuePosition} in line`, "queued");
  }
}

async function showCapacity() {
  if (!localStorage.getItem(KEY_STORE) && keysChecked) return; // the pool's figures need a private key
  const res = await fetch("/v1/capacity", { headers: authHeaders() }).catch(() => null);
  if (!res?.ok) return;
  const c = await res.json();
  const a = c.agents[ui.agent.value] ?? Object.values(c.agents)[0];
  if (!a) return;
  $("pool").textContent = `${a.warm} ready · ${a.active} in calls · ${c.queue.length} waiting`;
}

async function loadAgents() {
  try {
    const res = await fetch("/v1/agents");
    const { agents } = await res.json();
    ui.agent.innerHTML = "";
    for (const a of agents) {
      const opt = document.createElement("option");
      opt.value = a.name;
      opt.textContent = a.name;
      opt.title = a.description;
      ui.agent.appendChild(opt);
    }
    $("agent-desc").textContent = agents[0]?.description ?? "";
    ui.agent.onchange = () => {
      $("agent-desc").textContent = agents.find((a) => a.name === ui.agent.value)?.description ?? "";
    };
  } catch (e) {
    showError("Cannot reach the voxfleet server.");
  }
}

async function talk() {
  showError("");
  firstWordMs = null;
  botBubble = null;
  userPartial = null;
  ui.ttfw.textContent = "measuring…";
  ui.ttfw.dataset.ready = "0";
  ui.session.textContent = "—";
  setState("Connecting…", "connecting");
  ui.talkLabel.textContent = "Hang up";
  ui.agent.disabled = true;

  client = new PipecatClient({
    transport: makeTransport(),
    enableMic: true,
    enableCam: false,
    callbacks: {
      onTransportStateChanged: (s) => {
        if (s === "connected" || s === "ready") setState("Live — speak any time", "live");
      },
      onBotStarted: (started) => {
        // a WebSocket start answers {wsUrl, token}; the token begins with the session id
        sessionId = started?.sessionId ?? started?.token?.split(".")[0] ?? null;
        if (sessionId) ui.session.textContent = sessionId.slice(0, 8);
        ui.session.title = sessionId ?? "";
        if (started?.queued) followQueue(sessionId, started.queuePosition);
      },
      onUserTranscript,
      onBotOutput,
      onBotStartedSpeaking: () => {
        ui.state.classList.add("speaking");
        // Over a WebSocket the audio plays inside the client library, with no track to measure:
        // the first word is the bot's first bot-started-speaking event.
        if (TRANSPORT === "websocket") markFirstWord();
      },
      onBotStoppedSpeaking: () => {
        ui.state.classList.remove("speaking");
        botBubble = null;
      },
      onTrackStarted: (track, participant) => {
        if (track.kind === "audio" && !participant?.local) watchBotAudio(track);
      },
      onDisconnected: () => endCall("Call ended"),
      onError: (msg) => showError(msg?.data?.message ?? "The call failed."),
    },
  });
  startedAt = performance.now();
  try {
    await client.startBotAndConnect({
      endpoint: "/start",
      headers: new Headers(authHeaders()),
      requestData: { transport: TRANSPORT, agent: ui.agent.value, body: {} },
    });
  } catch (e) {
    const detail = e?.message || e?.data?.error || String(e);
    const busy = /429|AT_CAPACITY|busy/i.test(detail);
    const denied = /401|403|UNAUTHORIZED|FORBIDDEN/i.test(detail);
    if (denied) $("key-row").hidden = false;
    showError(busy ? "All agents are busy right now. Please try again in a moment."
              : denied ? "This server needs an API key: paste a public key below."
              : `Could not start the call: ${detail}`);
    endCall("Not connected");
  }
}

async function endCall(label) {
  clearInterval(levelTimer);
  ui.meter.style.setProperty("--level", 0);
  const c = client;
  client = null;
  if (c) await c.disconnect().catch(() => {});
  // Hang up explicitly too, so the session ends now even if the peer connection lingers.
  if (sessionId) fetch(`/sessions/${sessionId}`, { method: "DELETE" }).catch(() => {});
  sessionId = null;
  setState(label, "idle");
  ui.talkLabel.textContent = "Talk";
  ui.agent.disabled = false;
  ui.state.classList.remove("speaking");
  if (firstWordMs === null) ui.ttfw.textContent = "—";
}

ui.talk.addEventListener("click", () => (client ? endCall("Call ended") : talk()));
let keysChecked = true;
fetch("/healthz").then((r) => r.json()).then((h) => {
  keysChecked = h.auth;
  $("key-row").hidden = !h.auth;
  $("api-key").value = localStorage.getItem(KEY_STORE) ?? "";
}).catch(() => {});
$("api-key").addEventListener("change", (e) => localStorage.setItem(KEY_STORE, e.target.value.trim()));
loadAgents().then(showCapacity);
setInterval(showCapacity, 3000);
setState("Ready", "idle");
