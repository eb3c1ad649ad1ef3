// xmpp.js interop client for the Tether gateway (driven by ../interop_test.go).
//
// Connects with @xmpp/client over WebSocket (RFC 7395, subprotocol xmpp) to
// INTEROP_SERVICE (ws://127.0.0.1:PORT/xmpp-websocket), logs in as
// INTEROP_USER@INTEROP_DOMAIN with INTEROP_PASSWORD (xmpp.js picks
// SCRAM-SHA-1), binds INTEROP_RESOURCE, sends initial presence, and then:
//
//   stdout: one JSON object per line, the only thing written there:
//     {"event":"online","jid":"alice@acme.localhost/xmppjs1"}
//     {"event":"message","id":...,"from":...,"type":...,"body":...,"data":...,
//      "receipt_requested":true,"markable":true}
//     {"event":"receipt_sent","id":...} / {"event":"displayed_sent","id":...}
//     {"event":"sm_enabled","id":...}  XEP-0198 <enabled/> from the server
//     {"event":"error","error":"..."}
//     {"event":"bye"}
//   stdin: one JSON command per line:
//     {"cmd":"receipt","id":ID}    XEP-0184 <received/> for message ID
//     {"cmd":"displayed","id":ID}  XEP-0333 <displayed/> for message ID
//     {"cmd":"quit"}               close the stream and exit 0
//   End of stdin is taken as quit. The script exits by itself after
//   INTEROP_TIMEOUT seconds (default 25) whatever happens (exit 2). With
//   INTEROP_DEBUG=1 every frame in and out goes to stderr.
//
// Stream management: xmpp.js enables XEP-0198 whenever the server offers
// it, and answers every <r/> at once, so messages are acknowledged by
// <a h/> before any receipt. INTEROP_SM=off hides <sm/> from the stream
// features before xmpp.js sees them (as a server without XEP-0198 would),
// so that receipts alone acknowledge.
//
// Node 20 has WebSocket only with --experimental-websocket (Node 22 and
// later have it by default).

import { createInterface } from "node:readline";
import { client, xml } from "@xmpp/client";

const NS_DATA = "urn:tether:data:0";
const NS_RECEIPTS = "urn:xmpp:receipts";
const NS_MARKERS = "urn:xmpp:chat-markers:0";

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const env = process.env;
for (const k of [
  "INTEROP_SERVICE",
  "INTEROP_DOMAIN",
  "INTEROP_USER",
  "INTEROP_PASSWORD",
  "INTEROP_RESOURCE",
]) {
  if (!env[k]) {
    emit({ event: "error", error: `${k} is not set` });
    process.exit(1);
  }
}
if (typeof globalThis.WebSocket !== "function") {
  emit({
    event: "error",
    error: "no global WebSocket: run node with --experimental-websocket",
  });
  process.exit(1);
}

let exitCode = 0;
let finished = false;
const timeout = Number(env.INTEROP_TIMEOUT || 25) * 1000;

const xmpp = client({
  service: env.INTEROP_SERVICE,
  domain: env.INTEROP_DOMAIN,
  username: env.INTEROP_USER,
  password: env.INTEROP_PASSWORD,
  resource: env.INTEROP_RESOURCE,
});
// One session only: a reconnect would hide what the test is looking at.
xmpp.reconnect.stop();

const NS_SM = "urn:xmpp:sm:3";
if (env.INTEROP_SM === "off") {
  // Runs before xmpp.js's own listener, which drives feature negotiation.
  xmpp.prependListener("element", (el) => {
    if (el.is("features", "http://etherx.jabber.org/streams")) {
      el.children = el.children.filter((c) => !(c.is && c.is("sm", NS_SM)));
    }
  });
}
xmpp.on("nonza", (el) => {
  if (el.is("enabled", NS_SM)) emit({ event: "sm_enabled", id: el.attrs.id });
});

if (env.INTEROP_DEBUG) {
  const log = (dir, el) =>
    process.stderr.write(`${new Date().toISOString()} ${dir} ${el.toString()}\n`);
  // Prepended: logs what the server sent, before anything touches it.
  xmpp.prependListener("element", (el) => log("IN ", el));
  xmpp.on("send", (el) => log("OUT", el));
  xmpp.on("status", (status) =>
    process.stderr.write(`${new Date().toISOString()} status ${status}\n`),
  );
}

const received = new Map(); // message id -> its stanza

xmpp.on("error", (err) => {
  emit({ event: "error", error: `xmpp.js: ${err.condition || ""} ${err.message}` });
  exitCode = 1;
});

xmpp.on("offline", () => finish());

xmpp.on("stanza", (stanza) => {
  if (!stanza.is("message")) return;
  const data = stanza.getChild("data", NS_DATA);
  received.set(stanza.attrs.id, stanza);
  emit({
    event: "message",
    id: stanza.attrs.id,
    from: stanza.attrs.from,
    to: stanza.attrs.to,
    type: stanza.attrs.type || "normal",
    body: stanza.getChildText("body"),
    data: data ? data.text() : null,
    receipt_requested: !!stanza.getChild("request", NS_RECEIPTS),
    markable: !!stanza.getChild("markable", NS_MARKERS),
  });
});

xmpp.on("online", async (address) => {
  await xmpp.send(xml("presence"));
  emit({ event: "online", jid: address.toString() });
});

async function command(cmd) {
  if (cmd.cmd === "quit") {
    await quit(0);
    return;
  }
  const msg = received.get(cmd.id);
  if (!msg) {
    emit({ event: "error", error: `unknown message id ${JSON.stringify(cmd.id)}` });
    return;
  }
  if (cmd.cmd === "receipt") {
    await xmpp.send(
      xml("message", { to: msg.attrs.from }, xml("received", { xmlns: NS_RECEIPTS, id: cmd.id })),
    );
    emit({ event: "receipt_sent", id: cmd.id });
  } else if (cmd.cmd === "displayed") {
    await xmpp.send(
      xml("message", { to: msg.attrs.from }, xml("displayed", { xmlns: NS_MARKERS, id: cmd.id })),
    );
    emit({ event: "displayed_sent", id: cmd.id });
  } else {
    emit({ event: "error", error: `unknown command ${JSON.stringify(cmd.cmd)}` });
  }
}

async function quit(code) {
  if (code) exitCode ||= code;
  try {
    await xmpp.stop(); // sends </close>, waits for the server's and the socket close
  } catch (err) {
    emit({ event: "error", error: `stop: ${err.message}` });
    exitCode ||= 1;
  }
  finish();
}

function finish() {
  if (finished) return;
  finished = true;
  emit({ event: "bye" });
  // stdout is a pipe: let it drain before exiting.
  process.stdout.write("", () => process.exit(exitCode));
}

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
  if (!finished) quit(0);
});

setTimeout(() => {
  emit({ event: "error", error: `timeout after ${timeout / 1000}s` });
  exitCode = 2;
  finish();
}, timeout).unref();

xmpp.start().catch((err) => {
  emit({ event: "error", error: `start: ${err.condition || ""} ${err.message}` });
  exitCode = 1;
  finish();
});
