// aai-live-client.js — stream a browser microphone to AssemblyAI Universal Streaming v3 with
// one-time tokens, and keep streaming: re-mint and reconnect when a session ends, rotate to a
// successor before expiry, replay after a drop, and account for every captured sample.
//
// A dependency-free ES module (no bundler, no npm at run time), served by `aai-live serve` at
// /aai-live-client.js, with its AudioWorklet at /aai-live-worklet.js. It follows the rules of
// the aai-live terminal client (docs/session.md) and emits the events of docs/events.md with
// the same fields, so one vocabulary serves both clients:
//
//   import { AaiLiveClient } from "https://tokens.example.com/aai-live-client.js";
//   const client = new AaiLiveClient({ credential: "..." });   // token URL: /token beside it
//   client.addEventListener("final", (e) => console.log(e.detail.text));
//   await client.start();   // asks for the microphone
//   ...
//   await client.stop();    // Terminate, the last turns, `finished`
//
// The pure parts (close classification, resampler, chunker, replay buffer, ledger, transcript)
// are exported and unit-tested on their own (tests/web/*.test.mjs, node --test).

/** Samples per second on the wire. */
export const RATE = 16000;

// --- Close classification: the table `serve` publishes at /close-codes.json -----------------

/**
 * Classify a close with the table of `src/protocol/close.rs` (`table_json`): the first rule
 * whose code range holds `code` and for which every word group has a word in the lower-cased
 * `reason + " " + errorText` decides. No code (a TCP drop) and unmatched codes: `no_rule`.
 */
export function classify(table, code, reason = "", errorText = "") {
  if (code === null || code === undefined) return table.no_code;
  const text = asciiLower(`${reason} ${errorText || ""}`);
  for (const rule of table.rules) {
    const [from, to] = rule.codes;
    if (code < from || code > to) continue;
    if (rule.all.every((group) => group.some((word) => text.includes(word)))) return rule.class;
  }
  return table.no_rule;
}

/**
 * Lower-case A-Z only, as Rust's `to_ascii_lowercase`: `toLowerCase` would also fold non-ASCII
 * letters (the Kelvin sign becomes "k"), and a reason could then match a rule here and not there.
 */
export function asciiLower(text) {
  return text.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

/** Whether a class is retried automatically. */
export function retryable(table, cls) {
  return Boolean(table.classes[cls] && table.classes[cls].retryable);
}

// --- Audio: resample to 16 kHz, cut into chunks -------------------------------------------

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Streaming resampler from `inRate` to `outRate` (mono Float32 in, Float32 out): a windowed-sinc
 * (Blackman, `taps` per side) low-pass at the lower Nyquist, evaluated at each output instant.
 * Output sample `n` sits exactly at input position `n × inRate / outRate` (integer arithmetic,
 * so no drift over hours); its coefficients depend only on that position's fraction, of which
 * there are `outRate / gcd` kinds, each computed once. After `n` input samples every output
 * sample up to `n × outRate / inRate`, less the filter's look-ahead (`taps + 1` input samples),
 * has been produced.
 */
export class Resampler {
  constructor(inRate, outRate = RATE, taps = 16) {
    inRate = Math.round(inRate);
    if (!(inRate >= 8000 && inRate <= 384000)) throw new RangeError(`input rate ${inRate} Hz`);
    this.inRate = inRate;
    this.outRate = outRate;
    const g = gcd(inRate, outRate);
    this.up = outRate / g; // fractions of an input sample an output sample can sit at
    this.down = inRate / g;
    this.taps = inRate === outRate ? 0 : taps;
    this.cutoff = Math.min(1, outRate / inRate);
    this.kernels = new Map(); // phase -> coefficients for inputs center - taps ..= center + taps + 1
    this.history = new Float32Array(0); // input samples the next outputs still need
    this.base = 0; // input index of history[0]
    this.produced = 0; // output samples produced
  }

  kernel(x) {
    if (x === 0) return this.cutoff;
    const w = x / (this.taps + 1);
    if (Math.abs(w) >= 1) return 0;
    const sinc = Math.sin(Math.PI * x * this.cutoff) / (Math.PI * x);
    const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
    return sinc * blackman;
  }

  coefficients(phase) {
    let k = this.kernels.get(phase);
    if (!k) {
      const frac = phase / this.up;
      k = new Float32Array(2 * this.taps + 2);
      for (let j = -this.taps; j <= this.taps + 1; j++) k[j + this.taps] = this.kernel(frac - j);
      this.kernels.set(phase, k);
    }
    return k;
  }

  /** Feed input samples; returns the output samples now computable. */
  push(input) {
    const joined = new Float32Array(this.history.length + input.length);
    joined.set(this.history);
    joined.set(input, this.history.length);
    const end = this.base + joined.length; // one past the last input index held
    // Outputs whose window (center - taps ..= center + taps + 1) is all here: those with
    // center < end - lookAhead, i.e. n < (end - lookAhead) × up / down.
    const lookAhead = this.taps === 0 ? 0 : this.taps + 1;
    const count = Math.max(0, Math.ceil(((end - lookAhead) * this.up) / this.down) - this.produced);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      const n = this.produced + i;
      const center = Math.floor((n * this.down) / this.up);
      if (this.taps === 0) {
        out[i] = joined[center - this.base];
        continue;
      }
      const k = this.coefficients((n * this.down) % this.up);
      let acc = 0;
      const from = center - this.taps - this.base;
      for (let j = 0; j < k.length; j++) {
        const idx = from + j;
        if (idx >= 0) acc += joined[idx] * k[j]; // before the first sample: silence
      }
      out[i] = acc;
    }
    this.produced += count;
    // Keep what the next outputs still need.
    const nextCenter = Math.floor((this.produced * this.down) / this.up);
    const keepFrom = Math.max(this.base, nextCenter - this.taps);
    this.history = joined.slice(keepFrom - this.base);
    this.base = keepFrom;
    return out;
  }
}

