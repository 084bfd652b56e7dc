package couch

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/hce-sync/hce/node"
)

// changesPage bounds the rows read from the store at a time; longer feeds
// are streamed page by page.
const changesPage = 500

// changesQuery holds the parsed parameters of a _changes request.
type changesQuery struct {
	since       uint64
	limit       int // 0: none
	feed        string
	allDocs     bool
	includeDocs bool
	timeout     time.Duration // how long to wait for a change
	heartbeat   time.Duration // 0: none
}

func (h *handler) parseChanges(r *http.Request, db string) (*changesQuery, error) {
	q := r.URL.Query()
	c := &changesQuery{feed: q.Get("feed")}
	switch c.feed {
	case "":
		c.feed = "normal"
	case "normal", "longpoll", "continuous":
	default:
		return nil, errorf(http.StatusBadRequest, "bad_request", "feed %q is not supported (normal, longpoll, continuous)", c.feed)
	}
	switch q.Get("style") {
	case "", "main_only":
	case "all_docs":
		c.allDocs = true
	default:
		return nil, errorf(http.StatusBadRequest, "bad_request", "style must be main_only or all_docs")
	}
	if f := q.Get("filter"); f != "" {
		return nil, errorf(http.StatusBadRequest, "bad_request", "filter %q is not supported", f)
	}
	if d, err := boolParam(r, "descending"); err != nil || d {
		return nil, errorf(http.StatusBadRequest, "bad_request", "descending feeds are not supported")
	}
	var err error
	if c.includeDocs, err = boolParam(r, "include_docs"); err != nil {
		return nil, err
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, errorf(http.StatusBadRequest, "query_parse_error", "limit must be a non-negative integer")
		}
		c.limit = n
	}
	ms := func(name string) (time.Duration, bool, error) {
		s := q.Get(name)
		if s == "" {
			return 0, false, nil
		}
		if name == "heartbeat" && s == "true" {
			return h.cfg.ChangesTimeout, true, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, false, errorf(http.StatusBadRequest, "query_parse_error", "%s must be a number of milliseconds", name)
		}
		return min(time.Duration(n)*time.Millisecond, h.cfg.MaxChangesTimeout), true, nil
	}
	to, hasTO, err := ms("timeout")
	if err != nil {
		return nil, err
	}
	if c.heartbeat, _, err = ms("heartbeat"); err != nil {
		return nil, err
	}
	if c.heartbeat > 0 {
		c.heartbeat = max(c.heartbeat, h.cfg.MinHeartbeat)
	}
	switch {
	case hasTO:
		c.timeout = to
	case c.heartbeat > 0:
		c.timeout = h.cfg.MaxChangesTimeout
	default:
		c.timeout = h.cfg.ChangesTimeout
	}
	if c.since, err = h.parseSince(r.Context(), r, db); err != nil {
		return nil, err
	}
	return c, nil
}

// changeRow is one row of the feed.
type changeRow struct {
	Seq     uint64          `json:"seq"`
	ID      string          `json:"id"`
	Changes []revJSON       `json:"changes"`
	Deleted bool            `json:"deleted,omitempty"`
	Doc     json.RawMessage `json:"doc,omitempty"`
}

type revJSON struct {
	Rev string `json:"rev"`
}

// feedWriter streams an answer whose status line may go out early (for
// heartbeats).
type feedWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func (f *feedWriter) start() {
	if !f.started {
		f.started = true
		hd := f.w.Header()
		hd.Set("Content-Type", "application/json")
		hd.Set("Cache-Control", "must-revalidate")
		f.w.WriteHeader(http.StatusOK)
	}
}

func (f *feedWriter) write(b []byte) error {
	f.start()
	_, err := f.w.Write(b)
	return err
}

func (f *feedWriter) flush() error {
	f.start()
	return f.rc.Flush()
}

// changes serves GET/POST {db}/_changes.
func (h *handler) changes(w http.ResponseWriter, r *http.Request, db string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		h.fail(w, r, errMethodNotAllowed)
		return
	}
	c, err := h.parseChanges(r, db)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	if c.feed != "normal" {
		// A waiting feed ends when its credentials are revoked.
		var cancel context.CancelFunc
		ctx, cancel = h.watchCredentials(ctx, r, db)
		defer cancel()
	}
	if h.cfg.Stop != nil && c.feed != "normal" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-h.cfg.Stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	fw := &feedWriter{w: w, rc: http.NewResponseController(w)}
	if c.feed == "continuous" {
		err = h.continuous(ctx, fw, db, c)
	} else {
		err = h.batchFeed(ctx, fw, db, c)
	}
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	if !fw.started {
		h.fail(w, r, err)
		return
	}
	// The status line is out: end the body early, the client retries.
	h.log.Warn("couch: changes feed ended by an error", "user", db, "err", err)
}

// rowsPage reads the next page of the feed after since, at most want rows
// (0: a full page). The rows are built and written one by one (writeRows):
// with include_docs a page holds one document at a time.
func (h *handler) rowsPage(ctx context.Context, db string, since uint64, want int) ([]node.Change, uint64, error) {
	n := changesPage
	if want > 0 {
		n = min(n, want)
	}
	return h.store.Changes(ctx, db, since, n)
}

