package sync15

import "strings"

// route15 names a path shape of the Sync 1.5 storage API (see NewHandler).
type route15 uint8

const (
	r15None              route15 = iota
	r15InfoConfiguration         // /1.5/{uid}/info/configuration
	r15InfoCollections           // /1.5/{uid}/info/collections
	r15InfoQuota                 // /1.5/{uid}/info/quota
	r15InfoUsage                 // /1.5/{uid}/info/collection_usage
	r15InfoCounts                // /1.5/{uid}/info/collection_counts
	r15Collection                // /1.5/{uid}/storage/{coll}
	r15Item                      // /1.5/{uid}/storage/{coll}/{id}
	r15Storage                   // /1.5/{uid}/storage
	r15Base                      // /1.5/{uid} and /1.5/{uid}/

	numRoutes15
)

// path15 is a request path, parsed: its route and the variables it names
// (as sent: the id is still percent-encoded).
type path15 struct {
	route         route15
	uid, coll, id string
}

// parsePath15 parses p, a request's escaped path, with the grammar of
// the route templates `/1.5/{uid:[0-9]{1,10}}/storage/{coll:[a-zA-Z0-9._-]{1,32}}/{id:[^/]+}`
// and their siblings (FuzzPath15 holds it to those regular expressions).
// Anything else is r15None.
func parsePath15(p string) path15 {
	p, ok := strings.CutPrefix(p, "/1.5/")
	if !ok {
		return path15{}
	}
	uid, rest, more := strings.Cut(p, "/")
	if uid == "" || len(uid) > 10 || !allDigits(uid) {
		return path15{}
	}
	if !more || rest == "" {
		return path15{route: r15Base, uid: uid}
	}
	kind, rest, more := strings.Cut(rest, "/")
	switch kind {
	case "info":
		if !more {
			return path15{}
		}
		var r route15
		switch rest {
		case "configuration":
			r = r15InfoConfiguration
		case "collections":
			r = r15InfoCollections
		case "quota":
			r = r15InfoQuota
		case "collection_usage":
			r = r15InfoUsage
		case "collection_counts":
			r = r15InfoCounts
		default:
			return path15{}
		}
		return path15{route: r, uid: uid}
	case "storage":
		if !more {
			return path15{route: r15Storage, uid: uid}
		}
		coll, id, item := strings.Cut(rest, "/")
		if !ValidCollection(coll) {
			return path15{}
		}
		if !item {
			return path15{route: r15Collection, uid: uid, coll: coll}
		}
		if id == "" || strings.IndexByte(id, '/') >= 0 {
			return path15{}
		}
		return path15{route: r15Item, uid: uid, coll: coll, id: id}
	}
	return path15{}
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
