package directory

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawkid"
	"github.com/hce-sync/hce/api/tokenserver"
	"github.com/hce-sync/hce/directory/state"
)

// The Sync 1.5 tokenserver.
//
// Every voter answers GET /1.0/sync/1.5 (tokenserver.Path): it verifies
// the Firefox Accounts OAuth access token of the Authorization header
// (offline against the accounts server's JWKS, or with its remote
// verification endpoint), applies the tokenserver's X-KeyID rules to the
// account's Sync record (state.SyncLogin, committed through raft when
// something changes), and issues Hawk credentials for the primary of the
// record's account: an api/hawkid id signed with this voter's token key,
// carrying the Hawk key sealed to that node's X25519 key (published in its
// registration). With a local issuer (SyncConfig.Local, `--fxa-local`) the
// voter also signs access tokens for its own accounts
// (POST /fxa-local/v1/token with the account's Basic credentials).

// Defaults of SyncConfig.
const (
	// DefaultSyncDuration is the lifetime of the Hawk credentials.
	DefaultSyncDuration = time.Hour
	// DefaultJWKSRefresh is how often a JWKS URL or file is read again.
	DefaultJWKSRefresh = time.Hour
	// DefaultSyncNodeType is the node_type of token answers.
	DefaultSyncNodeType = "hce"
	// minJWKSRefetch spaces the refetches of a JWKS that a token with an
	// unknown key id causes.
	minJWKSRefetch = time.Minute
	// maxVerifyBody bounds the answer of the remote verification
	// endpoint.
	maxVerifyBody = 64 << 10
)

// Paths of the local issuer.
const (
	// PathFxALocalToken is where the local issuer signs access tokens
	// (POST, Basic credentials of an account of this directory).
	PathFxALocalToken = "/fxa-local/v1/token"
	// PathFxALocalJWKS publishes the local issuer's key set.
	PathFxALocalJWKS = "/fxa-local/v1/jwks"
)

// SyncConfig configures the Sync 1.5 tokenserver. It is on when one way
// of verifying access tokens is configured (Enabled); otherwise
// GET /1.0/sync/1.5 answers 404.
type SyncConfig struct {
	// JWKS, JWKSURL and JWKSFile give the accounts server's public keys
	// (at most one of them): a fixed set, a URL (Mozilla's is
	// https://oauth.accounts.firefox.com/v1/jwks) or a file, read at start
	// and every JWKSRefresh, and again (at most once a minute) when a
	// token names a key the set lacks.
	JWKS     *tokenserver.JWKS
	JWKSURL  string
	JWKSFile string
	// JWKSRefresh is how often JWKSURL or JWKSFile is read again.
	// Default DefaultJWKSRefresh (1 h).
	JWKSRefresh time.Duration
	// VerifyURL, when set, is the accounts server's remote verification
	// endpoint (POST {"token": ..} answering {"user", "generation",
	// "scope"}; Mozilla's is https://oauth.accounts.firefox.com/v1/verify).
	// It verifies tokens that are not JWTs, or every token when no key
	// set is configured.
	VerifyURL string
	// Verifier holds the checks of access tokens (issuer, audiences,
	// scope, leeway); its Clock is taken from Config.Clock.
	Verifier tokenserver.VerifierConfig
	// Local, when set, is the local issuer (`--fxa-local`): its tokens
	// are accepted and POST /fxa-local/v1/token signs them for the
	// accounts of this directory.
	Local *tokenserver.Issuer
	// Duration is the lifetime of the Hawk credentials (the answer's
	// duration; a request's ?duration= may ask for less). Default
	// DefaultSyncDuration (1 h), at most hawkid.MaxLifetime.
	Duration time.Duration
	// MetricsSecret keys hashed_fxa_uid (tokenserver.HashFxAUID); every
	// voter needs the same one. Empty means the empty key.
	MetricsSecret string
	// NodeType is the node_type of token answers. Default
	// DefaultSyncNodeType.
	NodeType string
	// ServeNodeKey is the X25519 public key of the storage node of users
	// without a replica set (serve mode: the node in the same process,
	// Tokens.ServeNodeID).
	ServeNodeKey []byte
	// HTTPClient fetches JWKSURL and calls VerifyURL. Default: a client
	// with a 10 s timeout.
	HTTPClient *http.Client
}