/** Float samples (-1..1, non-finite as silence) to signed 16-bit. */
export function toInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const v = Number.isFinite(samples[i]) ? samples[i] : 0;
    out[i] = Math.max(-32768, Math.min(32767, Math.round(v * 32768)));
  }
  return out;
}

/** Cuts a sample stream into chunks of exactly `size` samples, each with its stream offset. */
export class Chunker {
  constructor(size = RATE / 20) {
    this.size = size;
    this.pending = new Int16Array(size);
    this.fill = 0;
    this.offset = 0;
  }

  /** Feed samples; returns the completed chunks `{offset, samples}`. */
  push(samples) {
    const done = [];
    let i = 0;
    while (i < samples.length) {
      const take = Math.min(this.size - this.fill, samples.length - i);
      this.pending.set(samples.subarray(i, i + take), this.fill);
      this.fill += take;
      i += take;
      if (this.fill === this.size) {
        done.push({ offset: this.offset, samples: this.pending });
        this.offset += this.size;
        this.pending = new Int16Array(this.size);
        this.fill = 0;
      }
    }
    return done;
  }
}

/** RMS of a chunk relative to full scale. */
export function rms(samples) {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length) / 32768;
}

// --- The replay buffer and the ledger ----------------------------------------------------------

/** The most recent audio, chunk by chunk, with stream offsets and first-send times. */
export class ReplayBuffer {
  constructor(capacitySamples) {
    this.capacity = Math.max(1, capacitySamples);
    this.chunks = [];
    this.held = 0;
  }

  /** Add a chunk; returns the end of what left the buffer (everything before it is gone). */
  push(offset, samples) {
    this.chunks.push({ offset, samples, sentAt: null });
    this.held += samples.length;
    let evictedTo = null;
    while (this.held > this.capacity && this.chunks.length > 0) {
      const old = this.chunks.shift();
      this.held -= old.samples.length;
      evictedTo = old.offset + old.samples.length;
    }
    return evictedTo;
  }

  oldest() {
    return this.chunks.length ? this.chunks[0].offset : null;
  }

  head() {
    if (!this.chunks.length) return null;
    const last = this.chunks[this.chunks.length - 1];
    return last.offset + last.samples.length;
  }

  /** The chunk holding `offset`, or the first after it. */
  atOrAfter(offset) {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = this.chunks[mid];
      if (c.offset + c.samples.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    return this.chunks[lo] || null;
  }

  /** The start of the chunk holding `offset` (replays start on chunk boundaries). */
  chunkStart(offset) {
    const c = this.atOrAfter(offset);
    return c ? c.offset : null;
  }
}

/**
 * The audio ledger (as src/session/ledger.rs): every captured sample is sent (counted once) or
 * reported lost with a cause; `captured = sent + lost`.
 */
export class Ledger {
  constructor() {
    this.head = 0;
    this.settled = 0;
    this.captured = 0;
    this.sent = 0;
    this.lost = 0;
  }

  capture(samples) {
    this.head += samples;
    this.captured += samples;
  }

  /** The capture dropped `samples` (never on the timeline): captured and lost at once. */
  overrun(samples) {
    if (samples <= 0) return null;
    this.captured += samples;
    this.lost += samples;
    return { from: this.head, to: this.head, samples, cause: "capture_overrun" };
  }

  markSent(from, to) {
    const skipped = from > this.settled ? this.loseTo(from, "replay_buffer_full") : null;
    if (to > this.settled) {
      this.sent += to - Math.max(this.settled, from);
      this.settled = to;
    }
    return skipped;
  }

  evicted(to) {
    return this.loseTo(to, "replay_buffer_full");
  }

  abandon(cause) {
    return this.loseTo(this.head, cause);
  }

  loseTo(to, cause) {
    const end = Math.min(to, this.head);
    if (end <= this.settled) return null;
    const loss = { from: this.settled, to: end, samples: end - this.settled, cause };
    this.lost += loss.samples;
    this.settled = end;
    return loss;
  }

  balanced() {
    return this.captured === this.sent + this.lost;
  }
}

// --- The transcript: one final per turn --------------------------------------------------------

/**
 * Turns keyed by (generation, turn_order). A later final for the same turn (older servers send a
 * formatted copy) replaces the earlier one: `apply` says whether it replaced.
 */
export class Transcript {
  constructor() {
    this.finals = new Map(); // key -> final
  }

  /** Record a final; returns `{final, replaced}`. */
  applyFinal(final) {
    const key = `${final.generation}/${final.turn_order}`;
    const replaced = this.finals.has(key);
    this.finals.set(key, final);
    return { final, replaced };
  }

  /** The finals in stream order. */
  list() {
    return [...this.finals.values()].sort((a, b) => a.start_ms - b.start_ms);
  }

