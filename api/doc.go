// Package api is the Weave (Firefox Sync 1.0/1.1) wire protocol: the WBO
// type and its validation, timestamps, query parameters, output formats,
// error codes, authentication headers and the HTTP routes of the storage API
// and the user API.
//
// The package imports none of HCE's other packages. The handlers talk to the
// rest of the system through the interfaces defined here (Store,
// Authenticator, Accounts); a storage node implements Store and
// Authenticator, the directory implements Accounts.
//
// Errors become HTTP statuses and Weave error codes in exactly one place,
// writeError in errors.go.
package api
