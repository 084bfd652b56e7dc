package testnet

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawk"
	"github.com/hce-sync/hce/api/sync15"
	"github.com/hce-sync/hce/api/tokenserver"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/node"
)

// Sync 1.5 wiring: the tokenserver of voters and of serve, and the
// storage API of nodes and of serve.

// FxAConfig configures the Sync 1.5 tokenserver of a voter or of serve
// (directory.SyncConfig): how Firefox Accounts access tokens are
// verified. The tokenserver is on when one way is given.
type FxAConfig struct {
	// JWKSURL or JWKSFile give the accounts server's public keys
	// (Mozilla's: https://oauth.accounts.firefox.com/v1/jwks).
	JWKSURL  string
	JWKSFile string
	// VerifyURL is the accounts server's remote verification endpoint
	// (Mozilla's: https://oauth.accounts.firefox.com/v1/verify).
	VerifyURL string
	// Issuer, when set, is the iss the accounts server's tokens carry.
	Issuer string
	// Local runs the local issuer (`--fxa-local`): access tokens for the
	// directory's own accounts, signed with the RSA key in LocalKeyFile
	// (created on first use; every voter of a cluster needs the same
	// file).
	Local        bool
	LocalKeyFile string
	// MetricsSecret keys hashed_fxa_uid (the same on every voter).
	MetricsSecret string
}

// LocalIssuerName is the iss of the local issuer's tokens.
const LocalIssuerName = "hce-fxa-local"

// LocalIssuerKeyFile is the default name of the local issuer's key in a
// data folder.
const LocalIssuerKeyFile = "fxa-local.key"

// apply sets dcfg.Sync from c; dataDir holds the local issuer's key when
// LocalKeyFile is empty.
func (c FxAConfig) apply(dcfg *directory.Config, dataDir string) error {
	s := &dcfg.Sync
	s.JWKSURL, s.JWKSFile, s.VerifyURL = c.JWKSURL, c.JWKSFile, c.VerifyURL
	s.Verifier.Issuer = c.Issuer
	s.MetricsSecret = c.MetricsSecret
	if !c.Local {
		return nil
	}
	path := c.LocalKeyFile
	if path == "" {
		path = filepath.Join(dataDir, LocalIssuerKeyFile)
	}
	key, err := LoadOrCreateIssuerKey(path)
	if err != nil {
		return err
	}
	iss, err := tokenserver.NewIssuer(tokenserver.IssuerConfig{Issuer: LocalIssuerName, Key: key, Clock: dcfg.Clock})
	if err != nil {
		return err
	}
	s.Local = iss
	return nil
}

// LoadOrCreateIssuerKey reads the local issuer's RSA key from path (PKCS
// #8 PEM), creating a 2048-bit one (mode 0600) when the file is missing.
func LoadOrCreateIssuerKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := rsa.GenerateKey(rand.Reader, tokenserver.MinRSABits)
		if err != nil {
			return nil, err
		}
		pem, err := tokenserver.MarshalKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateIssuerKey(path) // made meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("local issuer key: %w", err)
		}
		_, werr := f.Write(pem)
		serr := f.Sync()
		if err := errors.Join(werr, serr, f.Close()); err != nil {
			return nil, fmt.Errorf("local issuer key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("local issuer key: %w", err)
	}
	return tokenserver.ParseKey(b)
}

// Sync15Limits are the limits of a node's Sync 1.5 storage API:
// syncstorage-rs's, with a record's payload at most the Weave limit (the
// revision bodies that replicate carry Weave's limits) and a batch at
// most 32 MiB of payload (a commit holds its batch in memory).
func Sync15Limits() sync15.Limits {
	l := sync15.DefaultLimits()
	l.MaxRecordPayloadBytes = api.MaxPayloadBytes
	l.MaxTotalBytes = 32 << 20
	return l
}

// DefaultReplayCacheSize is the Hawk replay cache of a node and of serve
// (Sync15Config.Hawk.ReplayCacheSize): 2^21 nonce fingerprints, at most
// 16 MiB, for up to 12,288 Sync 1.5 requests per second with the default
// 60 s skew (api/hawk's default, 8 MiB, allows 6,144).
const DefaultReplayCacheSize = 1 << 21

// Sync15Config configures the Sync 1.5 storage API of a node or of serve.
type Sync15Config struct {
	// Limits are the limits of info/configuration. Zero fields:
	// Sync15Limits().
	Limits sync15.Limits
	// Hawk configures the Hawk verifier (skew; replay cache, default
	// DefaultReplayCacheSize; Host and Port behind a proxy that rewrites
	// Host).
	Hawk hawk.Config
}

// hawkConfig is c.Hawk with the node's defaults.
func (c Sync15Config) hawkConfig() hawk.Config {
	h := c.Hawk
	if h.ReplayCacheSize == 0 {
		h.ReplayCacheSize = DefaultReplayCacheSize
	}
	return h
}

// sync15Handler builds the Sync 1.5 storage API over store with auth.
func sync15Handler(store *node.Store, auth sync15.Authenticator, cfg Sync15Config, quota int64, retryAfter int, logger *slog.Logger) (http.Handler, error) {
	scfg := sync15.DefaultConfig()
	scfg.Store = store.Sync15()
	scfg.Auth = auth
	scfg.Logger = logger.With("component", "sync15-api")
	scfg.QuotaBytes = quota
	scfg.RetryAfter = retryAfter
	d := Sync15Limits()
	l := cfg.Limits
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = d.MaxRequestBytes
	}
	if l.MaxPostRecords == 0 {
		l.MaxPostRecords = d.MaxPostRecords
	}
	if l.MaxPostBytes == 0 {
		l.MaxPostBytes = d.MaxPostBytes
	}
	if l.MaxTotalRecords == 0 {
		l.MaxTotalRecords = d.MaxTotalRecords
	}
	if l.MaxTotalBytes == 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxRecordPayloadBytes == 0 || l.MaxRecordPayloadBytes > api.MaxPayloadBytes {
		l.MaxRecordPayloadBytes = d.MaxRecordPayloadBytes
	}
	scfg.Limits = l
	return sync15.NewHandler(scfg)
}

// withSync15 routes /1.5/ to s15 and the rest to next.
func withSync15(s15, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/1.5/") {
			s15.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withTokenServer routes the tokenserver's and the local issuer's paths
// to the directory's handler (serve, whose other routes are the node's).
func withTokenServer(dir, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == tokenserver.Path || strings.HasPrefix(p, "/fxa-local/") {
			dir.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
