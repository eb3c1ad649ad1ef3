"""What slixmpp_client.py and slixmpp_more.py share.

Both speak JSON lines (events on stdout, commands on stdin), take the same
connection arguments, and end the same way: end of stdin is taken as quit,
and after --timeout seconds the script gives up whatever happens (exit 2).
Each script defines its client as a subclass of Client, with its own
commands, and runs it with run().
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
    """Writes one event line to stdout, the only thing written there."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def message_event(msg):
    """The "message" event for msg: what the tests compare with what the
    backend posted."""
    data = msg.xml.find("{%s}data" % NS_DATA)
    return dict(
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


class Client(slixmpp.ClientXMPP):
    """A client one of the scripts drives: the TLS trust, the messages it
    got, and how it ends (done is the future run() waits for)."""

    def __init__(self, args, done, sasl_mech):
        super().__init__(args.jid, args.password, sasl_mech=sasl_mech)
        self.args = args
        self.done = done
        self.received = {}  # message id -> the message stanza
        self.exit_code = 0
        self.quitting = False
        # Trust the gateway's self-signed certificate (it names localhost
        # and *.localhost), with the usual chain and host name checks;
        # without --cafile, no verification at all.
        if args.cafile:
            self.ca_certs = args.cafile
        else:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE

    def open(self):
        """Connects with STARTTLS, giving up unless the server offers it."""
        self.connect((self.args.host, self.args.port), use_ssl=False, force_starttls=True)

    def handle_line(self, line):
        """Runs one command line from stdin; each script defines its
        commands."""
        raise NotImplementedError

    def acknowledge(self, name, mid):
        """Sends the XEP-0184 <received/> (name "receipt") or the XEP-0333
        <displayed/> (name "displayed") for message mid; an id the client
        never got is an error event, and False."""
        msg = self.received.get(mid)
        if msg is None:
            emit(event="error", error="unknown message id %r" % mid)
            return False
        if name == "receipt":
            self["xep_0184"].ack(msg)
        else:
            self["xep_0333"].send_marker(msg["from"], mid, "displayed")
        return True

    def quit(self, code=0):
        self.quitting = True
        self.exit_code = self.exit_code or code
        if self.is_connected():
            self.disconnect(wait=2.0)
        elif not self.done.done():
            self.done.set_result(True)


def parser(doc):
    """The arguments both scripts take; each adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True, help="user@domain/resource")
    p.add_argument("--password", default=os.environ.get("INTEROP_PASSWORD"),
                   help="default: $INTEROP_PASSWORD")
    p.add_argument("--cafile", help="PEM to trust (default: no verification)")
    p.add_argument("--timeout", type=float, default=25.0)
    p.add_argument("--debug", action="store_true")
    return p


def parse(p):
    """Parses the command line and sends slixmpp's log to stderr (every
    stanza in and out with --debug)."""
    args = p.parse_args()
    if not args.password:
        p.error("no password: --password or INTEROP_PASSWORD")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args


async def run(client_class, args):
    """Runs client_class(args, done) until it is done or args.timeout
    passes, handing it each command line from stdin; returns the exit
    code."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    xmpp = client_class(args, done)

    # stdin is read unbuffered: sys.stdin.readline() would keep a second
    # line that came in the same read in Python's buffer, where the
    # reader callback never looks.
    pending = bytearray()

    def on_stdin():
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:  # end of input: the test is gone
            loop.remove_reader(sys.stdin.fileno())
            xmpp.quit()
            return
        pending.extend(chunk)
        while b"\n" in pending:
            i = pending.index(b"\n")
            line = pending[:i].decode().strip()
            del pending[:i + 1]
            if line:
                xmpp.handle_line(line)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    xmpp.open()
    try:
        await asyncio.wait_for(asyncio.shield(done), args.timeout)
    except asyncio.TimeoutError:
        emit(event="error", error="timeout after %gs" % args.timeout)
        xmpp.exit_code = 2
        xmpp.abort()
    emit(event="bye")
    return xmpp.exit_code
