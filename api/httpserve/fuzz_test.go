package httpserve

import (
	"slices"
	"testing"
)

// FuzzRouteName feeds request paths (what any client sends) to the route
// matcher: it must never panic and must answer one of its templates or
// "other", so metric labels stay bounded whatever the path.
func FuzzRouteName(f *testing.F) {
	templates := []string{"/", "/{ver}/{user}/storage/{coll}/{id}", "/{ver}/{user}/storage/{coll}", "/couch/{db}/_changes",
		"/couch/{db}/{doc...}", "/user/{ver}/{user}"}
	rt := newRouter(templates)
	for _, p := range []string{"/", "", "//", "/1.1/u/storage/c/i", "/couch/db/a/b/c", "//1.0/u/storage/c/", "/%2F/x", "/user/1.0/u/"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if got := rt.name(path); got != otherRoute && !slices.Contains(templates, got) {
			t.Fatalf("%q named %q", path, got)
		}
		_ = validRequestID(path)
	})
}
