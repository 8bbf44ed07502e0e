// voxfleet operator dashboard: live sessions, capacity and warm pool, latency distributions and
// history, recent sessions and a per-session view. uPlot comes from npm, bundled at setup.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const ms = (v) => (v === null || v === undefined ? "—" : `${Math.round(v)} ms`);
const BUCKETS = [100, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000];
let plots = {};
const KEY_STORE = "voxfleet-api-key";
// The login link `voxfleet serve` prints at first start: /dashboard#key=<private key>. A URL
// fragment never reaches the server (nor its logs); the key is kept and the fragment cleared.
const loginKey = location.hash.startsWith("#key=") ? new URLSearchParams(location.hash.slice(1)).get("key") : null;
if (loginKey) {
  localStorage.setItem(KEY_STORE, loginKey.trim());
  history.replaceState(null, "", location.pathname + location.search);
}
const authHeaders = () => {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
};
const api = (path) => fetch(path, { headers: authHeaders() });

function histogram(values) {
  const counts = new Array(BUCKETS.length + 1).fill(0);
  for (const v of values) {
    const i = BUCKETS.findIndex((b) => v <= b);
    counts[i === -1 ? BUCKETS.length : i] += 1;
  }
  return counts;
}

function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
}

function drawBars(id, series) {
  const x = [...Array(BUCKETS.length + 1).keys()];
  const data = [x, ...series.map((s) => s.counts)];
  const opts = {
    width: $(id).clientWidth, height: 180, legend: { show: true },
    scales: { x: { time: false } },
    axes: [
      { values: (u, ticks) => ticks.map((t) => (t < BUCKETS.length ? `≤${BUCKETS[t]}` : ">5000")), stroke: "#8b98a8", grid: { show: false } },
      { stroke: "#8b98a8", grid: { stroke: "#232c38" } },
    ],
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, fill: s.color + "55", paths: uPlot.paths.bars({ size: [0.8] }) }))],
  };
  plots[id]?.destroy();
  $(id).innerHTML = "";
  plots[id] = new uPlot(opts, data, $(id));
}

function drawHistory(id, sessions) {
  const rows = sessions.filter((s) => s.latency.ttfwMs !== null).sort((a, b) => a.createdAt - b.createdAt);
  const data = [rows.map((s) => s.createdAt), rows.map((s) => s.latency.ttfwMs), rows.map((s) => s.latency.v2vP50Ms)];
  const opts = {
    width: $(id).clientWidth, height: 180,
    scales: { x: { range: (u, min, max) => (max - min < 120 ? [min - 60, max + 60] : [min, max]) } },
    axes: [{ stroke: "#8b98a8", grid: { stroke: "#232c38" } }, { stroke: "#8b98a8", grid: { stroke: "#232c38" } }],
    series: [{}, { label: "TTFW ms", stroke: "#5b8cff", points: { show: true } }, { label: "V2V p50 ms", stroke: "#2fbf71", points: { show: true } }],
  };
  plots[id]?.destroy();
  $(id).innerHTML = "";
  plots[id] = new uPlot(opts, data, $(id));
}

function bar(label, used, total, unit) {
  const pct = total ? Math.round((100 * used) / total) : 0;
  return `<div class="meter-row"><span>${label}</span><div class="bar"><i style="width:${pct}%"></i></div><b>${used} / ${total} ${unit}</b></div>`;
}

