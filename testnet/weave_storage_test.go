package testnet

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

// End-to-end tests of the Weave storage API (weave-api.md sections 1 and
// 2) against a real Standalone. Each comment names the rule it checks.

// TestWBOFields covers weave-api.md 1.1: the fields of a WBO, their types,
// limits and validation, and the output form of a stored record.
func TestWBOFields(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	t.Run("id_number_becomes_string", func(t *testing.T) {
		// 1.1 id: "string or number, converted to string".
		b := a.post(t, "ids", json.RawMessage(`[{"id": 5, "payload": "five"}]`))
		eq(t, "success", b.Success, []string{"5"})
		r := a.do(t, "GET", "storage/ids/5", nil)
		want(t, r, 200)
		eq(t, "id", decodeWBO(t, r).str(t, "id"), "5")
	})

	t.Run("id_max_64_bytes", func(t *testing.T) {
		// 1.1 id: max 64 bytes; PUT -> 400 8 (2.4 step 5); POST -> "invalid id".
		id64 := strings.Repeat("a", 64)
		id65 := strings.Repeat("b", 65)
		a.put(t, "ids", id64, map[string]any{"payload": "x"})
		wantCode(t, a.do(t, "PUT", "storage/ids/"+id65, map[string]any{"payload": "x"}), 400, 8)
		want(t, a.do(t, "GET", "storage/ids/"+id65, nil), 404)
		r := a.do(t, "POST", "storage/ids", []map[string]any{{"id": id65, "payload": "x"}})
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "failed", b.Failed, map[string][]string{id65: {"invalid id"}})
		eq(t, "success", b.Success, []string{})
		want(t, a.do(t, "GET", "storage/ids/"+id65, nil), 404)
	})

	t.Run("id_in_body_ignored_on_put", func(t *testing.T) {
		// 2.4: "The id comes from the URL; an id inside the body is ignored."
		a.put(t, "ids", "real", map[string]any{"id": "other", "payload": "p"})
		r := a.do(t, "GET", "storage/ids/real", nil)
		want(t, r, 200)
		eq(t, "id", decodeWBO(t, r).str(t, "id"), "real")
		want(t, a.do(t, "GET", "storage/ids/other", nil), 404)
	})

	t.Run("modified_ignored_on_input", func(t *testing.T) {
		// 1.1 modified: ignored on input [Otest testAdd_ClientCannotSetModified].
		ts := a.put(t, "mod", "m", json.RawMessage(`{"payload": "x", "modified": 1234.5}`))
		r := a.do(t, "GET", "storage/mod/m", nil)
		want(t, r, 200)
		eq(t, "modified", string(decodeWBO(t, r)["modified"]), ts)
	})

	t.Run("sortindex", func(t *testing.T) {
		// 1.1 sortindex: integer, numeric string or float, truncated;
		// range -999999999..999999999; non-numeric invalid.
		cases := []struct {
			in   string
			want string // stored value, "" = rejected
		}{
			{`5`, "5"},
			{`"5"`, "5"},
			{`5.5`, "5"},
			{`"5.5"`, "5"},
			{`"-5"`, "-5"},
			{`-5`, "-5"},
			{`999999999`, "999999999"},
			{`-999999999`, "-999999999"},
			{`1000000000`, ""},
			{`-1000000000`, ""},
			{`"1234567890123"`, ""},
			{`"-1234567890123"`, ""},
			{`"abc"`, ""},
		}
		for i, c := range cases {
			id := fmt.Sprintf("si%d", i)
			body := json.RawMessage(`{"payload": "p", "sortindex": ` + c.in + `}`)
			r := a.do(t, "PUT", "storage/si/"+id, body)
			if c.want == "" {
				if r.Status != 400 || strings.TrimSpace(r.body()) != "8" {
					t.Errorf("sortindex %s: want 400 8: %v", c.in, r)
				}
				want(t, a.do(t, "GET", "storage/si/"+id, nil), 404)
				rp := a.do(t, "POST", "storage/si", json.RawMessage(`[{"id": "`+id+`", "payload": "p", "sortindex": `+c.in+`}]`))
				want(t, rp, 200)
				eq(t, "POST failed for sortindex "+c.in, decodeBatch(t, rp).Failed, map[string][]string{id: {"invalid sortindex"}})
				continue
			}
			if r.Status != 200 {
				t.Errorf("sortindex %s: want 200: %v", c.in, r)
				continue
			}
			g := a.do(t, "GET", "storage/si/"+id, nil)
			want(t, g, 200)
			if got := string(decodeWBO(t, g)["sortindex"]); got != c.want {
				t.Errorf("sortindex %s stored as %s, want %s", c.in, got, c.want)
			}
		}
	})

	t.Run("payload", func(t *testing.T) {
		// 1.1 payload: string only, max 262144 bytes of UTF-8, empty allowed.
		a.put(t, "pl", "max", map[string]any{"payload": strings.Repeat("x", 262144)})
		a.put(t, "pl", "maxutf8", map[string]any{"payload": strings.Repeat("é", 131072)})
		a.put(t, "pl", "empty", map[string]any{"payload": ""})
		r := a.do(t, "GET", "storage/pl/empty", nil)
		want(t, r, 200)
		eq(t, "empty payload", decodeWBO(t, r).str(t, "payload"), "")
		r = a.do(t, "GET", "storage/pl/maxutf8", nil)
		want(t, r, 200)
		eq(t, "utf8 payload", decodeWBO(t, r).str(t, "payload"), strings.Repeat("é", 131072))

		for name, body := range map[string]any{
			"toolarge":     map[string]any{"payload": strings.Repeat("x", 262145)},
			"toolargeutf8": map[string]any{"payload": strings.Repeat("é", 131072) + "x"},
			"object":       json.RawMessage(`{"payload": {"a": 1}}`),
			"number":       json.RawMessage(`{"payload": 42}`),
			"list":         json.RawMessage(`{"payload": ["a"]}`),
			"bool":         json.RawMessage(`{"payload": true}`),
		} {
			wantCode(t, a.do(t, "PUT", "storage/pl/"+name, body), 400, 8)
			want(t, a.do(t, "GET", "storage/pl/"+name, nil), 404)
		}
		// Batch error strings (1.1 validation rules).
		rp := a.do(t, "POST", "storage/pl", json.RawMessage(`[{"id": "n", "payload": 42}, {"id": "big", "payload": "`+strings.Repeat("y", 262145)+`"}]`))
		want(t, rp, 200)
		eq(t, "failed", decodeBatch(t, rp).Failed, map[string][]string{"n": {"payload not a string"}, "big": {"payload too large"}})
	})

	t.Run("parentid_predecessorid", func(t *testing.T) {
		// 1.1 parentid/predecessorid: string or number, max 64 bytes.
		a.put(t, "par", "n", json.RawMessage(`{"payload": "x", "parentid": 1, "predecessorid": 2}`))
		r := a.do(t, "GET", "storage/par/n", nil)
		want(t, r, 200)
		w := decodeWBO(t, r)
		eq(t, "parentid", w.str(t, "parentid"), "1")
		eq(t, "predecessorid", w.str(t, "predecessorid"), "2")
		// 2.2 parentid filter: a parentid stored from the number 1 matches parentid=1.
		eq(t, "parentid=1", a.ids(t, "storage/par?parentid=1"), []string{"n"})
		eq(t, "predecessorid=2", a.ids(t, "storage/par?predecessorid=2"), []string{"n"})

		long := strings.Repeat("p", 65)
		a.put(t, "par", "p64", map[string]any{"payload": "x", "parentid": long[:64], "predecessorid": long[:64]})
		wantCode(t, a.do(t, "PUT", "storage/par/bp", map[string]any{"payload": "x", "parentid": long}), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/par/bq", map[string]any{"payload": "x", "predecessorid": long}), 400, 8)
		rp := a.do(t, "POST", "storage/par", []map[string]any{
			{"id": "bp", "payload": "x", "parentid": long},
			{"id": "bq", "payload": "x", "predecessorid": long},
		})
		want(t, rp, 200)
		eq(t, "failed", decodeBatch(t, rp).Failed, map[string][]string{"bp": {"invalid parentid"}, "bq": {"invalid predecessorid"}})
		want(t, a.do(t, "GET", "storage/par/bp", nil), 404)
	})

	t.Run("ttl_range", func(t *testing.T) {
		// 1.1 ttl: 0..31536000; negative or larger -> invalid.
		a.put(t, "ttl", "year", map[string]any{"payload": "x", "ttl": 31536000})
		a.put(t, "ttl", "strttl", json.RawMessage(`{"payload": "x", "ttl": "100"}`))
		want(t, a.do(t, "GET", "storage/ttl/year", nil), 200)
		want(t, a.do(t, "GET", "storage/ttl/strttl", nil), 200)
		for _, bad := range []string{`-1`, `31536001`, `"abc"`} {
			wantCode(t, a.do(t, "PUT", "storage/ttl/bad", json.RawMessage(`{"payload": "x", "ttl": `+bad+`}`)), 400, 8)
		}
		want(t, a.do(t, "GET", "storage/ttl/bad", nil), 404)
		rp := a.do(t, "POST", "storage/ttl", json.RawMessage(`[{"id": "bad", "payload": "x", "ttl": -1}]`))
		want(t, rp, 200)
		eq(t, "failed", decodeBatch(t, rp).Failed, map[string][]string{"bad": {"invalid ttl"}})
	})

	t.Run("nonscalar_values", func(t *testing.T) {
		// 1.1: a list/object value makes the whole WBO invalid (2.4 step 4 -> 400 8).
		for name, body := range map[string]string{
			"listsort":   `{"payload": "x", "sortindex": [1]}`,
			"objparent":  `{"payload": "x", "parentid": {"a": 1}}`,
			"listid":     `{"id": ["1", "2"], "payload": "x"}`,
			"objunknown": `{"payload": "x", "extra": {"a": 1}}`,
		} {
			wantCode(t, a.do(t, "PUT", "storage/ns/"+name, json.RawMessage(body)), 400, 8)
			want(t, a.do(t, "GET", "storage/ns/"+name, nil), 404)
		}
	})

	t.Run("nulls_absent_unknown_dropped", func(t *testing.T) {
		// 1.1: null values are treated as absent; unknown fields silently
		// dropped; output omits null fields: only-payload record comes back
		// with exactly id, modified, payload.
		a.put(t, "nl", "x", json.RawMessage(`{"payload": "x", "sortindex": null, "parentid": null, "predecessorid": null, "ttl": null, "bogus": "y"}`))
		r := a.do(t, "GET", "storage/nl/x", nil)
		want(t, r, 200)
		eq(t, "fields", decodeWBO(t, r).keys(), []string{"id", "modified", "payload"})
	})

	t.Run("first_failing_check", func(t *testing.T) {
		// 1.1: the first failing check gives the error string, in the
		// order parentid, id, predecessorid, ttl, sortindex, payload.
		long := strings.Repeat("z", 65)
		rp := a.do(t, "POST", "storage/ff", []map[string]any{
			{"id": "a", "parentid": long, "predecessorid": long, "ttl": -1, "sortindex": "x", "payload": 1},
			{"id": "b", "predecessorid": long, "ttl": -1, "sortindex": "x", "payload": 1},
			{"id": "c", "ttl": -1, "sortindex": "x", "payload": 1},
			{"id": "d", "sortindex": "x", "payload": 1},
			{"id": "e", "payload": 1},
		})
		want(t, rp, 200)
		eq(t, "failed", decodeBatch(t, rp).Failed, map[string][]string{
			"a": {"invalid parentid"},
			"b": {"invalid predecessorid"},
			"c": {"invalid ttl"},
			"d": {"invalid sortindex"},
			"e": {"payload not a string"},
		})
	})

	t.Run("output_fields", func(t *testing.T) {
		// 1.1 Output: id, modified, sortindex, payload, parentid,
		// predecessorid; ttl and payload_size never returned.
		a.put(t, "out", "full", map[string]any{"payload": "p", "sortindex": 3, "parentid": "pa", "predecessorid": "pr", "ttl": 1000})
		r := a.do(t, "GET", "storage/out/full", nil)
		want(t, r, 200)
		wantJSONType(t, r)
		w := decodeWBO(t, r)
		eq(t, "fields", w.keys(), []string{"id", "modified", "parentid", "payload", "predecessorid", "sortindex"})
		wantStamp(t, string(w["modified"]))
		eq(t, "sortindex", string(w["sortindex"]), "3")
	})
}

