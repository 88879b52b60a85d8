package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/control"
	"phloem/phloem/topics"
)

type result struct {
	code           int
	stdout, stderr string
}

// ctl runs phloemctl in-process.
func ctl(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// cluster starts an in-process broker and returns a function running phloemctl
// against it, and an admin client.
func cluster(t *testing.T) (func(args ...string) result, *kadm.Client, []string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return func(args ...string) result {
		t.Helper()
		return ctl(t, append([]string{"--brokers", strings.Join(addrs, ",")}, args...)...)
	}, kadm.NewClient(cl), addrs
}

func tokenFrom(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if tok, ok := strings.CutPrefix(line, "Token: "); ok {
			return tok
		}
	}
	t.Fatalf("no token in output:\n%s", out)
	return ""
}

func topicNames(t *testing.T, adm *kadm.Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	td, err := adm.ListTopics(kadm.WithAuthorizedOps(ctx))
	require.NoError(t, err)
	return td.Names()
}

func TestUnreachableBrokerFailsFastNamingAddress(t *testing.T) {
	t.Setenv("PHLOEM_BROKERS", "")
	start := time.Now()
	r := ctl(t, "--brokers", "127.0.0.1:1", "tenant", "list")
	took := time.Since(start)
	t.Logf("exit %d after %v: %s", r.code, took, r.stderr)
	require.NotZero(t, r.code)
	require.Less(t, took, 10*time.Second)
	require.Contains(t, r.stderr, "127.0.0.1:1")
	require.Contains(t, r.stderr, "--brokers")
}

func TestNoBrokers(t *testing.T) {
	t.Setenv("PHLOEM_BROKERS", "")
	r := ctl(t, "tenant", "list")
	require.NotZero(t, r.code)
	require.Contains(t, r.stderr, "no brokers: set --brokers or PHLOEM_BROKERS")
}

func TestBrokersFromEnv(t *testing.T) {
	_, _, addrs := cluster(t)
	t.Setenv("PHLOEM_BROKERS", strings.Join(addrs, ","))
	r := ctl(t, "tenant", "list")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "No tenants")
}

func TestHelpAtEveryLevel(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"tenant", "--help"}, {"tenant", "add", "--help"}, {"topics", "gc", "-h"}, {"sink", "add", "--help"}, {"--output", "json", "sink", "--help"}} {
		r := ctl(t, args...)
		require.Zero(t, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, r.stdout, "phloemctl", args)
	}
	r := ctl(t, "topics", "gc", "--help")
	require.Contains(t, r.stdout, "--yes")
	r = ctl(t, "tenant", "add", "--help")
	require.Contains(t, r.stdout, "records-per-sec")

	// Usage errors exit 2 and say what to do.
	for _, args := range [][]string{{}, {"nope"}, {"tenant"}, {"tenant", "nope"}, {"tenant", "add"}, {"--output", "yaml", "tenant", "list"}, {"tenant", "list", "--bogus"}} {
		r := ctl(t, args...)
		require.Equal(t, exitUsage, r.code, "%v", args)
		require.NotEmpty(t, r.stderr, "%v", args)
	}
}

