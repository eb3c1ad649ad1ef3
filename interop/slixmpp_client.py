#!/usr/bin/python3
"""slixmpp interop client for the Tether gateway (driven by interop_test.go).

Run with Debian's /usr/bin/python3 and python3-slixmpp. It connects to the
given host and port, negotiates STARTTLS (required), logs in with the SASL
mechanism given (SCRAM-SHA-256 by default, nothing else allowed), binds the
given resource, sends initial presence and then:

  stdout: one JSON object per line, the only thing written there:
    {"event": "online", "jid": "alice@acme.localhost/slix1"}
    {"event": "message", "id": ..., "from": ..., "type": ..., "body": ...,
     "data": ..., "receipt_requested": true, "markable": true}
    {"event": "receipt_sent", "id": ...} / {"event": "displayed_sent", "id": ...}
    {"event": "sm_enabled", "id": ...}  XEP-0198 <enabled/> (with --sm)
    {"event": "error", "error": "..."}
    {"event": "bye"}
  stdin: one JSON command per line:
    {"cmd": "receipt", "id": ID}    XEP-0184 <received/> for message ID
    {"cmd": "displayed", "id": ID}  XEP-0333 <displayed/> for message ID
    {"cmd": "quit"}                 close the stream and exit 0
  With --sm, slixmpp's xep_0198 plugin enables stream management right
  after bind and answers every <r/>, so messages are acknowledged by <a h/>
  before any receipt. End of stdin is taken as quit. The script exits by itself after --timeout
  seconds whatever happens (exit 2). slixmpp's debug log (every stanza in
  and out) goes to stderr with --debug.
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys

import slixmpp

NS_DATA = "urn:tether:data:0"


def emit(**obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class Client(slixmpp.ClientXMPP):
    def __init__(self, args, done):
        super().__init__(args.jid, args.password, sasl_mech=args.mech)
        self.done = done
        self.received = {}  # message id -> the message stanza
        self.exit_code = 0
        # Receipts and markers are sent only when the test says so, so that
        # it can watch the status move one step at a time.
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0184", {"auto_ack": False})
        self.register_plugin("xep_0333")
        self.register_plugin("xep_0199")
        if args.sm:
            self.register_plugin("xep_0198")
            self.add_event_handler("sm_enabled", lambda ev: emit(event="sm_enabled", id=ev["id"]))
        # Trust the gateway's self-signed certificate (it names localhost
        # and *.localhost), with the usual chain and host name checks;
        # without --cafile, no verification at all.
        if args.cafile:
            self.ca_certs = args.cafile
        else:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("no_auth", self.on_failed_auth)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("disconnected", self.on_disconnected)

    async def on_start(self, _event):
        self.send_presence()
        emit(event="online", jid=str(self.boundjid))

    def on_message(self, msg):
        data = msg.xml.find("{%s}data" % NS_DATA)
        self.received[msg["id"]] = msg
        emit(
            event="message",
            id=msg["id"],
            to=str(msg["to"]),
            **{"from": str(msg["from"])},
            type=msg["type"],
            body=msg["body"],
            data=data.text if data is not None else None,
            receipt_requested=bool(msg["request_receipt"]),
            markable=msg.xml.find("{urn:xmpp:chat-markers:0}markable") is not None,
        )

    def command(self, cmd):
        name, mid = cmd.get("cmd"), cmd.get("id")
        if name == "quit":
            self.quit()
            return
        msg = self.received.get(mid)
        if msg is None:
            emit(event="error", error="unknown message id %r" % mid)
            return
        if name == "receipt":
            self["xep_0184"].ack(msg)
            emit(event="receipt_sent", id=mid)
        elif name == "displayed":
            self["xep_0333"].send_marker(msg["from"], mid, "displayed")
            emit(event="displayed_sent", id=mid)
        else:
            emit(event="error", error="unknown command %r" % name)

    def quit(self, code=0):
        self.exit_code = self.exit_code or code
        if self.is_connected():
            self.disconnect(wait=2.0)
        elif not self.done.done():
            self.done.set_result(True)

    def on_failed_auth(self, _event):
        emit(event="error", error="authentication failed")
        self.quit(1)

    def on_connection_failed(self, err):
        emit(event="error", error="connection failed: %s" % err)
        self.exit_code = 1
        if not self.done.done():
            self.done.set_result(True)

    def on_stream_error(self, err):
        emit(event="error", error="stream error: %s" % err["condition"])
        self.exit_code = 1

    def on_disconnected(self, _event):
        if not self.done.done():
            self.done.set_result(True)


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True, help="user@domain/resource")
    p.add_argument("--password", default=os.environ.get("INTEROP_PASSWORD"),
                   help="default: $INTEROP_PASSWORD")
    p.add_argument("--mech", default="SCRAM-SHA-256")
    p.add_argument("--cafile", help="PEM to trust (default: no verification)")
    p.add_argument("--timeout", type=float, default=25.0)
    p.add_argument("--debug", action="store_true")
    p.add_argument("--sm", action="store_true",
                   help="enable XEP-0198 stream management (slixmpp's xep_0198)")
    args = p.parse_args()
    if not args.password:
        p.error("no password: --password or INTEROP_PASSWORD")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    xmpp = Client(args, done)

    def on_stdin():
        line = sys.stdin.readline()
        if not line:  # end of input: the test is gone
            loop.remove_reader(sys.stdin.fileno())
            xmpp.quit()
            return
        line = line.strip()
        if not line:
            return
        try:
            xmpp.command(json.loads(line))
        except Exception as e:  # keep serving: report and go on
            emit(event="error", error="command %r: %s" % (line, e))

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    # force_starttls: give up unless the server offers STARTTLS.
    xmpp.connect((args.host, args.port), use_ssl=False, force_starttls=True)
    try:
        await asyncio.wait_for(asyncio.shield(done), args.timeout)
    except asyncio.TimeoutError:
        emit(event="error", error="timeout after %gs" % args.timeout)
        xmpp.exit_code = 2
        xmpp.abort()
    emit(event="bye")
    return xmpp.exit_code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