// writeRows writes the rows of chs, each after sep(i) (i counting the rows
// written before in the answer, from first).
func (h *handler) writeRows(ctx context.Context, fw *feedWriter, db string, c *changesQuery, chs []node.Change, first int, sep func(i int) string, end string) error {
	for i := range chs {
		row := h.row(ctx, db, c, &chs[i])
		b, _ := json.Marshal(row)
		b = append(append([]byte(sep(first+i)), b...), end...)
		if err := fw.write(b); err != nil {
			return err
		}
	}
	return nil
}

func (h *handler) row(ctx context.Context, db string, c *changesQuery, ch *node.Change) changeRow {
	row := changeRow{Seq: ch.Seq, ID: ch.Coll + "/" + ch.ID, Deleted: ch.Deleted}
	leaves := ch.Leaves
	if !c.allDocs {
		leaves = leaves[:1]
	}
	row.Changes = make([]revJSON, len(leaves))
	for i, l := range leaves {
		row.Changes[i] = revJSON{Rev: l.String()}
	}
	if c.includeDocs {
		if d, err := h.store.GetDoc(ctx, db, ch.Coll, ch.ID); err == nil {
			win, _ := d.Tree.Winner()
			if rev, ok := d.Revision(win.Rev, 0); ok {
				row.Doc = encodeDoc(&rev, false)
			}
		}
	}
	return row
}

// wait blocks until the feed passes since (true), the deadline passes
// (false) or ctx ends, calling beat every c.heartbeat meanwhile.
func (h *handler) wait(ctx context.Context, db string, since uint64, deadline time.Time, hb time.Duration, beat func() error) (bool, error) {
	for {
		now := time.Now()
		if !now.Before(deadline) {
			return false, nil
		}
		until := deadline
		if hb > 0 && now.Add(hb).Before(until) {
			until = now.Add(hb)
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		err := h.store.WaitChanges(wctx, db, since)
		cancel()
		switch {
		case err == nil:
			return true, nil
		case h.stopped():
			return false, nil
		case ctx.Err() != nil:
			return false, ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded):
			return false, err
		}
		if hb > 0 && time.Now().Before(deadline) {
			if err := beat(); err != nil {
				return false, err
			}
		}
	}
}

// stopped reports whether Config.Stop is closed.
func (h *handler) stopped() bool {
	select {
	case <-h.cfg.Stop:
		return true
	default:
		return false
	}
}

// batchFeed answers feed=normal and feed=longpoll: one JSON object with
// the rows after since. A longpoll request with nothing to report waits
// for a change or its timeout, writing a newline every heartbeat.
func (h *handler) batchFeed(ctx context.Context, fw *feedWriter, db string, c *changesQuery) error {
	rows, last, err := h.rowsPage(ctx, db, c.since, c.limit)
	if err != nil {
		return err
	}
	if c.feed == "longpoll" && len(rows) == 0 && last == c.since {
		deadline := time.Now().Add(c.timeout)
		beat := func() error {
			if err := fw.write([]byte("\n")); err != nil {
				return err
			}
			return fw.flush()
		}
		changed, err := h.wait(ctx, db, c.since, deadline, c.heartbeat, beat)
		if err != nil {
			return err
		}
		if changed {
			if rows, last, err = h.rowsPage(ctx, db, c.since, c.limit); err != nil {
				return err
			}
		}
	}
	if err := fw.write([]byte(`{"results":[`)); err != nil {
		return err
	}
	sep := func(i int) string {
		if i > 0 {
			return ",\n"
		}
		return "\n"
	}
	n := 0
	for {
		if err := h.writeRows(ctx, fw, db, c, rows, n, sep, ""); err != nil {
			return err
		}
		n += len(rows)
		want := 0
		if c.limit > 0 {
			want = c.limit - n
		}
		if c.limit > 0 && want <= 0 || len(rows) < changesPage {
			break
		}
		if rows, last, err = h.rowsPage(ctx, db, last, want); err != nil {
			return err
		}
	}
	return fw.write([]byte("\n],\n\"last_seq\":" + strconv.FormatUint(last, 10) + "}\n"))
}

// continuous answers feed=continuous: one JSON row per line as changes
// happen, a newline every heartbeat while idle, and a final
// {"last_seq":N} line when the timeout passes or the limit is reached.
func (h *handler) continuous(ctx context.Context, fw *feedWriter, db string, c *changesQuery) error {
	if err := fw.flush(); err != nil {
		return err
	}
	since, n := c.since, 0
	deadline := time.Now().Add(c.timeout)
	beat := func() error {
		if err := fw.write([]byte("\n")); err != nil {
			return err
		}
		return fw.flush()
	}
	for {
		want := 0
		if c.limit > 0 {
			want = c.limit - n
		}
		rows, last, err := h.rowsPage(ctx, db, since, want)
		if err != nil {
			return err
		}
		if err := h.writeRows(ctx, fw, db, c, rows, n, func(int) string { return "" }, "\n"); err != nil {
			return err
		}
		n += len(rows)
		since = last
		if len(rows) > 0 {
			if err := fw.flush(); err != nil {
				return err
			}
			// A row resets the idle timeout, as in CouchDB.
			deadline = time.Now().Add(c.timeout)
		}
		if c.limit > 0 && n >= c.limit {
			break
		}
		if len(rows) == changesPage {
			continue
		}
		changed, err := h.wait(ctx, db, since, deadline, c.heartbeat, beat)
		if err != nil {
			return err
		}
		if !changed {
			break
		}
	}
	if err := fw.write([]byte(`{"last_seq":` + strconv.FormatUint(since, 10) + "}\n")); err != nil {
		return err
	}
	return fw.flush()
}
