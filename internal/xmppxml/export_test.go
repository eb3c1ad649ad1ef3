package xmppxml

// Error messages the tests match on.
const (
	MsgUndeclared = msgUndeclared
	MsgReserved   = msgReserved
	MsgEmptyNS    = msgEmptyNS
	MsgDupAttr    = msgDupAttr
	MsgName       = msgName
	MsgQName      = msgQName
	MsgCharRef    = msgCharRef
	MsgMarkup     = msgMarkup
	MsgPI         = msgPI
	MsgDecl       = msgDecl
	MsgTrailing   = msgTrailing
	MsgNoElement  = msgNoElement
	MsgDepth      = msgDepth
	MsgAfterLT    = msgAfterLT
	MsgTag        = msgTag
	MsgAttrSpace  = msgAttrSpace
	MsgChar       = msgChar
)

// Messages of the early checks.
const (
	MsgEndTag       = msgEndTag
	MsgNestedStream = msgNestedStream
)

// HasTagStack reports whether s holds a tag stack.
func HasTagStack(s *Stream) bool { return s.scan.tags != nil }