  /** Plain text, one turn per line with its start time. */
  text() {
    const clock = (ms) => {
      const s = Math.floor(ms / 1000);
      const pad = (n) => String(n).padStart(2, "0");
      return `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
    };
    return this.list()
      .map((t) => `[${clock(t.start_ms)}] ${t.speaker ? `${t.speaker}: ` : ""}${t.text}\n`)
      .join("");
  }
}

// --- Backoff -----------------------------------------------------------------------------------

/** Full-jitter exponential delay for `attempt` (1, 2, ...), in ms (src/session/backoff.rs). */
export function backoffDelay(attempt, { initialMs, maxMs, multiplier }, unit = Math.random()) {
  const exp = Math.max(1, multiplier) ** Math.min(64, Math.max(0, attempt - 1));
  const ceiling = Math.min(maxMs, initialMs * exp);
  return Math.floor(Math.min(1, Math.max(0, unit)) * ceiling);
}

/**
 * After a rate limit: the server's `Retry-After` (at least a second) or the minute-scale floor,
 * plus up to 25 % jitter, so many clients of one account do not come back in the same second.
 */
export function rateLimitedDelay(retryAfterMs, floorMs, unit = Math.random()) {
  const base = retryAfterMs ? Math.max(1000, retryAfterMs) : floorMs;
  return Math.floor(base * (1 + 0.25 * Math.min(1, Math.max(0, unit))));
}

// --- The client --------------------------------------------------------------------------------

const DEFAULTS = {
  chunkMs: 50,
  replayBufferMs: 30000,
  replaySpeed: 1.25,
  rotation: true,
  rotationLeadMs: 30000,
  beginTimeoutMs: 10000,
  terminateTimeoutMs: 5000,
  stallTimeoutMs: 20000,
  healthyAfterMs: 30000,
  backoff: { initialMs: 500, maxMs: 30000, multiplier: 2 },
  rateLimitBackoffMs: 60000,
  audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
};

/** `/config.json`'s `session` (the server's `[session]`) in the client's option names. */
function sessionOptions(session) {
  if (!session || typeof session !== "object") return {};
  const out = {};
  const take = (name, key) => {
    if (typeof session[key] === "number" || typeof session[key] === "boolean") out[name] = session[key];
  };
  take("rotation", "rotation");
  take("rotationLeadMs", "rotation_lead_ms");
  take("beginTimeoutMs", "begin_timeout_ms");
  take("terminateTimeoutMs", "terminate_timeout_ms");
  take("stallTimeoutMs", "stall_timeout_ms");
  take("healthyAfterMs", "healthy_after_ms");
  take("rateLimitBackoffMs", "rate_limit_backoff_ms");
  take("replayBufferMs", "replay_buffer_ms");
  take("replaySpeed", "replay_speed");
  take("chunkMs", "chunk_ms");
  const b = session.backoff;
  if (b && typeof b === "object") {
    out.backoff = {};
    if (typeof b.initial_ms === "number") out.backoff.initialMs = b.initial_ms;
    if (typeof b.max_ms === "number") out.backoff.maxMs = b.max_ms;
    if (typeof b.multiplier === "number") out.backoff.multiplier = b.multiplier;
  }
  return out;
}

/** Silence needed before a hand-over may move the audio. */
const QUIET_AFTER_MS = 300;
/** Voice: above -40 dBFS. */
const VOICE_RMS = 327 / 32768;
/** Audio queued in the socket beyond this means the server is not reading. */
const QUEUE_MS = 2000;

/**
 * The browser client. Events are dispatched as `CustomEvent`s named like docs/events.md
 * (`state`, `token`, `begin`, `final`, ...) with the event object as `detail`, and also as one
 * `"event"` event for a single listener.
 */
export class AaiLiveClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.tokenUrl] the token server; default `/token` beside this module
   * @param {string} [options.credential] bearer credential for the token server (sent in the
   *   Authorization header, never in a URL)
   * @param {string} [options.streamingUrl] the v3 WebSocket URL; default from /config.json
   * @param {object} [options.params] streaming parameters (`sample_rate`, `format_turns`, ...)
   * @param {MediaStream} [options.stream] a stream to use instead of asking for the microphone
   */
  constructor(options = {}) {
    super();
    const base = new URL(".", import.meta.url);
    this.options = options;
    this.configure({});
    this.tokenUrl = new URL(options.tokenUrl || "token", base).href;
    this.configUrl = new URL(options.configUrl || "config.json", base).href;
    this.tableUrl = new URL(options.closeCodesUrl || "close-codes.json", base).href;
    this.workletUrl = new URL(options.workletUrl || "aai-live-worklet.js", base).href;
    this.reset();
  }

  /** Options: the defaults, under the server's `[session]` (config.json), under the caller's. */
  configure(server) {
    const options = this.options;
    this.opts = {
      ...DEFAULTS,
      ...server,
      ...options,
      backoff: { ...DEFAULTS.backoff, ...(server.backoff || {}), ...(options.backoff || {}) },
      audio: { ...DEFAULTS.audio, ...(options.audio || {}) },
    };
    // 50 ms chunks unless configured otherwise; the service takes 50-1000 ms.
    this.opts.chunkMs = Math.min(1000, Math.max(50, Math.round(this.opts.chunkMs)));
    this.opts.replaySpeed = Math.min(1.25, Math.max(1, this.opts.replaySpeed));
  }

  reset() {
    this.generation = 0;
    this.conns = new Map(); // generation -> connection
    this.retired = new Map(); // generation -> {base, lastFinalEnd}
    this.state = { state: "idle" };
    this.route = null;
    this.cursor = 0;
    this.ledger = new Ledger();
    this.buffer = new ReplayBuffer(Math.round((RATE * this.opts.replayBufferMs) / 1000));
    this.transcript = new Transcript();
    this.attempt = 0;
    this.healthy = false;
    this.tokenRetryUsed = false;
    this.replayFrom = null;
    this.rotations = 0;
    this.reconnects = 0;
    this.capturing = false;
    this.silentMs = 0;
    this.quiet = true;
    this.timers = new Set();
    this.pumpTimer = null;
    this.nextReplaySend = 0;
    this.unroutedSince = null;
    this.live = null;
    this.successor = null;
    this.forced = false;
    this.tokens = new Map(); // generation -> the token answer's lifetimes (never the token)
    this.latencies = [];
    this.failure = null;
    this.finished = false;
    this.lastClose = null;
    this.onEnd = null;
  }

  emit(name, fields = {}) {
    const detail = { event: name, ts_ms: Date.now(), ...fields };
    this.dispatchEvent(new CustomEvent(name, { detail }));
    this.dispatchEvent(new CustomEvent("event", { detail }));
    return detail;
  }

  setState(state) {
    this.state = state;
    this.emit("state", state);
  }

  later(ms, fn) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, Math.max(0, ms));
    this.timers.add(id);
    return id;
  }

  ms(samples) {
    return Math.floor((samples * 1000) / RATE);
  }

  samples(ms) {
    return Math.floor((ms * RATE) / 1000);
  }

  /** Load the configuration and the close table, open the microphone, start streaming. */
  async start() {
    if (this.capturing || this.starting) return;
    this.starting = true;
    try {
      await this.begin();
    } finally {
      this.starting = false;
    }
  }

  async begin() {
    const [table, config] = await Promise.all([
      this.options.closeCodes || fetchJson(this.tableUrl),
      // Without a streaming URL of its own the client needs the server's configuration.
      this.options.streamingUrl ? fetchJson(this.configUrl).catch(() => null) : fetchJson(this.configUrl),
    ]);
    this.table = table;
    this.configure(sessionOptions(config && config.session));
    this.streamingUrl = this.options.streamingUrl || (config && config.streaming_url);
    if (!this.streamingUrl) throw new Error("no streaming URL (options.streamingUrl or config.json)");
    this.params = { ...((config && config.params) || {}), ...(this.options.params || {}) };
    // The emulator's stream-offset hints: as the server says (only for a ws:// endpoint on
    // loopback), unless the caller decided.
    this.emulatorHints =
      this.options.emulatorHints === undefined ? Boolean(config && config.emulator_hints) : Boolean(this.options.emulatorHints);
    this.reset();
    try {
      await this.openAudio();
    } catch (e) {
      this.closeAudio();
      throw e;
    }
    this.capturing = true;
    this.mint("start");
  }

  async openAudio() {
    const stream =
      this.opts.stream ||
      (await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: this.opts.audio.echoCancellation,
          noiseSuppression: this.opts.audio.noiseSuppression,
          autoGainControl: this.opts.audio.autoGainControl,
          ...(this.opts.audio.deviceId ? { deviceId: this.opts.audio.deviceId } : {}),
        },
      }));
    this.stream = stream;
    this.audioContext = new AudioContext();
    // Started from a click this runs at once; a page that starts on load may need a gesture
    // first (the capture begins when the context runs).
    if (this.audioContext.state === "suspended") this.audioContext.resume().catch(() => {});
    await this.audioContext.audioWorklet.addModule(this.workletUrl);
    const source = this.audioContext.createMediaStreamSource(stream);
    this.node = new AudioWorkletNode(this.audioContext, "aai-live-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
    });
    this.resampler = new Resampler(this.audioContext.sampleRate, RATE);
    this.chunker = new Chunker(this.samples(this.opts.chunkMs));
    this.nextFrame = null;
    this.node.port.onmessage = (e) => this.onFrames(e.data);
    source.connect(this.node);
    this.source = source;
  }

  closeAudio() {
    if (this.node) this.node.port.onmessage = null;
    if (this.source) this.source.disconnect();
    if (this.stream && !this.opts.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.audioContext) this.audioContext.close().catch(() => {});
    this.node = null;
    this.source = null;
    this.audioContext = null;
  }

  /** A block of mono frames from the worklet: `{frame, samples}` (`frame`: its first index). */
  onFrames({ frame, samples }) {
    if (!this.capturing) return;
    if (this.nextFrame !== null && frame > this.nextFrame) {
      // Frames the audio thread could not hand over: lost before they reached the stream.
      const dropped = Math.round(((frame - this.nextFrame) * RATE) / this.resampler.inRate);
      const loss = this.ledger.overrun(dropped);
      if (loss) this.reportLoss(loss);
    }
    this.nextFrame = frame + samples.length;
    const chunks = this.chunker.push(toInt16(this.resampler.push(samples)));
    for (const chunk of chunks) this.onChunk(chunk.samples);
  }

  /** A chunk of the stream: into the buffer and the ledger, then sent if a session takes it. */
  onChunk(samples) {
    const offset = this.ledger.head;
    this.ledger.capture(samples.length);
    const evictedTo = this.buffer.push(offset, samples);
    if (evictedTo !== null) {
      const loss = this.ledger.evicted(evictedTo);
      if (loss) this.reportLoss(loss);
    }
    this.emit("level", { rms: rms(samples) });
    this.pump();
  }

  reportLoss(loss) {
    this.emit("audio_lost", {
      from_ms: this.ms(loss.from),
      to_ms: this.ms(loss.to),
      ms: this.ms(loss.samples),
      samples: loss.samples,
      cause: loss.cause,
    });
  }

  // --- tokens ---

  async fetchToken() {
    const url = new URL(this.tokenUrl);
    const p = this.opts.tokenParams || {};
    for (const [k, v] of Object.entries(p)) url.searchParams.set(k, String(v));
    const headers = {};
    if (this.opts.credential) headers.Authorization = `Bearer ${this.opts.credential}`;
    let response;
    try {
      // Cookies only to the page's own origin: an authenticating proxy in front of `serve`
      // works; a token server elsewhere gets the bearer credential only.
      response = await fetch(url, { headers, cache: "no-store", credentials: "same-origin" });
    } catch (e) {
      throw { class: "transient", message: `the token server at ${this.tokenUrl} cannot be reached: ${e.message}` };
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const said = body && (body.message || body.error) ? `: ${String(body.message || body.error).slice(0, 512)}` : "";
      const status = response.status;
      const retryAfter = Number(response.headers.get("retry-after")) || null;
      const cls =
        status === 401 || status === 403
          ? "fatal"
          : status === 429
            ? "rate_limited"
            : status >= 500
              ? "transient"
              : "fatal";
      throw {
        class: cls,
        retryAfterMs: retryAfter ? retryAfter * 1000 : null,
        message:
          status === 401 || status === 403
            ? `the token server refused this client (HTTP ${status}${said}); check the credential`
            : `the token server answered HTTP ${status}${said}`,
      };
    }
    if (!body || typeof body.token !== "string" || !body.token) {
      throw { class: "transient", message: "the token server answered without a token" };
    }
    return body;
  }

  mint(cause) {
    const generation = ++this.generation;
    this.setState({ state: "minting", generation, cause });
    this.fetchToken().then(
      (token) => this.onToken(generation, cause, token),
      (failure) => this.onTokenFailed(generation, failure),
    );
  }

  onToken(generation, cause, token) {
    const s = this.state;
    const waiting =
      (s.state === "minting" && s.generation === generation) ||
      (s.state === "rotating" && s.new === generation);
    if (!waiting || this.finished) return; // nobody waits for it: never reused
    this.tokens.set(generation, { maxSessionS: Number(token.max_session_duration_seconds) || null });
    const redeemBy = Date.parse(token.expires_at);
    const redeemInMs = Number.isFinite(redeemBy)
      ? Math.max(0, redeemBy - Date.now())
      : Number(token.expires_in_seconds) * 1000 || null;
    this.emit("token", {
      generation,
      fingerprint: fingerprint(token.token),
      ...(redeemInMs !== null ? { redeem_in_ms: redeemInMs } : {}),
    });
    if (s.state === "minting") this.setState({ state: "connecting", generation, cause: s.cause || cause });
    this.connect(generation, s.state === "minting" ? s.cause || cause : cause, token);
  }

  onTokenFailed(generation, failure) {
    this.emit("token_failed", { generation, class: failure.class, message: failure.message });
    if (this.state.state === "minting" && this.state.generation === generation) {
      this.failOrBackOff(failure.class, failure.message, failure.retryAfterMs);
    } else if (this.state.state === "rotating" && this.state.new === generation) {
      this.setState({ state: "streaming", generation: this.state.old, session_id: this.live.sessionId });
    }
  }

  // --- connections ---

  connect(generation, cause, token) {
    const url = new URL(this.streamingUrl);
    // What this client sends, whatever the parameters say: 16 kHz 16-bit PCM.
    const params = { ...this.params, sample_rate: RATE, encoding: "pcm_s16le" };
    for (const [k, v] of Object.entries(params)) {
      url.searchParams.set(k, Array.isArray(v) ? JSON.stringify(v) : String(v));
    }
    if (this.emulatorHints) {
      url.searchParams.set("emulator_stream_offset_ms", String(this.ms(this.ledger.settled)));
    }
    url.searchParams.set("token", token.token); // browsers cannot set headers on a WebSocket
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    const conn = {
      generation,
      ws,
      cause,
      sessionId: null,
      base: null,
      lastFinalEnd: null,
      began: false,
      errorText: null,
      unansweredVoiceMs: 0,
      unansweredSince: null,
      stuckSince: null,
      startedAt: performance.now(),
    };
    this.conns.set(generation, conn);
    ws.onmessage = (e) => this.onMessage(conn, e.data);
    ws.onclose = (e) => this.onClose(conn, e.code, e.reason);
    ws.onerror = () => {};
    conn.beginTimer = this.later(this.opts.beginTimeoutMs, () => {
      if (!conn.began && this.conns.get(generation) === conn) {
        this.dropConn(conn);
        this.closed(conn, null, "no Begin within the timeout");
      }
    });
  }

  send(conn, data) {
    if (conn.ws.readyState !== WebSocket.OPEN) return false;
    conn.ws.send(data);
    return true;
  }

  control(conn, message) {
    return this.send(conn, JSON.stringify(message));
  }

  /** Let a connection go, politely (1000). */
  dropConn(conn) {
    this.conns.delete(conn.generation);
    this.retired.set(conn.generation, { base: conn.base, lastFinalEnd: conn.lastFinalEnd });
    clearTimeout(conn.beginTimer);
    conn.ws.onmessage = null;
    conn.ws.onclose = null;
    try {
      conn.ws.close(1000);
    } catch {
      // already closing
    }
  }

  onMessage(conn, data) {
    if (typeof data !== "string") return;
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (!m || typeof m !== "object") return;
    conn.unansweredVoiceMs = 0;
    conn.unansweredSince = null;
    switch (m.type) {
      case "Begin":
        this.onBegin(conn, m);
        break;
      case "Turn":
        this.onTurn(conn, m);
        break;
      case "Termination":
        this.emit("termination", {
          generation: conn.generation,
          audio_duration_seconds: m.audio_duration_seconds || 0,
          session_duration_seconds: m.session_duration_seconds || 0,
        });
        if (this.state.state === "draining" && this.state.generation === conn.generation) {
          this.dropConn(conn);
          this.endRun();
        } else {
          this.dropConn(conn);
        }
        break;
      case "Error":
        conn.errorText = String(m.error || "").slice(0, 4096);
        break;
      case "Warning":
        this.emit("warning", { message: String(m.warning || "").slice(0, 4096) });
        break;
      default:
        break;
    }
  }

  onBegin(conn, m) {
    conn.began = true;
    conn.sessionId = String(m.id || "");
    clearTimeout(conn.beginTimer);
    const expiresAt = Number(m.expires_at);
    const leftMs = expiresAt * 1000 - Date.now();
    // The rule of src/protocol/expiry.rs: an implausible expiry (0, negative, beyond the
    // service's 3 hours; shorter than a minute unless this is the emulator, whose sessions may
    // be cut short on purpose) is not planned on: the requested duration is.
    const minMs = this.emulatorHints ? 0 : 55000;
    const granted = this.tokens.get(conn.generation);
    const requestedMs = ((granted && granted.maxSessionS) || 10800) * 1000;
    const plausible = Number.isFinite(leftMs) && leftMs >= minMs && leftMs <= 10805000;
    if (!plausible) {
      this.emit("warning", { message: `the session's expires_at (${m.expires_at}) is not plausible; planning with the requested duration` });
    }
    // expires_at is whole seconds: plan as if the session ended a second early.
    const planMs = (plausible ? leftMs : requestedMs) - 1000;
    const live = { generation: conn.generation, sessionId: conn.sessionId, expiresAt: performance.now() + planMs, turnOpen: false };
    const s = this.state;
    if (s.state === "connecting" && s.generation === conn.generation) {
      this.tokenRetryUsed = false;
      this.live = live;
      const replayFrom = this.replayFrom;
      this.replayFrom = null;
      this.routeTo(conn.generation, replayFrom);
      this.scheduleSessionTimers(live);
      this.setState({ state: "streaming", generation: conn.generation, session_id: conn.sessionId });
    } else if (s.state === "rotating" && s.new === conn.generation) {
      this.successor = live;
      this.setState({ state: "rotating", old: s.old, new: s.new, new_ready: true });
      if (this.forced) this.forceHandOver();
      else if (!this.live.turnOpen && this.quiet) this.handOver(false);
    } else {
      // Nobody waits for this session any more (stopped, or superseded).
      this.dropConn(conn);
      return;
    }
    this.emit("begin", {
      generation: conn.generation,
      session_id: conn.sessionId,
      expires_at: expiresAt,
      stream_offset_ms: conn.base === null ? 0 : this.ms(conn.base),
      backlog_ms: conn.base === null ? 0 : this.ms(this.ledger.head - conn.base),
      cause: conn.cause,
    });
  }

