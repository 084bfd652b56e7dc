package couch

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
)

// local serves GET/PUT/DELETE {db}/_local/{id}: replication checkpoints,
// stored verbatim apart from _id and _rev, never replicated. A user keeps
// a bounded number of them (403 beyond), of bounded size (413), and they
// count against the quota (403 for a write that adds bytes over it).
func (h *handler) local(w http.ResponseWriter, r *http.Request, db, id string) {
	if id == "" {
		h.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "empty _local document id"))
		return
	}
	docID := "_local/" + id
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		ld, err := h.store.GetLocal(r.Context(), db, id)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.raw(w, http.StatusOK, localJSON(docID, ld))
	case http.MethodPut:
		var m map[string]json.RawMessage
		if err := readJSON(r, &m); err != nil {
			h.fail(w, r, err)
			return
		}
		if m == nil {
			h.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "a document must be a JSON object"))
			return
		}
		rev := r.URL.Query().Get("rev")
		if raw, ok := m["_rev"]; ok && !isNull(raw) {
			if err := json.Unmarshal(raw, &rev); err != nil {
				h.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "_rev must be a string"))
				return
			}
		}
		if raw, ok := m["_id"]; ok {
			var got string
			if json.Unmarshal(raw, &got) != nil || got != docID {
				h.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "_id does not match the URL"))
				return
			}
		}
		delete(m, "_id")
		delete(m, "_rev")
		body, err := json.Marshal(m)
		if err != nil {
			h.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "invalid JSON"))
			return
		}
		nrev, err := h.store.PutLocal(r.Context(), db, id, body, rev)
		switch {
		case err != nil:
			h.fail(w, r, localError(err))
		default:
			h.json(w, http.StatusCreated, map[string]any{"ok": true, "id": docID, "rev": nrev})
		}
	case http.MethodDelete:
		if err := h.store.DeleteLocal(r.Context(), db, id, r.URL.Query().Get("rev")); err != nil {
			h.fail(w, r, localError(err))
			return
		}
		h.json(w, http.StatusOK, map[string]any{"ok": true, "id": docID, "rev": "0-0"})
	default:
		h.fail(w, r, errMethodNotAllowed)
	}
}

// localError maps a store error of a _local write to its answer.
func localError(err error) error {
	switch {
	case errors.Is(err, node.ErrLocalConflict):
		return errorf(http.StatusConflict, "conflict", "Document update conflict.")
	case errors.Is(err, node.ErrRevRejected):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "%v", err)
	case errors.Is(err, node.ErrTooManyLocal):
		return errorf(http.StatusForbidden, "forbidden", "%v", err)
	case errors.Is(err, api.ErrOverQuota):
		return errorf(http.StatusForbidden, "forbidden", overQuotaReason)
	}
	return err
}

// localJSON splices _id and _rev into the stored object.
func localJSON(docID string, ld node.LocalDoc) []byte {
	head, _ := json.Marshal(map[string]string{"_id": docID, "_rev": ld.Rev})
	body := bytes.TrimSpace(ld.Body)
	if len(body) < 2 || body[0] != '{' {
		return head
	}
	inner := bytes.TrimSpace(body[1 : len(body)-1])
	if len(inner) == 0 {
		return head
	}
	out := append(head[:len(head)-1:len(head)-1], ',')
	out = append(out, inner...)
	return append(out, '}')
}