// Enabled reports whether the tokenserver is on.
func (c SyncConfig) Enabled() bool {
	return c.JWKS != nil || c.JWKSURL != "" || c.JWKSFile != "" || c.VerifyURL != "" || c.Local != nil
}

func (c SyncConfig) withDefaults() SyncConfig {
	if c.JWKSRefresh <= 0 {
		c.JWKSRefresh = DefaultJWKSRefresh
	}
	if c.Duration == 0 {
		c.Duration = DefaultSyncDuration
	}
	if c.NodeType == "" {
		c.NodeType = DefaultSyncNodeType
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	return c
}

func (c SyncConfig) validate() error {
	n := 0
	for _, set := range []bool{c.JWKS != nil, c.JWKSURL != "", c.JWKSFile != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return errors.New("directory: Sync: give at most one of JWKS, JWKSURL and JWKSFile")
	case c.Duration < 0 || c.Duration > hawkid.MaxLifetime:
		return fmt.Errorf("directory: Sync.Duration %v out of (0, %v]", c.Duration, hawkid.MaxLifetime)
	case len(c.ServeNodeKey) != 0 && len(c.ServeNodeKey) != state.HawkKeySize:
		return fmt.Errorf("directory: Sync.ServeNodeKey of %d bytes", len(c.ServeNodeKey))
	}
	if c.JWKS != nil {
		if _, err := tokenserver.NewVerifier(*c.JWKS, c.Verifier); err != nil {
			return fmt.Errorf("directory: Sync.JWKS: %w", err)
		}
	}
	return c.Verifier.Validate()
}

// syncServer is the tokenserver's state on one voter.
type syncServer struct {
	d   *Directory
	cfg SyncConfig
	// fxa holds the verifier of the accounts server's key set (nil until
	// a set was read); local the local issuer's.
	fxa      atomic.Pointer[tokenserver.Verifier]
	fxaKids  atomic.Pointer[map[string]bool]
	local    *tokenserver.Verifier
	localKid string

	fetchMu   sync.Mutex
	lastFetch time.Time
}

func newSyncServer(d *Directory) (*syncServer, error) {
	cfg := d.cfg.Sync
	s := &syncServer{d: d, cfg: cfg}
	vc := cfg.Verifier
	vc.Clock = d.cfg.Clock
	s.cfg.Verifier = vc
	if cfg.Local != nil {
		lc := vc
		lc.Issuer = cfg.Local.Issuer()
		lc.Audiences = nil
		v, err := tokenserver.NewVerifier(cfg.Local.JWKS(), lc)
		if err != nil {
			return nil, fmt.Errorf("directory: local issuer: %w", err)
		}
		s.local, s.localKid = v, cfg.Local.KeyID()
	}
	if cfg.JWKS != nil {
		if err := s.setJWKS(*cfg.JWKS); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// start reads the key set (a failure is logged: token requests answer
// 503 until a read succeeds) and runs the refresh loop.
func (s *syncServer) start(ctx context.Context) {
	if s.cfg.JWKSURL == "" && s.cfg.JWKSFile == "" {
		return
	}
	if err := s.fetch(ctx); err != nil {
		s.d.log.Warn("directory: reading the accounts server's keys failed; will retry", "err", err)
	}
	s.d.spawn(func(ctx context.Context) {
		t := time.NewTicker(s.cfg.JWKSRefresh)
		defer t.Stop()
		retry := time.NewTicker(10 * time.Second)
		defer retry.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-retry.C:
				if s.fxa.Load() != nil {
					continue
				}
			}
			if err := s.fetch(ctx); err != nil && ctx.Err() == nil {
				s.d.log.Warn("directory: reading the accounts server's keys", "err", err)
			}
		}
	})
}

func (s *syncServer) setJWKS(set tokenserver.JWKS) error {
	v, err := tokenserver.NewVerifier(set, s.cfg.Verifier)
	if err != nil {
		return err
	}
	kids := make(map[string]bool, len(set.Keys))
	for _, k := range set.Keys {
		kids[k.Kid] = true
	}
	s.fxa.Store(v)
	s.fxaKids.Store(&kids)
	return nil
}

// fetch reads the key set from JWKSURL or JWKSFile.
func (s *syncServer) fetch(ctx context.Context) error {
	s.fetchMu.Lock()
	s.lastFetch = s.d.cfg.Clock()
	s.fetchMu.Unlock()
	var doc []byte
	var err error
	if s.cfg.JWKSFile != "" {
		doc, err = os.ReadFile(s.cfg.JWKSFile)
	} else {
		doc, err = s.get(ctx, s.cfg.JWKSURL)
	}
	if err != nil {
		return err
	}
	set, err := tokenserver.ParseJWKS(doc)
	if err != nil {
		return err
	}
	return s.setJWKS(set)
}

func (s *syncServer) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, tokenserver.MaxJWKSBytes+1))
}

