package couch

import (
	"testing"
)

// FuzzDecodeDoc feeds arbitrary bytes to the _bulk_docs document decoder:
// it must never panic, and what it accepts must survive an encode/decode
// round trip unchanged.
func FuzzDecodeDoc(f *testing.F) {
	h := hashOf("seed")
	for _, s := range []string{
		`{"_id":"c/a","_rev":"1-` + h + `","payload":"x","sortindex":3}`,
		`{"_id":"c/a","_rev":"2-` + h + `","_revisions":{"start":2,"ids":["` + h + `","` + hashOf("p") + `"]},"_deleted":true}`,
		`{"_id":"c/a","_revisions":{"start":1,"ids":["` + h + `"]},"parentid":"p","predecessorid":"q","expiry":5,"hce_origin":"n","hce_origin_time":7}`,
		`{"_id":"c/a","_rev":"1-` + h + `","_attachments":{}}`,
		`{"_id":"x","_rev":"1-x"}`,
		`[]`, `null`, `{"_id":1}`, `{"_id":"c/a","_revisions":{"start":-1,"ids":null}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeDoc(data)
		if err != nil {
			if _, ok := err.(*docError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		again, err := decodeDoc(encodeDoc(&d.Revision, true))
		if err != nil {
			t.Fatalf("re-decoding %q: %v", encodeDoc(&d.Revision, true), err)
		}
		if again.DocID != d.DocID || again.Rev != d.Rev || again.Revision.Body != d.Revision.Body ||
			again.Revision.Path.Start != d.Revision.Path.Start || again.Revision.Path.Deleted != d.Revision.Path.Deleted ||
			len(again.Revision.Path.IDs) != len(d.Revision.Path.IDs) {
			t.Fatalf("round trip changed %+v into %+v", d, again)
		}
	})
}
