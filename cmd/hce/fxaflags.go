package main

import (
	"flag"

	"github.com/hce-sync/hce/testnet"
)

// fxaFlags are the flags of the Sync 1.5 tokenserver (directory, serve):
// how Firefox Accounts access tokens are verified, and the local issuer.
type fxaFlags struct {
	jwksURL, jwksFile, verifyURL, issuer *string
	local                                *bool
	localKey, metricsSecret              *string
}

// addFxAFlags registers the tokenserver flags on fs; localDefault is
// --fxa-local's default.
func addFxAFlags(fs *flag.FlagSet, localDefault bool) *fxaFlags {
	return &fxaFlags{
		jwksURL:       fs.String("fxa-jwks-url", "", "Sync 1.5: URL of the Firefox Accounts server's public keys (JWKS) that access tokens are verified against, e.g. https://oauth.accounts.firefox.com/v1/jwks (reread hourly); turns the tokenserver (GET /1.0/sync/1.5) on"),
		jwksFile:      fs.String("fxa-jwks-file", "", "Sync 1.5: file holding the accounts server's JWKS (instead of --fxa-jwks-url)"),
		verifyURL:     fs.String("fxa-verify-url", "", "Sync 1.5: the accounts server's remote verification endpoint, e.g. https://oauth.accounts.firefox.com/v1/verify (tokens that are not JWTs, or all tokens without a JWKS)"),
		issuer:        fs.String("fxa-issuer", "", "Sync 1.5: the iss access tokens must carry (e.g. https://accounts.firefox.com); empty: not checked"),
		local:         fs.Bool("fxa-local", localDefault, "Sync 1.5: run the local OAuth issuer: this server's accounts get access tokens with their password (POST /fxa-local/v1/token, 'hce client fxa-token') for its tokenserver"),
		localKey:      fs.String("fxa-local-key", "", "Sync 1.5: the local issuer's RSA key (PEM, created when missing; every voter of a cluster needs the same file); default "+testnet.LocalIssuerKeyFile+" in the directory's data folder"),
		metricsSecret: fs.String("sync-metrics-secret", "", "Sync 1.5: key of the hashed_fxa_uid in token answers (client telemetry); the same on every voter"),
	}
}

// config returns the tokenserver configuration.
func (f *fxaFlags) config() testnet.FxAConfig {
	return testnet.FxAConfig{JWKSURL: *f.jwksURL, JWKSFile: *f.jwksFile, VerifyURL: *f.verifyURL, Issuer: *f.issuer,
		Local: *f.local, LocalKeyFile: *f.localKey, MetricsSecret: *f.metricsSecret}
}

// addReplayFlag registers --hawk-replay-cache (node, serve): the size of
// the Sync 1.5 Hawk replay cache.
func addReplayFlag(fs *flag.FlagSet) *int {
	return fs.Int("hawk-replay-cache", testnet.DefaultReplayCacheSize, "Sync 1.5: nonces the Hawk replay cache holds (8 bytes each, allocated as traffic comes); with the 60 s clock skew it accepts N*3/4/122 requests per second (default: 12,288), beyond which requests get 503")
}

// sync15Config is the Sync 1.5 storage API configuration of the flags.
func sync15Config(replay int) testnet.Sync15Config {
	var c testnet.Sync15Config
	c.Hawk.ReplayCacheSize = replay
	return c
}
