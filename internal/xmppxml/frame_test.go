package xmppxml_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tether/internal/xmppxml"
)

// frameCases are ParseFrame's rules, one case each: want is the tree, or
// "error: " and the message.
var frameCases = []struct {
	name, in, want string
}{
	{"open", "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='acme.localhost' version='1.0'/>", `{urn:ietf:params:xml:ns:xmpp-framing}open[xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="acme.localhost" version="1.0"]`},
	{"no namespace", "<presence/>", "presence"},
	{"whitespace around", " \r\n\t<presence xmlns='jabber:client'/>\n", `{jabber:client}presence[xmlns="jabber:client"]`},
	{"declaration", "<?xml version='1.0'?><presence/>", "presence"},
	{"declaration and whitespace", "<?xml version='1.0' encoding='UTF-8'?>\n<presence/>", "presence"},
	{"encoding any case", "<?xml version='1.0' encoding='Utf-8'?><presence/>", "presence"},
	{"receipt", "<message xmlns='jabber:client' to='b@x' id='r1'><received xmlns='urn:xmpp:receipts' id='m1'/></message>", `{jabber:client}message[xmlns="jabber:client" to="b@x" id="r1"]({urn:xmpp:receipts}received[xmlns="urn:xmpp:receipts" id="m1"])`},

	// Names and namespaces.
	{"prefixed", "<p:a xmlns:p='urn:p' p:x='1' y='2'/>", `{urn:p}a[{xmlns}p="urn:p" {urn:p}x="1" y="2"]`},
	{"prefix scope", "<a xmlns:p='urn:p'><p:b/><c xmlns:p='urn:q'><p:d/></c></a>", `a[{xmlns}p="urn:p"]({urn:p}b c[{xmlns}p="urn:q"]({urn:q}d))`},
	{"prefix out of scope", "<a><b xmlns:p='urn:p'/><p:c/></a>", "error: " + xmppxml.MsgUndeclared},
	{"default scope", "<a xmlns='urn:a'><b xmlns=''><c/></b><d/></a>", `{urn:a}a[xmlns="urn:a"](b[xmlns=""](c) {urn:a}d)`},
	{"xml prefix", "<a xml:lang='en'/>", `a[{http://www.w3.org/XML/1998/namespace}lang="en"]`},
	{"xml prefix declared right", "<a xmlns:xml='http://www.w3.org/XML/1998/namespace'/>", `a[{xmlns}xml="http://www.w3.org/XML/1998/namespace"]`},
	{"xml prefix rebound", "<a xmlns:xml='urn:x'/>", "error: " + xmppxml.MsgReserved},
	{"xmlns prefix declared", "<a xmlns:xmlns='urn:x'/>", "error: " + xmppxml.MsgReserved},
	{"xmlns element prefix", "<xmlns:a/>", "error: " + xmppxml.MsgReserved},
	{"bound to xml namespace", "<a xmlns:p='http://www.w3.org/XML/1998/namespace'/>", "error: " + xmppxml.MsgReserved},
	{"default xmlns namespace", "<a xmlns='http://www.w3.org/2000/xmlns/'/>", "error: " + xmppxml.MsgReserved},
	{"empty prefix binding", "<a xmlns:p=''/>", "error: " + xmppxml.MsgEmptyNS},
	{"undeclared element prefix", "<p:a/>", "error: " + xmppxml.MsgUndeclared},
	{"undeclared attribute prefix", "<a p:x='1'/>", "error: " + xmppxml.MsgUndeclared},
	{"two colons", "<a:b:c/>", "error: " + xmppxml.MsgQName},
	{"leading colon", "<:a/>", "error: " + xmppxml.MsgQName},
	{"attribute leading colon", "<a :x='1'/>", "error: " + xmppxml.MsgQName},
	{"trailing colon", "<a: x='1'/>", "error: " + xmppxml.MsgQName},
	{"digit start", "<1a/>", "error: " + xmppxml.MsgAfterLT},
	{"digit after colon", "<a xmlns:p='u'><p:1/></a>", "error: " + xmppxml.MsgQName},
	{"name chars", "<a-b.c_d9 e-f='1'/>", `a-b.c_d9[e-f="1"]`},
	{"non-ASCII name", "<café ünï='1'/>", `café[ünï="1"]`},
	{"non-name rune", "<a\u00d7/>", "error: " + xmppxml.MsgTag},
	{"non-name start", "<\u0300a/>", "error: " + xmppxml.MsgName},

	// Tags.
	{"end tag mismatch", "<a></b>", "error: end tag does not match its start tag"},
	{"end tag prefix mismatch", "<p:a xmlns:p='u' xmlns:q='u'></q:a>", "error: end tag does not match its start tag"},
	{"end tag space", "<a></a \n>", "a"},
	{"end tag junk", "<a></a x>", "error: end tag does not match its start tag"},
	{"attribute no space", "<a x='1'y='2'/>", "error: " + xmppxml.MsgAttrSpace},
	{"attribute spaces", "<a x = '1'\n\ty=\"2\" />", `a[x="1" y="2"]`},
	{"attribute unquoted", "<a x=1/>", "error: malformed attribute"},
	{"attribute no value", "<a x/>", "error: malformed attribute"},
	{"duplicate attribute", "<a x='1' x='2'/>", "error: " + xmppxml.MsgDupAttr},
	{"duplicate expanded", "<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>", "error: " + xmppxml.MsgDupAttr},
	{"duplicate declaration", "<a xmlns:p='u' xmlns:p='v'/>", "error: " + xmppxml.MsgDupAttr},
	{"not duplicate", "<a xmlns:p='u' x='1' p:x='2'/>", `a[{xmlns}p="u" x="1" {u}x="2"]`},
	{"lt in value", "<a x='<'/>", "error: < in an attribute value"},
	{"gt in value", "<a x='>' y=\"'\" z='\"'/>", `a[x=">" y="'" z="\""]`},
	{"lt in tag", "<a <b/>", "error: < in a tag"},
	{"too deep", strings.Repeat("<a>", 34) + strings.Repeat("</a>", 34), "error: " + xmppxml.MsgDepth},
	{"deep enough", strings.Repeat("<a>", 33) + strings.Repeat("</a>", 33), strings.Repeat("a(", 32) + "a" + strings.Repeat(")", 32)},

	// Text and values.
	{"entities", "<a x='&lt;&gt;&amp;&apos;&quot;'>&lt;&gt;&amp;&apos;&quot;</a>", `a[x="<>&'\""]"<>&'\""`},
	{"char refs", "<a x='&#65;&#x42;&#x1F600;'>&#10;&#xd;&#x10FFFF;</a>", "a[x=\"AB\U0001F600\"]\"\\n\\r\\U0010ffff\""},
	{"unknown entity", "<a>&nbsp;</a>", "error: invalid entity reference"},
	{"entity no semicolon", "<a>&amp</a>", "error: invalid entity reference"},
	{"char ref NUL", "<a>&#0;</a>", "error: " + xmppxml.MsgCharRef},
	{"char ref surrogate", "<a>&#xD800;</a>", "error: " + xmppxml.MsgCharRef},
	{"char ref FFFE", "<a x='&#xFFFE;'/>", "error: " + xmppxml.MsgCharRef},
	{"char ref too big", "<a>&#x110000;</a>", "error: " + xmppxml.MsgCharRef},
	{"char ref huge", "<a>&#99999999999999999999;</a>", "error: " + xmppxml.MsgCharRef},
	{"char ref empty", "<a>&#;</a>", "error: " + xmppxml.MsgCharRef},
	{"char ref no x uppercase", "<a>&#X41;</a>", "error: " + xmppxml.MsgCharRef},
	{"control char", "<a>\x01</a>", "error: " + xmppxml.MsgChar},
	{"control char in value", "<a x='\x1f'/>", "error: " + xmppxml.MsgChar},
	{"FFFF", "<a>\uffff</a>", "error: " + xmppxml.MsgChar},
	{"invalid UTF-8", "<a>\xff</a>", "error: invalid UTF-8"},
	{"invalid UTF-8 in value", "<a x='\xc3'/>", "error: invalid UTF-8"},
	{"encoded surrogate", "<a>\xed\xa0\x80</a>", "error: invalid UTF-8"},
	{"line ends", "<a x='1\r\n2\r3\n4\t5&#10;6'>1\r\n2\r3\n4<![CDATA[\r\n]]></a>", "a[x=\"1 2 3 4 5\\n6\"]\"1\\n2\\n3\\n4\\n\""},
	{"text pieces", "<a>x<b>y</b>z<c/>&amp;</a>", `a"xz&"(b"y" c)`},
	{"CDATA", "<a><![CDATA[<b>&amp;]]]]><![CDATA[>]]></a>", `a"<b>&amp;]]>"`},
	{"CDATA bad char", "<a><![CDATA[\x00]]></a>", "error: " + xmppxml.MsgChar},
	{"CDATA end in text", "<a>]]></a>", "error: ]]> in text"},
	{"brackets in text", "<a>]] ]></a>", `a"]] ]>"`},
	{"non-ASCII text", "<body>héllo \U0001F600</body>", "body\"héllo \U0001F600\""},

	// What a frame may hold.
	{"comment", "<!-- c --><presence/>", "error: " + xmppxml.MsgMarkup},
	{"comment inside", "<a><!-- c --></a>", "error: " + xmppxml.MsgMarkup},
	{"pi inside", "<a><?p x?></a>", "error: " + xmppxml.MsgPI},
	{"doctype", "<!DOCTYPE a><a/>", "error: " + xmppxml.MsgMarkup},
	{"declaration late", " <?xml version='1.0'?><a/>", "error: " + xmppxml.MsgPI},
	{"declaration 1.1", "<?xml version='1.1'?><a/>", "error: " + xmppxml.MsgDecl},
	{"declaration latin1", "<?xml version='1.0' encoding='ISO-8859-1'?><a/>", "error: " + xmppxml.MsgDecl},
	{"declaration no version", "<?xml?><a/>", "error: " + xmppxml.MsgDecl},
	{"declaration twice standalone", "<?xml version='1.0' standalone='no' standalone='no'?><a/>", "error: " + xmppxml.MsgDecl},
	{"pi", "<?php x?><a/>", "error: " + xmppxml.MsgPI},
	{"two elements", "<message/><message/>", "error: " + xmppxml.MsgTrailing},
	{"trailing text", "<presence/>trailing", "error: " + xmppxml.MsgTrailing},
	{"trailing nbsp", "<presence/>\u00a0", "error: " + xmppxml.MsgTrailing},
	{"not xml", "not xml", "error: " + xmppxml.MsgNoElement},
	{"empty", "", "error: " + xmppxml.MsgNoElement},
	{"CDATA only", "<![CDATA[x]]>", "error: " + xmppxml.MsgNoElement},
	{"end tag only", "</a>", "error: " + xmppxml.MsgNoElement},
	{"unclosed", "<message><body></body>", "error: unexpected end of input"},
	{"inner end tag mismatch", "<message><body></message>", "error: " + xmppxml.MsgEndTag},
	{"end tag longer", "<a><b></bc></a>", "error: " + xmppxml.MsgEndTag},
	{"end tag shorter", "<a><bc></b></a>", "error: " + xmppxml.MsgEndTag},
	{"end tag other prefix", "<a xmlns:p='u' xmlns:q='u'><p:b></q:b></a>", "error: " + xmppxml.MsgEndTag},
	{"end tag empty", "<a><b></></a>", "error: " + xmppxml.MsgEndTag},
	{"end tag after self-closing", "<a><b/><c x='1'></c ></a>", `a(b c[x="1"])`},
	{"deep end tags", "<a><b><c><d/></c></b><e><f></f></e></a>", "a(b(c(d)) e(f))"},
	{"truncated", "<a x='1", "error: unexpected end of input"},
}

func TestParseFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := xmppxml.ParseFrame([]byte(tc.in))
			if err != nil {
				require.Nil(t, e)
				require.True(t, errors.Is(err, xmppxml.ErrNotWellFormed), "%v", err)
				require.Equal(t, tc.want, "error: "+errString(err))
				return
			}
			require.Equal(t, tc.want, dump(e))
		})
	}
}

// TestStreamRules runs the frame cases as stanzas on a stream: the same
// trees (in the stream's default namespace) and the same errors.
func TestStreamRules(t *testing.T) {
	t.Parallel()
	for _, tc := range frameCases {
		if strings.HasPrefix(tc.in, "<?") || !strings.HasPrefix(tc.in, "<") || tc.name == "CDATA only" || tc.name == "end tag only" {
			continue // frame-level rules
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := []byte("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>" + tc.in)
			got := runStream(in, whole)
			require.Equal(t, `Header {http://etherx.jabber.org/streams}stream[{xmlns}stream="http://etherx.jabber.org/streams"]`, got[0])
			switch {
			case tc.want == "error: unexpected end of input":
				require.Equal(t, []string{"error: need more"}, got[1:])
			case tc.want == "error: "+xmppxml.MsgTrailing:
				require.Equal(t, "Element", strings.Fields(got[1])[0])
			case strings.HasPrefix(tc.want, "error: "):
				require.Equal(t, []string{tc.want}, got[1:])
			default:
				require.Equal(t, []string{"Element " + tc.want, "error: "}, got[1:])
			}
		})
	}
}
