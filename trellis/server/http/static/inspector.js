// The trellis web inspector (docs/inspector.md). Everything here goes through the
// public API over Connect (JSON): Engine.Inspect for the graph, Sessions.List /
// Start / Navigate / Signal / Get, and the session's server-sent events (its watch)
// for the live view. Text from the server is only ever put into the page as text.

const $ = (id) => document.getElementById(id);

// Seconds past a question's timeout before the page sends the timeout signal itself.
const TIMER_GRACE = 2;

const view = {
  token: "",
  nodes: [],
  sessionId: "",
  state: null, // {currentNodeId, status, context, history}: the watch keeps it current
  lastStep: null, // the step whose prompt the conversation shows
  busy: false,
  syncing: false, // reading a step another caller made
  stream: null, // AbortController of the open event stream
  timer: null, // a pending timeout signal
  nextPage: "",
};

// --- calling the services --------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const info = (body.details || []).find((d) => d.type === "google.rpc.ErrorInfo");
    super(body.message || `HTTP ${status}`);
    this.code = body.code || String(status);
    this.reason = info && info.debug ? info.debug.reason : "";
  }

  describe() {
    return `${this.message} (${this.reason || this.code})`;
  }
}

function headers(extra) {
  const all = { ...extra };
  if (view.token) all.Authorization = `Bearer ${view.token}`;
  return all;
}

// Relative to the page, so that a proxy's path prefix is kept.
const url = (path) => new URL(`../${path}`, document.baseURI);

