package embedded

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		wantErr  string
		loopback bool // the error is ErrNotLoopback
	}{
		{name: "zero value", cfg: Config{}},
		{name: "defaults", cfg: DefaultConfig()},
		{name: "ipv4 loopback", cfg: Config{Addr: "127.0.0.1:9092"}},
		{name: "other 127/8", cfg: Config{Addr: "127.0.0.2:0"}},
		{name: "ipv6 loopback", cfg: Config{Addr: "[::1]:0"}},
		{name: "localhost", cfg: Config{Addr: "localhost:0"}},
		{name: "all interfaces", cfg: Config{Addr: ":9092"}, wantErr: "must be loopback", loopback: true},
		{name: "unspecified", cfg: Config{Addr: "0.0.0.0:9092"}, wantErr: "must be loopback", loopback: true},
		{name: "routable", cfg: Config{Addr: "10.1.2.3:9092"}, wantErr: "must be loopback", loopback: true},
		{name: "hostname", cfg: Config{Addr: "kafka.example.com:9092"}, wantErr: "must be loopback", loopback: true},
		{name: "no port", cfg: Config{Addr: "127.0.0.1"}, wantErr: "want host:port"},
		{name: "bad port", cfg: Config{Addr: "127.0.0.1:99999"}, wantErr: "invalid embedded broker port"},
		{name: "negative retention", cfg: Config{RetentionMs: -1}, wantErr: "retention must be positive"},
		{name: "negative bytes", cfg: Config{RetentionBytes: -1}, wantErr: "retention bytes must be positive"},
		{name: "negative interval", cfg: Config{RetentionInterval: -time.Second}, wantErr: "retention interval"},
		{name: "negative partitions", cfg: Config{DefaultPartitions: -1}, wantErr: "default partitions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.Equal(t, tc.loopback, errors.Is(err, ErrNotLoopback))
		})
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	_, err := Start(Config{Addr: "0.0.0.0:0"}, nil)
	require.ErrorIs(t, err, ErrNotLoopback)
	require.ErrorContains(t, err, `"0.0.0.0:0"`)
}

func TestStartRunCloseInMemory(t *testing.T) {
	b, err := Start(Config{}, nil)
	require.NoError(t, err)
	addrs := b.Addrs()
	require.Len(t, addrs, 1)
	host, _, err := net.SplitHostPort(addrs[0])
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)

	ctx := testCtx(t, 20*time.Second)
	cl := newClient(t, addrs)
	require.NoError(t, cl.Ping(ctx))

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Run did not return after its context was cancelled")
	}
	require.NoError(t, b.Close(), "Close after Run is a no-op")

	// The port is free again: the listener is closed.
	ln, err := net.Listen("tcp", addrs[0])
	require.NoError(t, err)
	require.NoError(t, ln.Close())
}

func TestRunReturnsWhenClosed(t *testing.T) {
	b, err := Start(Config{}, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- b.Run(context.Background()) }()
	require.NoError(t, b.Close())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	startBroker(t, Config{DataDir: dir})
	_, err := Start(Config{DataDir: dir}, nil)
	require.ErrorIs(t, err, ErrDataDirLocked)
}

func TestPortInUse(t *testing.T) {
	b := startBroker(t, Config{})
	_, err := Start(Config{Addr: b.Addrs()[0]}, nil)
	require.ErrorContains(t, err, "cannot listen on "+b.Addrs()[0])
}

// TestTopicRetentionConfigs proves, through DescribeConfigs from a Kafka client,
// that every topic the broker creates carries topic-level retention bounds.
func TestTopicRetentionConfigs(t *testing.T) {
	const retMs, retBytes = int64(3_600_000), int64(50 << 20)
	b := startBroker(t, Config{RetentionMs: retMs, RetentionBytes: retBytes})
	ctx := testCtx(t, 20*time.Second)
	adm := kadm.NewClient(newClient(t, b.Addrs()))

	str := func(s string) *string { return &s }
	createTopic(t, ctx, adm, "plain", -1, nil)
	createTopic(t, ctx, adm, "unbounded", 1, map[string]*string{"retention.ms": str("-1"), "retention.bytes": str("-1")})
	createTopic(t, ctx, adm, "smaller", 1, map[string]*string{"retention.ms": str("60000"), "retention.bytes": str("1000")})
	createTopic(t, ctx, adm, "compacted", 1, map[string]*string{"cleanup.policy": str("compact")})
	createTopic(t, ctx, adm, "both", 1, map[string]*string{"cleanup.policy": str("compact,delete"), "retention.ms": str("1000")})

	want := map[string][2]string{
		"plain":     {strconv.FormatInt(retMs, 10), strconv.FormatInt(retBytes, 10)},
		"unbounded": {strconv.FormatInt(retMs, 10), strconv.FormatInt(retBytes, 10)},
		"smaller":   {"60000", "1000"},
		"compacted": {"-1", "-1"},
		"both":      {"1000", strconv.FormatInt(retBytes, 10)},
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, "plain", "unbounded", "smaller", "compacted", "both")
	require.NoError(t, err)
	for topic, w := range want {
		rc, err := rcs.On(topic, nil)
		require.NoError(t, err)
		require.NoError(t, rc.Err)
		got := map[string]*kadm.Config{}
		for _, c := range rc.Configs {
			got[c.Key] = &c
		}
		require.Equal(t, w[0], got["retention.ms"].MaybeValue(), "%s retention.ms", topic)
		require.Equal(t, w[1], got["retention.bytes"].MaybeValue(), "%s retention.bytes", topic)
		require.Equal(t, kmsg.ConfigSourceDynamicTopicConfig, got["retention.ms"].Source, "%s retention.ms is topic-level", topic)
		require.Equal(t, kmsg.ConfigSourceDynamicTopicConfig, got["retention.bytes"].Source, "%s retention.bytes is topic-level", topic)
	}

	// -1 partitions takes DefaultPartitions (3).
	td, err := adm.ListTopics(ctx, "plain")
	require.NoError(t, err)
	require.Len(t, td["plain"].Partitions, int(DefaultPartitions))
}

func TestAutoTopicCreationOff(t *testing.T) {
	b := startBroker(t, Config{})
	ctx := testCtx(t, 20*time.Second)
	cl := newClient(t, b.Addrs())

	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = true
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("typo")
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.ErrorIs(t, kerr.ErrorForCode(resp.Topics[0].ErrorCode), kerr.UnknownTopicOrPartition)

	// And with the option on, the topic is created with the broker's default
	// partition count and the broker-wide retention bounds.
	b2 := startBroker(t, Config{AllowAutoTopicCreation: true, DefaultPartitions: 2})
	cl2 := newClient(t, b2.Addrs())
	resp, err = req.RequestWith(ctx, cl2)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].ErrorCode))
	require.Len(t, resp.Topics[0].Partitions, 2)
	rcs, err := kadm.NewClient(cl2).DescribeTopicConfigs(ctx, "typo")
	require.NoError(t, err)
	rc, err := rcs.On("typo", nil)
	require.NoError(t, err)
	// kfake reports broker-wide defaults under the broker key, not as retention.ms.
	var found bool
	for _, c := range rc.Configs {
		if c.Key == "log.retention.ms" {
			found = true
			require.Equal(t, strconv.FormatInt(DefaultRetentionMs, 10), c.MaybeValue())
		}
	}
	require.True(t, found, "log.retention.ms is reported for the auto-created topic")
}
