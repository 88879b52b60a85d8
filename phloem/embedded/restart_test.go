package embedded

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// childEnv, when set to a data dir, makes the test binary run a broker on that dir
// instead of the tests (see TestMain). The child prints "ADDR <host:port>" once it
// serves, then runs until it is killed or its stdin closes (its parent went away).
const childEnv = "PHLOEM_EMBEDDED_CHILD"

func runChild(dir string) int {
	b, err := Start(Config{DataDir: dir}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Printf("ADDR %s\n", b.Addrs()[0])
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := b.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

const (
	restartTopic = "restart"
	restartGroup = "restart-group"
)

// startAgain starts a broker on dir at addr, the previous broker's address. If
// something else took the port meanwhile (go test runs packages in parallel), it
// falls back to a new port rather than fail: the data dir is what is under test.
func startAgain(t *testing.T, dir, addr string) *Broker {
	t.Helper()
	b, err := Start(Config{DataDir: dir, Addr: addr}, nil)
	if err != nil && strings.Contains(err.Error(), "address already in use") {
		t.Logf("port of %s was taken meanwhile, restarting on a new port: %v", addr, err)
		b, err = Start(Config{DataDir: dir}, nil)
	}
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// consumeInGroup joins group on topic, polls exactly n records, commits them
// synchronously and leaves. It returns the values it saw.
func consumeInGroup(t *testing.T, ctx context.Context, addrs []string, group string, n int) []string {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(restartTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	require.NoError(t, err)
	defer cl.Close()
	var vals []string
	for len(vals) < n {
		fs := cl.PollRecords(ctx, n-len(vals))
		require.NoError(t, ctx.Err(), "group consumed %d of %d records", len(vals), n)
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		recs := fs.Records()
		for _, r := range recs {
			vals = append(vals, string(r.Value))
		}
		require.NoError(t, cl.CommitRecords(ctx, recs...))
	}
	return vals
}

// requireNoMoreInGroup checks that the group has nothing left to read: its committed
// offsets equal the end offsets.
func requireCommittedAtEnd(t *testing.T, ctx context.Context, adm *kadm.Client) {
	t.Helper()
	ends, err := adm.ListEndOffsets(ctx, restartTopic)
	require.NoError(t, err)
	committed, err := adm.FetchOffsets(ctx, restartGroup)
	require.NoError(t, err)
	require.NoError(t, committed.Error())
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(o.Topic, o.Partition)
		require.True(t, ok, "group has a commit for partition %d", o.Partition)
		require.Equal(t, o.Offset, c.At, "partition %d: committed offset = end offset", o.Partition)
	})
}

// TestRestartKeepsRecordsAndOffsets: records produced and a consumer group's
// committed offsets survive a clean stop and a start on the same data dir and port.
func TestRestartKeepsRecordsAndOffsets(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t, 45*time.Second)

	b1, err := Start(Config{DataDir: dir}, nil)
	require.NoError(t, err)
	addr := b1.Addrs()[0]
	cl := newClient(t, b1.Addrs())
	createTopic(t, ctx, kadm.NewClient(cl), restartTopic, 3, nil)
	produceN(t, ctx, cl, restartTopic, 0, 300)
	seen := consumeInGroup(t, ctx, b1.Addrs(), restartGroup, 300)
	require.Len(t, seen, 300)
	cl.Close()
	require.NoError(t, b1.Close())

	// Same data dir, same port.
	b2 := startAgain(t, dir, addr)
	adm := kadm.NewClient(newClient(t, b2.Addrs()))

	got := consumeAll(t, ctx, b2.Addrs(), restartTopic)
	require.Len(t, got, 300)
	for i := range 300 {
		require.True(t, got[fmt.Sprintf("v%d", i)], "record v%d survived the restart", i)
	}
	requireCommittedAtEnd(t, ctx, adm)

	// The group resumes where it committed: it sees only new records.
	produceN(t, ctx, newClient(t, b2.Addrs()), restartTopic, 300, 10)
	vals := consumeInGroup(t, ctx, b2.Addrs(), restartGroup, 10)
	for _, v := range vals {
		var i int
		_, err := fmt.Sscanf(v, "v%d", &i)
		require.NoError(t, err)
		require.GreaterOrEqual(t, i, 300, "group re-read %s: its committed offset was lost", v)
	}
}

// TestKill9KeepsAckedRecords runs the broker in a child process, produces with
// acks=all, commits a group's offsets, SIGKILLs the child, and starts a new broker on
// the same data dir: every acknowledged record and the commit are there.
func TestKill9KeepsAckedRecords(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t, 45*time.Second)

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	addrCh := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addrCh <- strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
	}()
	var addr string
	select {
	case addr = <-addrCh:
	case <-ctx.Done():
		t.Fatal("child broker did not report its address")
	}
	require.NotEmpty(t, addr, "child broker failed to start")

	cl := newClient(t, []string{addr}, kgo.RequiredAcks(kgo.AllISRAcks()))
	createTopic(t, ctx, kadm.NewClient(cl), restartTopic, 3, nil)
	for i := 0; i < 500; i += 50 {
		produceN(t, ctx, cl, restartTopic, i, 50) // returns once all 50 are acked
	}
	seen := consumeInGroup(t, ctx, []string{addr}, restartGroup, 500)
	require.Len(t, seen, 500)
	cl.Close()

	// kill -9: no shutdown hook, no flush.
	require.NoError(t, cmd.Process.Kill())
	err = cmd.Wait()
	require.Error(t, err, "child was killed")
	require.Contains(t, err.Error(), "killed")

	b := startAgain(t, dir, addr)
	got := consumeAll(t, ctx, b.Addrs(), restartTopic)
	require.Len(t, got, 500)
	for i := range 500 {
		require.True(t, got[fmt.Sprintf("v%d", i)], "acked record v%d survived kill -9", i)
	}
	requireCommittedAtEnd(t, ctx, kadm.NewClient(newClient(t, b.Addrs())))
}
