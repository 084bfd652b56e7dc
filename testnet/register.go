package testnet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/directory"
)

// FetchVoters reads the directory voters' libp2p identities from
// GET <dirURL>/internal/v1/p2p.
func FetchVoters(ctx context.Context, c *http.Client, dirURL string) ([]peer.AddrInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(dirURL, "/")+directory.PathP2P, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %s", directory.PathP2P, resp.Status)
	}
	var info directory.P2PInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info); err != nil {
		return nil, fmt.Errorf("GET %s: %w", directory.PathP2P, err)
	}
	var out []peer.AddrInfo
	for _, v := range info.Voters {
		id, err := peer.Decode(v.PeerID)
		if err != nil {
			continue
		}
		ai := peer.AddrInfo{ID: id}
		for _, a := range v.Addrs {
			if m, err := ma.NewMultiaddr(a); err == nil {
				ai.Addrs = append(ai.Addrs, m)
			}
		}
		out = append(out, ai)
	}
	if len(out) == 0 {
		return nil, errors.New("the directory lists no voter with a libp2p identity yet")
	}
	return out, nil
}

// register posts a signed registration; it returns nil once accepted.
func register(ctx context.Context, c *http.Client, dirURL string, key ed25519.PrivateKey, r directory.Registration) error {
	body, sig, err := directory.SignRegistration(key, r, time.Now())
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(dirURL, "/")+"/internal/v1/nodes/register", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(directory.SignatureHeader, sig)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("registration answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