// refetchFor reads the key set again when kid is unknown to it, at most
// once per minJWKSRefetch; it reports whether it did.
func (s *syncServer) refetchFor(ctx context.Context, kid string) bool {
	if s.cfg.JWKSURL == "" && s.cfg.JWKSFile == "" {
		return false
	}
	if kids := s.fxaKids.Load(); kids != nil && (*kids)[kid] {
		return false
	}
	s.fetchMu.Lock()
	recent := s.d.cfg.Clock().Sub(s.lastFetch) < minJWKSRefetch
	s.fetchMu.Unlock()
	if recent {
		return false
	}
	if err := s.fetch(ctx); err != nil {
		s.d.log.Warn("directory: reading the accounts server's keys", "err", err)
		return false
	}
	return true
}

// jwtKid returns the kid of a compact JWS's header ("" when it has none
// or the token is not a JWS).
func jwtKid(token string) (string, bool) {
	hp, rest, ok := strings.Cut(token, ".")
	if !ok || strings.Count(rest, ".") != 1 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(hp)
	if err != nil {
		return "", false
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if json.Unmarshal(b, &h) != nil {
		return "", false
	}
	return h.Kid, true
}

// verify checks an access token: with the local issuer's key when it
// names it, else against the accounts server's key set, else with the
// remote verification endpoint. A refusal is a *tokenserver.Error; any
// other error means the check could not be made (503).
func (s *syncServer) verify(ctx context.Context, token string) (tokenserver.AccessClaims, error) {
	kid, isJWT := jwtKid(token)
	if isJWT && s.local != nil && kid == s.localKid {
		return s.local.Verify(token)
	}
	if isJWT && (s.cfg.JWKS != nil || s.cfg.JWKSURL != "" || s.cfg.JWKSFile != "") {
		v := s.fxa.Load()
		if v == nil {
			if !s.refetchFor(ctx, kid) || s.fxa.Load() == nil {
				return tokenserver.AccessClaims{}, fmt.Errorf("the accounts server's keys are not loaded: %w", api.ErrUnavailable)
			}
			v = s.fxa.Load()
		}
		c, err := v.Verify(token)
		if err != nil && s.refetchFor(ctx, kid) {
			c, err = s.fxa.Load().Verify(token)
		}
		return c, err
	}
	if s.cfg.VerifyURL != "" {
		return s.verifyRemote(ctx, token)
	}
	return tokenserver.AccessClaims{}, tokenserver.ErrInvalidCredentials.With("Unauthorized: unsupported token")
}

// verifyRemote asks the accounts server's verification endpoint.
func (s *syncServer) verifyRemote(ctx context.Context, token string) (tokenserver.AccessClaims, error) {
	body, _ := json.Marshal(map[string]string{"token": token})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.VerifyURL, bytes.NewReader(body))
	if err != nil {
		return tokenserver.AccessClaims{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return tokenserver.AccessClaims{}, fmt.Errorf("verify access token: %w: %w", api.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxVerifyBody))
	if err != nil {
		return tokenserver.AccessClaims{}, fmt.Errorf("verify access token: %w: %w", api.ErrUnavailable, err)
	}
	switch {
	case resp.StatusCode >= 500:
		return tokenserver.AccessClaims{}, fmt.Errorf("verify access token: %s: %w", resp.Status, api.ErrUnavailable)
	case resp.StatusCode != http.StatusOK:
		return tokenserver.AccessClaims{}, tokenserver.ErrInvalidCredentials.With("Unauthorized: " + resp.Status)
	}
	want := s.cfg.Verifier.Scope
	if want == "" {
		want = tokenserver.SyncScope
	}
	return parseVerifyAnswer(b, want)
}

// parseVerifyAnswer reads the accounts server's verification answer
// ({"user", "generation", "scope": a list or a space-separated string,
// "client_id"}) and checks that its scope grants want. Refusals are
// *tokenserver.Error values.
func parseVerifyAnswer(b []byte, want string) (tokenserver.AccessClaims, error) {
	var v struct {
		User       string          `json:"user"`
		ClientID   string          `json:"client_id"`
		Scope      json.RawMessage `json:"scope"`
		Generation *int64          `json:"generation"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.User == "" || len(v.User) > 256 {
		return tokenserver.AccessClaims{}, tokenserver.ErrInvalidCredentials.With("Unauthorized: verification answer")
	}
	var scopes []string
	var one string
	if json.Unmarshal(v.Scope, &scopes) != nil {
		if json.Unmarshal(v.Scope, &one) != nil {
			return tokenserver.AccessClaims{}, tokenserver.ErrInvalidCredentials.With("Unauthorized: verification scope")
		}
		scopes = strings.Fields(one)
	}
	if !tokenserver.ScopeGrants(scopes, want) {
		return tokenserver.AccessClaims{}, tokenserver.ErrInvalidCredentials.With("Unauthorized: scope does not grant " + want)
	}
	c := tokenserver.AccessClaims{Subject: v.User, Scopes: scopes, ClientID: v.ClientID}
	if v.Generation != nil {
		if *v.Generation < 0 {
			return tokenserver.AccessClaims{}, tokenserver.ErrInvalidGeneration.With("Unauthorized")
		}
		c.Generation = *v.Generation
	}
	return c, nil
}

// SyncToken answers a tokenserver request (GET /1.0/sync/1.5): it
// verifies the access token, applies the X-KeyID rules to the account's
// Sync record (committing a new or changed record through raft) and
// issues Hawk credentials for the primary node of the record's account.
// Refusals are *tokenserver.Error values; api.ErrUnavailable (and raft's
// errors) mean the directory cannot answer now (503).
func (d *Directory) SyncToken(ctx context.Context, r *http.Request) (tokenserver.Response, error) {
	s := d.sync
	if s == nil {
		return tokenserver.Response{}, tokenserver.ErrUnsupportedApp
	}
	if d.closed.Load() {
		return tokenserver.Response{}, ErrClosed
	}
	maxDur := int64(d.cfg.Sync.Duration / time.Second)
	req, err := tokenserver.ParseRequest(r, maxDur)
	if err != nil {
		return tokenserver.Response{}, err
	}
	claims, err := s.verify(ctx, req.Token)
	if err != nil {
		return tokenserver.Response{}, err
	}
	tc := tokenserver.Claims{Generation: claims.Generation, KeysChangedAt: req.KeyID.KeysChangedAt, ClientState: req.KeyID.ClientState}
	rec, err := d.syncLogin(ctx, claims.Subject, tc)
	if err != nil {
		return tokenserver.Response{}, err
	}
	dur := maxDur
	if req.Duration > 0 {
		dur = req.Duration
	}
	return d.issueSync(ctx, rec, dur, claims.Subject)
}

// syncLogin brings the FxA account's record up to date with a verified
// request and returns it.
func (d *Directory) syncLogin(ctx context.Context, fxa string, tc tokenserver.Claims) (state.SyncUser, error) {
	for attempt := 0; ; attempt++ {
		rec, ok := d.state.SyncUser(fxa)
		var stored *tokenserver.UserState
		if ok {
			stored = rec.UserState()
		}
		out, err := tokenserver.Decide(stored, tc)
		if err != nil {
			return state.SyncUser{}, err
		}
		if out.Action == tokenserver.Keep {
			return rec, nil
		}
		var oldSet []NodeInfo
		if ok && out.Action == tokenserver.Replace {
			oldSet = d.holders(rec.Account)
		}
		err = d.write(ctx, state.SyncLogin{FxA: fxa, Generation: tc.Generation, KeysChangedAt: tc.KeysChangedAt,
			ClientState: tc.ClientState, At: d.cfg.Clock().Unix(), Node: d.cfg.Accounts.NodeURL})
		if errors.Is(err, state.ErrSyncRefused) && attempt < 3 {
			continue // another request changed the record: decide again
		}
		if err != nil {
			return state.SyncUser{}, err
		}
		now, _ := d.state.SyncUser(fxa)
		switch {
		case ok && now.Account != rec.Account:
			// The replaced account was deleted: its nodes wipe it.
			d.guard.forget(rec.Account)
			d.notes.notify(rec.Account, oldSet, dirEvent(rec.Account, true, d.state.Credentials(rec.Account)))
		case ok && now.Generation > rec.Generation && rec.Generation > 0:
			d.notifyPasswordChanged(now.Account)
		}
		d.log.Info("directory: sync record", "action", out.Action.String(), "uid", now.UID, "user", now.Account)
		return now, nil
	}
}

// holders returns the nodes holding user's records: its members and its
// leaving nodes.
func (d *Directory) holders(user string) []NodeInfo {
	r, _, _ := d.state.Replicas(user)
	set := make([]NodeInfo, 0, len(r.Members)+len(r.Leaving))
	for _, m := range r.Members {
		set = append(set, m.NodeInfo)
	}
	return append(set, r.Leaving...)
}

// issueSync issues Hawk credentials of rec's account for its primary.
func (d *Directory) issueSync(ctx context.Context, rec state.SyncUser, dur int64, fxa string) (tokenserver.Response, error) {
	nodeID, nodeURL, key, err := d.syncNode(rec.Account)
	if err != nil {
		return tokenserver.Response{}, err
	}
	pub, err := ecdh.X25519().NewPublicKey(key)
	if err != nil {
		return tokenserver.Response{}, fmt.Errorf("directory: node %s's Hawk key: %w", nodeID, err)
	}
	if err := d.signer.ensurePublished(ctx); err != nil {
		return tokenserver.Response{}, fmt.Errorf("directory: signing key not published: %w: %w", api.ErrUnavailable, err)
	}
	priv, kid := d.signer.current()
	iat := max(d.cfg.Clock().Unix(), d.state.Credentials(rec.Account).ChangedAt+1)
	id, hkey, err := hawkid.Issue(priv, pub, hawkid.Claims{Kid: kid, UID: rec.UID, Sub: rec.Account, Aud: nodeID,
		Iat: iat, Exp: iat + dur}, rand.Reader)
	if err != nil {
		return tokenserver.Response{}, err
	}
	return tokenserver.Response{
		ID: id, Key: hkey, UID: rec.UID,
		APIEndpoint:  strings.TrimSuffix(nodeURL, "/") + "/1.5/" + strconv.FormatUint(rec.UID, 10),
		Duration:     dur,
		HashedFxAUID: tokenserver.HashFxAUID([]byte(d.cfg.Sync.MetricsSecret), fxa),
		NodeType:     d.cfg.Sync.NodeType,
	}, nil
}

// syncNode returns the node that serves user's Sync 1.5 clients (the
// primary, as StorageNode says; the serve node for users without a set)
// and its X25519 key.
func (d *Directory) syncNode(user string) (id, url string, key []byte, err error) {
	r, fallback, ok := d.state.Replicas(user)
	if !ok {
		return "", "", nil, fmt.Errorf("directory: sync account %q is gone: %w", user, api.ErrUnavailable)
	}
	if len(r.Members) == 0 {
		if fallback == "" || len(d.cfg.Sync.ServeNodeKey) == 0 {
			return "", "", nil, fmt.Errorf("directory: no Sync 1.5 storage node for %q: %w", user, api.ErrUnavailable)
		}
		return d.cfg.Tokens.ServeNodeID, fallback, d.cfg.Sync.ServeNodeKey, nil
	}
	m, ok := r.Serving()
	if !ok {
		return "", "", nil, fmt.Errorf("directory: primary %s of %q is %s: %w", r.Members[0].ID, user, servingState(r.Members[0]), api.ErrUnavailable)
	}
	if len(m.HawkKey) != state.HawkKeySize {
		return "", "", nil, fmt.Errorf("directory: node %s has published no Sync 1.5 key: %w", m.ID, api.ErrUnavailable)
	}
	return m.ID, m.URL, m.HawkKey, nil
}

// syncTokenHTTP serves GET /1.0/sync/1.5.
func (a *httpAPI) syncToken(w http.ResponseWriter, r *http.Request) {
	d := a.d
	now := d.cfg.Clock()
	resp, err := d.SyncToken(r.Context(), r)
	if err == nil {
		tokenserver.WriteResponse(w, resp, now)
		return
	}
	var te *tokenserver.Error
	if !errors.As(err, &te) {
		a.logUnavailable(r, http.StatusServiceUnavailable, err)
		w.Header().Set("Retry-After", strconv.Itoa(UserAPIRetryAfter))
	} else if te.HTTPStatus == http.StatusServiceUnavailable || te.HTTPStatus == http.StatusInternalServerError {
		w.Header().Set("Retry-After", strconv.Itoa(UserAPIRetryAfter))
	}
	tokenserver.WriteError(w, err, now)
}

// fxaLocalToken serves POST /fxa-local/v1/token: Basic credentials of
// an account of this directory give an access token of the local issuer,
// whose subject is "local." + the account name and whose fxa-generation
// follows the account's credential changes (in milliseconds), so a
// password change is a generation change.
func (a *httpAPI) fxaLocalToken(w http.ResponseWriter, r *http.Request) {
	d := a.d
	iss := d.cfg.Sync.Local
	if iss == nil {
		writeJSON(w, http.StatusNotFound, wireResult{Error: "not_found", Message: "no local issuer"})
		return
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="hce-fxa-local"`)
		writeJSON(w, http.StatusUnauthorized, wireResult{Error: "unauthorized", Message: "Basic credentials required"})
		return
	}
	ctx := api.WithClientAddr(r.Context(), api.RemoteIP(r))
	if err := d.CheckPassword(ctx, user, pass); err != nil {
		status := statusOf(err)
		var te *api.ThrottleError
		if errors.As(err, &te) {
			status = http.StatusTooManyRequests
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(te.After/time.Second))))
		} else if errors.Is(err, api.ErrUnauthorized) {
			w.Header().Set("WWW-Authenticate", `Basic realm="hce-fxa-local"`)
		}
		writeJSON(w, status, wireResult{Error: errorCode(err), Message: a.logUnavailable(r, status, err)})
		return
	}
	st := d.state.Credentials(user)
	tok, err := iss.Issue(tokenserver.TokenRequest{Subject: LocalFxAUID(user), Generation: st.ChangedAt * 1000})
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, wireResult{Error: "internal", Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, LocalTokenResponse{AccessToken: tok, TokenType: "bearer",
		Scope: tokenserver.SyncScope, FxAUID: LocalFxAUID(user)})
}

// fxaLocalJWKS serves the local issuer's key set.
func (a *httpAPI) fxaLocalJWKS(w http.ResponseWriter, r *http.Request) {
	iss := a.d.cfg.Sync.Local
	if iss == nil {
		writeJSON(w, http.StatusNotFound, wireResult{Error: "not_found", Message: "no local issuer"})
		return
	}
	writeJSON(w, http.StatusOK, iss.JWKS())
}

// LocalFxAUID is the subject of the local issuer's tokens for an account.
func LocalFxAUID(user string) string { return "local." + user }

// LocalTokenResponse is the answer of POST /fxa-local/v1/token.
type LocalTokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	Scope       string `json:"scope"`
	FxAUID      string `json:"fxa_uid"`
}
