package api

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestNegotiateFormat(t *testing.T) {
	tests := []struct {
		accept string
		want   Format
	}{
		{"", FormatJSON},
		{"application/json", FormatJSON},
		{"*/*", FormatJSON},
		{"text/html", FormatJSON},
		{"application/newlines", FormatNewlines},
		{"application/whoisi", FormatWhoisi},
		{"application/newlines, application/whoisi", FormatWhoisi},
		{"application/whoisi;q=0.1, application/newlines", FormatWhoisi},
		{"application/whoisi;q=0, application/newlines", FormatNewlines},
		{"Application/Newlines", FormatNewlines},
		{"application/json, application/newlines;q=0.5", FormatNewlines},
		{"application/newlines;q=0", FormatJSON},
		{"application/newlines;q=abc", FormatJSON},
	}
	for _, tt := range tests {
		if got := NegotiateFormat(tt.accept); got != tt.want {
			t.Errorf("NegotiateFormat(%q) = %v, want %v", tt.accept, got, tt.want)
		}
	}
}

func TestListFormats(t *testing.T) {
	ids := []string{"id1", "id2"}
	tests := []struct {
		f    Format
		want string
	}{
		{FormatJSON, `["id1","id2"]`},
		{FormatNewlines, "\"id1\"\n\"id2\"\n"},
		{FormatWhoisi, "\x00\x00\x00\x05\"id1\"\x00\x00\x00\x05\"id2\""},
	}
	for _, tt := range tests {
		if got := string(AppendIDList(nil, tt.f, ids)); got != tt.want {
			t.Errorf("format %v: got %q, want %q", tt.f, got, tt.want)
		}
	}
	if got := string(AppendIDList(nil, FormatJSON, nil)); got != "[]" {
		t.Errorf("empty list = %q", got)
	}
	// Newlines inside a WBO never appear literally.
	ws := []WBO{{ID: "a", Payload: "x\ny", Has: FieldPayload}}
	rec := httptest.NewRecorder()
	writeList(rec, FormatNewlines, ws)
	if got := rec.Body.String(); got != "{\"id\":\"a\",\"payload\":\"x\\ny\"}\n" {
		t.Errorf("newlines full = %q", got)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/newlines" {
		t.Errorf("content type %q", ct)
	}
}

// writeList writes ws (full records) through a listWriter.
func writeList(w http.ResponseWriter, f Format, ws []WBO) {
	l := newListWriter(w, f, true)
	defer l.release()
	for i := range ws {
		if l.add(&ws[i]) != nil {
			return
		}
	}
	_ = l.finish()
}

// TestWriteWBOListStreams checks that a list larger than the buffer limit
// is streamed and still complete.
func TestWriteWBOListStreams(t *testing.T) {
	p := strings.Repeat("z", 100<<10)
	ws := make([]WBO, 8)
	for i := range ws {
		ws[i] = WBO{ID: "x", Payload: p, Has: FieldPayload}
	}
	for _, f := range []Format{FormatJSON, FormatNewlines, FormatWhoisi} {
		rec := httptest.NewRecorder()
		writeList(rec, f, ws)
		var want []byte
		want = AppendListStart(want, f)
		for i := range ws {
			want = AppendListElem(want, f, i == 0, func(b []byte) []byte { return AppendWBOJSON(b, ws[i]) })
		}
		want = AppendListEnd(want, f)
		if rec.Body.String() != string(want) {
			t.Errorf("format %v: streamed body differs (len %d vs %d)", f, rec.Body.Len(), len(want))
		}
	}
}

// TestWriteListStamps checks a list's modified times against records
// written one by one: runs of one stamp (which the list writer keeps the
// text of), changes, negative and zero stamps, in every format.
func TestWriteListStamps(t *testing.T) {
	stamps := []Stamp{176000000012, 176000000012, 176000000099, 176000000012, 0, -5, -5, 7, 176000000012, 1 << 62}
	ws := make([]WBO, len(stamps))
	for i, s := range stamps {
		ws[i] = WBO{ID: strconv.Itoa(i), Modified: s, Payload: "p", Has: FieldPayload}
	}
	for _, f := range []Format{FormatJSON, FormatNewlines, FormatWhoisi} {
		rec := httptest.NewRecorder()
		writeList(rec, f, ws)
		want := AppendListStart(nil, f)
		for i := range ws {
			want = AppendListElem(want, f, i == 0, func(b []byte) []byte { return AppendWBOJSON(b, ws[i]) })
		}
		want = AppendListEnd(want, f)
		if rec.Body.String() != string(want) {
			t.Errorf("format %v:\n got %q\nwant %q", f, rec.Body.String(), want)
		}
	}
}
