package httpserve

import (
	"fmt"
	"strings"
)

// otherRoute is the route label of a path no template matches.
const otherRoute = "other"

// segment is one segment of a route template.
type segment struct {
	lit  string // literal text; "" for a wildcard
	rest bool   // "{x...}": matches the rest of the path (at least one segment)
}

// route is a parsed route template.
type route struct {
	name string
	segs []segment
}

// parseRoute parses "/a/{b}/c/{d...}".
func parseRoute(t string) (route, error) {
	if !strings.HasPrefix(t, "/") {
		return route{}, fmt.Errorf("route %q does not start with /", t)
	}
	r := route{name: t}
	if t == "/" {
		return r, nil
	}
	parts := strings.Split(strings.TrimPrefix(t, "/"), "/")
	for i, p := range parts {
		switch {
		case p == "":
			return route{}, fmt.Errorf("route %q has an empty segment", t)
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "...}"):
			if i != len(parts)-1 {
				return route{}, fmt.Errorf("route %q: %s must be last", t, p)
			}
			r.segs = append(r.segs, segment{rest: true})
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			r.segs = append(r.segs, segment{})
		case strings.ContainsAny(p, "{}"):
			return route{}, fmt.Errorf("route %q: bad segment %q", t, p)
		default:
			r.segs = append(r.segs, segment{lit: p})
		}
	}
	return r, nil
}

// match reports whether path (leading slashes collapsed, trailing
// slashes dropped) fits the template.
func (r *route) match(path string) bool {
	for _, s := range r.segs {
		if path == "" {
			return false
		}
		if s.rest {
			return true
		}
		seg := path
		if j := strings.IndexByte(path, '/'); j >= 0 {
			seg, path = path[:j], path[j+1:]
		} else {
			path = ""
		}
		if s.lit != "" && s.lit != seg {
			return false
		}
	}
	return path == ""
}

// router names a request path by the first template it fits.
type router struct{ routes []route }

// newRouter parses the templates (already validated).
func newRouter(templates []string) *router {
	rt := &router{}
	for _, t := range templates {
		if r, err := parseRoute(t); err == nil {
			rt.routes = append(rt.routes, r)
		}
	}
	return rt
}

// name returns the template path fits, or "other".
func (rt *router) name(path string) string {
	path = strings.TrimLeft(path, "/")
	path = strings.TrimRight(path, "/")
	if path == "" {
		for i := range rt.routes {
			if len(rt.routes[i].segs) == 0 {
				return rt.routes[i].name
			}
		}
		return otherRoute
	}
	for i := range rt.routes {
		if len(rt.routes[i].segs) > 0 && rt.routes[i].match(path) {
			return rt.routes[i].name
		}
	}
	return otherRoute
}
