package collector

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/phloem/control"
)

func TestTokenBucketDebt(t *testing.T) {
	cfg := DefaultConfig()
	a := newAdmission(cfg)
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	tn := control.Tenant{ID: "t", Limits: control.Limits{RecordsPerSec: 100, BytesPerSec: 1000}}
	b := a.tenantBucket(tn)
	require.Zero(t, b.check(now))
	b.charge(now, 500, 10) // into debt by 400 records
	w := b.check(now)
	require.InDelta(t, 4.01, w.Seconds(), 0.02, "debt / rate")
	now = now.Add(4100 * time.Millisecond)
	require.Zero(t, b.check(now), "debt repaid")
	b.charge(now, 1, 5000) // bytes now in debt
	require.Greater(t, b.check(now), 3*time.Second)
	// Lowering the limit applies at once; removing it makes the tenant unlimited.
	require.Nil(t, a.tenantBucket(control.Tenant{ID: "t"}))
}

// A tiny but valid limit must keep refusing once in debt: the wait used to
// overflow time.Duration, come out negative and admit the tenant.
func TestTokenBucketTinyRateStaysLimited(t *testing.T) {
	a := newAdmission(DefaultConfig())
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	b := a.tenantBucket(control.Tenant{ID: "t", Limits: control.Limits{BytesPerSec: 0.0001}})
	require.Zero(t, b.check(now))
	b.charge(now, 1, 1<<20)
	require.Equal(t, maxDebtWait, b.check(now))
	now = now.Add(time.Hour)
	require.Equal(t, maxDebtWait, b.check(now), "still in debt an hour later")
}

func TestTenantLabelCap(t *testing.T) {
	m := newMetrics(2)
	a, b, c, d := m.forTenant("a"), m.forTenant("b"), m.forTenant("c"), m.forTenant("d")
	require.NotSame(t, a, b)
	require.Same(t, c, d, "beyond the cap every tenant is \"other\"")
	require.Same(t, a, m.forTenant("a"))
	require.Len(t, m.tenants, 3)
}

func TestLimboBoundedAndExpiring(t *testing.T) {
	l := newLimbo(time.Minute, 3)
	now := time.Unix(0, 0)
	f := &flight{key: "k1", done: make(chan struct{})}
	l.orphan(f, now)
	got, stored := l.lookup("k1", now)
	require.Same(t, f, got)
	require.False(t, stored)
	close(f.done)
	l.complete(f, now)
	_, stored = l.lookup("k1", now)
	require.True(t, stored, "orphaned then stored: the retry is answered without a second copy")
	for i := range 5 {
		g := &flight{key: "x" + string(rune('a'+i)), done: make(chan struct{})}
		close(g.done)
		l.orphan(g, now)
	}
	require.LessOrEqual(t, len(l.stored), 3)
	_, stored = l.lookup("k1", now)
	require.False(t, stored, "oldest evicted beyond the bound")
	_, stored = l.lookup("xe", now.Add(2*time.Minute))
	require.False(t, stored, "expired")
	failed := &flight{key: "bad", done: make(chan struct{}), err: ErrKafkaUnavailable}
	close(failed.done)
	l.orphan(failed, now)
	got, stored = l.lookup("bad", now)
	require.Nil(t, got)
	require.False(t, stored, "a failed batch is produced again on retry")
}
