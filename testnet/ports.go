package testnet

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
)

// Ports of members are chosen before their servers listen (they must stay
// the same across Restart), so another process could take one in between,
// or while a member is down between a kill and its restart. Ports handed
// out by the kernel for 127.0.0.1:0 come from the ephemeral range
// (32768-60999 on Linux by default), where every other test's listeners
// land; testnet ports are drawn below it instead, each checked free, never
// handed out twice by this process, and reserved against other processes
// that draw testnet ports (other test binaries, another hce testnet up) by
// a lock held until this process ends (lockPort).
const (
	portLow, portHigh = 20000, 32000
)

var (
	portMu   sync.Mutex
	portUsed = map[int]bool{}
)

// freePort returns a loopback host:port that was free a moment ago.
func freePort() (string, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		p := portLow + mrand.IntN(portHigh-portLow)
		if portUsed[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		portUsed[p] = true
		if !lockPort(p) {
			continue // another process's testnet holds it
		}
		return ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
