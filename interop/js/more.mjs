// xmpp.js client for the Tether gateway's wider interop tests
// (../interop_more_test.go).
//
// Like client.mjs it speaks JSON lines (events on stdout, commands on
// stdin) and exits by itself after INTEROP_TIMEOUT seconds (exit 2), but it
// does what a real client app does besides receiving:
//
//   - any transport @xmpp/client has: INTEROP_SERVICE ws://…/xmpp-websocket
//     (RFC 7395), xmpp://host:port (STARTTLS) or xmpps://host:port (direct
//     TLS, XEP-0368); node trusts the gateway's certificate through
//     NODE_EXTRA_CA_CERTS;
//   - XEP-0198 with resumption, as xmpp.js does it by default: with
//     INTEROP_RECONNECT=on @xmpp/reconnect opens a lost connection again
//     (after its 1 s delay) and @xmpp/stream-management sends <resume/>;
//     a stream error (conflict, not-authorized) stops reconnecting, as an
//     app must, or two devices with one resource would take turns;
//   - the requests clients send at login, each on command (see below);
//   - inbound messages to the backend and login failures.
//
//   stdout: one JSON object per line:
//     {"event":"online","jid":...}
//     {"event":"sm_enabled","id":...} / {"event":"resumed"} / {"event":"sm_failed"}
//     {"event":"message","id","from","to","type","body","data","channel",
//      "receipt_requested","markable","delay"}
//     {"event":"receipt_received","id":...}
//     {"event":"message_error","id","from","condition","error_type"}
//     {"event":"iq_result","tag",...} / {"event":"iq_error","tag","condition","error_type"}
//     {"event":"iq_timeout","tag"}
//     {"event":"sm_ack","tag":"r","h":N,"seq":N}   server <a h/> after our <r/>
//     {"event":"sent","tag",...}
//     {"event":"auth_failed","condition":...}
//     {"event":"stream_error","condition":...}
//     {"event":"disconnected","clean":bool}
//     {"event":"error","error":...}   something the test did not expect
//     {"event":"bye"}
//   stdin: one JSON command per line, {"cmd": NAME, ...}:
//     receipt / displayed (id), ack, r, disco, roster, ping, ping_jid (jid),
//     vcard, carbons, mam, blocklist, csi (state), presence_to (jid),
//     presence (priority, show), message_to (jid, id),
//     inbound (id, body, data, channel, reply_to, receipt), abort, quit.
//   End of stdin is taken as quit. INTEROP_DEBUG=1 logs every element in
//   and out to stderr.
//
// Node 20 has WebSocket only with --experimental-websocket.
//
// What it shares with client.mjs is in common.mjs.

import { xml } from "@xmpp/client";
import {
  NS_CHANNEL,
  NS_DATA,
  NS_RECEIPTS,
  NS_SM,
  NS_STREAM,
  acknowledge,
  emit,
  env,
  finish,
  messageEvent,
  newClient,
  requireEnv,
  requireWebSocket,
  serve,
  setExitCode,
  startFailed,
  stopStream,
} from "./common.mjs";

requireEnv(["INTEROP_SERVICE", "INTEROP_DOMAIN", "INTEROP_USER", "INTEROP_PASSWORD"]);
if (env.INTEROP_SERVICE.startsWith("ws")) requireWebSocket();

let quitting = false;
const domain = env.INTEROP_DOMAIN;

const xmpp = newClient();
const reconnect = env.INTEROP_RECONNECT === "on";
if (!reconnect) xmpp.reconnect.stop();

const sm = xmpp.streamManagement;
sm.on("resumed", () => emit({ event: "resumed" }));
let smWaiters = [];
xmpp.on("nonza", (el) => {
  if (el.is("enabled", NS_SM)) emit({ event: "sm_enabled", id: el.attrs.id });
  if (el.is("failed", NS_SM)) emit({ event: "sm_failed" });
  if (el.is("a", NS_SM)) {
    const w = smWaiters;
    smWaiters = [];
    for (const f of w) f(Number(el.attrs.h));
  }
  if (el.is("failure", "urn:ietf:params:xml:ns:xmpp-sasl")) {
    const cond = el.children.find((c) => c.name && c.name !== "text");
    emit({ event: "auth_failed", condition: cond ? cond.name : null });
  }
  if (el.is("error", NS_STREAM)) {
    const cond = el.children.find((c) => c.attrs && c.attrs.xmlns === "urn:ietf:params:xml:ns:xmpp-streams" && c.name !== "text");
    emit({ event: "stream_error", condition: cond ? cond.name : null });
    // An app stops here: reconnecting after <conflict/> would take the
    // resource back from the device that replaced this one.
    xmpp.reconnect.stop();
    streamErrored = true;
  }
});
let streamErrored = false;