function renderCapacity(c) {
  $("capacity").innerHTML =
    bar("CPU", c.reserved.cpu_millis, c.capacity.cpu_millis, "m") +
    bar("Memory", c.reserved.mem_mb, c.capacity.mem_mb, "MiB") +
    bar("Uplink", c.reserved.kbps, c.capacity.kbps, "kbps") +
    `<p class="muted">invariant free + reserved = capacity: <b class="${c.invariant_ok ? "ok" : "bad"}">${c.invariant_ok ? "holds" : "BROKEN"}</b> · ${c.accepting ? "accepting" : "draining"}</p>`;
  $("pools").innerHTML = Object.entries(c.agents).map(([name, p]) => `
    <div class="pool-card"><h3>${esc(name)} <small>${esc(p.profile)} · ${esc(p.policy)}</small></h3>
      <div class="nums"><div><b>${p.warm}</b>ready</div><div><b>${p.warming}</b>warming</div>
      <div><b>${p.active}</b>in calls</div><div><b>${c.queue.by_agent[name] ?? 0}</b>queued</div></div>
      <p class="muted">refill ${p.refill_s}s · forecast ${p.forecast_per_min}/min · min warm ${p.min_warm}</p></div>`).join("");
}

function row(s) {
  const lat = s.latency;
  return `<tr data-id="${esc(s.sessionId)}"><td class="mono"><a href="#${esc(s.sessionId)}">${esc(s.sessionId.slice(0, 8))}</a></td>
    <td>${esc(s.agent)}</td><td><span class="pill ${esc(s.state)}">${esc(s.state)}</span></td><td>${esc(s.start ?? "—")}</td>
    <td>${ms(lat.ttfwMs)}</td><td>${ms(lat.v2vP50Ms)}</td><td>${lat.turnsV2vMs.length}</td>
    <td>${esc(s.endReason ?? "")}</td><td class="muted">${new Date(s.createdAt * 1000).toLocaleTimeString()}</td></tr>`;
}

function renderSessions(sessions) {
  const live = sessions.filter((s) => s.state !== "ended");
  const ended = sessions.filter((s) => s.state === "ended");
  $("live-count").textContent = live.length;
  $("live").innerHTML = live.map(row).join("") || `<tr><td colspan="9" class="muted">No live sessions</td></tr>`;
  $("recent").innerHTML = ended.slice(0, 30).map(row).join("") || `<tr><td colspan="9" class="muted">No sessions yet</td></tr>`;
  const reasons = {};
  for (const s of ended) reasons[s.endReason] = (reasons[s.endReason] ?? 0) + 1;
  $("reasons").innerHTML = Object.entries(reasons).map(([r, n]) => `<span class="pill">${esc(r)} ${n}</span>`).join(" ");
  const ttfwWarm = sessions.filter((s) => s.start === "warm" && s.latency.ttfwMs !== null).map((s) => s.latency.ttfwMs);
  const ttfwCold = sessions.filter((s) => s.start === "cold" && s.latency.ttfwMs !== null).map((s) => s.latency.ttfwMs);
  const turns = sessions.flatMap((s) => s.latency.turnsV2vMs);
  $("ttfw-stats").textContent = `warm p50 ${ms(percentile(ttfwWarm, 0.5))} p95 ${ms(percentile(ttfwWarm, 0.95))} · cold p50 ${ms(percentile(ttfwCold, 0.5))} p95 ${ms(percentile(ttfwCold, 0.95))}`;
  $("v2v-stats").textContent = `${turns.length} turns · p50 ${ms(percentile(turns, 0.5))} p95 ${ms(percentile(turns, 0.95))}`;
  drawBars("ttfw-plot", [{ label: "warm", color: "#5b8cff", counts: histogram(ttfwWarm) }, { label: "cold", color: "#f0b429", counts: histogram(ttfwCold) }]);
  drawBars("v2v-plot", [{ label: "voice-to-voice", color: "#2fbf71", counts: histogram(turns) }]);
  drawHistory("history-plot", sessions);
}

// The stages of a turn (observability/turns.py), each as time after the end of the user's speech.
const STAGES = [
  ["vad_stop", "VAD stop window", "#6b7a90"], ["turn_decision", "turn decision", "#9b6bff"],
  ["transcript", "transcript", "#5b8cff"], ["llm_first_token", "LLM first token", "#2fbf71"],
  ["tts_text", "text to TTS", "#b8d94a"], ["tts_first_audio", "TTS first audio", "#f0b429"],
  ["audio_out", "audio out", "#ff7a59"],
];

