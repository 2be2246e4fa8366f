// The captions overlay (GET /overlay): follows this feed's /events and shows the last finals
// and the live partial, with who said them when known. A plain ES module, no dependency: the
// page's Content-Security-Policy allows nothing but this feed. Styled by the query string:
//   font, size (px or a CSS length), color, background, partial (colour), label (colour),
//   lines (1-20), position (top|middle|bottom), align (left|center|right), source (inputs).
// EventSource reconnects by itself and sends Last-Event-ID, so a restart of the connection
// resumes where it stopped; the feed says `gap` when it cannot.

const params = new URLSearchParams(location.search);
const root = document.documentElement.style;

/** A query value as a custom property (the CSS parser refuses what is not a value). */
function style(name, value) {
  if (value && value.length <= 200) root.setProperty(name, value);
}

style("--font", params.get("font"));
const size = params.get("size");
style("--size", size && /^\d+(\.\d+)?$/.test(size) ? `${size}px` : size);
style("--color", params.get("color"));
style("--background", params.get("background"));
style("--partial-color", params.get("partial"));
style("--label-color", params.get("label"));
if (["left", "center", "right"].includes(params.get("align"))) {
  style("--align", params.get("align"));
}
const position = params.get("position");
document.body.dataset.position = ["top", "middle", "bottom"].includes(position) ? position : "bottom";
const wanted = Number.parseInt(params.get("lines") ?? "", 10);
const maxLines = Number.isFinite(wanted) ? Math.min(Math.max(wanted, 1), 20) : 3;

const lines = document.getElementById("lines");
const partialLine = document.getElementById("partial");
const status = document.getElementById("status");

/** Finals by (source, generation, turn_order), in the order they ended. */
const finals = new Map();
/** The partial being spoken, per input. */
const partials = new Map();

const key = (e) => `${e.source ?? ""}/${e.generation}/${e.turn_order}`;

/** An input's label as people read it: "you" → "You". */
function sourceName(source) {
  return source ? source.charAt(0).toUpperCase() + source.slice(1) : null;
}

/** Who said a final: "Them · Ana", "Ana", "A", "You"; null when nobody is known. */
function who(e) {
  const pending = e.speaker === "PENDING" || e.speaker === "UNKNOWN";
  const speaker = pending ? null : (e.speaker_name ?? e.speaker ?? null);
  const source = sourceName(e.source);
  return [source, speaker].filter(Boolean).join(" · ") || null;
}

function line(label, text) {
  const box = document.createElement("span");
  box.className = "box";
  if (label) {
    const l = document.createElement("span");
    l.className = "label";
    l.textContent = `${label}: `;
    box.append(l);
  }
  box.append(document.createTextNode(text));
  return box;
}

function render() {
  const shown = [...finals.values()].slice(-maxLines);
  lines.replaceChildren(
    ...shown.map((f) => {
      const li = document.createElement("li");
      li.append(line(f.who, f.text));
      return li;
    }),
  );
  const live = [...partials.values()].filter((p) => p.text);
  partialLine.hidden = live.length === 0;
  partialLine.replaceChildren(...live.map((p) => line(sourceName(p.source), p.text)));
}

function onFinal(e) {
  if (!e.text || !e.text.trim()) return;
  finals.set(key(e), { ...e, who: who(e) });
  // Keep what can be shown, and a little more for revisions of recent turns.
  while (finals.size > 50) finals.delete(finals.keys().next().value);
  const p = partials.get(e.source ?? "");
  if (p && p.generation === e.generation && p.turn_order === e.turn_order) {
    partials.delete(e.source ?? "");
  }
}

function onRevision(e) {
  const f = finals.get(key(e));
  if (!f) return;
  f.speaker = e.speaker;
  f.speaker_name = e.speaker_name;
  f.who = who(f);
}

function onNamed(e) {
  for (const f of finals.values()) {
    if ((f.source ?? null) === (e.source ?? null) && f.speaker === e.speaker) {
      f.speaker_name = e.name;
      f.who = who(f);
    }
  }
}

const handlers = {
  final: onFinal,
  partial: (e) => partials.set(e.source ?? "", e),
  speaker_revision: onRevision,
  speaker_named: onNamed,
};

function connect() {
  const query = new URLSearchParams({
    events: [...Object.keys(handlers), "finished"].join(","),
  });
  for (const name of ["token", "source"]) {
    if (params.get(name)) query.set(name, params.get(name));
  }
  const source = new EventSource(`events?${query}`);
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (message) => {
      try {
        handle(JSON.parse(message.data));
        render();
      } catch (error) {
        console.warn("aai-live overlay: an event it cannot read", error);
      }
    });
  }
  source.addEventListener("open", () => {
    status.hidden = true;
    document.body.dataset.connected = "true";
  });
  source.addEventListener("error", () => {
    document.body.dataset.connected = "false";
    status.textContent = "reconnecting…";
    status.hidden = false;
  });
  // The run ended (the feed closes its streams): the last lines stay on screen.
  source.addEventListener("finished", () => source.close());
}

connect();
