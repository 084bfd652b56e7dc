package api

import "strings"

// storageRoute names a path shape of the storage API (weave-api.md 1.3,
// 2); storageHandler dispatches on it and the method.
type storageRoute uint8

const (
	routeNone            storageRoute = iota
	routeInfoCollections              // /{ver}/{user}/info/collections
	routeInfoCounts                   // /{ver}/{user}/info/collection_counts
	routeInfoUsage                    // /{ver}/{user}/info/collection_usage
	routeInfoQuota                    // /{ver}/{user}/info/quota
	routeStorage                      // /{ver}/{user}/storage
	routeCollection                   // /{ver}/{user}/storage/{coll}
	routeItem                         // /{ver}/{user}/storage/{coll}/{id}

	numRoutes
)

// storagePath is a storage request's path, parsed: its route and the
// variables the route names (empty when it does not).
type storagePath struct {
	route          storageRoute
	user, coll, id string
}

// parseStoragePath parses p, a decoded URL path, as a storage API path:
// version 1.0, 1 or 1.1; a user name of [a-zA-Z0-9._-]+; a collection of
// [a-zA-Z0-9._-]{1,32}; an item id of any non-empty segment. Anything
// else is routeNone. This is the grammar of the route templates
// `/{ver:1\.0|1|1\.1}/{user:[a-zA-Z0-9._-]+}/storage/{coll:[a-zA-Z0-9._-]{1,32}}/{id:[^/]+}`
// and its siblings (FuzzStoragePath holds the two equal), without the
// regular expressions: matching them was about 8 % of the CPU of a
// server answering info/collections.
func parseStoragePath(p string) storagePath {
	p, ok := strings.CutPrefix(p, "/")
	if !ok {
		return storagePath{}
	}
	ver, p, ok := strings.Cut(p, "/")
	if !ok || (ver != "1.1" && ver != "1.0" && ver != "1") {
		return storagePath{}
	}
	user, p, ok := strings.Cut(p, "/")
	if !ok || !nameChars(user, len(user)) {
		return storagePath{}
	}
	kind, p, more := strings.Cut(p, "/")
	switch kind {
	case "info":
		if !more {
			return storagePath{}
		}
		var r storageRoute
		switch p {
		case "collections":
			r = routeInfoCollections
		case "collection_counts":
			r = routeInfoCounts
		case "collection_usage":
			r = routeInfoUsage
		case "quota":
			r = routeInfoQuota
		default:
			return storagePath{}
		}
		return storagePath{route: r, user: user}
	case "storage":
		if !more {
			return storagePath{route: routeStorage, user: user}
		}
		coll, id, item := strings.Cut(p, "/")
		if !nameChars(coll, 32) {
			return storagePath{}
		}
		if !item {
			return storagePath{route: routeCollection, user: user, coll: coll}
		}
		if id == "" || strings.IndexByte(id, '/') >= 0 {
			return storagePath{}
		}
		return storagePath{route: routeItem, user: user, coll: coll, id: id}
	}
	return storagePath{}
}

// nameChars reports whether s is 1 to max bytes of [a-zA-Z0-9._-].
func nameChars(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
