package hawk

import (
	"errors"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
)

func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{
		`Hawk id="dh37fgj492je", ts="1353832234", nonce="j4h3g2", ext="some-app-ext-data", mac="6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAE="`,
		`Hawk id="a", ts="1", nonce="n", hash="h", ext="e", mac="m", app="p", dlg="d"`,
		`hawk id="1",ts="1",nonce="n",mac="m",`, `Hawk`, `Hawk `, `Basic abc`, `!@#`, `Hawk id="1", id="2"`,
		`Hawk id="\", ts="1"`, "Hawk id=\"\t\"", `Hawk x="1"`, `Hawk id="1" ts="2"`, `Hawk id="1", ts="99999999999999"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hd, err := ParseHeader(s)
		if err != nil {
			if !errors.Is(err, api.ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			return
		}
		if len(s) > MaxHeaderLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		for _, v := range []string{hd.ID, hd.TSText, hd.Nonce, hd.MAC} {
			if !ValidValue(v) {
				t.Fatalf("required attribute %q invalid in %+v", v, hd)
			}
		}
		for _, v := range []string{hd.Hash, hd.Ext, hd.App, hd.Dlg} {
			if v != "" && !ValidValue(v) {
				t.Fatalf("attribute %q invalid", v)
			}
		}
		if hd.TS < 0 || len(hd.TSText) > maxTSDigits || strings.TrimLeft(hd.TSText, "0123456789") != "" {
			t.Fatalf("bad ts %q", hd.TSText)
		}
		// The canonical form parses back to the same header (unless its
		// separators made it longer than the limit).
		if len(hd.String()) > MaxHeaderLen {
			return
		}
		again, err := ParseHeader(hd.String())
		if err != nil || again != hd {
			t.Fatalf("round trip of %q: %+v, %v", hd.String(), again, err)
		}
	})
}
