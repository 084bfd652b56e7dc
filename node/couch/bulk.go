package couch

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

// revsDiff answers POST _revs_diff: for each document, the revisions the
// store has nowhere in its tree. Ids that are not records' and revisions
// that do not parse count as missing: the replicator then offers them to
// _bulk_docs, which refuses them one by one (forbidden) instead of
// aborting the whole replication.
func (h *handler) revsDiff(w http.ResponseWriter, r *http.Request, db string) error {
	var req map[string][]string
	if err := readJSON(r, &req); err != nil {
		return err
	}
	type missing struct {
		Missing []string `json:"missing"`
	}
	out := make(map[string]*missing)
	var q []node.DocRevs
	names := make(map[[2]string]string) // (coll, id) -> docid
	for docID, revs := range req {
		coll, id, err := splitDocID(docID)
		var parsed []revtree.Rev
		for _, s := range revs {
			rv, perr := revtree.ParseRev(s)
			if err != nil || perr != nil {
				if out[docID] == nil {
					out[docID] = &missing{}
				}
				out[docID].Missing = append(out[docID].Missing, s)
				continue
			}
			parsed = append(parsed, rv)
		}
		if len(parsed) > 0 {
			q = append(q, node.DocRevs{Coll: coll, ID: id, Revs: parsed})
			names[[2]string{coll, id}] = docID
		}
	}
	diff, err := h.store.RevsDiff(r.Context(), db, q)
	if err != nil {
		return err
	}
	for _, d := range diff {
		docID := names[[2]string{d.Coll, d.ID}]
		if out[docID] == nil {
			out[docID] = &missing{}
		}
		for _, rv := range d.Revs {
			out[docID].Missing = append(out[docID].Missing, rv.String())
		}
	}
	h.json(w, http.StatusOK, out)
	return nil
}

// bulkGetResult is one entry of a _bulk_get answer's "docs".
type bulkGetResult struct {
	OK    json.RawMessage `json:"ok,omitempty"`
	Error *bulkGetError   `json:"error,omitempty"`
}