// TestTTLExpiry covers 1.1 ttl expiry and 2.4's "a record whose ttl has run
// out can be overwritten normally".
func TestTTLExpiry(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	// ttl 0 is invisible at once.
	a.put(t, "t", "zero", map[string]any{"payload": "z", "ttl": 0})
	want(t, a.do(t, "GET", "storage/t/zero", nil), 404)
	eq(t, "ids after ttl 0", a.ids(t, "storage/t"), []string{})
	counts := decodeObject(t, a.do(t, "GET", "info/collection_counts", nil))
	if _, ok := counts["t"]; ok {
		t.Fatalf("collection_counts lists a collection with only expired records: %v", counts)
	}

	// ttl 1 expires; a later payload write without ttl never expires.
	a.put(t, "t", "gone", map[string]any{"payload": "g", "ttl": 1})
	a.put(t, "t", "keep", map[string]any{"payload": "k", "ttl": 1})
	a.put(t, "t", "keep", map[string]any{"payload": "k2"})
	testkit.WaitFor(t, 5*time.Second, "ttl=1 record to expire", func() bool {
		return a.do(t, "GET", "storage/t/gone", nil).Status == 404
	})
	// Expired records never returned by any query.
	eq(t, "ids", a.ids(t, "storage/t"), []string{"keep"})
	eq(t, "full ids", len(decodeWBOs(t, a.do(t, "GET", "storage/t?full=1", nil))), 1)
	eq(t, "ids filter", a.ids(t, "storage/t?ids=gone,zero"), []string{})
	want(t, a.do(t, "GET", "storage/t/keep", nil), 200)
	cr := a.do(t, "GET", "info/collection_counts", nil)
	eq(t, "count", string(decodeObject(t, cr)["t"]), "1")

	// Expired records can be overwritten via PUT [Stest test_that_expired_items_can_be_overwritten_via_PUT].
	a.put(t, "t", "zero", map[string]any{"payload": "again"})
	r := a.do(t, "GET", "storage/t/zero", nil)
	want(t, r, 200)
	eq(t, "payload", decodeWBO(t, r).str(t, "payload"), "again")
	a.put(t, "t", "gone", map[string]any{"payload": "back", "ttl": 100})
	want(t, a.do(t, "GET", "storage/t/gone", nil), 200)
}

// TestTimestamps covers weave-api.md 1.2.
func TestTimestamps(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	t.Run("put_body_equals_header", func(t *testing.T) {
		// 1.2: PUT body and X-Weave-Timestamp identical, 2 decimals;
		// each write strictly later than the last (refinement).
		var last int64
		for i := 0; i < 50; i++ {
			r := a.do(t, "PUT", "storage/ts/x", map[string]any{"payload": strconv.Itoa(i)})
			want(t, r, 200)
			wantJSONType(t, r)
			h := wantTimestampHeader(t, r)
			if r.body() != h {
				t.Fatalf("PUT body %q != X-Weave-Timestamp %q", r.body(), h)
			}
			cs := stampCS(t, h)
			if cs <= last {
				t.Fatalf("write %d got timestamp %s, not after %s", i, h, csStamp(last))
			}
			last = cs
		}
	})

	t.Run("post_shares_one_timestamp", func(t *testing.T) {
		// 1.2: all WBOs of a POST get the same modified.
		r := a.do(t, "POST", "storage/tp", []map[string]any{{"id": "a", "payload": "1"}, {"id": "b", "payload": "2"}, {"id": "c", "payload": "3"}})
		want(t, r, 200)
		b := decodeBatch(t, r)
		h := wantTimestampHeader(t, r)
		eq(t, "modified vs header", string(b.Modified), h)
		for _, w := range decodeWBOs(t, a.do(t, "GET", "storage/tp?full=1", nil)) {
			eq(t, "modified of "+w.str(t, "id"), string(w["modified"]), h)
		}
	})

	t.Run("timestamps_everywhere_two_decimals", func(t *testing.T) {
		// 1.2 / 3.2: X-Weave-Timestamp on every successful response, 2 decimals.
		for _, rel := range []string{"info/collections", "info/collection_counts", "info/collection_usage", "info/quota", "storage/tp", "storage/tp/a"} {
			wantTimestampHeader(t, a.do(t, "GET", rel, nil))
		}
		r := a.do(t, "GET", "info/collections", nil)
		for k, v := range decodeObject(t, r) {
			if !stampRE.MatchString(string(v)) {
				t.Errorf("info/collections[%s] = %s, want 2-decimal number", k, v)
			}
		}
		d := a.do(t, "DELETE", "storage/tp/c", nil)
		want(t, d, 200)
		eq(t, "DELETE body vs header", d.body(), wantTimestampHeader(t, d))
	})

	t.Run("client_timestamps_rounded", func(t *testing.T) {
		// 1.2: newer/older/X-If-Unmodified-Since parsed as decimals and
		// rounded to 2 places; %f with 6 decimals accepted.
		ts := a.put(t, "tr", "r", map[string]any{"payload": "x"})
		cs := stampCS(t, ts)
		six := fmt.Sprintf("%s0000", ts) // same value, 6 decimals
		eq(t, "newer=ts(6 decimals) strict", a.ids(t, "storage/tr?newer="+six), []string{})
		below := csStamp(cs-1) + "4999" // rounds down to ts-0.01
		eq(t, "newer rounds down", a.ids(t, "storage/tr?newer="+below), []string{"r"})
		up := csStamp(cs-1) + "6000" // rounds up to ts
		eq(t, "newer rounds up", a.ids(t, "storage/tr?newer="+up), []string{})
		// Exactly half a centisecond rounds half to even.
		half := csStamp(cs-1) + "5"
		wantIDs := []string{}
		if (cs-1)%2 == 0 { // rounds down to ts-0.01: the record is newer
			wantIDs = []string{"r"}
		}
		eq(t, "newer="+half+" (half to even)", a.ids(t, "storage/tr?newer="+half), wantIDs)
		want(t, a.do(t, "PUT", "storage/tr/r2", map[string]any{"payload": "y"}, "X-If-Unmodified-Since", up), 200)
	})

	t.Run("two_writes_no_pause_then_412", func(t *testing.T) {
		// 1.2 refinement [oldweave testAddMultiple_IfUnmodifiedSince_Modified].
		t1 := a.put(t, "tw", "a", map[string]any{"payload": "1"})
		t2 := a.put(t, "tw", "b", map[string]any{"payload": "2"})
		if stampCS(t, t2) <= stampCS(t, t1) {
			t.Fatalf("second write %s not after first %s", t2, t1)
		}
		r := a.do(t, "POST", "storage/tw", []map[string]any{{"id": "c", "payload": "3"}}, "X-If-Unmodified-Since", t1)
		want(t, r, 412)
		want(t, a.do(t, "GET", "storage/tw/c", nil), 404)
	})
}

