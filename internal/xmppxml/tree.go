package xmppxml

// Value returns the value of the unprefixed attribute local (or of xml:local,
// as for xml:lang), or "" when there is none.
func (e *Element) Value(local string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == local && (a.Name.Space == "" || a.Name.Space == XMLNamespace) {
			return a.Value
		}
	}
	return ""
}

// Child returns the first child with the namespace space (any, when space
// is "") and the local name, or nil.
func (e *Element) Child(space, local string) *Element {
	for _, c := range e.Children {
		if c.Name.Local == local && (space == "" || c.Name.Space == space) {
			return c
		}
	}
	return nil
}

// FirstChild returns the first child element, or nil.
func (e *Element) FirstChild() *Element {
	if len(e.Children) == 0 {
		return nil
	}
	return e.Children[0]
}
