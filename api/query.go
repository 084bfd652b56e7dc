package api

import (
	"errors"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// ErrBadQuery is returned by ParseQuery for a filter value that is not a
// number where one is required. The handlers answer it with 400 and an
// empty body.
var ErrBadQuery = errors.New("api: invalid query parameter")

// maxLimit caps limit and offset values too large for an int.
const maxLimit = math.MaxInt32

// ParseQuery parses the filters of GET storage/{coll} (weave-api.md 2.2) or,
// with forDelete, of DELETE storage/{coll} (2.6, where full is ignored).
// Only the first value of a repeated parameter counts and unknown
// parameters are ignored. older/newer are decimal seconds rounded to
// centiseconds, index_above/index_below decimals, limit/offset integers:
// a value that does not parse gives ErrBadQuery. limit <= 0 is ignored;
// offset is kept only when limit is set and offset > 0. sort is oldest,
// newest or index, anything else is ignored; full counts when non-empty.
func ParseQuery(v url.Values, forDelete bool) (*Query, error) {
	q := &Query{}
	if len(v) == 0 {
		return q, nil
	}
	if s, ok := first(v, "ids"); ok {
		q.HasIDs = true
		for id := range strings.SplitSeq(s, ",") {
			if id != "" {
				q.IDs = append(q.IDs, id)
			}
		}
	}
	if s, ok := first(v, "parentid"); ok {
		q.ParentID, q.HasParentID = s, true
	}
	if s, ok := first(v, "predecessorid"); ok {
		q.PredecessorID, q.HasPredecessorID = s, true
	}
	var err error
	if s, ok := first(v, "older"); ok {
		if q.Older, err = ParseStamp(s); err != nil {
			return nil, ErrBadQuery
		}
		q.HasOlder = true
	}
	if s, ok := first(v, "newer"); ok {
		if q.Newer, err = ParseStamp(s); err != nil {
			return nil, ErrBadQuery
		}
		q.HasNewer = true
	}
	if s, ok := first(v, "index_above"); ok {
		if q.IndexAbove, err = parseDecimal(s); err != nil {
			return nil, ErrBadQuery
		}
		q.HasIndexAbove = true
	}
	if s, ok := first(v, "index_below"); ok {
		if q.IndexBelow, err = parseDecimal(s); err != nil {
			return nil, ErrBadQuery
		}
		q.HasIndexBelow = true
	}
	limit, offset := 0, 0
	if s, ok := first(v, "limit"); ok {
		if limit, err = parseCount(s); err != nil {
			return nil, ErrBadQuery
		}
	}
	if s, ok := first(v, "offset"); ok {
		if offset, err = parseCount(s); err != nil {
			return nil, ErrBadQuery
		}
	}
	if limit > 0 {
		q.Limit = limit
		if offset > 0 {
			q.Offset = offset
		}
	}
	if s, ok := first(v, "sort"); ok {
		switch s {
		case "oldest":
			q.Sort = SortOldest
		case "newest":
			q.Sort = SortNewest
		case "index":
			q.Sort = SortIndex
		}
	}
	if !forDelete {
		if s, ok := first(v, "full"); ok && s != "" {
			q.Full = true
		}
	}
	return q, nil
}

func first(v url.Values, key string) (string, bool) {
	vs, ok := v[key]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// parseDecimal parses a finite decimal number (no hex, inf or nan).
func parseDecimal(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if !numericText(s) {
		return 0, ErrBadQuery
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, ErrBadQuery
	}
	if math.IsNaN(f) {
		return 0, ErrBadQuery
	}
	return f, nil
}

// parseCount parses a decimal integer, clamping huge values.
func parseCount(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, ErrBadQuery
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			if s[0] == '-' {
				return 0, nil
			}
			return maxLimit, nil
		}
		return 0, ErrBadQuery
	}
	if n > maxLimit {
		n = maxLimit
	}
	if n < 0 {
		n = 0
	}
	return int(n), nil
}