// TestCollections covers weave-api.md 1.3.
func TestCollections(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	t.Run("names", func(t *testing.T) {
		// 1.3: collection name [a-zA-Z0-9._-]+, max 32 characters.
		name32 := "Ab0._-" + strings.Repeat("c", 26)
		a.put(t, name32, "x", map[string]any{"payload": "p"})
		if _, ok := decodeObject(t, a.do(t, "GET", "info/collections", nil))[name32]; !ok {
			t.Fatalf("32-char collection %q not listed", name32)
		}
		name33 := strings.Repeat("d", 33)
		r := a.do(t, "PUT", "storage/"+name33+"/x", map[string]any{"payload": "p"})
		if r.Status < 400 || r.Status >= 500 {
			t.Errorf("33-char collection name: want a 4xx: %v", r)
		}
		r = a.do(t, "PUT", "storage/bad!name/x", map[string]any{"payload": "p"})
		if r.Status != 404 && r.Status != 400 {
			t.Errorf("collection with '!': want 404 (route does not match): %v", r)
		}
		cols := decodeObject(t, a.do(t, "GET", "info/collections", nil))
		for k := range cols {
			if k != name32 {
				t.Errorf("unexpected collection %q stored", k)
			}
		}
	})

	t.Run("empty_post_creates_nothing", func(t *testing.T) {
		// 1.3: an empty POST ([]) does not create anything visible.
		r := a.do(t, "POST", "storage/emptypost", []any{})
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "success", b.Success, []string{})
		eq(t, "failed", len(b.Failed), 0)
		for _, info := range []string{"info/collections", "info/collection_counts", "info/collection_usage"} {
			if _, ok := decodeObject(t, a.do(t, "GET", info, nil))["emptypost"]; ok {
				t.Errorf("%s lists a collection created by an empty POST", info)
			}
		}
	})

	t.Run("deleted_collection_disappears", func(t *testing.T) {
		// 1.3: a collection whose records are all deleted disappears from info/*.
		a.put(t, "vanish", "1", map[string]any{"payload": "p"})
		a.put(t, "vanish", "2", map[string]any{"payload": "p"})
		want(t, a.do(t, "DELETE", "storage/vanish/1", nil), 200)
		want(t, a.do(t, "DELETE", "storage/vanish/2", nil), 200)
		for _, info := range []string{"info/collections", "info/collection_counts", "info/collection_usage"} {
			if _, ok := decodeObject(t, a.do(t, "GET", info, nil))["vanish"]; ok {
				t.Errorf("%s still lists an emptied collection", info)
			}
		}
	})

	t.Run("missing_collection_is_empty_list", func(t *testing.T) {
		// 1.3: GET of a collection with no records -> 200 [].
		r := a.do(t, "GET", "storage/neverwritten", nil)
		want(t, r, 200)
		eq(t, "body", strings.TrimSpace(r.body()), "[]")
		eq(t, "X-Weave-Records", r.Header.Get("X-Weave-Records"), "0")
	})

	t.Run("user_name_in_path", func(t *testing.T) {
		// 1.3: user name in storage paths [a-zA-Z0-9._-]+; anything else is no route.
		r := s.do(t, "GET", "/1.1/bad!user/info/collections", nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
		if r.Status != 404 && r.Status != 400 && r.Status != 401 {
			t.Errorf("bad user name in path: want 404/400/401: %v", r)
		}
	})
}