type bulkGetError struct {
	ID     string `json:"id"`
	Rev    string `json:"rev"`
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// bulkGet answers POST _bulk_get: one result per requested {id, rev}, in
// order. A revision the store cannot serve is answered with an error
// object (never pouchdb-server's {"missing"} form, which PouchDB's
// replicator silently skips past). The answer streams: each result is
// written as soon as its document is read, and only the last document is
// kept (consecutive requests of one document share it), so a request
// holds one document (at most Config.MaxDocBytes of the store's) whatever
// it asks for. A store failure after the first result cuts the
// connection.
func (h *handler) bulkGet(w http.ResponseWriter, r *http.Request, db string) error {
	revs, latest, err := revsLatest(r)
	if err != nil {
		return err
	}
	var req struct {
		Docs []struct {
			ID  string `json:"id"`
			Rev string `json:"rev"`
		} `json:"docs"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Docs == nil {
		return errorf(http.StatusBadRequest, "bad_request", "missing \"docs\"")
	}
	type result struct {
		ID   string          `json:"id"`
		Docs []bulkGetResult `json:"docs"`
	}
	sw := newStreamWriter(w, []byte(`{"results":[`))
	var d *node.Doc
	lastID, loaded := "", false
	for _, q := range req.Docs {
		if !loaded || q.ID != lastID {
			d = nil
			if d, err = h.loadDoc(r.Context(), db, q.ID); err != nil {
				return sw.fail(h, r, err)
			}
			lastID, loaded = q.ID, true
		}
		miss := func(code, reason string) []bulkGetResult {
			return []bulkGetResult{{Error: &bulkGetError{ID: q.ID, Rev: q.Rev, Error: code, Reason: reason}}}
		}
		res := result{ID: q.ID}
		switch {
		case d == nil:
			res.Docs = miss("not_found", "missing")
		case q.Rev == "":
			win, _ := d.Tree.Winner()
			if win.Deleted {
				res.Docs = miss("not_found", "deleted")
				break
			}
			rev, _ := d.Revision(win.Rev, 0)
			res.Docs = []bulkGetResult{{OK: encodeDoc(&rev, revs)}}
		default:
			rv, err := revtree.ParseRev(q.Rev)
			if err != nil {
				res.Docs = miss("bad_request", "invalid rev")
				break
			}
			leaves := []revtree.Rev{rv}
			if latest {
				leaves = d.LeavesFrom(rv)
			}
			for _, l := range leaves {
				if rev, ok := d.Revision(l, 0); ok {
					res.Docs = append(res.Docs, bulkGetResult{OK: encodeDoc(&rev, revs)})
				}
			}
			if len(res.Docs) == 0 {
				res.Docs = miss("not_found", "missing")
			}
		}
		if err := sw.element(res); err != nil {
			return sw.fail(h, r, err)
		}
	}
	return sw.end([]byte("]}"))
}

// bulkDocsRow is one entry of a _bulk_docs answer.
type bulkDocsRow struct {
	ID     string `json:"id"`
	Rev    string `json:"rev,omitempty"`
	Error  string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// bulkDocs answers POST _bulk_docs with new_edits=false: every document's
// _revisions path is merged into its tree. The answer (201) lists only the
// documents that were refused, each as "forbidden".
func (h *handler) bulkDocs(w http.ResponseWriter, r *http.Request, db string) error {
	var req struct {
		Docs     []json.RawMessage `json:"docs"`
		NewEdits *bool             `json:"new_edits"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Docs == nil {
		return errorf(http.StatusBadRequest, "bad_request", "POST body must include `docs` parameter.")
	}
	if req.NewEdits == nil || *req.NewEdits {
		return errNewEdits
	}
	res, err := h.applyDocs(r.Context(), db, req.Docs)
	if err != nil {
		return err
	}
	failed := []bulkDocsRow{}
	for _, row := range res {
		if row.Error != "" {
			failed = append(failed, row)
		}
	}
	h.json(w, http.StatusCreated, failed)
	return nil
}

// overQuotaReason is the reason of a write refused because the user is
// over quota (a "forbidden" row of _bulk_docs, a 403 otherwise).
const overQuotaReason = "quota exceeded: the user's storage is full; delete records to free space"

// applyDocs decodes and stores documents with new_edits=false semantics
// and returns one row per document, with Error set for refused ones.
func (h *handler) applyDocs(ctx context.Context, db string, docs []json.RawMessage) ([]bulkDocsRow, error) {
	rows := make([]bulkDocsRow, len(docs))
	revs := make([]node.Revision, 0, len(docs))
	idx := make([]int, 0, len(docs))
	for i, raw := range docs {
		d, err := decodeDoc(raw)
		rows[i] = bulkDocsRow{ID: d.DocID, Rev: d.Rev}
		if err != nil {
			var de *docError
			if !errors.As(err, &de) {
				de = forbidden("%v", err)
			}
			rows[i].Error, rows[i].Reason = de.code, de.reason
			continue
		}
		revs = append(revs, d.Revision)
		idx = append(idx, i)
	}
	if len(revs) > 0 {
		errs, err := h.store.ApplyRevisions(ctx, db, revs, "", nil)
		if err != nil {
			return nil, err
		}
		for j, e := range errs {
			if e != nil {
				// Every refusal is per document (node.ErrRevRejected):
				// "forbidden" is the string PouchDB counts as a write
				// failure and goes on after. A user over quota gets
				// it too, with a reason saying so.
				reason := e.Error()
				if errors.Is(e, api.ErrOverQuota) {
					reason = overQuotaReason
				}
				rows[idx[j]].Error, rows[idx[j]].Reason = "forbidden", reason
			}
		}
	}
	return rows, nil
}
