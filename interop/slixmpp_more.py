#!/usr/bin/python3
"""slixmpp client for the Tether gateway's wider interop tests (interop_more_test.go).

Run with Debian's /usr/bin/python3 and python3-slixmpp. Like
slixmpp_client.py it speaks JSON lines (events on stdout, commands on
stdin) and exits by itself after --timeout seconds (exit 2), but it does
what a real client app does besides receiving:

  - STARTTLS on the XMPP port (default) or direct TLS from the first byte
    (--direct-tls, XEP-0368: slixmpp's use_ssl);
  - XEP-0198 with resumption (--sm): with --reconnect, a connection that
    is lost (not closed by us, no stream error) is opened again at once
    and slixmpp's xep_0198 plugin sends <resume/> with its count;
  - the requests clients send at login, each on command: disco#info to
    the domain, roster get, XEP-0199 ping, vCard, carbons, MAM and
    blocklist requests, CSI, presence to another JID, a message to another
    JID, presence with a priority;
  - inbound messages to the backend (body, data, channel, XEP-0461 reply,
    XEP-0184 receipt request);
  - login failures reported as events, not hangs.

  stdout: one JSON object per line:
    {"event": "online", "jid": ...}               session_start (bind)
    {"event": "sm_enabled", "id": ...}            XEP-0198 <enabled/>
    {"event": "resumed", "h": N}                  XEP-0198 <resumed/>
    {"event": "sm_failed"}                        XEP-0198 <failed/>
    {"event": "message", "id", "from", "to", "type", "body", "data",
     "channel", "receipt_requested", "markable", "delay"}
    {"event": "receipt_received", "id": ...}      XEP-0184 <received/>
    {"event": "message_error", "id", "from", "condition", "error_type"}
    {"event": "iq_result", "tag", ...}            answer to a command
    {"event": "iq_error", "tag", "condition", "error_type"}
    {"event": "iq_timeout", "tag"}
    {"event": "sm_ack", "tag", "h", "seq"}        server <a h/> after our <r/>
    {"event": "sent", "tag", "id"}                a command's stanza went out
    {"event": "auth_failed", "condition": ...}    each SASL <failure/>
    {"event": "stream_error", "condition": ...}
    {"event": "disconnected", "reason": ...}
    {"event": "error", "error": ...}              something the test did not expect
    {"event": "bye"}
  stdin: one JSON command per line, {"cmd": NAME, ...}:
    receipt ID / displayed ID        XEP-0184 <received/>, XEP-0333 <displayed/>
    ack                              XEP-0198 <a h/> now (with --sm)
    r                                <r/> and report the server's <a h/>
    disco / roster / ping / ping_jid (jid) / vcard / carbons / mam / blocklist
    csi (state: active|inactive)     XEP-0352 nonza, sent raw: slixmpp
                                     sends it only when the server lists
                                     <csi/>, which the gateway does not
    csi_plugin (state)               the same through slixmpp's xep_0352
                                     (a no-op without the feature)
    presence_to (jid)                directed presence
    presence (priority, show)        broadcast presence with a priority
    message_to (jid, id)             a chat message to another JID
    inbound (id, body, data, channel, reply_to, receipt)
                                     a message to the domain
    abort                            close the socket without </stream>
    quit                             close the stream and exit 0
  End of stdin is taken as quit.

What it shares with slixmpp_client.py is in slixmpp_common.py, next to it.
"""

import asyncio
import json
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

import slixmpp_common
from slixmpp_common import NS_DATA, emit, message_event