// TestRouting covers the endpoint table of weave-api.md section 2 under all
// three path prefixes, trailing slashes, the heartbeat, 404/405 and item
// ids with odd characters.
func TestRouting(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	t.Run("heartbeat", func(t *testing.T) {
		// 2: GET|HEAD /__heartbeat__ -> 200, no auth.
		want(t, s.do(t, "GET", "/__heartbeat__", nil), 200)
		want(t, s.do(t, "HEAD", "/__heartbeat__", nil), 200)
	})

	for _, ver := range versions {
		for _, slash := range []string{"", "/"} {
			ver, slash := ver, slash
			t.Run("endpoints_"+ver+"_slash"+strconv.FormatBool(slash != ""), func(t *testing.T) {
				// 2 table rows 1-12 under /1.0/, /1, /1.1/; a trailing slash is ignored.
				v := a.with(ver)
				coll := "r" + strings.ReplaceAll(ver, ".", "") + strconv.FormatBool(slash != "")
				do := func(method, rel string, body any, hdr ...string) reply {
					return v.do(t, method, rel+slash, body, hdr...)
				}
				// row 10 PUT item
				r := do("PUT", "storage/"+coll+"/one", map[string]any{"payload": "1"})
				want(t, r, 200)
				eq(t, "PUT body", r.body(), wantTimestampHeader(t, r))
				// row 6 POST
				r = do("POST", "storage/"+coll, []map[string]any{{"id": "two", "payload": "2"}})
				want(t, r, 200)
				eq(t, "POST success", decodeBatch(t, r).Success, []string{"two"})
				// row 7 PUT collection = POST
				r = do("PUT", "storage/"+coll, []map[string]any{{"id": "three", "payload": "3"}})
				want(t, r, 200)
				eq(t, "PUT coll success", decodeBatch(t, r).Success, []string{"three"})
				// row 5 GET collection
				r = do("GET", "storage/"+coll, nil)
				want(t, r, 200)
				eq(t, "ids", decodeIDs(t, r), []string{"one", "two", "three"})
				// row 9 GET item
				r = do("GET", "storage/"+coll+"/two", nil)
				want(t, r, 200)
				eq(t, "payload", decodeWBO(t, r).str(t, "payload"), "2")
				// rows 1-4 info
				r = do("GET", "info/collections", nil)
				want(t, r, 200)
				if _, ok := decodeObject(t, r)[coll]; !ok {
					t.Fatalf("info/collections lacks %s: %v", coll, r)
				}
				r = do("GET", "info/collection_counts", nil)
				want(t, r, 200)
				eq(t, "count", string(decodeObject(t, r)[coll]), "3")
				r = do("GET", "info/collection_usage", nil)
				want(t, r, 200)
				r = do("GET", "info/quota", nil)
				want(t, r, 200)
				// row 11 DELETE item
				r = do("DELETE", "storage/"+coll+"/one", nil)
				want(t, r, 200)
				eq(t, "DELETE item body", r.body(), wantTimestampHeader(t, r))
				want(t, do("GET", "storage/"+coll+"/one", nil), 404)
				// row 8 DELETE collection
				r = do("DELETE", "storage/"+coll, nil)
				want(t, r, 200)
				eq(t, "DELETE coll body", r.body(), wantTimestampHeader(t, r))
				eq(t, "ids after delete", decodeIDs(t, do("GET", "storage/"+coll, nil)), []string{})
			})
		}
	}

	t.Run("delete_storage_all_prefixes", func(t *testing.T) {
		// row 12 DELETE /storage under each prefix (and with a trailing slash).
		for _, ver := range versions {
			for _, slash := range []string{"", "/"} {
				b := s.newAccount(t).with(ver)
				b.put(t, "c", "x", map[string]any{"payload": "p"})
				r := b.do(t, "DELETE", "storage"+slash, nil, "X-Confirm-Delete", "1")
				want(t, r, 200)
				eq(t, "DELETE storage body", r.body(), wantTimestampHeader(t, r))
				eq(t, "collections", strings.TrimSpace(b.do(t, "GET", "info/collections", nil).body()), "{}")
			}
		}
	})

	t.Run("not_found", func(t *testing.T) {
		// 2: unknown path -> 404.
		for _, p := range []string{
			"/nothing/here",
			"/2.0/" + a.Name + "/info/collections",
			"/1.1/" + a.Name + "/bogus",
			"/1.1/" + a.Name + "/info/bogus",
			"/1.1/" + a.Name + "/storage/c/id/extra",
		} {
			want(t, s.do(t, "GET", p, nil, "Authorization", testkit.BasicAuth(a.Name, a.Password)), 404)
		}
		// [Otest testAdd_EmptyCollection]: PUT /{ver}/{user}/storage/ -> 404.
		for _, ver := range versions {
			want(t, s.do(t, "PUT", "/"+ver+"/"+a.Name+"/storage/", map[string]any{"payload": "x"}, "Authorization", testkit.BasicAuth(a.Name, a.Password)), 404)
		}
	})

	t.Run("method_not_allowed", func(t *testing.T) {
		// 2: a path that exists with another method -> 405.
		for _, c := range []struct{ method, rel string }{
			{"POST", "info/collections"},
			{"PUT", "info/collection_counts"},
			{"DELETE", "info/quota"},
			{"POST", "info/collection_usage"},
			{"PATCH", "storage/c"},
			{"POST", "storage/c/id"},
			{"PATCH", "storage/c/id"},
			{"POST", "storage"},
			{"GET", "storage"},
		} {
			r := a.do(t, c.method, c.rel, nil)
			if r.Status != 405 {
				t.Errorf("%s %s: want 405: %v", c.method, c.rel, r)
			}
		}
	})

	t.Run("head_user_root", func(t *testing.T) {
		// [Otest testBadMethod]: HEAD /{ver}/{user} -> any 4xx/5xx.
		r := a.do(t, "HEAD", "", nil)
		r2 := s.do(t, "HEAD", "/1.0/"+a.Name, nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
		for _, x := range []reply{r, r2} {
			if x.Status < 400 {
				t.Errorf("HEAD user root: want an error status: %v", x)
			}
		}
	})

	t.Run("weird_ids", func(t *testing.T) {
		// 2: %23 (#), %3F (?), ~ and %5C (\) must round-trip (400 accepted,
		// 404 or another record is not).
		for _, c := range []struct{ enc, id string }{
			{"%23hash", "#hash"},
			{"q%3Fmark", "q?mark"},
			{"tilde~", "tilde~"},
			{"back%5Cslash", `back\slash`},
		} {
			payload := "payload of " + c.id
			r := a.do(t, "PUT", "storage/weird/"+c.enc, map[string]any{"payload": payload})
			if r.Status == 400 {
				t.Logf("id %q refused with 400 (accepted by the old suite)", c.id)
				continue
			}
			want(t, r, 200)
			g := a.do(t, "GET", "storage/weird/"+c.enc, nil)
			want(t, g, 200)
			w := decodeWBO(t, g)
			eq(t, "id", w.str(t, "id"), c.id)
			eq(t, "payload", w.str(t, "payload"), payload)
			found := false
			for _, id := range a.ids(t, "storage/weird") {
				if id == c.id {
					found = true
				}
			}
			if !found {
				t.Errorf("id %q not in collection listing", c.id)
			}
			want(t, a.do(t, "DELETE", "storage/weird/"+c.enc, nil), 200)
			want(t, a.do(t, "GET", "storage/weird/"+c.enc, nil), 404)
		}
	})
}

// TestInfo covers weave-api.md 2.1.
func TestInfo(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	// Fresh account: everything empty; quota [0, null] with quotas off.
	r := a.do(t, "GET", "info/collections", nil)
	want(t, r, 200)
	wantJSONType(t, r)
	eq(t, "empty collections", strings.TrimSpace(r.body()), "{}")
	eq(t, "X-Weave-Records", r.Header.Get("X-Weave-Records"), "0")
	var q []any
	r = a.do(t, "GET", "info/quota", nil)
	want(t, r, 200)
	if err := json.Unmarshal(r.Body, &q); err != nil || len(q) != 2 || q[1] != nil {
		t.Fatalf("info/quota with quotas off: want [used, null]: %v", r)
	}
	if q[0].(float64) != 0 {
		t.Fatalf("info/quota used %v on an empty account", q[0])
	}

	// 3.2: no X-Weave-Quota-Remaining when quotas are off.
	r = a.do(t, "PUT", "storage/c1/a", map[string]any{"payload": "abc"})
	want(t, r, 200)
	if h := r.Header.Get("X-Weave-Quota-Remaining"); h != "" {
		t.Errorf("X-Weave-Quota-Remaining %q with quotas off", h)
	}
	t1 := a.put(t, "c1", "a", map[string]any{"payload": "abc"})
	t2 := a.post(t, "c2", []map[string]any{{"id": "a", "payload": strings.Repeat("x", 500)}, {"id": "b", "payload": "12"}}).Modified
	t3 := a.put(t, "c2", "c", map[string]any{"payload": ""})

	t.Run("collections", func(t *testing.T) {
		// 2.1: each collection -> largest modified; X-Weave-Records = keys;
		// extra query parameters ignored.
		for _, q := range []string{"", "?client=FxHome&v=1.1b2"} {
			r := a.do(t, "GET", "info/collections"+q, nil)
			want(t, r, 200)
			m := decodeObject(t, r)
			eq(t, "collections", map[string]string{"c1": string(m["c1"]), "c2": string(m["c2"])}, map[string]string{"c1": t1, "c2": t3})
			eq(t, "keys", len(m), 2)
			eq(t, "X-Weave-Records", r.Header.Get("X-Weave-Records"), "2")
		}
		_ = t2
	})

	t.Run("collection_counts", func(t *testing.T) {
		// 2.1: collection -> number of live records as a JSON integer.
		r := a.do(t, "GET", "info/collection_counts", nil)
		want(t, r, 200)
		wantJSONType(t, r)
		m := decodeObject(t, r)
		eq(t, "counts", map[string]string{"c1": string(m["c1"]), "c2": string(m["c2"])}, map[string]string{"c1": "1", "c2": "3"})
		eq(t, "keys", len(m), 2)
		eq(t, "X-Weave-Records", r.Header.Get("X-Weave-Records"), "2")
	})

	t.Run("collection_usage", func(t *testing.T) {
		// 2.1: collection -> live payload bytes / 1024 as a float; no X-Weave-Records.
		r := a.do(t, "GET", "info/collection_usage", nil)
		want(t, r, 200)
		wantJSONType(t, r)
		var m map[string]float64
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatalf("usage: %v: %v", err, r)
		}
		eq(t, "usage", m, map[string]float64{"c1": 3.0 / 1024, "c2": 502.0 / 1024})
		if h := r.Header.Get("X-Weave-Records"); h != "" {
			t.Errorf("collection_usage carries X-Weave-Records %q", h)
		}
	})

	t.Run("quota_grows_by_payload", func(t *testing.T) {
		// 2.1 [Stest test_quota]: a new 500-byte payload grows used by exactly 500/1024.
		before := quota(t, a)
		a.put(t, "c3", "new", map[string]any{"payload": strings.Repeat("q", 500)})
		after := quota(t, a)
		if got := after[0] - before[0]; got != 500.0/1024 {
			t.Fatalf("quota grew by %v KB, want %v", got, 500.0/1024)
		}
		eq(t, "used", after[0], (3.0+502+500)/1024)
	})
}

// quota reads info/quota as [used, limit] (limit -1 for null).
func quota(t testing.TB, a *account) [2]float64 {
	t.Helper()
	r := a.do(t, "GET", "info/quota", nil)
	want(t, r, 200)
	wantJSONType(t, r)
	var q []*float64
	if err := json.Unmarshal(r.Body, &q); err != nil || len(q) != 2 || q[0] == nil {
		t.Fatalf("info/quota: want [used, limit]: %v", r)
	}
	out := [2]float64{*q[0], -1}
	if q[1] != nil {
		out[1] = *q[1]
	}
	return out
}

