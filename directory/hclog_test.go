package directory

import (
	"bytes"
	"io"
	"log/slog"
	"mime"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestRaftLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	l := newRaftLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelInfo)
	if l.IsDebug() || !l.IsInfo() || l.GetLevel() != hclog.Info {
		t.Fatalf("level not INFO: debug=%v info=%v", l.IsDebug(), l.IsInfo())
	}
	l.Debug("hidden debug")
	l.Trace("hidden trace")
	l.Named("snap").With("peer", "p1").Warn("shown", "term", 3, "dangling")
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from std")
	out := buf.String()
	if strings.Contains(out, "hidden") {
		t.Fatalf("debug/trace leaked: %s", out)
	}
	for _, want := range []string{"level=WARN", "component=raft.snap", "peer=p1", "term=3", "dangling=<missing>", "level=ERROR", `msg="from std"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	l.SetLevel(hclog.Off)
	buf.Reset()
	l.Error("off")
	if buf.Len() != 0 {
		t.Fatalf("logged while Off: %s", buf.String())
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// mimeDecoder decodes RFC 2047 words.
type mimeDecoder struct{ mime.WordDecoder }

func (d *mimeDecoder) decode(s string) (string, error) { return d.DecodeHeader(s) }
