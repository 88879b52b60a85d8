package control

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func tenantValue(t testing.TB, tn Tenant) []byte {
	t.Helper()
	b, err := json.Marshal(tn)
	require.NoError(t, err)
	return b
}

func sampleTenant(id string, version uint64, token string) Tenant {
	return Tenant{ID: id, TokenHash: HashToken(token), Status: StatusActive, Topic: "phloem.t." + id, Partitions: 3, Version: version}
}

func TestApplyIdempotentAndVersioned(t *testing.T) {
	b := newBuilder(&State{})
	v1 := tenantValue(t, sampleTenant("acme", 1, "tok1"))
	require.Equal(t, "", b.apply([]byte("tenant/acme"), v1))
	s1 := b.build()
	require.EqualValues(t, 1, s1.Generation())

	// The same event applied again is a no-op, and so is an older version.
	b = newBuilder(s1)
	require.Equal(t, ReasonStale, b.apply([]byte("tenant/acme"), v1))
	old := sampleTenant("acme", 0, "tok0")
	old.Version = 1 // equal version, different content: still ignored
	old.TokenHash = HashToken("other")
	require.Equal(t, ReasonStale, b.apply([]byte("tenant/acme"), tenantValue(t, old)))
	require.False(t, b.changed())
	require.Same(t, s1, b.build(), "a batch of no-ops must not publish a new snapshot")

	// A newer version applies; the old token hash stops resolving.
	v2 := sampleTenant("acme", 2, "tok2")
	b = newBuilder(s1)
	require.Equal(t, "", b.apply([]byte("tenant/acme"), tenantValue(t, v2)))
	require.Equal(t, ReasonStale, b.apply([]byte("tenant/acme"), v1), "older version after newer")
	s2 := b.build()
	got, ok := s2.TenantByTokenHash(HashToken("tok2"))
	require.True(t, ok)
	require.EqualValues(t, 2, got.Version)
	_, ok = s2.TenantByTokenHash(HashToken("tok1"))
	require.False(t, ok)

	// Copy on write: the earlier snapshot is untouched.
	got, ok = s1.Tenant("acme")
	require.True(t, ok)
	require.EqualValues(t, 1, got.Version)
	_, ok = s1.TenantByTokenHash(HashToken("tok1"))
	require.True(t, ok)

	// Tombstone removes; a second tombstone is a no-op.
	b = newBuilder(s2)
	require.Equal(t, "", b.apply([]byte("tenant/acme"), nil))
	require.Equal(t, ReasonAbsent, b.apply([]byte("tenant/acme"), nil))
	s3 := b.build()
	require.Zero(t, s3.NumTenants())
	_, ok = s3.TenantByTokenHash(HashToken("tok2"))
	require.False(t, ok)

	// After removal the key starts over at version 1.
	b = newBuilder(s3)
	require.Equal(t, "", b.apply([]byte("tenant/acme"), v1))
}

func TestApplyRejectsInvalid(t *testing.T) {
	b := newBuilder(&State{})
	cases := map[string]struct{ key, value string }{
		"bad json":     {"tenant/acme", "{"},
		"id mismatch":  {"tenant/acme", string(tenantValue(t, sampleTenant("other", 1, "x")))},
		"version zero": {"tenant/acme", string(tenantValue(t, sampleTenant("acme", 0, "x")))},
		"bad id":       {"tenant/ACME", string(tenantValue(t, sampleTenant("ACME", 1, "x")))},
		"bad sink":     {"sink/s1", `{"id":"s1","tenant":"acme","type":"carrier-pigeon","version":1}`},
	}
	for name, c := range cases {
		require.Equal(t, ReasonInvalid, b.apply([]byte(c.key), []byte(c.value)), name)
	}
	require.Equal(t, ReasonUnknownKey, b.apply([]byte("widget/x"), []byte("{}")))
	require.False(t, b.changed())
}

func TestStateSinks(t *testing.T) {
	b := newBuilder(&State{})
	put := func(s Sink) {
		v, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, "", b.apply([]byte(SinkKey(s.ID)), v))
	}
	put(Sink{ID: "b-all", Tenant: AllTenants, Type: SinkStdout, Version: 1})
	put(Sink{ID: "a-acme", Tenant: "acme", Type: SinkHTTP, Params: map[string]string{"url": "http://x"}, Version: 1})
	put(Sink{ID: "c-other", Tenant: "other", Type: SinkFile, Version: 1})
	s := b.build()
	ids := func(ss []Sink) string {
		var out []string
		for _, k := range ss {
			out = append(out, k.ID)
		}
		return strings.Join(out, ",")
	}
	require.Equal(t, "a-acme,b-all,c-other", ids(s.Sinks()))
	require.Equal(t, "a-acme,b-all", ids(s.SinksFor("acme")))
	require.Equal(t, "b-all", ids(s.SinksFor("nobody")))

	b = newBuilder(s)
	require.Equal(t, "", b.apply([]byte("sink/b-all"), nil))
	require.Equal(t, "a-acme", ids(b.build().SinksFor("acme")))
	require.Equal(t, "a-acme,b-all,c-other", ids(s.Sinks()), "old snapshot unchanged")
}

func TestTokens(t *testing.T) {
	tok, err := NewToken()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(tok, TokenPrefix))
	require.Len(t, tok, len(TokenPrefix)+43)
	tok2, err := NewToken()
	require.NoError(t, err)
	require.NotEqual(t, tok, tok2)
	// Known vector: sha256("abc").
	require.Equal(t, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", HashToken("abc"))
	require.True(t, validHash(HashToken(tok)))
}

func TestTenantsSorted(t *testing.T) {
	b := newBuilder(&State{})
	for _, id := range []string{"c", "a", "b"} {
		require.Equal(t, "", b.apply([]byte(TenantKey(id)), tenantValue(t, sampleTenant(id, 1, id))))
	}
	s := b.build()
	ts := s.Tenants()
	require.Len(t, ts, 3)
	require.Equal(t, []string{"a", "b", "c"}, []string{ts[0].ID, ts[1].ID, ts[2].ID})
	ts[0].ID = "mutated"
	require.Equal(t, "a", s.Tenants()[0].ID, "Tenants returns a copy")
}
