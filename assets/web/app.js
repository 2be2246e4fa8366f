// The page `aai-live serve --web` shows at `/`: a start/stop button over aai-live-client.js,
// the live transcript, countdowns, the state, the last close in plain words, a level meter,
// the ledger (sent/lost) and a transcript download. The token server is this page's own
// origin; with credentials on, the page asks for one and keeps it in sessionStorage.

import { AaiLiveClient } from "./aai-live-client.js";

const $ = (id) => document.getElementById(id);
const CREDENTIAL_KEY = "aai-live-credential";

let client = null;
let sessionEndsAt = null;
let tokenUntil = null;
let finals = new Map();

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

function clock(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const pad = (n) => String(n).padStart(2, "0");
  return s >= 3600
    ? `${Math.floor(s / 3600)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`
    : `${pad(Math.floor(s / 60))}:${pad(s % 60)}`;
}

function say(text) {
  $("message").textContent = text || "";
}

function renderFinals() {
  const list = $("finals");
  list.replaceChildren(
    ...[...finals.values()]
      .sort((a, b) => a.start_ms - b.start_ms)
      .map((f) => {
        const li = document.createElement("li");
        li.dataset.generation = f.generation;
        li.dataset.turn = f.turn_order;
        const time = document.createElement("time");
        time.textContent = clock(f.start_ms);
        li.append(time, document.createTextNode(`${f.speaker ? `${f.speaker}: ` : ""}${f.text}`));
        return li;
      }),
  );
  $("download").disabled = finals.size === 0;
}

function tick() {
  const now = Date.now();
  $("session").textContent = sessionEndsAt ? clock(sessionEndsAt - now) : "—";
  if (tokenUntil) $("token").textContent = `redeem within ${clock(tokenUntil - now)}`;
}
setInterval(tick, 500);

function wire(c) {
  c.addEventListener("state", (e) => {
    const s = e.detail;
    $("state").textContent = s.state + (s.state === "backoff" ? ` (attempt ${s.attempt}, ${seconds(s.retry_in_ms)})` : "");
    if (s.state === "failed") {
      say(`Streaming stopped: ${s.reason} (aai-live explain ${s.explain})`);
      stopped();
      // A refused credential is forgotten, and the page asks for another.
      if (s.origin === "token" && (s.status === 401 || s.status === 403) && sessionStorage.getItem(CREDENTIAL_KEY)) {
        sessionStorage.removeItem(CREDENTIAL_KEY);
        $("auth").hidden = false;
      }
    }
  });
  c.addEventListener("token", (e) => {
    tokenUntil = e.detail.redeem_in_ms ? Date.now() + e.detail.redeem_in_ms : null;
    $("token").textContent = `${e.detail.fingerprint} for connection ${e.detail.generation}`;
  });
  c.addEventListener("token_failed", (e) => {
    say(`No token: ${e.detail.message}`);
  });
  c.addEventListener("begin", (e) => {
    sessionEndsAt = e.detail.expires_at * 1000;
    tokenUntil = null;
    $("token").textContent = "redeemed";
    say("");
  });
  c.addEventListener("partial", (e) => {
    $("partial").textContent = e.detail.text;
  });
  c.addEventListener("final", (e) => {
    finals.set(`${e.detail.generation}/${e.detail.turn_order}`, e.detail);
    $("partial").textContent = "";
    renderFinals();
  });
  c.addEventListener("rotation", (e) => {
    $("rotations").textContent = String(Number($("rotations").textContent) + 1);
    void e;
  });
  c.addEventListener("lost", (e) => {
    const d = e.detail;
    $("reconnects").textContent = String(Number($("reconnects").textContent) + 1);
    $("close").textContent = `${d.code ?? "no close code"}: ${d.reason || "—"} — ${d.what_now}`;
  });
  c.addEventListener("audio_lost", (e) => {
    $("lost").textContent = seconds(c.ledger.lost * 1000 / 16000);
    void e;
  });
  c.addEventListener("level", (e) => {
    const db = e.detail.rms > 0 ? Math.max(-60, 20 * Math.log10(e.detail.rms)) : -60;
    $("level").style.width = `${((db + 60) / 60) * 100}%`;
    document.querySelector(".meter").setAttribute("aria-valuenow", String(Math.round(db)));
    $("sent").textContent = seconds((c.ledger.sent * 1000) / 16000);
  });
  c.addEventListener("finished", (e) => {
    const d = e.detail;
    $("sent").textContent = seconds((d.audio_sent_samples * 1000) / 16000);
    $("lost").textContent = seconds((d.audio_lost_samples * 1000) / 16000);
    sessionEndsAt = null;
    stopped();
  });
}

function stopped() {
  const b = $("toggle");
  b.textContent = "Start";
  b.setAttribute("aria-pressed", "false");
  b.disabled = false;
}

async function needsCredential() {
  // Ask the server whether a credential is needed (no token is minted for a 401).
  const config = await fetch("config.json", { cache: "no-store" }).then((r) => r.json()).catch(() => ({}));
  return Boolean(config.auth_required);
}

async function start() {
  const b = $("toggle");
  b.disabled = true;
  say("");
  const credential = sessionStorage.getItem(CREDENTIAL_KEY) || undefined;
  if (!credential && (await needsCredential())) {
    $("auth").hidden = false;
    $("credential").focus();
    say("This token server needs a credential.");
    b.disabled = false;
    return;
  }
  finals = new Map();
  renderFinals();
  client = new AaiLiveClient({ credential });
  window.aaiLive = client; // for the tests and the curious
  wire(client);
  try {
    await client.start();
    b.textContent = "Stop";
    b.setAttribute("aria-pressed", "true");
    b.disabled = false;
  } catch (e) {
    say(`Cannot start: ${e.message || e}`);
    stopped();
  }
}

async function stop() {
  $("toggle").disabled = true;
  if (client) await client.stop();
  stopped();
}

$("toggle").addEventListener("click", () => {
  if ($("toggle").getAttribute("aria-pressed") === "true") stop();
  else start();
});

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("credential").value.trim();
  if (value) sessionStorage.setItem(CREDENTIAL_KEY, value);
  $("credential").value = "";
  $("auth").hidden = true;
  start();
});

$("download").addEventListener("click", () => {
  const text = client ? client.transcript.text() : "";
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `aai-live-${new Date().toISOString().replaceAll(":", "-")}.txt`;
  a.click();
  URL.revokeObjectURL(url);
});
