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

What it shares with slixmpp_more.py is in slixmpp_common.py, next to it.
"""

import asyncio
import json
import sys

import slixmpp_common
from slixmpp_common import emit, message_event


class Client(slixmpp_common.Client):
    def __init__(self, args, done):
        super().__init__(args, done, sasl_mech=args.mech)
        # Receipts and markers are sent only when the test says so, so that
        # it can watch the status move one step at a time.
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0184", {"auto_ack": False})
        self.register_plugin("xep_0333")
        self.register_plugin("xep_0199")
        if args.sm:
            self.register_plugin("xep_0198")
            self.add_event_handler("sm_enabled", lambda ev: emit(event="sm_enabled", id=ev["id"]))
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
        self.received[msg["id"]] = msg
        emit(**message_event(msg))

    def handle_line(self, line):
        try:
            self.command(json.loads(line))
        except Exception as e:  # keep serving: report and go on
            emit(event="error", error="command %r: %s" % (line, e))

    def command(self, cmd):
        name, mid = cmd.get("cmd"), cmd.get("id")
        if name == "quit":
            self.quit()
        elif name == "receipt":
            if self.acknowledge(name, mid):
                emit(event="receipt_sent", id=mid)
        elif name == "displayed":
            if self.acknowledge(name, mid):
                emit(event="displayed_sent", id=mid)
        else:
            emit(event="error", error="unknown command %r" % name)

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


def main():
    p = slixmpp_common.parser(__doc__)
    p.add_argument("--mech", default="SCRAM-SHA-256")
    p.add_argument("--sm", action="store_true",
                   help="enable XEP-0198 stream management (slixmpp's xep_0198)")
    return asyncio.run(slixmpp_common.run(Client, slixmpp_common.parse(p)))


if __name__ == "__main__":
    sys.exit(main())