// TestGetCollection covers weave-api.md 2.2: filters, ordering, output
// formats.
func TestGetCollection(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	// Ten records 0..9 inserted in order by one POST.
	var ten []map[string]any
	for i := 0; i < 10; i++ {
		ten = append(ten, map[string]any{"id": strconv.Itoa(i), "payload": "p" + strconv.Itoa(i)})
	}
	a.post(t, "ten", ten)

	t.Run("ids_and_full", func(t *testing.T) {
		// 2.2: ids without full; WBOs with full=1; X-Weave-Records = entries.
		r := a.do(t, "GET", "storage/ten", nil)
		want(t, r, 200)
		wantJSONType(t, r)
		eq(t, "ids", decodeIDs(t, r), []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"})
		eq(t, "X-Weave-Records", r.Header.Get("X-Weave-Records"), "10")
		r = a.do(t, "GET", "storage/ten?full=1&limit=3", nil)
		want(t, r, 200)
		ws := decodeWBOs(t, r)
		eq(t, "full count", len(ws), 3)
		eq(t, "X-Weave-Records", r.Header.Get("X-Weave-Records"), "3")
		for i, w := range ws {
			eq(t, "fields", w.keys(), []string{"id", "modified", "payload"})
			eq(t, "id", w.str(t, "id"), strconv.Itoa(i))
			eq(t, "payload", w.str(t, "payload"), "p"+strconv.Itoa(i))
		}
		// full present but empty -> ids only.
		eq(t, "full=", a.ids(t, "storage/ten?full=&limit=2"), []string{"0", "1"})
	})

	t.Run("limit_offset", func(t *testing.T) {
		// 2.2 limit/offset rules [Stest test_get_collection; Otest testGet_Limit/Offset_*].
		cases := []struct {
			q    string
			want []string
		}{
			{"limit=3&offset=2", []string{"2", "3", "4"}},
			{"limit=3", []string{"0", "1", "2"}},
			{"offset=2", []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
			{"limit=0", []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
			{"limit=-1", []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
			{"limit=2&offset=-1", []string{"0", "1"}},
			{"limit=2&offset=0", []string{"0", "1"}},
			{"limit=3&offset=20", []string{}},
			{"limit=3&offset=8", []string{"8", "9"}},
			{"limit=100", []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
		}
		for _, c := range cases {
			r := a.do(t, "GET", "storage/ten?"+c.q, nil)
			want(t, r, 200)
			eq(t, c.q, decodeIDs(t, r), c.want)
			eq(t, c.q+" X-Weave-Records", r.Header.Get("X-Weave-Records"), strconv.Itoa(len(c.want)))
		}
	})

	t.Run("ids_filter", func(t *testing.T) {
		// 2.2 ids: keep listed ids (insertion order); unknown long ids -> [].
		eq(t, "ids=7,2,5", a.ids(t, "storage/ten?ids=7,2,5"), []string{"2", "5", "7"})
		var long []string
		for i := 0; i < 10; i++ {
			long = append(long, strings.Repeat(strconv.Itoa(i), 100))
		}
		eq(t, "long ids", a.ids(t, "storage/ten?ids="+strings.Join(long, ",")), []string{})
		// GUID-style ids with braces [Stest test_guid_deletion].
		guid := "{6820f3ca-6e8a-4bba-a8c8-0e1c1ff1bd53}"
		a.put(t, "guid", url.PathEscape(guid), map[string]any{"payload": "g"})
		eq(t, "guid", a.ids(t, "storage/guid?ids="+url.QueryEscape(guid)), []string{guid})
	})

	t.Run("parentid_predecessorid", func(t *testing.T) {
		// 2.2 parentid / predecessorid: equality filters.
		a.post(t, "fam", []map[string]any{
			{"id": "a", "payload": "x", "parentid": "P", "predecessorid": "Q"},
			{"id": "b", "payload": "x", "parentid": "P"},
			{"id": "c", "payload": "x", "predecessorid": "Q"},
			{"id": "d", "payload": "x"},
		})
		eq(t, "parentid=P", a.ids(t, "storage/fam?parentid=P"), []string{"a", "b"})
		eq(t, "predecessorid=Q", a.ids(t, "storage/fam?predecessorid=Q"), []string{"a", "c"})
		eq(t, "both", a.ids(t, "storage/fam?parentid=P&predecessorid=Q"), []string{"a"})
		eq(t, "no match", a.ids(t, "storage/fam?parentid=Z"), []string{})
	})

	t.Run("older_newer_strict", func(t *testing.T) {
		// 2.2 older (strict <), newer (strict >) [Stest test_strict_newer].
		t1 := a.put(t, "on", "1", map[string]any{"payload": "x"})
		t2 := a.put(t, "on", "2", map[string]any{"payload": "x"})
		t3 := a.put(t, "on", "3", map[string]any{"payload": "x"})
		eq(t, "newer=t1", a.ids(t, "storage/on?newer="+t1), []string{"2", "3"})
		eq(t, "newer=t3", a.ids(t, "storage/on?newer="+t3), []string{})
		eq(t, "older=t3", a.ids(t, "storage/on?older="+t3), []string{"1", "2"})
		eq(t, "older=t1", a.ids(t, "storage/on?older="+t1), []string{})
		eq(t, "newer=t1&older=t3", a.ids(t, "storage/on?newer="+t1+"&older="+t3), []string{"2"})
		eq(t, "newer=t2&older=t3", a.ids(t, "storage/on?newer="+t2+"&older="+t3), []string{})
		eq(t, "newer=0", a.ids(t, "storage/on?newer=0"), []string{"1", "2", "3"})
	})

	t.Run("index_above_below", func(t *testing.T) {
		// 2.2 index_above/index_below strict; no sortindex never matches.
		a.post(t, "idx", []map[string]any{
			{"id": "n", "payload": "x"},
			{"id": "s1", "payload": "x", "sortindex": 1},
			{"id": "s5", "payload": "x", "sortindex": 5},
			{"id": "s10", "payload": "x", "sortindex": 10},
		})
		eq(t, "index_above=1", a.ids(t, "storage/idx?index_above=1"), []string{"s5", "s10"})
		eq(t, "index_below=10", a.ids(t, "storage/idx?index_below=10"), []string{"s1", "s5"})
		eq(t, "index_above=-100", a.ids(t, "storage/idx?index_above=-100"), []string{"s1", "s5", "s10"})
		eq(t, "index_below=100", a.ids(t, "storage/idx?index_below=100"), []string{"s1", "s5", "s10"})
		eq(t, "both", a.ids(t, "storage/idx?index_above=1&index_below=10"), []string{"s5"})
	})

	t.Run("sort", func(t *testing.T) {
		// 2.2 sort: oldest/newest by modified, index = sortindex desc,
		// other values ignored; default insertion order, an update keeps
		// the record's place.
		a.put(t, "so", "a", map[string]any{"payload": "x", "sortindex": 1})
		a.put(t, "so", "b", map[string]any{"payload": "x", "sortindex": 3})
		a.put(t, "so", "c", map[string]any{"payload": "x", "sortindex": 2})
		a.put(t, "so", "a", map[string]any{"payload": "y", "sortindex": 1})
		eq(t, "default", a.ids(t, "storage/so"), []string{"a", "b", "c"})
		eq(t, "oldest", a.ids(t, "storage/so?sort=oldest"), []string{"b", "c", "a"})
		eq(t, "newest", a.ids(t, "storage/so?sort=newest"), []string{"a", "c", "b"})
		eq(t, "index", a.ids(t, "storage/so?sort=index"), []string{"b", "c", "a"})
		eq(t, "bogus", a.ids(t, "storage/so?sort=bogus"), []string{"a", "b", "c"})
		// Example of 2.2: sortindex 1,34,12 for ids 0,1,2 -> 1,2,0.
		a.post(t, "so2", []map[string]any{{"id": "0", "payload": "x", "sortindex": 1}, {"id": "1", "payload": "x", "sortindex": 34}, {"id": "2", "payload": "x", "sortindex": 12}})
		eq(t, "index example", a.ids(t, "storage/so2?sort=index"), []string{"1", "2", "0"})
	})

	t.Run("sort_offset_limit", func(t *testing.T) {
		// 2.2 sort, then offset, then limit [Otest testGet_Offset].
		a.post(t, "sol", []map[string]any{
			{"id": "1", "payload": "x", "sortindex": 1}, {"id": "2", "payload": "x", "sortindex": 2},
			{"id": "3", "payload": "x", "sortindex": 3}, {"id": "4", "payload": "x", "sortindex": 4},
		})
		eq(t, "sort=index&limit=2&offset=2", a.ids(t, "storage/sol?sort=index&limit=2&offset=2"), []string{"2", "1"})
		eq(t, "sort=index&limit=2", a.ids(t, "storage/sol?sort=index&limit=2"), []string{"4", "3"})
	})

	t.Run("invalid_values_400", func(t *testing.T) {
		// 2.2: unparseable numbers -> 400 (empty body); unknown params ignored.
		for _, q := range []string{"older=abc", "newer=abc", "index_above=x", "index_below=x", "limit=x", "offset=x&limit=2", "offset=x", "limit=1.5"} {
			r := a.do(t, "GET", "storage/ten?"+q, nil)
			want(t, r, 400)
			if len(strings.TrimSpace(r.body())) != 0 {
				t.Errorf("%s: want an empty 400 body: %v", q, r)
			}
		}
		eq(t, "unknown param", a.ids(t, "storage/ten?bogus=1&limit=1"), []string{"0"})
	})

	t.Run("formats", func(t *testing.T) {
		// 2.2 output formats chosen by Accept.
		a.post(t, "fmt", []map[string]any{{"id": "id1", "payload": "a\nb"}, {"id": "id2", "payload": "c"}})
		// whoisi exact bytes [Otest testGet_whoisi].
		r := a.do(t, "GET", "storage/fmt", nil, "Accept", "application/whoisi")
		want(t, r, 200)
		eq(t, "whoisi bytes", r.Body, []byte("\x00\x00\x00\x05\"id1\"\x00\x00\x00\x05\"id2\""))
		eq(t, "whoisi type", strings.Split(r.Header.Get("Content-Type"), ";")[0], "application/whoisi")
		eq(t, "whoisi X-Weave-Records", r.Header.Get("X-Weave-Records"), "2")
		// whoisi full: each element length-prefixed JSON object.
		r = a.do(t, "GET", "storage/fmt?full=1", nil, "Accept", "application/whoisi")
		want(t, r, 200)
		rest := r.Body
		var got []string
		for len(rest) > 0 {
			if len(rest) < 4 {
				t.Fatalf("truncated whoisi: %q", r.Body)
			}
			n := int(rest[0])<<24 | int(rest[1])<<16 | int(rest[2])<<8 | int(rest[3])
			if len(rest) < 4+n {
				t.Fatalf("truncated whoisi element: %q", r.Body)
			}
			var w map[string]any
			if err := json.Unmarshal(rest[4:4+n], &w); err != nil {
				t.Fatalf("whoisi element %q: %v", rest[4:4+n], err)
			}
			got = append(got, w["payload"].(string))
			rest = rest[4+n:]
		}
		eq(t, "whoisi payloads", got, []string{"a\nb", "c"})

		// newlines: one JSON text per element, each followed by \n.
		r = a.do(t, "GET", "storage/fmt", nil, "Accept", "application/newlines")
		want(t, r, 200)
		eq(t, "newlines ids", r.body(), "\"id1\"\n\"id2\"\n")
		eq(t, "newlines type", strings.Split(r.Header.Get("Content-Type"), ";")[0], "application/newlines")
		r = a.do(t, "GET", "storage/fmt?full=1", nil, "Accept", "application/newlines")
		want(t, r, 200)
		lines := strings.Split(strings.TrimSuffix(r.body(), "\n"), "\n")
		if !strings.HasSuffix(r.body(), "\n") || len(lines) != 2 {
			t.Fatalf("newlines full: want 2 lines each ending in \\n: %q", r.Body)
		}
		for i, l := range lines {
			var w map[string]any
			if err := json.Unmarshal([]byte(l), &w); err != nil {
				t.Fatalf("newlines line %d %q: %v", i, l, err)
			}
			eq(t, "newlines payload", w["payload"], []string{"a\nb", "c"}[i])
		}

		// anything else -> JSON.
		for _, acc := range []string{"text/html", "*/*", "application/json"} {
			r = a.do(t, "GET", "storage/fmt", nil, "Accept", acc)
			want(t, r, 200)
			wantJSONType(t, r)
			eq(t, "json ids "+acc, decodeIDs(t, r), []string{"id1", "id2"})
		}
		// D10/D11: whoisi wins when both alternates are acceptable.
		r = a.do(t, "GET", "storage/fmt", nil, "Accept", "application/newlines, application/whoisi")
		want(t, r, 200)
		eq(t, "both acceptable", strings.Split(r.Header.Get("Content-Type"), ";")[0], "application/whoisi")
	})
}

// TestItems covers weave-api.md 2.3 (GET item) and 2.4 (PUT item).
func TestItems(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	t.Run("get_item", func(t *testing.T) {
		// 2.3: full WBO, application/json; 404 when absent; query ignored.
		ts := a.put(t, "gi", "x", map[string]any{"payload": "p", "sortindex": 2})
		for _, q := range []string{"", "?full=1", "?ids=zzz&newer=99999999999"} {
			r := a.do(t, "GET", "storage/gi/x"+q, nil)
			want(t, r, 200)
			wantJSONType(t, r)
			w := decodeWBO(t, r)
			eq(t, "modified", string(w["modified"]), ts)
			eq(t, "payload", w.str(t, "payload"), "p")
		}
		want(t, a.do(t, "GET", "storage/gi/missing", nil), 404)
		want(t, a.do(t, "GET", "storage/nocoll/missing", nil), 404)
	})

	t.Run("check_order", func(t *testing.T) {
		// 2.4 order: 412 before body parse; 6 for non-JSON; 8 for non-object.
		ts := a.put(t, "co", "x", map[string]any{"payload": "p"})
		stale := csStamp(stampCS(t, ts) - 1)
		want(t, a.do(t, "PUT", "storage/co/y", "{not json", "X-If-Unmodified-Since", stale), 412)
		wantCode(t, a.do(t, "PUT", "storage/co/y", "{not json"), 400, 6)
		wantCode(t, a.do(t, "PUT", "storage/co/y", `"notawbo"`), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/co/y", `42`), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/co/y", `[{"payload": "x"}]`), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/co/y", `{"id": ["1", "2"], "payload": "x"}`), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/co/y", `{"payload": "x", "sortindex": "abc"}`), 400, 8)
		want(t, a.do(t, "GET", "storage/co/y", nil), 404)
	})

	t.Run("payload_write_replaces", func(t *testing.T) {
		// 2.4: with payload the record is created or fully replaced in the
		// given fields and gets modified = request time.
		t1 := a.put(t, "rep", "x", map[string]any{"payload": "1", "sortindex": 5, "parentid": "p"})
		t2 := a.put(t, "rep", "x", map[string]any{"payload": "2"})
		if stampCS(t, t2) <= stampCS(t, t1) {
			t.Fatalf("rewrite stamp %s not after %s", t2, t1)
		}
		r := a.do(t, "GET", "storage/rep/x", nil)
		want(t, r, 200)
		w := decodeWBO(t, r)
		eq(t, "modified", string(w["modified"]), t2)
		eq(t, "payload", w.str(t, "payload"), "2")
	})

	t.Run("metadata_only", func(t *testing.T) {
		// 2.4: without payload only the supplied metadata changes and
		// modified is kept (sortindex, predecessorid and parentid in 1.1);
		// body is the record's existing modified.
		ts := a.put(t, "meta", "x", map[string]any{"payload": "p", "sortindex": 1, "parentid": "a", "predecessorid": "b"})
		for _, body := range []map[string]any{{"sortindex": 2}, {"parentid": "a2"}, {"predecessorid": "b2"}} {
			r := a.do(t, "PUT", "storage/meta/x", body)
			want(t, r, 200)
			eq(t, fmt.Sprintf("PUT %v body", body), r.body(), ts)
			wantTimestampHeader(t, r)
		}
		r := a.do(t, "GET", "storage/meta/x", nil)
		want(t, r, 200)
		w := decodeWBO(t, r)
		eq(t, "modified", string(w["modified"]), ts)
		eq(t, "payload", w.str(t, "payload"), "p")
		eq(t, "sortindex", string(w["sortindex"]), "2")
		eq(t, "parentid", w.str(t, "parentid"), "a2")
		eq(t, "predecessorid", w.str(t, "predecessorid"), "b2")
		// info/collections unchanged by a metadata-only write.
		eq(t, "collection stamp", string(decodeObject(t, a.do(t, "GET", "info/collections", nil))["meta"]), ts)

		// Missing record: created without payload (1.1), body null.
		r = a.do(t, "PUT", "storage/meta/new", map[string]any{"sortindex": 11})
		want(t, r, 200)
		eq(t, "new payload-less PUT body", strings.TrimSpace(r.body()), "null")
		r = a.do(t, "GET", "storage/meta/new", nil)
		want(t, r, 200)
		w = decodeWBO(t, r)
		eq(t, "sortindex", string(w["sortindex"]), "11")
		if _, ok := w["payload"]; ok {
			t.Errorf("payload-less record has a payload: %v", r)
		}
		// A later payload write stamps it.
		ts2 := a.put(t, "meta", "new", map[string]any{"payload": "now"})
		r = a.do(t, "GET", "storage/meta/new", nil)
		w = decodeWBO(t, r)
		eq(t, "modified", string(w["modified"]), ts2)
		eq(t, "sortindex kept", string(w["sortindex"]), "11")
	})
}

// TestPostBatch covers weave-api.md 2.5.
func TestPostBatch(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	t.Run("precondition_before_body", func(t *testing.T) {
		// 2.5 step 1: 412 even when the body is a single object.
		ts := a.put(t, "pb", "x", map[string]any{"payload": "p"})
		stale := csStamp(stampCS(t, ts) - 1)
		want(t, a.do(t, "POST", "storage/pb", map[string]any{"id": "y", "payload": "p"}, "X-If-Unmodified-Since", stale), 412)
		want(t, a.do(t, "POST", "storage/pb", "{garbage", "X-If-Unmodified-Since", stale), 412)
		want(t, a.do(t, "GET", "storage/pb/y", nil), 404)
	})

	t.Run("bad_bodies", func(t *testing.T) {
		// 2.5 steps 2-3.
		wantCode(t, a.do(t, "POST", "storage/pb", "{garbage"), 400, 6)
		wantCode(t, a.do(t, "POST", "storage/pb", `"notalist"`), 400, 8)
		wantCode(t, a.do(t, "POST", "storage/pb", `42`), 400, 8)
		wantCode(t, a.do(t, "POST", "storage/pb", `{"payload": "noid"}`), 400, 8)
		wantCode(t, a.do(t, "POST", "storage/pb", `{"id": "a/b", "payload": "slash"}`), 400, 8)
		eq(t, "ids", a.ids(t, "storage/pb"), []string{"x"})
	})

	t.Run("single_object_is_a_put", func(t *testing.T) {
		// 2.5 step 3: an object with an id is processed like PUT; bare timestamp.
		r := a.do(t, "POST", "storage/pb", map[string]any{"id": "single", "payload": "s"})
		want(t, r, 200)
		eq(t, "body", r.body(), wantTimestampHeader(t, r))
		g := a.do(t, "GET", "storage/pb/single", nil)
		want(t, g, 200)
		eq(t, "modified", string(decodeWBO(t, g)["modified"]), r.body())
	})

	t.Run("element_failures", func(t *testing.T) {
		// 2.5 step 4: not an object / non-scalar -> failed[""] = ["invalid wbo"];
		// no id -> failed[""] = ["invalid id"].
		r := a.do(t, "POST", "storage/ef", json.RawMessage(`[1, {"id": "ok", "payload": "p"}]`))
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "success", b.Success, []string{"ok"})
		eq(t, "failed", b.Failed, map[string][]string{"": {"invalid wbo"}})

		r = a.do(t, "POST", "storage/ef", json.RawMessage(`[{"id": "nest", "payload": "p", "parentid": {"a": 1}}]`))
		want(t, r, 200)
		b = decodeBatch(t, r)
		eq(t, "success", b.Success, []string{})
		eq(t, "failed", b.Failed, map[string][]string{"": {"invalid wbo"}})

		r = a.do(t, "POST", "storage/ef", json.RawMessage(`[{"payload": "noid"}]`))
		want(t, r, 200)
		eq(t, "failed", decodeBatch(t, r).Failed, map[string][]string{"": {"invalid id"}})

		// Several id-less failures collapse into the single key "".
		r = a.do(t, "POST", "storage/ef", json.RawMessage(`[1, "x", {"payload": "noid"}, null]`))
		want(t, r, 200)
		b = decodeBatch(t, r)
		if _, ok := b.Failed[""]; !ok || len(b.Failed) != 1 {
			t.Fatalf("failed map %v: want exactly the key \"\"", b.Failed)
		}
		eq(t, "stored", a.ids(t, "storage/ef"), []string{"ok"})
	})

	t.Run("success_in_request_order", func(t *testing.T) {
		// 2.5 step 6: success lists ids in request order; modified shared.
		r := a.do(t, "POST", "storage/ord", []map[string]any{{"id": "z", "payload": "1"}, {"id": "a", "payload": "2"}, {"id": "bad", "sortindex": "x"}, {"id": "m", "payload": "3"}})
		want(t, r, 200)
		wantJSONType(t, r)
		b := decodeBatch(t, r)
		eq(t, "success", b.Success, []string{"z", "a", "m"})
		eq(t, "failed", b.Failed, map[string][]string{"bad": {"invalid sortindex"}})
		eq(t, "X-Weave-Timestamp", wantTimestampHeader(t, r), string(b.Modified))
		eq(t, "insertion order", a.ids(t, "storage/ord"), []string{"z", "a", "m"})
	})

	t.Run("later_duplicate_wins", func(t *testing.T) {
		a.post(t, "dup", []map[string]any{{"id": "d", "payload": "1"}, {"id": "d", "payload": "2"}})
		r := a.do(t, "GET", "storage/dup/d", nil)
		want(t, r, 200)
		eq(t, "payload", decodeWBO(t, r).str(t, "payload"), "2")
	})

	t.Run("105_items", func(t *testing.T) {
		// 2.5 [Stest test_batch]: 105 items -> 100 success, 5 "retry wbo".
		var items []map[string]any
		for i := 0; i < 105; i++ {
			items = append(items, map[string]any{"id": strconv.Itoa(i), "payload": "x"})
		}
		r := a.do(t, "POST", "storage/b105", items)
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "success count", len(b.Success), 100)
		for i, id := range b.Success {
			eq(t, "success id", id, strconv.Itoa(i))
		}
		wantFailed := map[string][]string{}
		for i := 100; i < 105; i++ {
			wantFailed[strconv.Itoa(i)] = []string{"retry wbo"}
		}
		eq(t, "failed", b.Failed, wantFailed)
		eq(t, "stored count", len(a.ids(t, "storage/b105")), 100)
	})

	t.Run("5x210KiB", func(t *testing.T) {
		// 2.5 [Stest test_batch]: 5 x 210 KiB -> 4 success, 1 "retry bytes".
		var items []map[string]any
		for i := 0; i < 5; i++ {
			items = append(items, map[string]any{"id": strconv.Itoa(i), "payload": strings.Repeat("x", 210*1024)})
		}
		r := a.do(t, "POST", "storage/bbytes", items)
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "success", b.Success, []string{"0", "1", "2", "3"})
		eq(t, "failed", b.Failed, map[string][]string{"4": {"retry bytes"}})
		eq(t, "stored", a.ids(t, "storage/bbytes"), []string{"0", "1", "2", "3"})
	})

	t.Run("metadata_only_in_batch", func(t *testing.T) {
		// 2.5 step 4: no payload -> metadata update as in PUT, counted success.
		ts := a.put(t, "mb", "modifyme", map[string]any{"payload": "p", "sortindex": 1})
		r := a.do(t, "POST", "storage/mb", []map[string]any{{"id": "modifyme", "sortindex": 7}, {"id": "fresh", "predecessorid": "q"}})
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "success", b.Success, []string{"modifyme", "fresh"})
		g := decodeWBO(t, a.do(t, "GET", "storage/mb/modifyme", nil))
		eq(t, "modified kept", string(g["modified"]), ts)
		eq(t, "sortindex", string(g["sortindex"]), "7")
		eq(t, "payload kept", g.str(t, "payload"), "p")
		g = decodeWBO(t, a.do(t, "GET", "storage/mb/fresh", nil))
		eq(t, "fresh predecessorid", g.str(t, "predecessorid"), "q")
	})

	t.Run("empty_array", func(t *testing.T) {
		// 2.5 step 6: an empty array is valid and stores nothing.
		r := a.do(t, "POST", "storage/emptyb", "[]")
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "success", b.Success, []string{})
		eq(t, "failed", len(b.Failed), 0)
	})

	t.Run("put_collection_is_post", func(t *testing.T) {
		// 2 row 7: PUT storage/{coll} = POST.
		r := a.do(t, "PUT", "storage/pc", []map[string]any{{"id": "a", "payload": "1"}, {"id": "b", "sortindex": "x"}})
		want(t, r, 200)
		b := decodeBatch(t, r)
		eq(t, "success", b.Success, []string{"a"})
		eq(t, "failed", b.Failed, map[string][]string{"b": {"invalid sortindex"}})
		r = a.do(t, "PUT", "storage/pc", map[string]any{"id": "c", "payload": "3"})
		want(t, r, 200)
		eq(t, "single via PUT coll", r.body(), wantTimestampHeader(t, r))
		eq(t, "stored", a.ids(t, "storage/pc"), []string{"a", "c"})
	})
}

