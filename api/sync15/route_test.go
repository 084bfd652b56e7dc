package sync15

import (
	"regexp"
	"testing"
)

// routeRegexps are the route templates of the Sync 1.5 API as regular
// expressions over the escaped path (the grammar parsePath15 implements).
var routeRegexps = []struct {
	route route15
	re    *regexp.Regexp
}{
	{r15InfoConfiguration, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/info/configuration$`)},
	{r15InfoCollections, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/info/collections$`)},
	{r15InfoQuota, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/info/quota$`)},
	{r15InfoUsage, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/info/collection_usage$`)},
	{r15InfoCounts, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/info/collection_counts$`)},
	{r15Collection, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/storage/([a-zA-Z0-9._-]{1,32})$`)},
	{r15Item, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/storage/([a-zA-Z0-9._-]{1,32})/([^/]+)$`)},
	{r15Storage, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/storage$`)},
	{r15Base, regexp.MustCompile(`^/1\.5/([0-9]{1,10})/?$`)},
}

// byRegexp parses p with the regular expressions.
func byRegexp(p string) path15 {
	for _, r := range routeRegexps {
		if m := r.re.FindStringSubmatch(p); m != nil {
			out := path15{route: r.route, uid: m[1]}
			if len(m) > 2 {
				out.coll = m[2]
			}
			if len(m) > 3 {
				out.id = m[3]
			}
			return out
		}
	}
	return path15{}
}

func TestParsePath15(t *testing.T) {
	for _, tc := range []struct {
		path string
		want path15
	}{
		{"/1.5/42/info/collections", path15{route: r15InfoCollections, uid: "42"}},
		{"/1.5/42/info/configuration", path15{route: r15InfoConfiguration, uid: "42"}},
		{"/1.5/42/info/quota", path15{route: r15InfoQuota, uid: "42"}},
		{"/1.5/42/info/collection_usage", path15{route: r15InfoUsage, uid: "42"}},
		{"/1.5/42/info/collection_counts", path15{route: r15InfoCounts, uid: "42"}},
		{"/1.5/42/info/other", path15{}},
		{"/1.5/42/info", path15{}},
		{"/1.5/42/info/", path15{}},
		{"/1.5/42/storage/bookmarks", path15{route: r15Collection, uid: "42", coll: "bookmarks"}},
		{"/1.5/42/storage/bookmarks/", path15{}},
		{"/1.5/42/storage/book%20marks", path15{}},
		{"/1.5/42/storage/" + string(make([]byte, 33)), path15{}},
		{"/1.5/42/storage/abcdefghijklmnopqrstuvwxyz012345", path15{route: r15Collection, uid: "42", coll: "abcdefghijklmnopqrstuvwxyz012345"}},
		{"/1.5/42/storage/abcdefghijklmnopqrstuvwxyz0123456", path15{}},
		{"/1.5/42/storage/tabs/a%2Fb", path15{route: r15Item, uid: "42", coll: "tabs", id: "a%2Fb"}},
		{"/1.5/42/storage/tabs/a/b", path15{}},
		{"/1.5/42/storage/tabs//", path15{}},
		{"/1.5/42/storage", path15{route: r15Storage, uid: "42"}},
		{"/1.5/42/storage/", path15{}},
		{"/1.5/42", path15{route: r15Base, uid: "42"}},
		{"/1.5/42/", path15{route: r15Base, uid: "42"}},
		{"/1.5/42//", path15{}},
		{"/1.5/", path15{}},
		{"/1.5/1234567890/storage", path15{route: r15Storage, uid: "1234567890"}},
		{"/1.5/12345678901/storage", path15{}},
		{"/1.5/4a/storage", path15{}},
		{"/1.1/42/storage", path15{}},
		{"//1.5/42/storage", path15{}},
		{"/1.5/42/other", path15{}},
	} {
		if got := parsePath15(tc.path); got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.path, got, tc.want)
		}
		if got := byRegexp(tc.path); got != tc.want {
			t.Errorf("%q: the regular expressions give %+v, want %+v", tc.path, got, tc.want)
		}
	}
}

// FuzzPath15 holds parsePath15 to the route templates' regular
// expressions on any path.
func FuzzPath15(f *testing.F) {
	for _, s := range []string{"/1.5/42/info/collections", "/1.5/42/storage/tabs/x", "/1.5/42/", "/1.5/42/storage", "/1.5/9/storage/a.b_c-d/%2F%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if got, want := parsePath15(p), byRegexp(p); got != want {
			t.Fatalf("%q: %+v, the regular expressions give %+v", p, got, want)
		}
	})
}
