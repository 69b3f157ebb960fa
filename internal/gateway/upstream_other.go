//go:build !linux

package gateway

// peekSupported is false where the idle check is not written: UpstreamTransport then
// leaves every call to net/http's Transport.
const peekSupported = false

func (pc *upstreamConn) peek(fd uintptr) bool { return true }