// TestDelete covers weave-api.md 2.6 and 2.7.
func TestDelete(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	seed := func(t *testing.T, coll string) []string {
		t.Helper()
		var stamps []string
		for i, w := range []map[string]any{
			{"payload": "x", "sortindex": 1, "parentid": "P"},
			{"payload": "x", "sortindex": 2, "predecessorid": "Q"},
			{"payload": "x", "sortindex": 3, "parentid": "P"},
			{"payload": "x", "sortindex": 4},
		} {
			stamps = append(stamps, a.put(t, coll, "r"+strconv.Itoa(i+1), w))
		}
		return stamps
	}
	del := func(t *testing.T, rel string, hdr ...string) reply {
		t.Helper()
		r := a.do(t, "DELETE", rel, nil, hdr...)
		want(t, r, 200)
		eq(t, "DELETE body vs header", r.body(), wantTimestampHeader(t, r))
		return r
	}

	t.Run("filters", func(t *testing.T) {
		// 2.6: ids, parentid, predecessorid, older, newer, index_above,
		// index_below, sort+limit.
		for i, c := range []struct {
			q    func(st []string) string
			left []string
		}{
			{func([]string) string { return "" }, []string{}},
			{func([]string) string { return "?ids=r1,r3" }, []string{"r2", "r4"}},
			{func([]string) string { return "?parentid=P" }, []string{"r2", "r4"}},
			{func([]string) string { return "?predecessorid=Q" }, []string{"r1", "r3", "r4"}},
			{func(st []string) string { return "?older=" + st[2] }, []string{"r3", "r4"}},
			{func(st []string) string { return "?newer=" + st[1] }, []string{"r1", "r2"}},
			{func([]string) string { return "?index_above=2" }, []string{"r1", "r2"}},
			{func([]string) string { return "?index_below=2" }, []string{"r2", "r3", "r4"}},
			{func([]string) string { return "?sort=index&limit=2" }, []string{"r1", "r2"}},
			{func([]string) string { return "?sort=oldest&limit=1" }, []string{"r2", "r3", "r4"}},
			{func([]string) string { return "?sort=newest&limit=3" }, []string{"r1"}},
			{func([]string) string { return "?ids=nomatch" }, []string{"r1", "r2", "r3", "r4"}},
		} {
			coll := "df" + strconv.Itoa(i)
			st := seed(t, coll)
			q := c.q(st)
			del(t, "storage/"+coll+q)
			eq(t, "left after DELETE"+q, a.ids(t, "storage/"+coll), c.left)
		}
	})

	t.Run("bad_numbers_400", func(t *testing.T) {
		// 2.6: bad numbers -> 400, nothing deleted.
		seed(t, "dbad")
		for _, q := range []string{"newer=abc", "older=x", "index_above=x", "index_below=x", "limit=x"} {
			want(t, a.do(t, "DELETE", "storage/dbad?"+q, nil), 400)
		}
		eq(t, "left", a.ids(t, "storage/dbad"), []string{"r1", "r2", "r3", "r4"})
	})

	t.Run("precondition", func(t *testing.T) {
		// 2.6/2.7: X-If-Unmodified-Since -> 412, nothing deleted.
		st := seed(t, "dpre")
		stale := csStamp(stampCS(t, st[3]) - 1)
		want(t, a.do(t, "DELETE", "storage/dpre", nil, "X-If-Unmodified-Since", stale), 412)
		want(t, a.do(t, "DELETE", "storage/dpre/r1", nil, "X-If-Unmodified-Since", stale), 412)
		eq(t, "left", a.ids(t, "storage/dpre"), []string{"r1", "r2", "r3", "r4"})
		del(t, "storage/dpre/r1", "X-If-Unmodified-Since", st[3])
	})

	t.Run("missing", func(t *testing.T) {
		// 2.6: missing collection -> 200; 2.7: missing id -> 200.
		del(t, "storage/nosuchcoll")
		del(t, "storage/nosuchcoll/nosuchid")
		a.put(t, "dm", "x", map[string]any{"payload": "p"})
		del(t, "storage/dm/nosuchid")
		del(t, "storage/dm/x")
		want(t, a.do(t, "GET", "storage/dm/x", nil), 404)
	})

	t.Run("delete_storage", func(t *testing.T) {
		// 2.7: DELETE storage needs X-Confirm-Delete; else 400 body 4.
		b := s.newAccount(t)
		b.put(t, "meta", "global", map[string]any{"payload": "g"})
		b.put(t, "tabs", "t", map[string]any{"payload": "t"})
		b.put(t, "bookmarks", "b", map[string]any{"payload": "b"})
		wantCode(t, b.do(t, "DELETE", "storage", nil), 400, 4)
		eq(t, "kept", len(decodeObject(t, b.do(t, "GET", "info/collections", nil))), 3)
		for _, ver := range versions {
			// 1.1 behaviour under every prefix.
			wantCode(t, b.with(ver).do(t, "DELETE", "storage", nil), 400, 4)
			wantCode(t, b.with(ver).do(t, "DELETE", "storage/", nil), 400, 4)
		}
		eq(t, "kept", len(decodeObject(t, b.do(t, "GET", "info/collections", nil))), 3)
		r := b.do(t, "DELETE", "storage", nil, "X-Confirm-Delete", "1")
		want(t, r, 200)
		eq(t, "body vs header", r.body(), wantTimestampHeader(t, r))
		r = b.do(t, "GET", "info/collections", nil)
		eq(t, "collections", strings.TrimSpace(r.body()), "{}")
		want(t, b.do(t, "GET", "storage/meta/global", nil), 404)
		want(t, b.do(t, "GET", "storage/tabs/t", nil), 404)
		u := quota(t, b)
		eq(t, "used after wipe", u[0], 0.0)
		// The account still works afterwards.
		b.put(t, "meta", "global", map[string]any{"payload": "g2"})
	})
}