const received = new Map();

xmpp.on("error", (err) => {
  // Stream errors and SASL failures are reported as their own events.
  if (err.name === "StreamError" || err.name === "SASLError") return;
  if (reconnect && !quitting && /ECONNRESET|EPIPE|socket hang up|ECONNERROR|closed/i.test(String(err.code || err.message))) {
    emit({ event: "socket_error", error: String(err.code || err.message) });
    return;
  }
  emit({ event: "error", error: `xmpp.js: ${err.condition || err.code || ""} ${err.message}` });
});

xmpp.on("disconnect", ({ clean } = {}) => {
  emit({ event: "disconnected", clean: !!clean });
  if (!reconnect || quitting || streamErrored) finish();
});
xmpp.on("offline", () => finish());

xmpp.on("stanza", (stanza) => {
  if (!stanza.is("message")) return;
  if (stanza.attrs.type === "error") {
    const err = stanza.getChild("error");
    const cond = err && err.children.find((c) => c.name && c.name !== "text");
    emit({
      event: "message_error",
      id: stanza.attrs.id,
      from: stanza.attrs.from,
      condition: cond ? cond.name : null,
      error_type: err ? err.attrs.type : null,
    });
    return;
  }
  const rcv = stanza.getChild("received", NS_RECEIPTS);
  if (rcv) {
    emit({ event: "receipt_received", id: rcv.attrs.id, from: stanza.attrs.from });
    return;
  }
  if (stanza.getChildText("body") === null && !stanza.getChild("data", NS_DATA)) return;
  received.set(stanza.attrs.id, stanza);
  const channel = stanza.getChild("channel", NS_CHANNEL);
  emit({
    ...messageEvent(stanza),
    channel: channel ? channel.text() : null,
    delay: !!stanza.getChild("delay", "urn:xmpp:delay"),
  });
});

xmpp.on("online", async (address) => {
  if (env.INTEROP_PRESENCE !== "off") {
    const p = xml("presence");
    if (env.INTEROP_PRIORITY) p.append(xml("priority", {}, env.INTEROP_PRIORITY));
    await xmpp.send(p);
  }
  emit({ event: "online", jid: address.toString() });
});

async function iq(tag, type, to, child, describe = (r) => ({ type: r.attrs.type })) {
  try {
    const res = await xmpp.iqCaller.request(xml("iq", { type, ...(to ? { to } : {}) }, child), 5000);
    emit({ event: "iq_result", tag, ...describe(res) });
  } catch (err) {
    if (err.name === "StanzaError") {
      emit({ event: "iq_error", tag, condition: err.condition, error_type: err.type });
    } else if (err.name === "TimeoutError") {
      emit({ event: "iq_timeout", tag });
    } else {
      throw err;
    }
  }
}