// One stacked bar per turn: each segment is the time from the previous moment to this one.
function turnBars(turns) {
  if (!turns.length) return "<p class='muted'>No turns yet</p>";
  const widest = Math.max(...turns.map((t) => t.v2vMs), 1);
  const bars = turns.map((t, i) => {
    let last = 0;
    // in the order the moments happened (a turn decision may wait for the transcript, or not)
    const present = STAGES.filter(([k]) => t.stagesMs[k] !== undefined).sort((a, b) => t.stagesMs[a[0]] - t.stagesMs[b[0]]);
    const segs = present.map(([k, label, color]) => {
      const at = Math.max(t.stagesMs[k], last), w = (100 * (at - last)) / widest;
      const seg = `<i style="width:${w}%;background:${color}" title="${esc(label)}: ${Math.round(at - last)} ms (at ${Math.round(at)} ms)"></i>`;
      last = at;
      return seg;
    }).join("");
    return `<div class="turn-row"><span>turn ${i + 1}</span><div class="stack">${segs}</div><b>${ms(t.v2vMs)}</b></div>`;
  }).join("");
  const legend = STAGES.map(([, label, color]) => `<span><i style="background:${color}"></i>${esc(label)}</span>`).join("");
  return `${bars}<div class="stack-legend">${legend}</div>`;
}

function stageTable(summary) {
  const rows = STAGES.filter(([k]) => summary[k]).map(([k, label]) =>
    `<tr><td>${esc(label)}</td><td>${ms(summary[k].p50)}</td><td>${ms(summary[k].p95)}</td></tr>`).join("");
  return rows ? `<table class="stages"><thead><tr><th>stage (after end of speech)</th><th>p50</th><th>p95</th></tr></thead><tbody>${rows}</tbody></table>` : "";
}

async function renderDetail() {
  const id = location.hash.slice(1);
  $("detail").hidden = !id;
  if (!id) return;
  const res = await api(`/v1/sessions/${encodeURIComponent(id)}`);
  const s = await res.json();
  if (!res.ok) { $("detail-body").innerHTML = `<p class="bad">${esc(s.error)}</p>`; return; }
  const timeline = Object.entries(s.timingsMs).sort((a, b) => a[1] - b[1])
    .map(([k, v]) => `<li><b>${Math.round(v)} ms</b> ${esc(k.replace(/_/g, " "))}</li>`).join("");
  const ttfb = Object.entries(s.latency.ttfbP50Ms).map(([k, v]) => `<li>${esc(k)}: ${ms(v)}</li>`).join("") || "<li class='muted'>none reported</li>";
  const transcript = s.transcript.map((l) => `<div class="line ${esc(l.role)}"><span>${l.role === "user" ? "Caller" : "Agent"}</span> ${esc(l.text)}</div>`).join("") || "<p class='muted'>No transcript</p>";
  $("detail-title").textContent = `Session ${s.sessionId}`;
  renderRecording(s);
  $("detail-body").innerHTML = `
    <div class="detail-grid">
      <div><h3>Summary</h3><ul class="plain"><li>agent <b>${esc(s.agent)}</b> · ${esc(s.transport)}</li>
        <li>state <b>${esc(s.state)}</b>${s.endReason ? ` · ended: <b>${esc(s.endReason)}</b>` : ""} ${esc(s.endDetail ?? "")}</li>
        <li>${esc(s.start ?? "—")} start · bot in ${ms(s.botStartMs)} · pid ${esc(s.pid ?? "—")}</li>
        <li>time to first word <b>${ms(s.latency.ttfwMs)}</b></li>
        <li>voice-to-voice per turn: ${s.latency.turnsV2vMs.map(ms).join(", ") || "—"}</li></ul>
        <h3>Turns, by stage</h3><div class="turns">${turnBars(s.latency.turns ?? [])}</div>
        ${stageTable(s.latency.stagesMs ?? {})}
        <h3>Service TTFB (p50)</h3><ul class="plain">${ttfb}</ul></div>
      <div><h3>Timeline</h3><ol class="timeline">${timeline}</ol>${callBlock(s)}</div>
      <div><h3>Transcript</h3><div class="transcript">${transcript}</div></div>
    </div>`;
}