// TestConditional covers weave-api.md 2.8.
func TestConditional(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)

	ts := a.put(t, "cw", "x", map[string]any{"payload": "1"})
	// Equal is allowed.
	ts2 := a.put(t, "cw", "x", json.RawMessage(`{"payload": "2"}`))
	_ = ts
	r := a.do(t, "PUT", "storage/cw/y", map[string]any{"payload": "y"}, "X-If-Unmodified-Since", ts2)
	want(t, r, 200)
	ts3 := r.body()
	// Greater -> 412 and nothing written; 6-decimal values accepted.
	for _, since := range []string{ts2, fmt.Sprintf("%.6f", float64(stampCS(t, ts3)-1)/100), csStamp(stampCS(t, ts3) - 100000)} {
		want(t, a.do(t, "PUT", "storage/cw/x", map[string]any{"payload": "no"}, "X-If-Unmodified-Since", since), 412)
		want(t, a.do(t, "POST", "storage/cw", []map[string]any{{"id": "z", "payload": "no"}}, "X-If-Unmodified-Since", since), 412)
	}
	g := decodeWBO(t, a.do(t, "GET", "storage/cw/x", nil))
	eq(t, "payload", g.str(t, "payload"), "2")
	want(t, a.do(t, "GET", "storage/cw/z", nil), 404)
	// Equal with 6 decimals allowed.
	want(t, a.do(t, "POST", "storage/cw", []map[string]any{{"id": "z", "payload": "ok"}}, "X-If-Unmodified-Since", ts3+"0000"), 200)

	// A collection with no records never fails; other collections don't count.
	want(t, a.do(t, "PUT", "storage/fresh/x", map[string]any{"payload": "p"}, "X-If-Unmodified-Since", "1.00"), 200)
	want(t, a.do(t, "POST", "storage/fresh2", []map[string]any{{"id": "x", "payload": "p"}}, "X-If-Unmodified-Since", "1"), 200)
}

