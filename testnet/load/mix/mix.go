package mix

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("mix: syntax")

// Limits of a mix file, so that a hostile file cannot make Parse or the
// generator use unbounded memory.
const (
	MaxFileBytes = 1 << 20
	MaxLineBytes = 4096
	MaxOps       = 1000
	MaxPrefill   = 1000
	MaxDevices   = 1000
	// MaxWBOs is the most WBOs one generated request carries (a Weave
	// POST stores at most 100; more are answered as failed).
	MaxWBOs = 1000
	// MaxPrefillRecords bounds one prefill line's record count.
	MaxPrefillRecords = 10_000_000
)

// Service says which part of a federation serves a request.
type Service int

// Where requests go.
const (
	// Storage requests go to the user's storage node (`/1.1/{user}/...`).
	Storage Service = iota
	// UserAPI requests go to the directory's user API (`/user/1.0/...`).
	UserAPI
)

func (s Service) String() string {
	if s == UserAPI {
		return "user"
	}
	return "storage"
}

// Body says what a request sends.
type Body int

// Request bodies.
const (
	// NoBody sends nothing.
	NoBody Body = iota
	// WBOBody sends a JSON array of WBOs (count from Op.WBOs, payload
	// sizes from Op.Size).
	WBOBody
	// RegisterBody sends a registration ({"password", "email"}) for the
	// fresh account the path's {new} names.
	RegisterBody
)

// IDKind says how the ids of written WBOs are chosen.
type IDKind int

// ID rules.
const (
	// NewIDs are fresh random 12-character ids.
	NewIDs IDKind = iota
	// DeviceIDs use the syncing device's id (one record per device, as
	// tabs and clients are kept).
	DeviceIDs
	// FixedID uses one id (IDs.Fixed), such as "global" or "keys".
	FixedID
	// PoolIDs draw uniformly from IDs.N ids per collection, the same ids
	// prefill writes (PrefillID).
	PoolIDs
	// ReuseIDs take, with probability IDs.P, an id prefill wrote for the
	// collection, otherwise a fresh one.
	ReuseIDs
)

// IDs is an id rule.
type IDs struct {
	Kind  IDKind
	Fixed string
	N     int
	P     float64
}

func (i IDs) String() string {
	switch i.Kind {
	case DeviceIDs:
		return "device"
	case FixedID:
		return "fixed(" + i.Fixed + ")"
	case PoolIDs:
		return "pool(" + strconv.Itoa(i.N) + ")"
	case ReuseIDs:
		return "reuse(" + strconv.FormatFloat(i.P, 'g', -1, 64) + ")"
	}
	return "new"
}

// Header is one request header an op sends.
type Header struct{ Name, Value string }

// Op is one kind of request.
type Op struct {
	// Name identifies the op in results ([a-z0-9_-]+, unique).
	Name string
	// Weight is the op's share of sync requests (op lines, normalised over
	// the mix), or, for background ops, how many the op sends per active
	// user per hour.
	Weight float64
	// Method is GET, HEAD, PUT, POST or DELETE.
	Method string
	// Path is the request path from the server root with placeholders
	// {user}, {coll}, {device} and {new} and an optional query.
	Path string
	// At is where the request goes (from the path unless at= says).
	At Service
	// Colls are the collections {coll} is drawn from, uniformly.
	Colls []string
	// Body is what the request sends.
	Body Body
	// WBOs is the number of WBOs a WBOBody carries; Size their payload
	// lengths in bytes; TTL their ttl in seconds (0: none); IDs their ids.
	WBOs Dist
	Size Dist
	TTL  int
	IDs  IDs
	// Newer adds newer=<the device's previous sync time> to the query.
	Newer bool
	// Headers are sent with every request of the op.
	Headers []Header
}

// Prefill is one collection every simulated user holds before a run.
type Prefill struct {
	// Coll is the collection.
	Coll string
	// Records is the number of records (PerDevice: that many per device).
	Records   int
	PerDevice bool
	// Size is the payload length in bytes; TTL the ttl in seconds (0:
	// none).
	Size Dist
	TTL  int
	// IDs: PoolIDs (default: PrefillID(0..Records-1)), DeviceIDs or
	// FixedID.
	IDs IDs
}