  onTurn(conn, turn) {
    if (conn.base === null) return;
    const baseMs = this.ms(conn.base);
    const words = Array.isArray(turn.words) ? turn.words : [];
    const rel = (v) => (Number.isFinite(Number(v)) ? Math.max(0, Number(v)) : 0);
    const start = words.length ? baseMs + rel(words[0].start) : baseMs;
    const end = words.length ? baseMs + rel(words[words.length - 1].end) : baseMs;
    const order = Number(turn.turn_order) || 0;
    if (turn.end_of_turn) {
      // As src/transcript.rs: the transcript, else the utterance.
      const text = String(turn.transcript || turn.utterance || "");
      const latency = this.latency(conn, words);
      const final = {
        generation: conn.generation,
        session_id: conn.sessionId,
        turn_order: order,
        text,
        formatted: Boolean(turn.turn_is_formatted),
        start_ms: start,
        end_ms: end,
        ...(turn.speaker_label ? { speaker: String(turn.speaker_label) } : {}),
        words: words.map((w) => ({
          text: String(w.text || ""),
          start_ms: baseMs + rel(w.start),
          end_ms: baseMs + rel(w.end),
          confidence: Number(w.confidence) || 0,
          ...(w.speaker ? { speaker: String(w.speaker) } : {}),
        })),
        ...(latency !== null ? { latency_ms: latency } : {}),
      };
      if (!this.transcript.applyFinal(final).replaced) {
        conn.lastFinalEnd = this.samples(end);
        if (latency !== null) this.latencies.push(latency);
      }
      this.emit("final", final);
    } else {
      // Universal-Streaming partials hold the final words in `transcript` and the newest word
      // only in `words`: show all of them.
      const text = words.length ? words.map((w) => String(w.text || "")).join(" ") : String(turn.transcript || "");
      this.emit("partial", { generation: conn.generation, turn_order: order, text, start_ms: start, end_ms: end });
    }
    // Turn boundaries drive hand-overs.
    if (this.live && this.live.generation === conn.generation) {
      this.live.turnOpen = !turn.end_of_turn;
      if (turn.end_of_turn && this.state.state === "rotating" && this.successor && this.quiet) this.handOver(false);
    }
  }

