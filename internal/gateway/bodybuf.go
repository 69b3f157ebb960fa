package gateway

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
)

// pooledBodyMin is the smallest request body kept in a pooled buffer. A smaller one is
// allocated as it comes and sent as an io.NopCloser over a bytes.Reader, which the
// Transport writes in one go with the headers; a larger one takes several writes
// anyway, and a fresh megabyte per request (zeroed, then garbage) was most of the
// gateway's memory under large bodies.
const pooledBodyMin = 4 << 10

// bodyBuf is a request body in a pooled buffer, shared by the primary call and a
// shadow copy: each holder has a reference, and the buffer goes back to the pool when
// the last one lets go. A Transport may read a request body until it closes it, after
// RoundTrip has returned, so a call's reference ends when its body is closed.
type bodyBuf struct {
	b    []byte
	refs atomic.Int32
}

var bodyBufPools = [...]struct {
	size int
	pool sync.Pool
}{{size: 16 << 10}, {size: 64 << 10}, {size: 256 << 10}, {size: 1 << 20}}

// getBodyBuf returns a buffer of n bytes with one reference, or nil when n is over the
// largest class.
func getBodyBuf(n int) *bodyBuf {
	for i := range bodyBufPools {
		p := &bodyBufPools[i]
		if n > p.size {
			continue
		}
		bb, _ := p.pool.Get().(*bodyBuf)
		if bb == nil {
			bb = &bodyBuf{b: make([]byte, p.size)}
		}
		bb.b = bb.b[:n]
		bb.refs.Store(1)
		return bb
	}
	return nil
}

func (bb *bodyBuf) hold() { bb.refs.Add(1) }

func (bb *bodyBuf) release() {
	switch n := bb.refs.Add(-1); {
	case n > 0:
	case n == 0:
		for i := range bodyBufPools {
			if p := &bodyBufPools[i]; cap(bb.b) == p.size {
				bb.b = bb.b[:cap(bb.b)]
				p.pool.Put(bb)
				return
			}
		}
	default:
		panic("gateway: request body buffer released once too often")
	}
}

// reader is a request body over the buffer that holds a reference until closed.
func (bb *bodyBuf) reader() io.ReadCloser {
	bb.hold()
	return &bodyBufReader{Reader: bytes.NewReader(bb.b), bb: bb}
}

type bodyBufReader struct {
	*bytes.Reader
	bb   *bodyBuf
	once sync.Once
}

func (r *bodyBufReader) Close() error {
	r.once.Do(r.bb.release)
	return nil
}
