package couch

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

// document serves GET/HEAD {db}/{docid} (plain, or with open_revs) and PUT
// with new_edits=false.
func (h *handler) document(w http.ResponseWriter, r *http.Request, db, docID string) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if err := h.getDocument(w, r, db, docID); err != nil {
			h.fail(w, r, err)
		}
	case http.MethodPut:
		if err := h.putDocument(w, r, db, docID); err != nil {
			h.fail(w, r, err)
		}
	default:
		h.fail(w, r, errMethodNotAllowed)
	}
}

// boolParam reads a CouchDB boolean query parameter.
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	switch v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, errorf(http.StatusBadRequest, "query_parse_error", "%s must be true or false", name)
}

// revsLatest reads the revs and latest parameters of a document fetch.
func revsLatest(r *http.Request) (revs, latest bool, err error) {
	if revs, err = boolParam(r, "revs"); err != nil {
		return false, false, err
	}
	latest, err = boolParam(r, "latest")
	return revs, latest, err
}

// loadDoc returns the document docID of db (nil, nil when it does not
// exist or its id is not a record's).
func (h *handler) loadDoc(ctx context.Context, db, docID string) (*node.Doc, error) {
	coll, id, err := splitDocID(docID)
	if err != nil {
		return nil, nil
	}
	d, err := h.store.GetDoc(ctx, db, coll, id)
	if errors.Is(err, node.ErrDocNotFound) {
		return nil, nil
	}
	return d, err
}

func (h *handler) getDocument(w http.ResponseWriter, r *http.Request, db, docID string) error {
	q := r.URL.Query()
	revs, latest, err := revsLatest(r)
	if err != nil {
		return err
	}
	conflicts, err := boolParam(r, "conflicts")
	if err != nil {
		return err
	}
	d, err := h.loadDoc(r.Context(), db, docID)
	if err != nil {
		return err
	}
	if q.Has("open_revs") {
		return h.openRevs(w, r, d, q.Get("open_revs"), revs, latest)
	}
	if d == nil {
		return errNotFound
	}
	var leaf revtree.Rev
	if rs := q.Get("rev"); rs != "" {
		if leaf, err = revtree.ParseRev(rs); err != nil {
			return errorf(http.StatusBadRequest, "bad_request", "invalid rev %q", rs)
		}
	} else {
		win, _ := d.Tree.Winner()
		if win.Deleted {
			return errorf(http.StatusNotFound, "not_found", "deleted")
		}
		leaf = win.Rev
	}
	rev, ok := d.Revision(leaf, 0)
	if !ok {
		return errNotFound
	}
	o := newOutDoc(&rev, revs)
	if conflicts {
		for _, c := range d.Tree.Conflicts() {
			o.Conflicts = append(o.Conflicts, c.String())
		}
	}
	h.json(w, http.StatusOK, o)
	return nil
}

// openRevs answers GET {docid}?open_revs=all|[...] as a JSON array of
// {"ok":doc} and {"missing":rev} entries (CouchDB's answer for Accept:
// application/json), written entry by entry.
func (h *handler) openRevs(w http.ResponseWriter, r *http.Request, d *node.Doc, spec string, revs, latest bool) error {
	type entry struct {
		OK      *outDoc `json:"ok,omitempty"`
		Missing string  `json:"missing,omitempty"`
	}
	var want []string
	if spec != "all" {
		if err := json.Unmarshal([]byte(spec), &want); err != nil {
			return errorf(http.StatusBadRequest, "bad_request", "open_revs must be \"all\" or a JSON array of revisions")
		}
	}
	sw := newStreamWriter(w, []byte{'['})
	ok := func(rv revtree.Rev) (bool, error) {
		rev, found := d.Revision(rv, 0)
		if !found {
			return false, nil
		}
		return true, sw.element(entry{OK: newOutDoc(&rev, revs)})
	}
	if spec == "all" {
		if d != nil {
			for _, l := range d.Tree.Leaves() {
				if _, err := ok(l.Rev); err != nil {
					return sw.fail(h, r, err)
				}
			}
		}
		return sw.end([]byte{']'})
	}
	for _, s := range want {
		rv, err := revtree.ParseRev(s)
		if err != nil || d == nil {
			if err := sw.element(entry{Missing: s}); err != nil {
				return sw.fail(h, r, err)
			}
			continue
		}
		leaves := []revtree.Rev{rv}
		if latest {
			leaves = d.LeavesFrom(rv)
		}
		found := false
		for _, l := range leaves {
			f, err := ok(l)
			if err != nil {
				return sw.fail(h, r, err)
			}
			found = found || f
		}
		if !found {
			if err := sw.element(entry{Missing: s}); err != nil {
				return sw.fail(h, r, err)
			}
		}
	}
	return sw.end([]byte{']'})
}

// putDocument stores one revision sent with new_edits=false (CouchDB's
// replicator uses this form for documents with attachments, which records
// never have). Ordinary edits (new_edits=true) are not supported.
func (h *handler) putDocument(w http.ResponseWriter, r *http.Request, db, docID string) error {
	if r.URL.Query().Get("new_edits") != "false" {
		return errNewEdits
	}
	var raw json.RawMessage
	if err := readJSON(r, &raw); err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return errorf(http.StatusBadRequest, "bad_request", "a document must be a JSON object")
	}
	if idRaw, ok := m["_id"]; ok {
		var got string
		if json.Unmarshal(idRaw, &got) != nil || got != docID {
			return errorf(http.StatusBadRequest, "bad_request", "_id does not match the URL")
		}
	} else {
		idJSON, _ := json.Marshal(docID)
		m["_id"] = idJSON
		raw, _ = json.Marshal(m)
	}
	res, err := h.applyDocs(r.Context(), db, []json.RawMessage{raw})
	if err != nil {
		return err
	}
	if res[0].Error != "" {
		return errorf(http.StatusForbidden, res[0].Error, "%s", res[0].Reason)
	}
	h.json(w, http.StatusCreated, map[string]any{"ok": true, "id": res[0].ID, "rev": res[0].Rev})
	return nil
}

var errNewEdits = errorf(http.StatusNotImplemented, "not_implemented",
	"only replication writes (new_edits=false) are supported; write records through the Weave API")

// parseSince reads the since parameter: a sequence number, "now" or
// absent (0).
func (h *handler) parseSince(ctx context.Context, r *http.Request, db string) (uint64, error) {
	s := r.URL.Query().Get("since")
	switch s {
	case "", "0":
		return 0, nil
	case "now":
		return h.store.UpdateSeq(ctx, db)
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "bad_request", "since must be a sequence number or \"now\"")
	}
	return v, nil
}
