// Package procstat samples the server processes a load run targets on this
// machine, from Linux's /proc: CPU time, resident memory and the disk use
// of their data folders. FindListener finds the process listening on a
// TCP port (through /proc/net/tcp and the processes' descriptors), so
// that `hce load --url` against a server on this machine can watch it.
// On a system without /proc every function reports ErrUnsupported.
package procstat