  /** From sending the audio that holds a turn's last word to now (its final), if known. */
  latency(conn, words) {
    if (!words.length) return null;
    const lastEnd = Number(words[words.length - 1].end);
    if (!Number.isFinite(lastEnd)) return null;
    const at = conn.base + this.samples(Math.max(0, lastEnd - 1));
    const chunk = this.buffer.atOrAfter(at);
    if (!chunk || chunk.offset > at || chunk.sentAt === null) return null;
    return Math.round(performance.now() - chunk.sentAt);
  }

  onClose(conn, code, reason) {
    if (this.conns.get(conn.generation) !== conn) return;
    this.conns.delete(conn.generation);
    this.retired.set(conn.generation, { base: conn.base, lastFinalEnd: conn.lastFinalEnd });
    clearTimeout(conn.beginTimer);
    // A browser reports a failed upgrade and a TCP drop alike as 1006: no close frame.
    this.closed(conn, code === 1006 ? null : code, String(reason || "").slice(0, 4096));
  }

  /** A connection ended: decide, as the terminal client's machine does. */
  closed(conn, code, reason) {
    const cls = code === null && reason === "no Begin within the timeout" ? "transient" : classify(this.table, code, reason, conn.errorText);
    const shownReason = reason || conn.errorText || (code === null ? "connection lost" : "");
    const s = this.state;
    const lostEvent = () => {
      this.reconnects++;
      this.lastClose = { code, reason: shownReason, class: cls };
      this.emit("lost", {
        generation: conn.generation,
        class: cls,
        ...(code !== null ? { code } : {}),
        reason: shownReason,
        what_now: this.table.classes[cls] ? this.table.classes[cls].advice : "",
      });
    };
    if (s.state === "draining" && s.generation === conn.generation) {
      this.endRun();
    } else if (s.state === "connecting" && s.generation === conn.generation) {
      lostEvent();
      this.afterLoss(cls, shownReason, code);
    } else if (s.state === "streaming" && s.generation === conn.generation) {
      this.unroute();
      lostEvent();
      this.replayFrom = conn.generation;
      this.afterLoss(cls, shownReason, code);
    } else if (s.state === "rotating" && s.old === conn.generation) {
      lostEvent();
      if (this.successor) {
        const next = this.successor;
        this.successor = null;
        this.live = next;
        this.routeTo(next.generation, conn.generation);
        this.scheduleSessionTimers(next);
        this.setState({ state: "streaming", generation: next.generation, session_id: next.sessionId });
      } else {
        this.unroute();
        this.replayFrom = conn.generation;
        // The successor carries on from where it is: connecting (its Begin timeout is armed)
        // or still waiting for its token.
        const connecting = this.conns.has(s.new);
        this.setState({ state: connecting ? "connecting" : "minting", generation: s.new, cause: "expired" });
      }
    } else if (s.state === "rotating" && s.new === conn.generation) {
      this.successor = null;
      this.setState({ state: "streaming", generation: s.old, session_id: this.live.sessionId });
    }
  }

