package directory

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// slogHCLog adapts a slog.Logger to hclog.Logger, the logger raft takes.
// Raft's messages are filtered at an explicit level (raft would log at
// DEBUG by default) and carry the attribute component=raft (or the hclog
// name set with Named).
type slogHCLog struct {
	l     *slog.Logger
	name  string
	args  []any
	level *atomic.Int32 // hclog.Level, shared with loggers derived by With/Named
}

var _ hclog.Logger = (*slogHCLog)(nil)

// newRaftLogger returns an hclog.Logger writing to l at level and above.
func newRaftLogger(l *slog.Logger, level slog.Level) hclog.Logger {
	lv := new(atomic.Int32)
	lv.Store(int32(hclogLevel(level)))
	return &slogHCLog{l: l, name: "raft", level: lv}
}

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= slog.LevelDebug-4:
		return hclog.Trace
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (h *slogHCLog) enabled(l hclog.Level) bool {
	min := hclog.Level(h.level.Load())
	return min != hclog.Off && l >= min
}

// Log implements hclog.Logger.
func (h *slogHCLog) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	if level == hclog.Off || !h.enabled(level) {
		return
	}
	attrs := make([]any, 0, 2+len(h.args)+len(args))
	attrs = append(attrs, "component", h.name)
	attrs = append(attrs, h.args...)
	attrs = append(attrs, fixArgs(args)...)
	h.l.Log(context.Background(), slogLevel(level), msg, attrs...)
}

// fixArgs turns hclog's key/value list into slog's: hclog allows a
// trailing key without value and values of type hclog.Format.
func fixArgs(args []any) []any {
	if len(args)%2 == 1 {
		args = append(args[:len(args):len(args)], "<missing>")
	}
	return args
}

// Trace implements hclog.Logger.
func (h *slogHCLog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (h *slogHCLog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (h *slogHCLog) Info(msg string, args ...any) { h.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (h *slogHCLog) Warn(msg string, args ...any) { h.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (h *slogHCLog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

// IsTrace implements hclog.Logger.
func (h *slogHCLog) IsTrace() bool { return h.enabled(hclog.Trace) }

// IsDebug implements hclog.Logger.
func (h *slogHCLog) IsDebug() bool { return h.enabled(hclog.Debug) }

// IsInfo implements hclog.Logger.
func (h *slogHCLog) IsInfo() bool { return h.enabled(hclog.Info) }

// IsWarn implements hclog.Logger.
func (h *slogHCLog) IsWarn() bool { return h.enabled(hclog.Warn) }

// IsError implements hclog.Logger.
func (h *slogHCLog) IsError() bool { return h.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger.
func (h *slogHCLog) ImpliedArgs() []any { return h.args }

// With implements hclog.Logger.
func (h *slogHCLog) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(h.args[:len(h.args):len(h.args)], fixArgs(args)...)
	return &c
}

// Name implements hclog.Logger.
func (h *slogHCLog) Name() string { return h.name }

// Named implements hclog.Logger.
func (h *slogHCLog) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

// ResetNamed implements hclog.Logger.
func (h *slogHCLog) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// SetLevel implements hclog.Logger.
func (h *slogHCLog) SetLevel(level hclog.Level) { h.level.Store(int32(level)) }

// GetLevel implements hclog.Logger.
func (h *slogHCLog) GetLevel() hclog.Level { return hclog.Level(h.level.Load()) }

// StandardLogger implements hclog.Logger.
func (h *slogHCLog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger. Lines are logged at
// opts.ForceLevel, or at INFO.
func (h *slogHCLog) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return &stdWriter{h: h, level: level}
}

type stdWriter struct {
	h     *slogHCLog
	level hclog.Level
}

func (w *stdWriter) Write(p []byte) (int, error) {
	w.h.Log(w.level, strings.TrimRight(string(p), "\r\n"))
	return len(p), nil
}
