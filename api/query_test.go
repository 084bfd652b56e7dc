package api

import (
	"errors"
	"net/url"
	"reflect"
	"testing"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		q      string
		delete bool
		want   Query
		err    bool
	}{
		{q: "", want: Query{}},
		{q: "client=FxHome&v=1.1b2", want: Query{}},
		{q: "ids=a,b,{c-d}", want: Query{IDs: []string{"a", "b", "{c-d}"}, HasIDs: true}},
		{q: "ids=", want: Query{HasIDs: true}},
		{q: "ids=a,,b", want: Query{IDs: []string{"a", "b"}, HasIDs: true}},
		{q: "parentid=1&predecessorid=x", want: Query{ParentID: "1", HasParentID: true, PredecessorID: "x", HasPredecessorID: true}},
		{q: "older=1278109839.905&newer=12.5", want: Query{Older: 127810983990, HasOlder: true, Newer: 1250, HasNewer: true}},
		{q: "newer=1278109839.123456", want: Query{Newer: 127810983912, HasNewer: true}},
		{q: "newer=abc", err: true},
		{q: "newer=", err: true},
		{q: "older=1.2.3", err: true},
		{q: "index_above=5&index_below=10.5", want: Query{IndexAbove: 5, HasIndexAbove: true, IndexBelow: 10.5, HasIndexBelow: true}},
		{q: "index_above=x", err: true},
		{q: "index_below=nan", err: true},
		{q: "index_below=0x10", err: true},
		{q: "limit=10", want: Query{Limit: 10}},
		{q: "limit=0", want: Query{}},
		{q: "limit=-5", want: Query{}},
		{q: "limit=x", err: true},
		{q: "limit=1.5", err: true},
		{q: "limit=", err: true},
		{q: "limit=99999999999999999999999", want: Query{Limit: maxLimit}},
		{q: "limit=3&offset=2", want: Query{Limit: 3, Offset: 2}},
		{q: "offset=2", want: Query{}},
		{q: "limit=3&offset=-2", want: Query{Limit: 3}},
		{q: "limit=3&offset=0", want: Query{Limit: 3}},
		{q: "offset=x", err: true},
		{q: "sort=oldest", want: Query{Sort: SortOldest}},
		{q: "sort=newest", want: Query{Sort: SortNewest}},
		{q: "sort=index", want: Query{Sort: SortIndex}},
		{q: "sort=bogus", want: Query{}},
		{q: "full=1", want: Query{Full: true}},
		{q: "full=", want: Query{}},
		{q: "full=0", want: Query{Full: true}},
		{q: "full=1", delete: true, want: Query{}},
		{q: "limit=2&sort=index", delete: true, want: Query{Limit: 2, Sort: SortIndex}},
		{q: "newer=bad", delete: true, err: true},
		{q: "limit=5&limit=x", want: Query{Limit: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			v, err := url.ParseQuery(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseQuery(v, tt.delete)
			if tt.err {
				if !errors.Is(err, ErrBadQuery) {
					t.Fatalf("err = %v, want ErrBadQuery", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}
