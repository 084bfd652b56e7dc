package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsStandAlone checks that README.md, SPEC.md and docs/ point to no
// file outside the repository: every relative link and every quoted
// repository path (docs/…, deploy/…, a package's DESIGN.md) exists.
func TestDocsStandAlone(t *testing.T) {
	const root = "../.."
	files := []string{"README.md", "SPEC.md"}
	more, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, m := range more {
		rel, _ := filepath.Rel(root, m)
		files = append(files, rel)
	}
	link := regexp.MustCompile(`\]\(([^)#\s]+)`)
	// A quoted path with an extension or a trailing slash: `node/weave` is
	// an API path, `deploy/systemd/` a folder.
	quoted := regexp.MustCompile("`((?:docs|deploy|cmd|testnet|node|directory|replication|api)/[A-Za-z0-9_./-]*(?:\\.[a-z]+|/)|Dockerfile|LICENSE)`")
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if strings.Contains(text, "../shared") || strings.Contains(text, "/work/") {
			t.Errorf("%s points outside the repository", f)
		}
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, filepath.Dir(f), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", f, target)
			}
		}
		for _, m := range quoted.FindAllStringSubmatch(text, -1) {
			p := strings.TrimSuffix(m[1], "/")
			if strings.ContainsAny(p, "*<>") {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s names %s, which does not exist", f, p)
			}
		}
	}
}