NS_CHANNEL = "urn:tether:channel:0"
NS_SM = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class Client(slixmpp_common.Client):
    def __init__(self, args, done):
        super().__init__(args, done, sasl_mech=args.mech or None)
        self.stream_errored = False
        self.sm_waiters = []  # futures waiting for a server <a/>
        for p in ("xep_0030", "xep_0054", "xep_0191", "xep_0199", "xep_0280",
                  "xep_0313", "xep_0333", "xep_0352", "xep_0461"):
            self.register_plugin(p)
        self.register_plugin("xep_0184", {"auto_ack": False, "auto_request": False})
        if args.sm:
            self.register_plugin("xep_0198")
            self.add_event_handler("sm_enabled", lambda ev: emit(event="sm_enabled", id=ev["id"]))
            self.add_event_handler("session_resumed", self.on_resumed)
            self.add_event_handler("sm_failed", lambda ev: emit(event="sm_failed"))
            self.register_handler(slixmpp.xmlstream.handler.Callback(
                "interop sm ack", slixmpp.xmlstream.matcher.MatchXPath("{%s}a" % NS_SM),
                self.on_sm_ack, instream=True))
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message)
        self.add_event_handler("receipt_received", self.on_receipt)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("failed_all_auth", lambda _ev: emit(event="auth_gave_up"))
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("disconnected", self.on_disconnected)

    def open(self):
        """Connects with STARTTLS or, with --direct-tls, TLS from the first
        byte."""
        self.connect((self.args.host, self.args.port),
                     use_ssl=self.args.direct_tls, force_starttls=not self.args.direct_tls)

    async def on_start(self, _event):
        if self.args.presence:
            if self.args.priority is not None:
                self.send_presence(ppriority=self.args.priority)
            else:
                self.send_presence()
        if self.args.keepalive:
            # XEP-0199 keepalive as apps run it: a ping to the server every
            # few seconds; a lost answer makes slixmpp reconnect.
            self["xep_0199"].enable_keepalive(interval=self.args.keepalive, timeout=5)
        emit(event="online", jid=str(self.boundjid))

    def on_resumed(self, ev):
        emit(event="resumed", h=int(ev["h"]) if ev["h"] != "" else None)

    def on_sm_ack(self, ack):
        waiters, self.sm_waiters = self.sm_waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(int(ack["h"]))

    def on_message(self, msg):
        if msg["type"] == "error":
            emit(event="message_error", id=msg["id"], **{"from": str(msg["from"])},
                 condition=msg["error"]["condition"], error_type=msg["error"]["type"])
            return
        if msg["body"] == "" and msg.xml.find("{%s}data" % NS_DATA) is None:
            return  # receipts and markers: handled elsewhere
        self.received[msg["id"]] = msg
        channel = msg.xml.find("{%s}channel" % NS_CHANNEL)
        emit(
            **message_event(msg),
            channel=channel.text if channel is not None else None,
            delay=msg.xml.find("{urn:xmpp:delay}delay") is not None,
        )

    def on_receipt(self, msg):
        emit(event="receipt_received", id=msg["receipt"], **{"from": str(msg["from"])})

    # --- commands ------------------------------------------------------------

    def handle_line(self, line):
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit(event="error", error="command %r: %s" % (line, e))
            return

        async def run():
            try:
                await self.command(cmd)
            except Exception as e:  # keep serving: report and go on
                emit(event="error", error="command %r: %r" % (line, e))
        asyncio.ensure_future(run())

    async def iq_command(self, tag, coro, describe):
        try:
            iq = await coro
        except IqError as e:
            err = e.iq["error"]
            emit(event="iq_error", tag=tag, condition=err["condition"], error_type=err["type"])
            return
        except IqTimeout:
            emit(event="iq_timeout", tag=tag)
            return
        emit(event="iq_result", tag=tag, **describe(iq))

    async def command(self, cmd):
        name = cmd.get("cmd")
        domain = self.boundjid.host
        if name == "quit":
            self.quit()
        elif name == "abort":
            # The socket goes away without </stream> (as when the app is
            # killed or the network drops): the stream stays resumable.
            self.transport.abort()
            emit(event="sent", tag="abort")
        elif name in ("receipt", "displayed"):
            if self.acknowledge(name, cmd.get("id")):
                emit(event="sent", tag=name, id=cmd["id"])
        elif name == "ack":
            self["xep_0198"].send_ack()
            emit(event="sent", tag="ack", h=self["xep_0198"].handled)
        elif name == "r":
            f = self.loop.create_future()
            self.sm_waiters.append(f)
            self["xep_0198"].request_ack()
            try:
                h = await asyncio.wait_for(f, 5)
            except asyncio.TimeoutError:
                emit(event="iq_timeout", tag="r")
                return
            emit(event="sm_ack", tag="r", h=h, seq=self["xep_0198"].seq)
        elif name == "disco":
            await self.iq_command(name, self["xep_0030"].get_info(jid=domain, local=False, cached=False, timeout=5),
                                  lambda iq: {
                                      "features": sorted(iq["disco_info"]["features"]),
                                      "identities": [list(i) for i in iq["disco_info"]["identities"]],
                                  })
        elif name == "roster":
            await self.iq_command(name, self.get_roster(timeout=5),
                                  lambda iq: {"items": len(iq["roster"]["items"]),
                                              "type": iq["type"]})
        elif name == "ping":
            await self.iq_command(name, self["xep_0199"].send_ping(domain, timeout=5),
                                  lambda iq: {"type": iq["type"]})
        elif name == "ping_jid":
            await self.iq_command(name, self["xep_0199"].send_ping(cmd["jid"], timeout=5),
                                  lambda iq: {"type": iq["type"]})
        elif name == "vcard":
            # What clients do for the user's own avatar and name.
            await self.iq_command(name, self["xep_0054"].get_vcard(self.boundjid.bare, local=False, timeout=5),
                                  lambda iq: {"type": iq["type"]})
        elif name == "carbons":
            await self.iq_command(name, self["xep_0280"].enable(timeout=5), lambda iq: {"type": iq["type"]})
        elif name == "mam":
            await self.iq_command(name, self["xep_0313"].retrieve(rsm={"max": 10}, timeout=5),
                                  lambda iq: {"type": iq["type"]})
        elif name == "blocklist":
            await self.iq_command(name, self["xep_0191"].get_blocked(timeout=5),
                                  lambda iq: {"type": iq["type"]})
        elif name == "csi":
            state = cmd.get("state", "active")
            self.send_raw("<%s xmlns='urn:xmpp:csi:0'/>" % state)
            emit(event="sent", tag="csi", state=state)
        elif name == "csi_plugin":
            state = cmd.get("state", "active")
            if state == "active":
                self["xep_0352"].send_active()
            else:
                self["xep_0352"].send_inactive()
            emit(event="sent", tag="csi_plugin", state=state, enabled=self["xep_0352"].enabled)
        elif name == "presence_to":
            self.send_presence(pto=cmd["jid"])
            emit(event="sent", tag=name)
        elif name == "presence":
            self.send_presence(ppriority=cmd.get("priority"), pshow=cmd.get("show"), pstatus=cmd.get("status"))
            emit(event="sent", tag=name)
        elif name == "message_to":
            msg = self.make_message(mto=cmd["jid"], mbody=cmd.get("body", "hello"), mtype="chat")
            msg["id"] = cmd.get("id") or msg["id"]
            msg.send()
            emit(event="sent", tag=name, id=msg["id"])
        elif name == "inbound":
            msg = self.make_message(mto=domain, mbody=cmd.get("body") or None)
            if cmd.get("id"):
                msg["id"] = cmd["id"]
            if cmd.get("data") is not None:
                d = ET.Element("{%s}data" % NS_DATA)
                d.text = cmd["data"]
                msg.xml.append(d)
            if cmd.get("channel"):
                c = ET.Element("{%s}channel" % NS_CHANNEL)
                c.text = cmd["channel"]
                msg.xml.append(c)
            if cmd.get("reply_to"):
                msg["reply"]["id"] = cmd["reply_to"]
                msg["reply"]["to"] = domain
            if cmd.get("receipt"):
                msg["request_receipt"] = True
            msg.send()
            emit(event="sent", tag=name, id=msg["id"])
        else:
            emit(event="error", error="unknown command %r" % name)

    # --- life cycle ---------------------------------------------------------

    def on_failed_auth(self, stanza):
        emit(event="auth_failed", condition=stanza["condition"] if stanza is not None else None)

    def on_connection_failed(self, err):
        emit(event="connection_failed", error=str(err))
        if not self.args.reconnect and not self.done.done():
            self.done.set_result(True)

    def on_stream_error(self, err):
        self.stream_errored = True
        emit(event="stream_error", condition=err["condition"])

    def on_disconnected(self, reason):
        emit(event="disconnected", reason=str(reason) if reason else None)
        if self.args.reconnect and not self.quitting and not self.stream_errored:
            # What apps do on a lost connection: connect again; with a
            # resumable XEP-0198 session slixmpp resumes it.
            self.open()
            return
        if not self.done.done():
            self.done.set_result(True)


def main():
    p = slixmpp_common.parser(__doc__)
    p.add_argument("--mech", default="SCRAM-SHA-256", help="'' lets slixmpp choose (and retry others)")
    p.add_argument("--direct-tls", action="store_true", help="TLS from the first byte (XEP-0368)")
    p.add_argument("--sm", action="store_true", help="XEP-0198 with resumption")
    p.add_argument("--reconnect", action="store_true", help="connect again when the connection is lost")
    p.add_argument("--no-presence", dest="presence", action="store_false")
    p.add_argument("--priority", type=int)
    p.add_argument("--keepalive", type=float, help="XEP-0199 keepalive interval, seconds")
    return asyncio.run(slixmpp_common.run(Client, slixmpp_common.parse(p)))


if __name__ == "__main__":
    sys.exit(main())
