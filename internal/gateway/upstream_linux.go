package gateway

import (
	"syscall"
	"unsafe"
)

// peekSupported: the idle check below needs recv with MSG_PEEK|MSG_DONTWAIT.
const peekSupported = true

// peek looks, without waiting and without consuming anything, for a byte or a close
// on the connection: peekN is 1 for a byte, 0 for a close and -1 with peekErr for
// nothing (EAGAIN) or an error.
func (pc *upstreamConn) peek(fd uintptr) bool {
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&pc.peekBuf[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	pc.peekN, pc.peekErr = int(n), errno
	if errno != 0 {
		pc.peekN = -1
	}
	return true
}
