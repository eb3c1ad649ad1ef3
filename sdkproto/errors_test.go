package sdkproto

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// parse reads one element for the error parsers.
func parse(t *testing.T, s string) *Element {
	t.Helper()
	e, err := ParseElement([]byte(s))
	require.NoError(t, err)
	return e
}

func TestParseStreamError(t *testing.T) {
	t.Parallel()
	open := "<stream:error xmlns:stream='" + NSStream + "'>"
	se := parseStreamError(parse(t, open+
		"<conflict xmlns='"+NSStreams+"'/><text xmlns='"+NSStreams+"'>replaced</text>"+
		"<app-specific xmlns='urn:example'/><text xmlns='urn:example'>not this</text></stream:error>"))
	require.Equal(t, &StreamError{Condition: "conflict", Text: "replaced"}, se, "children in other namespaces are ignored")
	require.Equal(t, &StreamError{Condition: "undefined-condition"}, parseStreamError(parse(t, open+"</stream:error>")))
}

func TestParseSASLFailure(t *testing.T) {
	t.Parallel()
	open := "<failure xmlns='" + NSSASL + "'>"
	require.Equal(t, &SASLError{Condition: "temporary-auth-failure", Text: "later"},
		parseSASLFailure(parse(t, open+"<temporary-auth-failure/><text>later</text></failure>")))
	require.Equal(t, &SASLError{Condition: "account-disabled"},
		parseSASLFailure(parse(t, "<failure xmlns='"+NSSASL+"'><account-disabled xmlns=''/></failure>")), "any namespace")
	require.Equal(t, &SASLError{Condition: "not-authorized"}, parseSASLFailure(parse(t, open+"</failure>")))
}

func TestParseStanzaError(t *testing.T) {
	t.Parallel()
	se := parseStanzaError(parse(t, "<iq xmlns='"+NSClient+"' type='error' id='1'><error type='cancel'>"+
		"<service-unavailable xmlns='"+NSStanzas+"'/><text xmlns='"+NSStanzas+"'>no such service</text>"+
		"<app-specific xmlns='urn:example'/></error></iq>"))
	require.Equal(t, &StanzaError{Type: "cancel", Condition: "service-unavailable", Text: "no such service"}, se)
	require.Equal(t, &StanzaError{Type: "wait", Condition: "undefined-condition"},
		parseStanzaError(parse(t, "<iq xmlns='"+NSClient+"' type='error'><error type='wait'/></iq>")))
	require.Equal(t, &StanzaError{Condition: "undefined-condition"},
		parseStanzaError(parse(t, "<iq xmlns='"+NSClient+"' type='error'/>")), "no <error/> child")
}
