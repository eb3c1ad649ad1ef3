// What client.mjs and more.mjs share: the JSON lines they speak (events on
// stdout, commands on stdin), the INTEROP_* environment they read, the
// xmpp.js client as both set it up, and how a script ends (bye, then exit
// once stdout has drained).

import { createInterface } from "node:readline";
import { client, xml } from "@xmpp/client";

export const NS_DATA = "urn:tether:data:0";
export const NS_CHANNEL = "urn:tether:channel:0";
export const NS_RECEIPTS = "urn:xmpp:receipts";
export const NS_MARKERS = "urn:xmpp:chat-markers:0";
export const NS_SM = "urn:xmpp:sm:3";
export const NS_STREAM = "http://etherx.jabber.org/streams";

export const env = process.env;

// emit writes one event line to stdout, the only thing written there.
export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// requireEnv ends the script (exit 1) unless every variable named is set.
export function requireEnv(names) {
  for (const k of names) {
    if (!env[k]) {
      emit({ event: "error", error: `${k} is not set` });
      process.exit(1);
    }
  }
}

// requireWebSocket ends the script (exit 1) without a global WebSocket:
// Node 20 has it only with --experimental-websocket (Node 22 and later by
// default).
export function requireWebSocket() {
  if (typeof globalThis.WebSocket !== "function") {
    emit({ event: "error", error: "no global WebSocket: run node with --experimental-websocket" });
    process.exit(1);
  }
}

// newClient makes the @xmpp/client for INTEROP_SERVICE, logging in as
// INTEROP_USER@INTEROP_DOMAIN with INTEROP_PASSWORD and binding
// INTEROP_RESOURCE (unset: the server picks one).
//
// INTEROP_SM=off hides <sm/> from the stream features before xmpp.js sees
// them (as a server without XEP-0198 would), so that receipts alone
// acknowledge. INTEROP_DEBUG=1 logs every element in and out, and every
// status change, to stderr.
export function newClient() {
  const xmpp = client({
    service: env.INTEROP_SERVICE,
    domain: env.INTEROP_DOMAIN,
    username: env.INTEROP_USER,
    password: env.INTEROP_PASSWORD,
    resource: env.INTEROP_RESOURCE || undefined,
  });
  if (env.INTEROP_SM === "off") {
    // Runs before xmpp.js's own listener, which drives feature negotiation.
    xmpp.prependListener("element", (el) => {
      if (el.is("features", NS_STREAM)) {
        el.children = el.children.filter((c) => !(c.is && c.is("sm", NS_SM)));
      }
    });
  }
  if (env.INTEROP_DEBUG) {
    const log = (dir, el) => process.stderr.write(`${new Date().toISOString()} ${dir} ${el.toString()}\n`);
    // Prepended: logs what the server sent, before anything touches it.
    xmpp.prependListener("element", (el) => log("IN ", el));
    xmpp.on("send", (el) => log("OUT", el));
    xmpp.on("status", (status) => process.stderr.write(`${new Date().toISOString()} status ${status}\n`));
  }
  return xmpp;
}

// messageEvent is the "message" event for a message stanza: what the tests
// compare with what the backend posted.
export function messageEvent(stanza) {
  const data = stanza.getChild("data", NS_DATA);
  return {
    event: "message",
    id: stanza.attrs.id,
    from: stanza.attrs.from,
    to: stanza.attrs.to,
    type: stanza.attrs.type || "normal",
    body: stanza.getChildText("body"),
    data: data ? data.text() : null,
    receipt_requested: !!stanza.getChild("request", NS_RECEIPTS),
    markable: !!stanza.getChild("markable", NS_MARKERS),
  };
}

// acknowledge sends the XEP-0184 <received/> (kind "receipt") or the
// XEP-0333 <displayed/> (kind "displayed") for message id, looked up in
// received (message id -> its stanza). An id the client never got is an
// error event, and false.
export async function acknowledge(xmpp, received, kind, id) {
  const msg = received.get(id);
  if (!msg) {
    emit({ event: "error", error: `unknown message id ${JSON.stringify(id)}` });
    return false;
  }
  const el =
    kind === "receipt" ? xml("received", { xmlns: NS_RECEIPTS, id }) : xml("displayed", { xmlns: NS_MARKERS, id });
  await xmpp.send(xml("message", { to: msg.attrs.from }, el));
  return true;
}

let exitCode = 0;
let finished = false;

// setExitCode sets the status the script exits with.
export function setExitCode(code) {
  exitCode = code;
}

// stopStream closes the stream: </close>, then the server's and the socket
// close. A failure is an error event, and exit 1.
export async function stopStream(xmpp) {
  try {
    await xmpp.stop();
  } catch (err) {
    emit({ event: "error", error: `stop: ${err.message}` });
    exitCode ||= 1;
  }
}

// finish emits bye and exits, once; stdout is a pipe: it drains first.
export function finish() {
  if (finished) return;
  finished = true;
  emit({ event: "bye" });
  process.stdout.write("", () => process.exit(exitCode));
}

// startFailed reports why xmpp.start() failed and ends the script (exit 1).
export function startFailed(err) {
  emit({ event: "error", error: `start: ${err.condition || ""} ${err.message}` });
  exitCode = 1;
  finish();
}

// serve hands each command line from stdin to command (an async function
// of the parsed object), takes end of input as quit, and ends the script
// after INTEROP_TIMEOUT seconds (default 25) whatever happens (exit 2).
export function serve(command, quit) {
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    line = line.trim();
    if (!line) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      emit({ event: "error", error: `command ${JSON.stringify(line)}: ${err.message}` });
      return;
    }
    command(cmd).catch((err) => {
      emit({ event: "error", error: `${cmd.cmd}: ${err.message}` });
    });
  });
  rl.on("close", () => {
    if (!finished) quit();
  });

  const timeout = Number(env.INTEROP_TIMEOUT || 25) * 1000;
  setTimeout(() => {
    emit({ event: "error", error: `timeout after ${timeout / 1000}s` });
    exitCode = 2;
    finish();
  }, timeout).unref();
}
