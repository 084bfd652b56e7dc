package mix

import (
	"embed"
	"fmt"
	"os"
	"slices"
	"strings"
)

//go:embed mixes/*.mix
var builtin embed.FS

// Builtins lists the names of the mixes built into hce: weave-mix-v1 (the
// traffic of real Sync clients) and the one-op mixes of the original
// benchmark (post100, get100, info, nodeweave).
func Builtins() []string {
	ents, _ := builtin.ReadDir("mixes")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".mix"))
	}
	slices.Sort(out)
	return out
}

// Builtin returns the built-in mix of that name.
func Builtin(name string) (*Mix, error) {
	b, err := builtin.ReadFile("mixes/" + name + ".mix")
	if err != nil {
		return nil, fmt.Errorf("mix: no built-in mix %q (built in: %s)", name, strings.Join(Builtins(), ", "))
	}
	return Parse(string(b))
}

// Load returns the built-in mix of that name, or else parses the file at
// that path.
func Load(nameOrPath string) (*Mix, error) {
	if slices.Contains(Builtins(), nameOrPath) {
		return Builtin(nameOrPath)
	}
	b, err := os.ReadFile(nameOrPath)
	if err != nil {
		return nil, fmt.Errorf("mix: %q is no built-in mix (%s) and no readable file: %w", nameOrPath, strings.Join(Builtins(), ", "), err)
	}
	m, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", nameOrPath, err)
	}
	return m, nil
}