async function call(method, body) {
  const reply = await fetch(url(`trellis.v1.${method}`), {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new ApiError(reply.status, data);
  return data;
}

// GET /v1/sessions/{id}/events through fetch rather than EventSource, which cannot send
// the token. The first event is the session's step, read after the watch opened (so no
// change is missed between the two), then one "diff" per committed step.
async function readEvents(sessionId, signal, onEvent) {
  const reply = await fetch(url(`v1/sessions/${encodeURIComponent(sessionId)}/events`), {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
  });
  if (!reply.ok) throw new ApiError(reply.status, await reply.json().catch(() => ({})));
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

function notify(text) {
  $("notice").textContent = text;
}

// --- the graph -----------------------------------------------------------------------------

// Mermaid reads quotes as syntax and drops what looks like markup; in a quoted label
// they are written as its entity codes.
const ENTITIES = { '"': "#quot;", "<": "#lt;", ">": "#gt;", "#": "#35;" };
const label = (text) =>
  `"${String(text).replace(/["<>#]/g, (c) => ENTITIES[c]).replace(/\n/g, " ")}"`;

function shape(node, entry) {
  const text = node.timeoutText ? `${node.id} (timeout ${node.timeoutText})` : node.id;
  if (node.id === entry || node.id === "start" || node.type === "start") return `((${label(text)}))`;
  if (node.type === "tool" || node.doCall) return `[[${label(text)}]]`;
  if (node.type === "question") return `[/${label(text)}/]`;
  return `[${label(text)}]`;
}

// The flow as a Mermaid flowchart, like `trellis graph` draws it: transitions, signal
// handlers, on_error and on_denied; visited nodes and the current one marked.
export function mermaidText(nodes, state) {
  const ids = new Map(nodes.map((node, index) => [node.id, `n${index}`]));
  const lines = ["flowchart TD"];
  const ref = (target) => {
    if (!ids.has(target)) {
      ids.set(target, `n${ids.size}`);
      lines.push(`  ${ids.get(target)}${label(`${target} (missing)`)}`);
      lines.push(`  class ${ids.get(target)} missing`);
    }
    return ids.get(target);
  };
  const entry = state && state.history.length ? state.history[0] : "";
  for (const node of nodes) {
    const from = ids.get(node.id);
    lines.push(`  ${from}${shape(node, entry)}`);
    for (const t of node.transitions || []) {
      const arrow = t.condition ? `-- ${label(t.condition)} -->` : "-->";
      lines.push(`  ${from} ${arrow} ${ref(t.toNodeId)}`);
    }
    for (const [signal, target] of Object.entries(node.onSignal || {}).sort()) {
      lines.push(`  ${from} -. ${label(`⚡ ${signal}`)} .-> ${ref(target)}`);
    }
    for (const [signal, target] of Object.entries(node.onSignalDefault || {}).sort()) {
      lines.push(`  ${from} -. ${label(`⚡ ${signal} (default)`)} .-> ${ref(target)}`);
    }
    if (node.onError) lines.push(`  ${from} -. on_error .-> ${ref(node.onError)}`);
    if (node.onDenied) lines.push(`  ${from} -. on_denied .-> ${ref(node.onDenied)}`);
  }
  lines.push("  classDef visited fill:#e1f5fe,stroke:#01579b,stroke-width:2px,color:#000");
  lines.push("  classDef current fill:#ffeb3b,stroke:#8a6d00,stroke-width:4px,color:#000");
  lines.push("  classDef missing stroke-dasharray:4 4,color:#555");
  if (state) {
    for (const id of new Set(state.history)) if (ids.has(id)) lines.push(`  class ${ids.get(id)} visited`);
    if (state.currentNodeId && ids.has(state.currentNodeId)) {
      lines.push(`  class ${ids.get(state.currentNodeId)} current`);
    }
  }
  return lines.join("\n");
}

let drawing = Promise.resolve();
let drawn = 0;

// Draws are queued (Mermaid renders one diagram at a time); only the newest counts.
function drawGraph() {
  const number = ++drawn;
  drawing = drawing.then(async () => {
    if (number !== drawn) return;
    const text = mermaidText(view.nodes, view.state);
    $("graph-source").textContent = text;
    const where = view.state && view.state.currentNodeId ? `; current node: ${view.state.currentNodeId}` : "";
    $("graph-view").setAttribute("aria-label", `Flow graph of ${view.nodes.length} nodes${where}`);
    if (!window.mermaid) {
      $("graph-view").textContent = "Mermaid did not load: the graph's source is below.";
      return;
    }
    try {
      const { svg } = await window.mermaid.render(`graph-svg-${number}`, text);
      $("graph-view").innerHTML = svg; // Mermaid's own output, sanitised by it (securityLevel strict)
      showCurrentNode();
    } catch (error) {
      $("graph-view").textContent = `The graph could not be drawn: ${error.message || error}`;
    }
  });
  return drawing;
}

// Scrolls the graph's box (not the page) so that the current node is in sight.
function showCurrentNode() {
  const box = $("graph-view");
  const node = box.querySelector("g.current");
  if (!node) return;
  const where = node.getBoundingClientRect();
  const frame = box.getBoundingClientRect();
  box.scrollLeft += where.left + where.width / 2 - (frame.left + frame.width / 2);
  box.scrollTop += where.top + where.height / 2 - (frame.top + frame.height / 2);
}

async function loadGraph() {
  const reply = await call("Engine/Inspect", {});
  view.nodes = reply.nodes || [];
  await drawGraph();
}

// --- the session list ------------------------------------------------------------------

async function listSessions(more) {
  const reply = await call("Sessions/List", { pageSize: 100, pageToken: more ? view.nextPage : "" });
  const list = $("session-list");
  if (!more) list.replaceChildren();
  for (const id of reply.sessionIds || []) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = id;
    button.dataset.session = id;
    button.addEventListener("click", () => openSession(id, null));
    item.append(button);
    list.append(item);
  }
  view.nextPage = reply.nextPageToken || "";
  $("more").hidden = !view.nextPage;
  markOpenSession();
}

function markOpenSession() {
  for (const button of $("session-list").querySelectorAll("button")) {
    if (button.dataset.session === view.sessionId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

// Up/Down (or Left/Right) move between the buttons of a group; Home/End to its ends.
function arrowKeys(container) {
  container.addEventListener("keydown", (event) => {
    const buttons = [...container.querySelectorAll("button:not([disabled])")];
    const index = buttons.indexOf(document.activeElement);
    if (index < 0) return;
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 };
    let next = null;
    if (event.key in moves) next = (index + moves[event.key] + buttons.length) % buttons.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = buttons.length - 1;
    if (next === null) return;
    event.preventDefault();
    buttons[next].focus();
  });
}

// --- one session: the live view --------------------------------------------------------------

function stateFrom(proto) {
  return {
    currentNodeId: proto.currentNodeId || "",
    status: proto.status || "STATUS_UNSPECIFIED",
    context: JSON.parse(proto.contextJson || "{}"),
    history: [...(proto.history || [])],
  };
}

function applyDiff(diff) {
  const state = view.state;
  if (!state) return;
  if ("currentNodeId" in diff) state.currentNodeId = diff.currentNodeId;
  if ("status" in diff) state.status = diff.status;
  if (diff.contextJson) {
    for (const [key, value] of Object.entries(JSON.parse(diff.contextJson))) {
      if (value === null) delete state.context[key];
      else state.context[key] = value;
    }
  }
  if (diff.history && diff.history.nodeIds) state.history.push(...diff.history.nodeIds);
}

const STATUS = {
  STATUS_ACTIVE: "active",
  STATUS_WAITING_FOR_TOOL: "waiting for a tool",
  STATUS_ROLLING_BACK: "rolling back",
  STATUS_TERMINATED: "ended",
};

function showState() {
  const state = view.state;
  $("session-empty").hidden = Boolean(state);
  $("session-view").hidden = !state;
  if (!state) return;
  $("state-id").textContent = view.sessionId;
  $("state-node").textContent = state.currentNodeId || "(none)";
  $("state-status").textContent = STATUS[state.status] || state.status;
  $("state-history").replaceChildren(
    ...state.history.map((id) => {
      const item = document.createElement("li");
      item.textContent = id;
      return item;
    }),
  );
  $("state-context").textContent = JSON.stringify(state.context, null, 2);
  drawGraph();
}

function closeStream() {
  if (view.stream) view.stream.abort();
  view.stream = null;
}

// Opens a session: its event stream drives the session panel and the graph. ``step`` is
// the reply that created it here (its prompt is shown already), else the prompt comes
// from the stream's first event.
async function openSession(sessionId, step) {
  closeStream();
  clearPrompt();
  $("chat-log").replaceChildren();
  view.sessionId = sessionId;
  view.state = null;
  view.lastStep = null;
  markOpenSession();
  if (step) showStep(step);
  const controller = new AbortController();
  view.stream = controller;
  notify(`Watching session ${sessionId}`);
  try {
    await readEvents(sessionId, controller.signal, (name, data) => {
      if (controller !== view.stream) return;
      if (name === "step") {
        view.state = stateFrom(data.state);
        if (!view.lastStep) showStep(data);
      } else if (name === "diff") {
        applyDiff(data);
        changedElsewhere();
      } else if (name === "error") {
        notify(`The watch of ${sessionId} failed: ${new ApiError(0, data).describe()}`);
      }
      showState();
    });
    if (controller === view.stream) notify(`The watch of ${sessionId} ended (the server closed it)`);
  } catch (error) {
    if (controller !== view.stream || error.name === "AbortError") return;
    notify(`Cannot watch ${sessionId}: ${error.describe ? error.describe() : error.message}`);
  }
}

// Another caller moved the session (the watch says so, and no call of ours is running):
// the conversation's prompt is out of date, so show the session's current one.
async function changedElsewhere() {
  const shown = view.lastStep && view.lastStep.state;
  if (view.busy || !shown || !view.state) return;
  const ours = (shown.history || []).length;
  const seen = view.state.history.length;
  // A shorter history: the watch has not caught up with our own last step yet.
  if (seen < ours) return;
  const same = shown.currentNodeId === view.state.currentNodeId && shown.status === view.state.status;
  if (seen === ours && same) return;
  if (view.syncing) return; // one read at a time; checked again when it is back
  view.syncing = true;
  const sessionId = view.sessionId;
  let read = false;
  try {
    const reply = await call("Sessions/Get", { sessionId });
    if (sessionId !== view.sessionId || view.busy) return;
    say("system", "The session moved on without this page (another caller, or the server's timer).");
    showStep(reply.step);
    read = true;
  } catch (error) {
    say("system", `Cannot read the session: ${error.describe ? error.describe() : error.message}`);
  } finally {
    view.syncing = false;
  }
  // More steps may have come while it was read: the watch says whether the prompt is current.
  if (read) changedElsewhere();
}

// --- the conversation --------------------------------------------------------------------

function say(who, text, nodeId) {
  const message = document.createElement("div");
  message.className = `message ${who}`;
  const speaker = document.createElement("span");
  speaker.className = "speaker";
  speaker.textContent = { flow: nodeId ? `flow · ${nodeId}` : "flow", you: "you", system: "note" }[who];
  const body = document.createElement("p");
  body.textContent = text;
  message.append(speaker, body);
  const log = $("chat-log");
  log.append(message);
  log.scrollTop = log.scrollHeight;
}

function clearPrompt() {
  clearTimeout(view.timer);
  view.timer = null;
  $("choices").replaceChildren();
  $("signals").replaceChildren();
  $("timer").textContent = "";
  $("answer").placeholder = "";
}

function button(text, onClick, description) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  if (description) element.setAttribute("aria-label", description);
  element.addEventListener("click", onClick);
  return element;
}

function seconds(duration) {
  // protobuf's JSON form of a Duration: "20s", "1.5s"
  return duration ? parseFloat(duration) : 0;
}

// Shows a step's messages and turns its input request and signals into controls.
function showStep(step) {
  clearPrompt();
  view.lastStep = step;
  const state = step.state || {};
  let request = null;
  for (const action of step.actions || []) {
    if ("renderContent" in action) say("flow", action.renderContent.trim(), action.nodeId);
    else if ("systemMessage" in action) say("system", action.systemMessage);
    else if ("callTool" in action) {
      say("system", `The flow asks its host to call the tool ${action.callTool.name}.`);
    } else if ("requestInput" in action) request = action.requestInput;
  }
  const over = state.status === "STATUS_TERMINATED";
  if (over) say("system", "The session has ended.");
  $("answer").disabled = over;
  $("send").disabled = over;
  if (over) return;
  if (request) {
    const kind = request.kind || "INPUT_KIND_TEXT";
    if (request.hasDefault) $("answer").placeholder = `Enter: ${request.defaultValue || "(empty)"}`;
    if (kind === "INPUT_KIND_CHOICE" || kind === "INPUT_KIND_CONFIRM") {
      for (const option of request.options || []) {
        const isDefault = request.hasDefault && option === request.defaultValue;
        $("choices").append(
          button(option, () => answer(option), isDefault ? `${option} (the default)` : undefined),
        );
      }
    }
    const timeout = seconds(request.timeout);
    if (timeout > 0 && request.timeoutSignal) {
      $("timer").textContent =
        `Answer within ${timeout} s, or the "${request.timeoutSignal}" signal is sent.`;
      // The server's own timer (docs/server.md, "Durable timers") normally fires first and
      // the watch shows it. Only if the session is still here a little later, as with a
      // server whose timers are off, does the page send the signal itself, and then only
      // for this revision: should the server's timer win anyway, nothing is applied twice.
      const current = step;
      view.timer = setTimeout(() => {
        if (view.lastStep === current && !view.busy) signal(request.timeoutSignal, state.revision);
      }, (timeout + TIMER_GRACE) * 1000);
    }
  }
  for (const name of step.signals || []) {
    $("signals").append(button(`Signal: ${name}`, () => signal(name)));
  }
  // The new controls took room from the log: keep its newest message in sight.
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  const first = $("choices").querySelector("button");
  (first || $("answer")).focus();
}

async function step(method, body, said) {
  if (view.busy || !view.sessionId) return;
  view.busy = true;
  $("chat").setAttribute("aria-busy", "true");
  for (const control of $("controls").querySelectorAll("button, input")) control.disabled = true;
  say("you", said);
  const sessionId = view.sessionId;
  try {
    const reply = await call(method, { sessionId, ...body });
    if (sessionId === view.sessionId) showStep(reply.step); // not if another session was opened meanwhile
  } catch (error) {
    if (sessionId !== view.sessionId) return;
    if (error.reason === "REVISION_MISMATCH") {
      say("system", "The session had moved on already; here is where it is now.");
      const reply = await call("Sessions/Get", { sessionId }).catch(() => null);
      if (reply && sessionId === view.sessionId) {
        showStep(reply.step);
        return;
      }
    }
    say("system", `Refused: ${error.describe ? error.describe() : error.message}`);
    for (const control of $("controls").querySelectorAll("button, input")) control.disabled = false;
    $("answer").focus();
  } finally {
    view.busy = false;
    $("chat").removeAttribute("aria-busy");
  }
}

function answer(text) {
  $("answer").value = "";
  return step("Sessions/Navigate", { input: { text } }, text === "" ? "(Enter)" : text);
}

// ``revision``: a timeout sent by the page, valid only while the session is at it.
function signal(name, revision) {
  if (revision === undefined) return step("Sessions/Signal", { signal: name }, `⚡ ${name}`);
  const body = { signal: name, expectedRevision: revision || "0" };
  return step("Sessions/Signal", body, `(no answer in time: ${name})`);
}

// --- wiring -----------------------------------------------------------------------------------

async function startSession(event) {
  event.preventDefault();
  const sessionId = $("new-id").value.trim();
  const context = $("new-context").value.trim();
  const body = { sessionId };
  if (context) body.contextJson = context;
  try {
    const reply = await call("Sessions/Start", body);
    $("new-id").value = "";
    await listSessions(false);
    openSession(sessionId, reply.created ? reply.step : null);
    if (!reply.created) say("system", `Session ${sessionId} existed already: here it is.`);
  } catch (error) {
    notify(`Cannot start ${sessionId}: ${error.describe ? error.describe() : error.message}`);
  }
}

async function load() {
  try {
    await Promise.all([loadGraph(), listSessions(false)]);
    notify(`Connected: ${view.nodes.length} nodes in the flow`);
  } catch (error) {
    const hint = error.code === "unauthenticated" ? " Enter the server's bearer token above." : "";
    notify(`Cannot reach the services: ${error.describe ? error.describe() : error.message}.${hint}`);
  }
}

function init() {
  if (window.mermaid) {
    window.mermaid.initialize({
      startOnLoad: false,
      securityLevel: "strict",
      flowchart: { htmlLabels: false, useMaxWidth: false },
    });
  }
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.token = $("token").value.trim();
    load();
  });
  $("start-form").addEventListener("submit", startSession);
  // The flow may have been reloaded since: the graph is read again too.
  $("refresh").addEventListener("click", () => load());
  $("more").addEventListener("click", () => listSessions(true).catch((e) => notify(e.message)));
  $("answer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    answer($("answer").value);
  });
  arrowKeys($("choices"));
  arrowKeys($("signals"));
  arrowKeys($("session-list"));
  window.addEventListener("pagehide", closeStream);
  load();
}

init();
