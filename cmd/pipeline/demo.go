package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"phloem/phloem/control"
	"phloem/phloem/topics"
)

// demoSinkID is the file sink the pipeline configures for the demo tenant.
const demoSinkID = "pipeline-file"

func tokenFile(o *options) string { return filepath.Join(o.dataDir, o.tenant+".token") }

// ensureDemo makes sure the demo tenant, its topic and its file sink exist, and
// returns the tenant's token. The token is kept (mode 0600) under the data
// directory because the control topic holds only its hash: a restart on the same
// data directory reuses it, so running meters and scripts keep working.
func ensureDemo(ctx context.Context, o *options, adm *kadm.Client, w *control.Writer, watcher *control.Watcher) (string, error) {
	tcfg := topics.DefaultConfig()
	topic, err := topics.Ensure(ctx, adm, tcfg, o.tenant, 0)
	if err != nil {
		return "", fmt.Errorf("cannot create the demo tenant's topic: %w", err)
	}
	state := watcher.State()
	cur, exists := state.Tenant(o.tenant)

	token, err := readToken(tokenFile(o))
	if err != nil {
		return "", err
	}
	valid := token != "" && exists && subtle.ConstantTimeCompare([]byte(control.HashToken(token)), []byte(cur.TokenHash)) == 1
	if !valid || !cur.Active() {
		if !valid {
			if token, err = control.NewToken(); err != nil {
				return "", fmt.Errorf("cannot generate the demo token: %w", err)
			}
		}
		t := control.Tenant{
			ID:        o.tenant,
			TokenHash: control.HashToken(token),
			Status:    control.StatusActive,
			Topic:     topic,
			Version:   cur.Version + 1,
		}
		if exists {
			t.Limits, t.Partitions = cur.Limits, cur.Partitions
		}
		if err := w.PutTenant(ctx, t); err != nil {
			return "", fmt.Errorf("cannot write the demo tenant: %w", err)
		}
		if err := os.WriteFile(tokenFile(o), []byte(token+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("cannot keep the demo token: %w", err)
		}
	}

	sinkDir := filepath.Join(o.dataDir, "sink")
	want := control.Sink{ID: demoSinkID, Tenant: o.tenant, Type: "file", Params: map[string]string{"dir": sinkDir}}
	if s, ok := state.Sink(demoSinkID); !ok || s.Tenant != want.Tenant || s.Type != want.Type || s.Params["dir"] != sinkDir {
		want.Version = s.Version + 1
		if err := w.PutSink(ctx, want); err != nil {
			return "", fmt.Errorf("cannot write the demo file sink: %w", err)
		}
	}

	// Wait until this process's own watcher has applied the writes, so that the
	// collector accepts the token from the first request.
	for {
		st := watcher.State()
		t, ok := st.TenantByTokenHash(control.HashToken(token))
		_, sinkOK := st.Sink(demoSinkID)
		if ok && t.ID == o.tenant && t.Active() && sinkOK {
			return token, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the control watcher did not see the demo tenant: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot read the demo token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
