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
//
// What it shares with more.mjs is in common.mjs.

import { xml } from "@xmpp/client";
import {
  NS_SM,
  acknowledge,
  emit,
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

requireEnv(["INTEROP_SERVICE", "INTEROP_DOMAIN", "INTEROP_USER", "INTEROP_PASSWORD", "INTEROP_RESOURCE"]);
requireWebSocket();

const xmpp = newClient();
// One session only: a reconnect would hide what the test is looking at.
xmpp.reconnect.stop();

xmpp.on("nonza", (el) => {
  if (el.is("enabled", NS_SM)) emit({ event: "sm_enabled", id: el.attrs.id });
});

const received = new Map(); // message id -> its stanza

xmpp.on("error", (err) => {
  emit({ event: "error", error: `xmpp.js: ${err.condition || ""} ${err.message}` });
  setExitCode(1);
});

xmpp.on("offline", () => finish());

xmpp.on("stanza", (stanza) => {
  if (!stanza.is("message")) return;
  received.set(stanza.attrs.id, stanza);
  emit(messageEvent(stanza));
});

xmpp.on("online", async (address) => {
  await xmpp.send(xml("presence"));
  emit({ event: "online", jid: address.toString() });
});

async function command(cmd) {
  switch (cmd.cmd) {
    case "quit":
      return quit();
    case "receipt":
      if (await acknowledge(xmpp, received, "receipt", cmd.id)) emit({ event: "receipt_sent", id: cmd.id });
      return;
    case "displayed":
      if (await acknowledge(xmpp, received, "displayed", cmd.id)) emit({ event: "displayed_sent", id: cmd.id });
      return;
    default:
      emit({ event: "error", error: `unknown command ${JSON.stringify(cmd.cmd)}` });
  }
}

async function quit() {
  await stopStream(xmpp); // sends </close>, waits for the server's and the socket close
  finish();
}

serve(command, quit);

xmpp.start().catch(startFailed);