// TestQuota covers QuotaBytes: 2.4 step 1 (400 14), 2.5 step 5, 2.1
// info/quota's limit, and X-Weave-Quota-Remaining (3.2).
func TestQuota(t *testing.T) {
	t.Parallel()
	const quotaBytes = 20 * 1024
	s := startServer(t, func(c *StandaloneConfig) { c.QuotaBytes = quotaBytes })
	a := s.newAccount(t)

	q := quota(t, a)
	eq(t, "info/quota", q, [2]float64{0, quotaBytes / 1024})

	r := a.do(t, "PUT", "storage/q/a", map[string]any{"payload": strings.Repeat("a", 8*1024)})
	want(t, r, 200)
	rem := r.Header.Get("X-Weave-Quota-Remaining")
	if v, err := strconv.ParseFloat(rem, 64); err != nil || v != 12 {
		t.Errorf("X-Weave-Quota-Remaining %q, want 12 (KB left as float): %v", rem, r)
	}
	r = a.do(t, "POST", "storage/q", []map[string]any{{"id": "b", "payload": strings.Repeat("b", 4*1024)}})
	want(t, r, 200)
	if v, err := strconv.ParseFloat(r.Header.Get("X-Weave-Quota-Remaining"), 64); err != nil || v != 8 {
		t.Errorf("POST X-Weave-Quota-Remaining %q, want 8: %v", r.Header.Get("X-Weave-Quota-Remaining"), r)
	}

	// Fill until the server refuses with 400 14.
	refused := false
	for i := 0; i < 10 && !refused; i++ {
		r := a.do(t, "PUT", "storage/q/fill"+strconv.Itoa(i), map[string]any{"payload": strings.Repeat("f", 6*1024)})
		switch {
		case r.Status == 200:
		case r.Status == 400 && strings.TrimSpace(r.body()) == "14":
			refused = true
		default:
			t.Fatalf("filling quota: %v", r)
		}
	}
	if !refused {
		t.Fatal("quota never enforced")
	}
	before := decodeObject(t, a.do(t, "GET", "info/collection_counts", nil))
	big := map[string]any{"payload": strings.Repeat("o", 6*1024)}
	// 2.4 order: quota (14) before precondition (412) and body parse (6).
	wantCode(t, a.do(t, "PUT", "storage/q/over", big), 400, 14)
	wantCode(t, a.do(t, "PUT", "storage/q/over", big, "X-If-Unmodified-Since", "1.00"), 400, 14)
	wantCode(t, a.do(t, "PUT", "storage/q/over", "{bad json"), 400, 14)
	wantCode(t, a.do(t, "POST", "storage/q", []map[string]any{{"id": "over", "payload": "o"}}), 400, 14)
	wantCode(t, a.do(t, "POST", "storage/other", []map[string]any{{"id": "over", "payload": "o"}}), 400, 14)
	want(t, a.do(t, "GET", "storage/q/over", nil), 404)
	eq(t, "counts unchanged", decodeObject(t, a.do(t, "GET", "info/collection_counts", nil)), before)
	if u := quota(t, a); u[0] < quotaBytes/1024 && u[0]+6 <= quotaBytes/1024 {
		t.Errorf("refused with space left: %v", u)
	}

	// Deleting frees space; writes work again.
	want(t, a.do(t, "DELETE", "storage/q", nil), 200)
	eq(t, "info/quota after delete", quota(t, a), [2]float64{0, quotaBytes / 1024})
	a.put(t, "q", "again", map[string]any{"payload": "x"})

	// Another user's quota is separate.
	b := s.newAccount(t)
	b.put(t, "q", "x", map[string]any{"payload": strings.Repeat("b", 8*1024)})
}

// TestQuotaHeaderThreshold: X-Weave-Quota-Remaining only when at most
// 1024 KB remain (2.4, 3.2).
func TestQuotaHeaderThreshold(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *StandaloneConfig) { c.QuotaBytes = 1100 * 1024 })
	a := s.newAccount(t)
	r := a.do(t, "PUT", "storage/q/a", map[string]any{"payload": strings.Repeat("a", 10*1024)})
	want(t, r, 200)
	if h := r.Header.Get("X-Weave-Quota-Remaining"); h != "" {
		t.Errorf("X-Weave-Quota-Remaining %q with 1090 KB left", h)
	}
	r = a.do(t, "PUT", "storage/q/b", map[string]any{"payload": strings.Repeat("b", 100*1024)})
	want(t, r, 200)
	if v, err := strconv.ParseFloat(r.Header.Get("X-Weave-Quota-Remaining"), 64); err != nil || v != 990 {
		t.Errorf("X-Weave-Quota-Remaining %q, want 990: %v", r.Header.Get("X-Weave-Quota-Remaining"), r)
	}
	eq(t, "info/quota", quota(t, a), [2]float64{110, 1100})
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
