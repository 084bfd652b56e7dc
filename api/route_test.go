package api

import (
	"regexp"
	"testing"
)

// The route templates the storage API was served with through mux's
// regular expressions; parseStoragePath must agree with them on every
// path.
var storageTemplates = []struct {
	route storageRoute
	re    *regexp.Regexp
}{
	{routeInfoCollections, regexp.MustCompile(`^/(1\.0|1|1\.1)/([a-zA-Z0-9._-]+)/info/collections$`)},
	{routeInfoCounts, regexp.MustCompile(`^/(1\.0|1|1\.1)/([a-zA-Z0-9._-]+)/info/collection_counts$`)},
	{routeInfoUsage, regexp.MustCompile(`^/(1\.0|1|1\.1)/([a-zA-Z0-9._-]+)/info/collection_usage$`)},
	{routeInfoQuota, regexp.MustCompile(`^/(1\.0|1|1\.1)/([a-zA-Z0-9._-]+)/info/quota$`)},
	{routeStorage, regexp.MustCompile(`^/(1\.0|1|1\.1)/([a-zA-Z0-9._-]+)/storage$`)},
	{routeCollection, regexp.MustCompile(`^/(1\.0|1|1\.1)/([a-zA-Z0-9._-]+)/storage/([a-zA-Z0-9._-]{1,32})$`)},
	{routeItem, regexp.MustCompile(`^/(1\.0|1|1\.1)/([a-zA-Z0-9._-]+)/storage/([a-zA-Z0-9._-]{1,32})/([^/]+)$`)},
}

// byTemplates parses p with the regular expressions.
func byTemplates(p string) storagePath {
	for _, t := range storageTemplates {
		m := t.re.FindStringSubmatch(p)
		if m == nil {
			continue
		}
		sp := storagePath{route: t.route, user: m[2]}
		if len(m) > 3 {
			sp.coll = m[3]
		}
		if len(m) > 4 {
			sp.id = m[4]
		}
		return sp
	}
	return storagePath{}
}

func TestParseStoragePath(t *testing.T) {
	long := "c123456789012345678901234567890x" // 32 bytes
	for _, tc := range []struct {
		path string
		want storagePath
	}{
		{"/1.1/alice/info/collections", storagePath{routeInfoCollections, "alice", "", ""}},
		{"/1.0/a.b_c-d/info/collection_counts", storagePath{routeInfoCounts, "a.b_c-d", "", ""}},
		{"/1/u/info/collection_usage", storagePath{routeInfoUsage, "u", "", ""}},
		{"/1.1/u/info/quota", storagePath{routeInfoQuota, "u", "", ""}},
		{"/1.1/u/storage", storagePath{routeStorage, "u", "", ""}},
		{"/1.1/u/storage/bookmarks", storagePath{routeCollection, "u", "bookmarks", ""}},
		{"/1.1/u/storage/" + long, storagePath{routeCollection, "u", long, ""}},
		{"/1.1/u/storage/" + long + "y", storagePath{}},
		{"/1.1/u/storage/tabs/{a b}é", storagePath{routeItem, "u", "tabs", "{a b}é"}},
		{"/1.1/u/storage/tabs/a/b", storagePath{}},
		{"/1.1/u/storage/", storagePath{}},
		{"/1.1/u/storage/tabs/", storagePath{}},
		{"/1.2/u/storage/tabs", storagePath{}},
		{"/1.1//storage/tabs", storagePath{}},
		{"/1.1/u@x/storage/tabs", storagePath{}},
		{"/1.1/u/info", storagePath{}},
		{"/1.1/u/info/collections/x", storagePath{}},
		{"/1.1/u/stor", storagePath{}},
		{"1.1/u/storage", storagePath{}},
		{"/__heartbeat__", storagePath{}},
		{"", storagePath{}},
	} {
		if got := parseStoragePath(tc.path); got != tc.want {
			t.Errorf("parseStoragePath(%q) = %+v, want %+v", tc.path, got, tc.want)
		}
		if got := byTemplates(tc.path); got != tc.want {
			t.Errorf("templates(%q) = %+v, want %+v (the test's table is wrong)", tc.path, got, tc.want)
		}
	}
}

// FuzzStoragePath: the hand-written parser routes every path as the
// regular expressions of the route templates do.
func FuzzStoragePath(f *testing.F) {
	for _, s := range []string{"/1.1/u/storage/c/i", "/1/u/info/quota", "/1.0/u/storage", "/1.1/u/storage/c", "/1.1/u/info/collections", "//1.1/u/storage/c/\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if got, want := parseStoragePath(p), byTemplates(p); got != want {
			t.Fatalf("parseStoragePath(%q) = %+v, templates say %+v", p, got, want)
		}
	})
}

// BenchmarkParseStoragePath: one parse of an item path.
func BenchmarkParseStoragePath(b *testing.B) {
	for b.Loop() {
		_ = parseStoragePath("/1.1/jk4q6z7goxd5zyyzat7bncb7pfsvkvc6/storage/bookmarks/abcdefghijkl")
	}
}