// A phone call's carrier side: numbers, status and the carrier's reports, in ms since the session began.
function callBlock(s) {
  const c = s.call;
  if (!c) return "";
  const reports = (c.timeline ?? []).map((e) => `<li><b>${Math.round((e.at - s.createdAt) * 1000)} ms</b> ${esc(e.status)}${
    e.answeredBy ? ` (${esc(e.answeredBy)})` : ""}${e.detail ? ` · ${esc(e.detail)}` : ""}</li>`).join("");
  const transfer = c.transfer ? `<li>transferred to <b>${esc(c.transfer.to)}</b></li>` : "";
  return `<h3>Call</h3><ul class="plain"><li>${esc(c.direction)} · ${esc(c.carrier)} · ${esc(c.carrierCallId ?? "—")}</li>
    <li>${esc(c.from ?? "—")} → ${esc(c.to ?? "—")}${c.status ? ` · <b>${esc(c.status)}</b>` : ""}</li>${transfer}</ul>
    ${reports ? `<ol class="timeline">${reports}</ol>` : ""}`;
}

// The session's recording: fetched with the dashboard's key (an <audio src> cannot send one) and
// played from an object URL. Rendered apart from the detail (which is redrawn every 2 s) and only
// when the session or its recording changes, so playback is never cut.
let shownRecording = "";
let recordingUrl = null;

async function renderRecording(s) {
  const rec = s.recording;
  const shown = `${s.sessionId}:${rec ? rec.state : s.state}`;
  if (shown === shownRecording) return;
  shownRecording = shown;
  if (recordingUrl) { URL.revokeObjectURL(recordingUrl); recordingUrl = null; }
  const box = $("detail-recording");
  if (!rec) { box.innerHTML = ""; return; }
  if (rec.state !== "ready") { box.innerHTML = `<p class="muted">Recording ${esc(rec.state)}</p>`; return; }
  const res = await api(`/v1/sessions/${encodeURIComponent(s.sessionId)}/recording`);
  if (!res.ok) {
    const error = await res.json().catch(() => ({ error: res.statusText }));
    box.innerHTML = `<p class="bad">Recording: ${esc(error.error)}</p>`;
    return;
  }
  recordingUrl = URL.createObjectURL(await res.blob());
  box.innerHTML = `<div class="recording"><h3>Recording</h3><audio controls preload="metadata" src="${recordingUrl}"></audio>
    <p class="muted">stereo: caller left, agent right · ${rec.durationS.toFixed(1)} s · ${Math.round(rec.bytes / 1024)} KiB ·
    <a href="${recordingUrl}" download="${esc(s.sessionId)}.wav">download</a></p></div>`;
}

async function refresh() {
  try {
    const [capRes, sessRes] = await Promise.all([api("/v1/capacity"), api("/v1/sessions?limit=200")]);
    if (capRes.status === 401 || capRes.status === 403) {
      const key = prompt("This dashboard needs a private API key (voxfleet keys create --scope private):");
      if (key) localStorage.setItem(KEY_STORE, key.trim());
      $("updated").textContent = "needs a private API key";
      return;
    }
    const [cap, sess] = [await capRes.json(), await sessRes.json()];
    renderCapacity(cap);
    renderSessions(sess.sessions);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("updated").textContent = "server unreachable";
  }
}

window.addEventListener("hashchange", renderDetail);
refresh().then(renderDetail);
setInterval(() => { refresh(); if (location.hash) renderDetail(); }, 2000);