// Mix is a parsed mix file: what a simulated user (a browser profile with
// its devices) sends and holds.
type Mix struct {
	// Name is the mix's name.
	Name string
	// Devices is the number of devices of each user (default 1).
	Devices int
	// Think is the time between two syncs of one user, in seconds
	// (default exp(600s)).
	Think Dist
	// First names the op every sync starts with; the others follow in a
	// number drawn so that each op's share of requests is its weight. ""
	// means every sync is one op drawn by weight.
	First string
	// Ops are the sync ops; Background the ops sent at a rate per active
	// user independent of syncs.
	Ops        []Op
	Background []Op
	// Prefill lists what each user holds before the run.
	Prefill []Prefill
	// Source is the text the mix was parsed from.
	Source string
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	collRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,32}$`)
	idRE   = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)
	hdrRE  = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

// Parse reads a mix file. Errors name the line and wrap ErrSyntax.
func Parse(text string) (*Mix, error) {
	if len(text) > MaxFileBytes {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrSyntax, MaxFileBytes)
	}
	m := &Mix{Source: text}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 1024), MaxLineBytes+1)
	lineNo, header := 0, false
	seenDirective := map[string]bool{}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if len(line) > MaxLineBytes {
			return nil, fmt.Errorf("%w: line %d longer than %d bytes", ErrSyntax, lineNo, MaxLineBytes)
		}
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrSyntax, lineNo, fmt.Sprintf(format, args...))
		}
		if !header {
			if fields[0] != "hce-mix" || len(fields) != 2 || fields[1] != "1" {
				return nil, fail(`the first line must be "hce-mix 1"`)
			}
			header = true
			continue
		}
		dir := fields[0]
		switch dir {
		case "name", "devices", "think", "sync":
			if seenDirective[dir] {
				return nil, fail("%s given twice", dir)
			}
			seenDirective[dir] = true
		}
		switch dir {
		case "name":
			if len(fields) != 2 || !nameRE.MatchString(fields[1]) {
				return nil, fail("name takes one name of [a-z0-9_-]")
			}
			m.Name = fields[1]
		case "devices":
			n, err := strconv.Atoi(fieldOr(fields, 1))
			if len(fields) != 2 || err != nil || n < 1 || n > MaxDevices {
				return nil, fail("devices takes a number in [1, %d]", MaxDevices)
			}
			m.Devices = n
		case "think":
			d, err := ParseDist(strings.Join(fields[1:], " "), Seconds)
			if err != nil {
				return nil, fail("think: %v", err)
			}
			if !(d.Mean() > 0) {
				return nil, fail("think: mean must be positive")
			}
			m.Think = d
		case "sync":
			if len(fields) != 2 || !strings.HasPrefix(fields[1], "first=") {
				return nil, fail("sync takes first=OP")
			}
			m.First = strings.TrimPrefix(fields[1], "first=")
		case "op", "background":
			if len(m.Ops)+len(m.Background) >= MaxOps {
				return nil, fail("more than %d ops", MaxOps)
			}
			op, err := parseOp(fields[1:])
			if err != nil {
				return nil, fail("%s: %v", dir, err)
			}
			for _, o := range slices.Concat(m.Ops, m.Background) {
				if o.Name == op.Name {
					return nil, fail("op %q defined twice", op.Name)
				}
			}
			if dir == "op" {
				m.Ops = append(m.Ops, op)
			} else {
				m.Background = append(m.Background, op)
			}
		case "prefill":
			if len(m.Prefill) >= MaxPrefill {
				return nil, fail("more than %d prefill lines", MaxPrefill)
			}
			p, err := parsePrefill(fields[1:])
			if err != nil {
				return nil, fail("prefill: %v", err)
			}
			for _, q := range m.Prefill {
				if q.Coll == p.Coll {
					return nil, fail("prefill %s given twice", p.Coll)
				}
			}
			m.Prefill = append(m.Prefill, p)
		default:
			return nil, fail("unknown directive %q (want name, devices, think, sync, op, background or prefill)", dir)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrSyntax, lineNo+1, err)
	}
	if !header {
		return nil, fmt.Errorf(`%w: empty file (the first line must be "hce-mix 1")`, ErrSyntax)
	}
	if m.Name == "" {
		return nil, fmt.Errorf("%w: no name line", ErrSyntax)
	}
	if m.Devices == 0 {
		m.Devices = 1
	}
	if m.Think == nil {
		m.Think = Exp{M: 600, Unit: Seconds}
	}
	total := 0.0
	for _, o := range m.Ops {
		total += o.Weight
	}
	if len(m.Ops) == 0 || !(total > 0) {
		return nil, fmt.Errorf("%w: no op line with a positive weight", ErrSyntax)
	}
	if m.First != "" {
		op := m.Op(m.First)
		if op == nil || m.isBackground(m.First) {
			return nil, fmt.Errorf("%w: sync first=%s names no op line", ErrSyntax, m.First)
		}
		if !(op.Weight > 0) {
			return nil, fmt.Errorf("%w: sync first=%s has weight 0", ErrSyntax, m.First)
		}
	}
	for _, o := range slices.Concat(m.Ops, m.Background) {
		if o.IDs.Kind == DeviceIDs && m.Devices < 1 {
			return nil, fmt.Errorf("%w: op %s: ids=device needs devices", ErrSyntax, o.Name)
		}
	}
	return m, nil
}

func fieldOr(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func (m *Mix) isBackground(name string) bool {
	for _, o := range m.Background {
		if o.Name == name {
			return true
		}
	}
	return false
}

// Op returns the op (sync or background) of that name, or nil.
func (m *Mix) Op(name string) *Op {
	for i := range m.Ops {
		if m.Ops[i].Name == name {
			return &m.Ops[i]
		}
	}
	for i := range m.Background {
		if m.Background[i].Name == name {
			return &m.Background[i]
		}
	}
	return nil
}

var methods = []string{"GET", "HEAD", "PUT", "POST", "DELETE"}

func parseOp(f []string) (Op, error) {
	if len(f) < 4 {
		return Op{}, errors.New("want NAME WEIGHT METHOD PATH [key=value ...]")
	}
	op := Op{Name: f[0], Method: f[2], Path: f[3]}
	if !nameRE.MatchString(op.Name) {
		return op, fmt.Errorf("op name %q: want [a-z0-9_-], at most 64", op.Name)
	}
	w, err := strconv.ParseFloat(f[1], 64)
	if err != nil || w < 0 || math.IsInf(w, 0) || math.IsNaN(w) || w > maxValue {
		return op, fmt.Errorf("weight %q: want a number >= 0", f[1])
	}
	op.Weight = w
	if !slices.Contains(methods, op.Method) {
		return op, fmt.Errorf("method %q: want one of %v", op.Method, methods)
	}
	if !strings.HasPrefix(op.Path, "/") || strings.ContainsAny(op.Path, " \t\"\\") {
		return op, fmt.Errorf("path %q must start with / and hold no spaces, quotes or backslashes", op.Path)
	}
	if strings.HasPrefix(op.Path, "/user/") || strings.HasPrefix(op.Path, "/misc/") {
		op.At = UserAPI
	}
	op.Body = NoBody
	if op.Method == "POST" || op.Method == "PUT" {
		op.Body = WBOBody
	}
	op.WBOs = Const{V: 1, Unit: Count}
	op.Size = Const{V: 300, Unit: Bytes}
	for _, kv := range f[4:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return op, fmt.Errorf("%q: want key=value", kv)
		}
		switch k {
		case "wbos":
			d, err := ParseDist(v, Count)
			if err != nil {
				return op, fmt.Errorf("wbos: %v", err)
			}
			op.WBOs = d
		case "size":
			d, err := ParseDist(v, Bytes)
			if err != nil {
				return op, fmt.Errorf("size: %v", err)
			}
			op.Size = d
		case "ttl":
			t, err := ParseValue(v, Seconds)
			if err != nil || t > 1e9 {
				return op, fmt.Errorf("ttl: want a duration up to 1e9 s")
			}
			op.TTL = int(t)
		case "ids":
			ids, err := parseIDs(v)
			if err != nil {
				return op, err
			}
			op.IDs = ids
		case "coll":
			for c := range strings.SplitSeq(v, ",") {
				if !collRE.MatchString(c) {
					return op, fmt.Errorf("coll %q: want [a-zA-Z0-9._-], at most 32", c)
				}
				op.Colls = append(op.Colls, c)
			}
		case "newer":
			if v != "last" {
				return op, errors.New(`newer takes "last"`)
			}
			op.Newer = true
		case "header":
			name, val, ok := strings.Cut(v, ":")
			if !ok || !hdrRE.MatchString(name) || strings.ContainsAny(val, "\r\n") {
				return op, fmt.Errorf("header %q: want Name:Value", v)
			}
			op.Headers = append(op.Headers, Header{Name: name, Value: val})
		case "body":
			switch v {
			case "none":
				op.Body = NoBody
			case "wbos":
				op.Body = WBOBody
			case "register":
				op.Body = RegisterBody
			default:
				return op, fmt.Errorf("body %q: want none, wbos or register", v)
			}
		case "at":
			switch v {
			case "storage":
				op.At = Storage
			case "user":
				op.At = UserAPI
			default:
				return op, fmt.Errorf("at %q: want storage or user", v)
			}
		default:
			return op, fmt.Errorf("unknown key %q (want wbos, size, ttl, ids, coll, newer, header, body or at)", k)
		}
	}
	if strings.Contains(op.Path, "{coll}") != (len(op.Colls) > 0) {
		return op, errors.New("a path with {coll} needs coll=..., and coll= needs {coll} in the path")
	}
	if op.Body == RegisterBody && !strings.Contains(op.Path, "{new}") {
		return op, errors.New("body=register needs {new} in the path")
	}
	if op.Body == WBOBody && op.WBOs.Mean() > MaxWBOs {
		return op, fmt.Errorf("wbos: mean above %d", MaxWBOs)
	}
	if op.Body == WBOBody && op.collection("x") == "" {
		return op, errors.New("a WBO body needs a path with /storage/<collection>")
	}
	rest := op.Path
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return op, fmt.Errorf("path %q: unclosed {", op.Path)
		}
		switch rest[i : i+j+1] {
		case "{user}", "{coll}", "{device}", "{new}":
		default:
			return op, fmt.Errorf("path %q: unknown placeholder %s (want {user}, {coll}, {device}, {new})", op.Path, rest[i:i+j+1])
		}
		rest = rest[i+j+1:]
	}
	return op, nil
}

// collection is the collection the op's path names after /storage/, with
// {coll} replaced by coll; "" when the path names none.
func (o *Op) collection(coll string) string {
	p, _, _ := strings.Cut(o.Path, "?")
	_, rest, ok := strings.Cut(p, "/storage/")
	if !ok {
		return ""
	}
	c, _, _ := strings.Cut(rest, "/")
	return strings.ReplaceAll(c, "{coll}", coll)
}

func parseIDs(v string) (IDs, error) {
	arg := func(prefix string) (string, bool) {
		if strings.HasPrefix(v, prefix+"(") && strings.HasSuffix(v, ")") {
			return v[len(prefix)+1 : len(v)-1], true
		}
		return "", false
	}
	switch {
	case v == "new":
		return IDs{Kind: NewIDs}, nil
	case v == "device":
		return IDs{Kind: DeviceIDs}, nil
	}
	if a, ok := arg("fixed"); ok {
		if !idRE.MatchString(a) {
			return IDs{}, fmt.Errorf("ids=fixed(%s): want a WBO id", a)
		}
		return IDs{Kind: FixedID, Fixed: a}, nil
	}
	if a, ok := arg("pool"); ok {
		n, err := strconv.Atoi(a)
		if err != nil || n < 1 || n > MaxPrefillRecords {
			return IDs{}, fmt.Errorf("ids=pool(%s): want a count in [1, %d]", a, MaxPrefillRecords)
		}
		return IDs{Kind: PoolIDs, N: n}, nil
	}
	if a, ok := arg("reuse"); ok {
		p, err := strconv.ParseFloat(a, 64)
		if err != nil || p < 0 || p > 1 {
			return IDs{}, fmt.Errorf("ids=reuse(%s): want a probability", a)
		}
		return IDs{Kind: ReuseIDs, P: p}, nil
	}
	return IDs{}, fmt.Errorf("ids %q: want new, device, fixed(ID), pool(N) or reuse(P)", v)
}

func parsePrefill(f []string) (Prefill, error) {
	if len(f) < 2 {
		return Prefill{}, errors.New("want COLL RECORDS [size=DIST] [ttl=DURATION] [ids=...]")
	}
	p := Prefill{Coll: f[0], Size: Const{V: 300, Unit: Bytes}, IDs: IDs{Kind: PoolIDs}}
	if !collRE.MatchString(p.Coll) {
		return p, fmt.Errorf("collection %q: want [a-zA-Z0-9._-], at most 32", p.Coll)
	}
	if f[1] == "devices" {
		p.PerDevice, p.Records, p.IDs = true, 1, IDs{Kind: DeviceIDs}
	} else {
		n, err := strconv.Atoi(f[1])
		if err != nil || n < 0 || n > MaxPrefillRecords {
			return p, fmt.Errorf("records %q: want a count in [0, %d] or \"devices\"", f[1], MaxPrefillRecords)
		}
		p.Records = n
	}
	for _, kv := range f[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return p, fmt.Errorf("%q: want key=value", kv)
		}
		switch k {
		case "size":
			d, err := ParseDist(v, Bytes)
			if err != nil {
				return p, fmt.Errorf("size: %v", err)
			}
			p.Size = d
		case "ttl":
			t, err := ParseValue(v, Seconds)
			if err != nil || t > 1e9 {
				return p, errors.New("ttl: want a duration up to 1e9 s")
			}
			p.TTL = int(t)
		case "ids":
			ids, err := parseIDs(v)
			if err != nil {
				return p, err
			}
			if ids.Kind == FixedID && (p.Records > 1 || p.PerDevice) {
				return p, errors.New("ids=fixed(...) holds one record")
			}
			if ids.Kind != FixedID && ids.Kind != DeviceIDs {
				return p, errors.New("prefill ids: fixed(ID) or device (the default is the pool)")
			}
			p.IDs = ids
		default:
			return p, fmt.Errorf("unknown key %q (want size, ttl or ids)", k)
		}
	}
	if p.IDs.Kind == DeviceIDs {
		p.PerDevice, p.Records = true, 1
	}
	return p, nil
}

// String writes the mix back in mix-file syntax (without comments).
func (m *Mix) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hce-mix 1\nname %s\ndevices %d\nthink %s\n", m.Name, m.Devices, m.Think)
	if m.First != "" {
		fmt.Fprintf(&b, "sync first=%s\n", m.First)
	}
	write := func(dir string, o Op) {
		fmt.Fprintf(&b, "%s %s %s %s %s", dir, o.Name, strconv.FormatFloat(o.Weight, 'g', -1, 64), o.Method, o.Path)
		if o.At == UserAPI && !strings.HasPrefix(o.Path, "/user/") && !strings.HasPrefix(o.Path, "/misc/") {
			b.WriteString(" at=user")
		} else if o.At == Storage && (strings.HasPrefix(o.Path, "/user/") || strings.HasPrefix(o.Path, "/misc/")) {
			b.WriteString(" at=storage")
		}
		if len(o.Colls) > 0 {
			b.WriteString(" coll=" + strings.Join(o.Colls, ","))
		}
		defBody := NoBody
		if o.Method == "POST" || o.Method == "PUT" {
			defBody = WBOBody
		}
		if o.Body != defBody {
			b.WriteString(" body=" + [...]string{"none", "wbos", "register"}[o.Body])
		}
		if o.Body == WBOBody {
			fmt.Fprintf(&b, " wbos=%s size=%s ids=%s", noSpace(o.WBOs), noSpace(o.Size), o.IDs)
			if o.TTL > 0 {
				fmt.Fprintf(&b, " ttl=%ds", o.TTL)
			}
		}
		if o.Newer {
			b.WriteString(" newer=last")
		}
		for _, h := range o.Headers {
			fmt.Fprintf(&b, " header=%s:%s", h.Name, h.Value)
		}
		b.WriteByte('\n')
	}
	for _, o := range m.Ops {
		write("op", o)
	}
	for _, o := range m.Background {
		write("background", o)
	}
	for _, p := range m.Prefill {
		n := strconv.Itoa(p.Records)
		if p.PerDevice {
			n = "devices"
		}
		fmt.Fprintf(&b, "prefill %s %s size=%s", p.Coll, n, noSpace(p.Size))
		if p.TTL > 0 {
			fmt.Fprintf(&b, " ttl=%ds", p.TTL)
		}
		if p.IDs.Kind == FixedID {
			fmt.Fprintf(&b, " ids=%s", p.IDs)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func noSpace(d Dist) string { return strings.ReplaceAll(d.String(), " ", "") }