  afterLoss(cls, reason, code) {
    switch (cls) {
      case "session_expired":
        this.mint("expired");
        break;
      case "token_rejected":
        if (!this.tokenRetryUsed) {
          this.tokenRetryUsed = true;
          this.mint("token_rejected");
        } else {
          this.fail(cls, `a fresh token was rejected too (${reason}); check the token source and the clock`);
        }
        break;
      case "normal":
        this.failOrBackOff("transient", reason, null);
        break;
      default:
        this.failOrBackOff(cls, code !== null ? `closed with ${code}${reason ? ` "${reason}"` : ""}` : reason, null);
    }
  }

  failOrBackOff(cls, reason, retryAfterMs) {
    if (!retryable(this.table, cls) && cls !== "normal") {
      const words = this.table.classes[cls] || { describe: cls, advice: "" };
      this.fail(cls, `${reason} (${words.describe}; ${words.advice})`);
      return;
    }
    if (cls === "transient" && this.healthy) {
      this.healthy = false;
      this.mint("dropped");
      return;
    }
    this.attempt++;
    const delay =
      cls === "rate_limited"
        ? rateLimitedDelay(retryAfterMs, this.opts.rateLimitBackoffMs)
        : backoffDelay(this.attempt, this.opts.backoff);
    const attempt = this.attempt;
    this.setState({ state: "backoff", attempt, retry_in_ms: Math.round(delay), class: cls });
    this.later(delay, () => {
      if (this.state.state === "backoff" && this.state.attempt === attempt) this.mint("dropped");
    });
  }

