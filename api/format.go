package api

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Format is an output format of multi-record responses (weave-api.md 2.2).
type Format uint8

// The output formats.
const (
	// FormatJSON is one JSON array (application/json, the default).
	FormatJSON Format = iota
	// FormatNewlines is one JSON text per element, each followed by "\n"
	// (application/newlines).
	FormatNewlines
	// FormatWhoisi is, per element, a 4-byte big-endian length followed by
	// the element's JSON text (application/whoisi).
	FormatWhoisi
)

// ContentType returns the media type of f.
func (f Format) ContentType() string {
	switch f {
	case FormatNewlines:
		return "application/newlines"
	case FormatWhoisi:
		return "application/whoisi"
	}
	return "application/json"
}

// NegotiateFormat picks the output format from an Accept header:
// application/whoisi when it is acceptable (q > 0), else
// application/newlines when it is, else JSON. Wildcards do not select an
// alternate format.
func NegotiateFormat(accept string) Format {
	if accept == "" || accept == "application/json" {
		return FormatJSON
	}
	hasNewlines := false
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, _ := strings.Cut(part, ";")
		mt = strings.TrimSpace(mt)
		var f Format
		switch {
		case strings.EqualFold(mt, "application/whoisi"):
			f = FormatWhoisi
		case strings.EqualFold(mt, "application/newlines"):
			f = FormatNewlines
		default:
			continue
		}
		if !acceptable(params) {
			continue
		}
		if f == FormatWhoisi {
			return FormatWhoisi
		}
		hasNewlines = true
	}
	if hasNewlines {
		return FormatNewlines
	}
	return FormatJSON
}

// acceptable reports whether the parameters of a media range leave it a
// q value above zero.
func acceptable(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(q > 0) {
			return false
		}
	}
	return true
}

// AppendListElem appends one element of a list in format f; elem is the
// element's JSON text (without a trailing newline) and first says whether
// it is the first element. AppendListStart/AppendListEnd frame the list.
func AppendListElem(b []byte, f Format, first bool, elem func([]byte) []byte) []byte {
	switch f {
	case FormatWhoisi:
		at := len(b)
		b = append(b, 0, 0, 0, 0)
		b = elem(b)
		n := uint32(len(b) - at - 4)
		b[at], b[at+1], b[at+2], b[at+3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		return b
	case FormatNewlines:
		return append(elem(b), '\n')
	}
	if !first {
		b = append(b, ',')
	}
	return elem(b)
}

// AppendListStart appends what opens a list in format f.
func AppendListStart(b []byte, f Format) []byte {
	if f == FormatJSON {
		return append(b, '[')
	}
	return b
}

// AppendListEnd appends what closes a list in format f.
func AppendListEnd(b []byte, f Format) []byte {
	if f == FormatJSON {
		return append(b, ']')
	}
	return b
}

// AppendIDList encodes ids as a list in format f.
func AppendIDList(b []byte, f Format, ids []string) []byte {
	b = AppendListStart(b, f)
	for i, id := range ids {
		b = AppendListElem(b, f, i == 0, func(b []byte) []byte { return AppendJSONString(b, id) })
	}
	return AppendListEnd(b, f)
}

// bufPool recycles response buffers. Buffers that grew past maxPooledBuf
// are dropped so one large answer does not pin memory.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const (
	maxPooledBuf = 1 << 20
	// flushAt is the buffered size past which a list is streamed out.
	flushAt = 256 << 10
)

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// listWriter streams a list of records (ids only unless full) with status
// 200 in format f. Elements are buffered up to flushAt bytes: an answer
// that fits is sent whole with a Content-Length; a longer one goes out in
// chunks as the buffer fills, so a request holds at most flushAt bytes
// plus one element whatever the list's length. The caller sets the other
// headers before the first add.
type listWriter struct {
	w    http.ResponseWriter
	f    Format
	full bool
	bp   *[]byte
	b    []byte
	n    int
	// sent: the status line is out; an error can no longer be answered.
	sent  bool
	err   error
	stamp stampMemo
}

func newListWriter(w http.ResponseWriter, f Format, full bool) *listWriter {
	l := &listWriter{w: w, f: f, full: full, bp: getBuf()}
	l.b = AppendListStart((*l.bp)[:0], f)
	return l
}

// add appends one record, writing the buffer out when it is full. Its
// error is the connection's: the client went away or stopped reading.
func (l *listWriter) add(w *WBO) error {
	if l.err != nil {
		return l.err
	}
	if l.full && l.f == FormatJSON {
		// AppendListElem's JSON case, without a closure per record.
		if l.n > 0 {
			l.b = append(l.b, ',')
		}
		l.b = appendWBOJSON(l.b, w, &l.stamp)
	} else if l.full {
		l.b = AppendListElem(l.b, l.f, l.n == 0, func(b []byte) []byte { return appendWBOJSON(b, w, &l.stamp) })
	} else {
		l.b = AppendListElem(l.b, l.f, l.n == 0, func(b []byte) []byte { return appendJSONStr(b, w.ID, w.Plain&PlainID != 0) })
	}
	l.n++
	if len(l.b) >= flushAt {
		if !l.sent {
			l.sent = true
			l.w.Header().Set("Content-Type", l.f.ContentType())
			l.w.WriteHeader(http.StatusOK)
		}
		_, l.err = l.w.Write(l.b)
		l.b = l.b[:0]
	}
	return l.err
}

// finish closes the list and writes what is buffered.
func (l *listWriter) finish() error {
	if l.err != nil {
		return l.err
	}
	l.b = AppendListEnd(l.b, l.f)
	if !l.sent {
		l.sent = true
		h := l.w.Header()
		h.Set("Content-Type", l.f.ContentType())
		h.Set("Content-Length", strconv.Itoa(len(l.b)))
		l.w.WriteHeader(http.StatusOK)
	}
	_, l.err = l.w.Write(l.b)
	return l.err
}

// release returns the buffer to the pool.
func (l *listWriter) release() {
	*l.bp = l.b
	putBuf(l.bp)
	l.bp, l.b = nil, nil
}

// writeBody writes a complete 200 answer.
func writeBody(w http.ResponseWriter, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
