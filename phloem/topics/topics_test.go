package topics

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestNameTenantRegexp(t *testing.T) {
	for _, tmpl := range []string{DefaultTemplate, "{tenant}", "data-{tenant}.v1", "x.{tenant}"} {
		c := DefaultConfig()
		c.Template = tmpl
		require.NoError(t, c.Validate(), tmpl)
		re := regexp.MustCompile(c.Regexp())
		for _, id := range []string{"a", "acme", "acme-prod_2", "0x"} {
			topic := c.Name(id)
			got, ok := c.Tenant(topic)
			require.True(t, ok, "%s %s", tmpl, topic)
			require.Equal(t, id, got)
			require.True(t, re.MatchString(topic), "regexp %s must match %s", c.Regexp(), topic)
		}
	}
	c := DefaultConfig()
	re := regexp.MustCompile(c.Regexp())
	for _, topic := range []string{"phloem.control", "phloem.t.", "phloem.t.ACME", "xphloem.t.acme", "phloem.t.acme.x", "phloemxtxacme", "__consumer_offsets"} {
		_, ok := c.Tenant(topic)
		require.False(t, ok, topic)
		require.False(t, re.MatchString(topic), topic)
	}
}

func TestValidate(t *testing.T) {
	bad := []func(*Config){
		func(c *Config) { c.Template = "phloem.t" },
		func(c *Config) { c.Template = "{tenant}.{tenant}" },
		func(c *Config) { c.Template = "phloem/t/{tenant}" },
		func(c *Config) { c.Partitions = 0 },
		func(c *Config) { c.ReplicationFactor = 0 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		require.Error(t, c.Validate(), i)
	}
	require.NoError(t, DefaultConfig().Validate())
}

func TestValidTenantID(t *testing.T) {
	for _, id := range []string{"a", "acme", "a-b_c", "0", "a23456789012345678901234567890123456789012345678901234567890123"} {
		require.NoError(t, ValidTenantID(id), id)
	}
	for _, id := range []string{"", "-a", "_a", "A", "a.b", "a/b", "a b", "a234567890123456789012345678901234567890123456789012345678901234"} {
		require.ErrorIs(t, ValidTenantID(id), ErrInvalidTenantID, id)
	}
}

func TestOrphans(t *testing.T) {
	c := DefaultConfig()
	live := map[string]bool{"acme": true}
	got := Orphans(c, []string{"phloem.t.gone", "phloem.t.acme", "phloem.control", "other", "phloem.t.also-gone"}, func(id string) bool { return live[id] })
	require.Equal(t, []string{"phloem.t.also-gone", "phloem.t.gone"}, got)
}

func TestEnsureListGC(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer cluster.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c := DefaultConfig()
	topic, err := Ensure(ctx, adm, c, "acme", 0)
	require.NoError(t, err)
	require.Equal(t, "phloem.t.acme", topic)
	_, err = Ensure(ctx, adm, c, "acme", 0)
	require.NoError(t, err, "an existing topic is success")
	_, err = Ensure(ctx, adm, c, "gone", 2)
	require.NoError(t, err)
	_, err = Ensure(ctx, adm, c, "Bad!", 2)
	require.ErrorIs(t, err, ErrInvalidTenantID)
	_, err = adm.CreateTopic(ctx, 1, -1, nil, "unrelated")
	require.NoError(t, err)

	infos, err := List(ctx, adm, c)
	require.NoError(t, err)
	require.Equal(t, []Info{{Topic: "phloem.t.acme", Tenant: "acme", Partitions: 3}, {Topic: "phloem.t.gone", Tenant: "gone", Partitions: 2}}, infos)

	live := func(id string) bool { return id == "acme" }
	res, err := GC(ctx, adm, c, live, false)
	require.NoError(t, err)
	require.Equal(t, []GCResult{{Topic: "phloem.t.gone", Tenant: "gone"}}, res)
	infos, err = List(ctx, adm, c)
	require.NoError(t, err)
	require.Len(t, infos, 2, "dry run deletes nothing")

	res, err = GC(ctx, adm, c, live, true)
	require.NoError(t, err)
	require.Equal(t, []GCResult{{Topic: "phloem.t.gone", Tenant: "gone", Deleted: true}}, res)
	require.Eventually(t, func() bool {
		infos, err := List(ctx, adm, c)
		return err == nil && len(infos) == 1 && infos[0].Tenant == "acme"
	}, 5*time.Second, 10*time.Millisecond)
	all, err := adm.ListTopics(kadm.WithAuthorizedOps(ctx))
	require.NoError(t, err)
	require.True(t, all.Has("unrelated"), "GC never touches topics outside the template")
}