  scheduleSessionTimers(live) {
    this.later(this.opts.healthyAfterMs, () => {
      if (this.state.state === "streaming" && this.live === live) {
        this.attempt = 0;
        this.healthy = true;
      }
    });
    if (!this.opts.rotation) return;
    const rotateIn = live.expiresAt - this.opts.rotationLeadMs - performance.now();
    this.later(rotateIn, () => this.rotate(live));
  }

  // --- rotation ---

  rotate(live) {
    if (this.state.state !== "streaming" || this.live !== live) return;
    const old = live.generation;
    this.forced = false;
    this.successor = null;
    const generation = ++this.generation;
    this.setState({ state: "rotating", old, new: generation, new_ready: false });
    this.fetchToken().then(
      (token) => this.onToken(generation, "rotation", token),
      (failure) => this.onTokenFailed(generation, failure),
    );
    const deadline = live.expiresAt - this.opts.rotationLeadMs / 3 - performance.now();
    this.later(deadline, () => {
      if (this.state.state === "rotating" && this.state.old === old) {
        this.forced = true;
        if (this.successor) this.forceHandOver();
      }
    });
  }

  forceHandOver() {
    const conn = this.conns.get(this.state.old);
    if (conn) this.control(conn, { type: "ForceEndpoint" });
    const old = this.state.old;
    // Short, and well inside the margin left before the old session expires.
    this.later(Math.min(1500, this.opts.rotationLeadMs / 6), () => {
      if (this.state.state === "rotating" && this.state.old === old && this.successor) this.handOver(true);
    });
  }

  handOver(forced) {
    const s = this.state;
    const next = this.successor;
    if (s.state !== "rotating" || !next) return;
    const oldConn = this.conns.get(s.old);
    this.successor = null;
    this.routeTo(next.generation, null);
    if (oldConn) {
      this.control(oldConn, { type: "Terminate" });
      this.later(this.opts.terminateTimeoutMs, () => this.conns.get(oldConn.generation) === oldConn && this.dropConn(oldConn));
    }
    this.rotations++;
    const base = this.conns.get(next.generation) ? this.conns.get(next.generation).base : 0;
    // Forced: by the grace timer, or a boundary that came only after the deadline had passed.
    this.emit("rotation", {
      from: s.old,
      to: next.generation,
      forced: forced || this.forced,
      gap_ms: 0,
      stream_offset_ms: this.ms(base || 0),
    });
    this.live = next;
    this.scheduleSessionTimers(next);
    this.setState({ state: "streaming", generation: next.generation, session_id: next.sessionId });
  }

  // --- audio routing ---

  unroute() {
    if (this.route !== null) this.unroutedSince = performance.now();
    this.route = null;
  }

  replayStart(generation) {
    const c = this.conns.get(generation) || this.retired.get(generation);
    if (!c) return null;
    return c.lastFinalEnd !== null ? c.lastFinalEnd : c.base;
  }

  routeTo(generation, replayFrom) {
    const head = this.ledger.head;
    const settled = this.ledger.settled;
    const handingOver = this.route !== null;
    let start = handingOver ? this.cursor : settled;
    if (replayFrom !== null && replayFrom !== undefined) {
      const found = this.replayStart(replayFrom);
      const wanted = Math.min(found === null ? settled : found, settled);
      const oldest = this.buffer.oldest() === null ? head : this.buffer.oldest();
      if (wanted < oldest) {
        this.emit("warning", {
          message: `${((this.ms(oldest) - this.ms(wanted)) / 1000).toFixed(1)} s of audio sent to the lost session could not be replayed; words in it may be missing`,
        });
      }
      const chunk = this.buffer.chunkStart(Math.max(wanted, oldest));
      start = chunk === null ? head : chunk;
      const gap = this.unroutedSince ? Math.round(performance.now() - this.unroutedSince) : 0;
      this.emit("reconnected", {
        generation,
        replay_from_ms: this.ms(start),
        replay_ms: this.ms(Math.max(0, head - start)),
        gap_ms: gap,
      });
    }
    this.unroutedSince = null;
    this.route = generation;
    this.cursor = start;
    this.nextReplaySend = performance.now();
    const conn = this.conns.get(generation);
    if (conn) {
      conn.base = start;
      if (this.emulatorHints) {
        // The emulator's script alignment; only ever sent to the emulator.
        this.control(conn, { type: "UpdateConfiguration", emulator_stream_offset_ms: this.ms(start) });
      }
    }
    this.pump();
  }