func TestTenantLifecycleAndTopicsGC(t *testing.T) {
	pc, adm, addrs := cluster(t)

	r := pc("tenant", "add", "acme", "--records-per-sec", "100", "--bytes-per-sec", "1e6")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "will not be shown again")
	token := tokenFrom(t, r.stdout)
	require.True(t, strings.HasPrefix(token, control.TokenPrefix))
	require.Contains(t, topicNames(t, adm), "phloem.t.acme")

	// Flags after the positional argument, and global flags after the command.
	r = pc("tenant", "add", "gone", "--partitions", "2", "--timeout", "20s")
	require.Zero(t, r.code, r.stderr)

	r = pc("tenant", "add", "acme")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "already exists")
	require.Contains(t, r.stderr, "rotate-token")

	r = pc("tenant", "add", "Bad!")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "invalid tenant id")

	r = pc("tenant", "list")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "RECORDS/S")
	require.Regexp(t, `acme\s+active\s+phloem\.t\.acme\s+3\s+100\s+1000000\s+1`, r.stdout)
	require.NotContains(t, r.stdout, token, "the token is shown once only")

	// JSON output parses.
	r = pc("--output", "json", "tenant", "list")
	require.Zero(t, r.code, r.stderr)
	var ts []control.Tenant
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ts), r.stdout)
	require.Len(t, ts, 2)
	require.Equal(t, "acme", ts[0].ID)
	require.Equal(t, control.HashToken(token), ts[0].TokenHash)
	require.EqualValues(t, 2, ts[1].Partitions)

	// A running Watcher (as in a collector) sees a rotation within 1 s.
	w, err := control.NewWatcher(control.WatcherConfig{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(addrs...)}}, nil, nil)
	require.NoError(t, err)
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); require.NoError(t, <-done) }()
	require.NoError(t, w.WaitReady(wctx))
	_, ok := w.State().TenantByTokenHash(control.HashToken(token))
	require.True(t, ok)

	r = pc("--output", "json", "tenant", "rotate-token", "acme")
	require.Zero(t, r.code, r.stderr)
	var rot struct {
		Tenant control.Tenant `json:"tenant"`
		Token  string         `json:"token"`
		Note   string         `json:"note"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rot), r.stdout)
	require.NotEqual(t, token, rot.Token)
	require.EqualValues(t, 2, rot.Tenant.Version)
	require.Contains(t, rot.Note, "will not be shown again")
	require.Eventually(t, func() bool {
		_, ok := w.State().TenantByTokenHash(control.HashToken(rot.Token))
		return ok
	}, 1*time.Second, 5*time.Millisecond, "rotation not visible to the running watcher within 1s")
	_, ok = w.State().TenantByTokenHash(control.HashToken(token))
	require.False(t, ok, "old token revoked")

	// Disable / enable, with versions increasing.
	r = pc("tenant", "disable", "acme")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "now disabled")
	r = pc("tenant", "disable", "acme")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "already disabled")
	require.Eventually(t, func() bool { t, _ := w.State().Tenant("acme"); return !t.Active() && t.Version == 3 }, time.Second, 5*time.Millisecond)
	r = pc("tenant", "enable", "acme")
	require.Zero(t, r.code, r.stderr)
	r = pc("--output", "json", "tenant", "show", "acme")
	require.Zero(t, r.code, r.stderr)
	var show struct {
		Tenant control.Tenant `json:"tenant"`
		Sinks  []control.Sink `json:"sinks"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &show), r.stdout)
	require.True(t, show.Tenant.Active())
	require.EqualValues(t, 4, show.Tenant.Version)
	r = pc("tenant", "show", "acme")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "token sha256")

	// Remove "gone": its topic stays until gc --yes.
	r = pc("tenant", "remove", "gone")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "topics gc")
	r = pc("tenant", "show", "gone")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "not found")

	r = pc("topics", "list")
	require.Zero(t, r.code, r.stderr)
	require.Regexp(t, `phloem\.t\.gone\s+gone\s+2\s+removed`, r.stdout)
	require.Regexp(t, `phloem\.t\.acme\s+acme\s+3\s+active`, r.stdout)

	// Dry run lists and deletes nothing.
	r = pc("topics", "gc")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "phloem.t.gone")
	require.Contains(t, r.stdout, "dry run")
	require.Contains(t, topicNames(t, adm), "phloem.t.gone")
	r = pc("--output", "json", "topics", "gc")
	require.Zero(t, r.code, r.stderr)
	var gc struct {
		DryRun bool              `json:"dry_run"`
		Topics []topics.GCResult `json:"topics"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &gc), r.stdout)
	require.True(t, gc.DryRun)
	require.Equal(t, []topics.GCResult{{Topic: "phloem.t.gone", Tenant: "gone"}}, gc.Topics)
	require.Contains(t, topicNames(t, adm), "phloem.t.gone")

	// --yes deletes exactly the removed tenant's topic.
	r = pc("topics", "gc", "--yes")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "Deleted phloem.t.gone")
	names := topicNames(t, adm)
	require.NotContains(t, names, "phloem.t.gone")
	require.Contains(t, names, "phloem.t.acme")
	require.Contains(t, names, control.DefaultTopic)
	r = pc("topics", "gc")
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "No topics of removed tenants")

	// Removed and added again: starts over at version 1 and the watcher applies it.
	r = pc("tenant", "add", "gone")
	require.Zero(t, r.code, r.stderr)
	require.Eventually(t, func() bool { _, ok := w.State().Tenant("gone"); return ok }, time.Second, 5*time.Millisecond)
}

func TestSinks(t *testing.T) {
	pc, _, _ := cluster(t)
	require.Zero(t, pc("tenant", "add", "acme").code)

	r := pc("sink", "add", "acme-http", "--tenant", "acme", "--type", "http", "--param", "url=http://127.0.0.1:9/x", "--param", "timeout=5s")
	require.Zero(t, r.code, r.stderr)
	r = pc("sink", "add", "all-out", "--tenant", "*", "--type", "stdout")
	require.Zero(t, r.code, r.stderr)
	r = pc("sink", "add", "x", "--tenant", "nobody", "--type", "stdout")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "not found")
	r = pc("sink", "add", "y", "--tenant", "acme", "--type", "pigeon")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "unknown sink type")
	r = pc("sink", "add", "acme-http", "--tenant", "acme", "--type", "http")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "already exists")

	r = pc("sink", "list")
	require.Zero(t, r.code, r.stderr)
	require.Regexp(t, `acme-http\s+acme\s+http\s+timeout=5s,url=http://127.0.0.1:9/x\s+1`, r.stdout)

	r = pc("--output", "json", "sink", "list", "--tenant", "acme")
	require.Zero(t, r.code, r.stderr)
	var sinks []control.Sink
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &sinks), r.stdout)
	require.Len(t, sinks, 2)
	require.Equal(t, "http://127.0.0.1:9/x", sinks[0].Params["url"])

	r = pc("sink", "remove", "acme-http")
	require.Zero(t, r.code, r.stderr)
	r = pc("sink", "remove", "acme-http")
	require.Equal(t, exitError, r.code)
	r = pc("--output", "json", "sink", "list")
	require.Zero(t, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &sinks))
	require.Len(t, sinks, 1)
}
