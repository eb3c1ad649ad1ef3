// Package sdkproto is Tether's device wire protocol: the XML namespaces,
// element names and limits shared by the gateway and SDKs, and a Go client
// SDK that tests, the soak harness and Go applications use.
//
// It is the one package meant for import from outside the module, so it is
// a leaf: it depends on the standard library and the WebSocket library
// only.
package sdkproto