  /** Send what is due: the live chunk at once, a backlog at `replaySpeed` × real time. */
  pump() {
    if (this.route === null) return;
    const conn = this.conns.get(this.route);
    if (!conn || conn.ws.readyState !== WebSocket.OPEN) return;
    const chunkMs = this.opts.chunkMs;
    const now = performance.now();
    for (;;) {
      const chunk = this.buffer.atOrAfter(this.cursor);
      if (!chunk) return;
      const end = chunk.offset + chunk.samples.length;
      const live = end === this.buffer.head();
      if (!live) {
        if (this.quiet) {
          this.quiet = false;
          this.silentMs = 0;
        }
        if (now < this.nextReplaySend) {
          this.schedulePump(this.nextReplaySend - now);
          return;
        }
        this.nextReplaySend =
          Math.max(this.nextReplaySend, now - chunkMs) + chunkMs / Math.min(1.25, Math.max(1, this.opts.replaySpeed));
      }
      if (conn.ws.bufferedAmount > (QUEUE_MS / 1000) * RATE * 2) {
        // The server is not reading: keep the audio here (in the replay buffer, not in the
        // socket's queue) and give up on it after `stallTimeoutMs`.
        conn.stuckSince = conn.stuckSince || now;
        this.checkStall(conn, now);
        if (this.route === conn.generation) this.schedulePump(chunkMs);
        return;
      }
      conn.stuckSince = null;
      const voiced = rms(chunk.samples) > VOICE_RMS;
      conn.ws.send(chunk.samples.buffer.slice(chunk.samples.byteOffset, chunk.samples.byteOffset + chunk.samples.byteLength));
      if (chunk.sentAt === null) chunk.sentAt = now;
      if (voiced) {
        conn.unansweredSince = conn.unansweredSince || now;
        conn.unansweredVoiceMs += chunkMs;
      }
      const loss = this.ledger.markSent(chunk.offset, end);
      if (loss) this.reportLoss(loss);
      this.cursor = end;
      if (live) {
        this.silentMs = voiced ? 0 : this.silentMs + chunkMs;
        const quiet = this.silentMs >= QUIET_AFTER_MS;
        if (quiet !== this.quiet) {
          this.quiet = quiet;
          if (quiet && this.state.state === "rotating" && this.successor && this.live && !this.live.turnOpen) {
            this.handOver(false);
          }
        }
        this.checkStall(conn, now);
        return;
      }
    }
  }

  schedulePump(ms) {
    if (this.pumpTimer) return;
    this.pumpTimer = this.later(ms, () => {
      this.pumpTimer = null;
      this.pump();
    });
  }

  /** Voice unanswered, or the socket not draining, for `stallTimeoutMs`: treat as dropped. */
  checkStall(conn, now) {
    const voiceStalled =
      conn.unansweredVoiceMs >= 2000 && conn.unansweredSince !== null && now - conn.unansweredSince > this.opts.stallTimeoutMs;
    const stuck = conn.stuckSince !== null && now - conn.stuckSince > this.opts.stallTimeoutMs;
    if (voiceStalled || stuck) {
      this.dropConn(conn);
      this.closed(conn, null, voiceStalled ? "stalled: no reply while audio was sent" : "stalled: the server stopped reading");
    }
  }

  // --- stop, failure, the end ---

  /** Stop streaming: Terminate, the last turns (bounded), then `finished`. */
  async stop() {
    if (!this.capturing && this.finished) return;
    this.capturing = false;
    this.closeAudio();
    const loss = this.ledger.abandon("stopped");
    if (loss) this.reportLoss(loss);
    const s = this.state;
    const live = s.state === "streaming" || s.state === "rotating" ? this.conns.get(s.state === "streaming" ? s.generation : s.old) : null;
    if (s.state === "rotating" && this.conns.get(s.new)) this.dropConn(this.conns.get(s.new));
    if (live) {
      this.unroute();
      this.control(live, { type: "Terminate" });
      this.setState({ state: "draining", generation: live.generation });
      await new Promise((resolve) => {
        this.onEnd = resolve;
        this.later(this.opts.terminateTimeoutMs, () => {
          if (!this.finished) {
            this.dropConn(live);
            this.emit("drain_timed_out", { generation: live.generation });
            this.endRun();
          }
        });
      });
    } else {
      for (const c of [...this.conns.values()]) this.dropConn(c);
      this.endRun();
    }
  }

  fail(cls, reason) {
    this.failure = reason;
    this.capturing = false;
    const loss = this.ledger.abandon("failed");
    if (loss) this.reportLoss(loss);
    this.closeAudio();
    for (const c of [...this.conns.values()]) this.dropConn(c);
    this.setState({ state: "failed", class: cls, reason });
    this.endRun();
  }

  endRun() {
    if (this.finished) return;
    this.finished = true;
    this.capturing = false;
    this.closeAudio();
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    for (const c of [...this.conns.values()]) this.dropConn(c);
    const loss = this.ledger.abandon(this.failure ? "failed" : "stopped");
    if (loss) this.reportLoss(loss);
    if (this.state.state !== "failed") this.setState({ state: "stopped" });
    this.emit("finished", {
      finals: this.transcript.list().length,
      rotations: this.rotations,
      reconnects: this.reconnects,
      audio_captured_samples: this.ledger.captured,
      audio_sent_samples: this.ledger.sent,
      audio_lost_samples: this.ledger.lost,
      audio_lost_ms: this.ms(this.ledger.lost),
      ...percentiles(this.latencies),
      ...(this.failure ? { failure: this.failure } : {}),
    });
    if (this.onEnd) this.onEnd();
  }
}

/** p50 and p95 of the latencies seen (as src/session/supervisor.rs), when there are any. */
export function percentiles(values) {
  if (!values.length) return {};
  const v = [...values].sort((a, b) => a - b);
  const at = (q) => v[Math.round((v.length - 1) * q)];
  return { latency_p50_ms: at(0.5), latency_p95_ms: at(0.95) };
}

/**
 * A token's fingerprint for display: 12 hex digits of a hash, never the token. The same as
 * src/secret.rs's (FNV-1a 64, the top 48 bits), so the page's `token` event and `serve`'s access
 * log name a token alike.
 */
export function fingerprint(token) {
  let h = 0xcbf29ce484222325n;
  for (const c of new TextEncoder().encode(token)) {
    h ^= BigInt(c);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return (h >> 16n).toString(16).padStart(12, "0").slice(0, 12);
}

async function fetchJson(url) {
  // Cookies to the page's own origin only: behind an authenticating proxy they are what lets
  // the request through; a server elsewhere gets none.
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}