async function command(cmd) {
  const bare = xmpp.jid ? xmpp.jid.bare().toString() : undefined;
  switch (cmd.cmd) {
    case "quit":
      return quit();
    case "abort": {
      // The socket goes away without </stream> (the app is killed, the
      // network drops): the stream stays resumable.
      const s = xmpp.socket;
      const raw = s && (s.socket || s);
      if (raw && typeof raw.destroy === "function") raw.destroy();
      else if (raw && typeof raw.close === "function") raw.close();
      emit({ event: "sent", tag: "abort" });
      return;
    }
    case "receipt":
    case "displayed":
      if (await acknowledge(xmpp, received, cmd.cmd, cmd.id)) emit({ event: "sent", tag: cmd.cmd, id: cmd.id });
      return;
    case "ack":
      await xmpp.send(xml("a", { xmlns: NS_SM, h: sm.inbound }));
      emit({ event: "sent", tag: "ack", h: sm.inbound });
      return;
    case "r": {
      const h = new Promise((resolve) => smWaiters.push(resolve));
      await xmpp.send(xml("r", { xmlns: NS_SM }));
      const t = new Promise((resolve) => setTimeout(() => resolve(null), 5000));
      const got = await Promise.race([h, t]);
      if (got === null) emit({ event: "iq_timeout", tag: "r" });
      // xmpp.js counts acknowledged stanzas in sm.outbound and keeps the
      // rest in sm.outbound_q: what it sent is their sum.
      else emit({ event: "sm_ack", tag: "r", h: got, seq: sm.outbound + sm.outbound_q.length });
      return;
    }
    case "disco":
      return iq("disco", "get", domain, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" }), (r) => {
        const q = r.getChild("query");
        return {
          features: q.getChildren("feature").map((f) => f.attrs.var).sort(),
          identities: q.getChildren("identity").map((i) => [i.attrs.category, i.attrs.type, i.attrs["xml:lang"] || null, i.attrs.name || null]),
        };
      });
    case "roster":
      return iq("roster", "get", undefined, xml("query", { xmlns: "jabber:iq:roster" }), (r) => ({
        type: r.attrs.type,
        items: r.getChild("query") ? r.getChild("query").getChildren("item").length : -1,
      }));
    case "ping":
      return iq("ping", "get", domain, xml("ping", { xmlns: "urn:xmpp:ping" }));
    case "ping_jid":
      return iq("ping_jid", "get", cmd.jid, xml("ping", { xmlns: "urn:xmpp:ping" }));
    case "vcard":
      return iq("vcard", "get", bare, xml("vCard", { xmlns: "vcard-temp" }));
    case "carbons":
      return iq("carbons", "set", undefined, xml("enable", { xmlns: "urn:xmpp:carbons:2" }));
    case "mam":
      return iq(
        "mam",
        "set",
        undefined,
        xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "q1" },
          xml("set", { xmlns: "http://jabber.org/protocol/rsm" }, xml("max", {}, "10"))),
      );
    case "blocklist":
      return iq("blocklist", "get", undefined, xml("blocklist", { xmlns: "urn:xmpp:blocking" }));
    case "csi": {
      const state = cmd.state || "active";
      await xmpp.send(xml(state, { xmlns: "urn:xmpp:csi:0" }));
      emit({ event: "sent", tag: "csi", state });
      return;
    }
    case "presence_to":
      await xmpp.send(xml("presence", { to: cmd.jid }));
      emit({ event: "sent", tag: "presence_to" });
      return;
    case "presence": {
      const p = xml("presence");
      if (cmd.show) p.append(xml("show", {}, cmd.show));
      if (cmd.priority !== undefined) p.append(xml("priority", {}, String(cmd.priority)));
      await xmpp.send(p);
      emit({ event: "sent", tag: "presence" });
      return;
    }
    case "message_to":
      await xmpp.send(xml("message", { to: cmd.jid, type: "chat", id: cmd.id || "m1" }, xml("body", {}, cmd.body || "hello")));
      emit({ event: "sent", tag: "message_to", id: cmd.id || "m1" });
      return;
    case "inbound": {
      const m = xml("message", { to: domain, id: cmd.id || "c1" });
      if (cmd.body) m.append(xml("body", {}, cmd.body));
      if (cmd.data != null) m.append(xml("data", { xmlns: NS_DATA }, cmd.data));
      if (cmd.channel) m.append(xml("channel", { xmlns: NS_CHANNEL }, cmd.channel));
      if (cmd.reply_to) m.append(xml("reply", { xmlns: "urn:xmpp:reply:0", id: cmd.reply_to, to: domain }));
      if (cmd.receipt) m.append(xml("request", { xmlns: NS_RECEIPTS }));
      await xmpp.send(m);
      emit({ event: "sent", tag: "inbound", id: m.attrs.id });
      return;
    }
    default:
      emit({ event: "error", error: `unknown command ${JSON.stringify(cmd.cmd)}` });
  }
}

async function quit() {
  quitting = true;
  xmpp.reconnect.stop();
  if (xmpp.status === "online") await stopStream(xmpp);
  finish();
}

serve(command, quit);

xmpp.start().catch((err) => {
  if (err.name === "SASLError") {
    // Reported by the <failure/> listener; xmpp.js gives up here.
    setExitCode(1);
    quit();
    return;
  }
  if (err.name === "StreamError") {
    setExitCode(1);
    finish();
    return;
  }
  startFailed(err);
});
