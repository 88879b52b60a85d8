package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"phloem/phloem/control"
	"phloem/phloem/topics"
)

// commandTree returns every command. It is a function, not a package variable, so
// that no flag state survives between runs (tests call run many times).
func commandTree() []*group {
	return []*group{
		{name: "tenant", short: "add, inspect, disable, enable and remove tenants", cmds: []*leaf{
			{name: "add", args: "<id>", nargs: 1, short: "add a tenant: create its topic and print its token once", long: `
Creates the tenant's topic (the --topic-template with the id), then writes the
tenant to the control topic as active. The new token is printed once and never
stored: only its SHA-256 goes to Kafka. Tenant ids are 1-63 characters of a-z,
0-9, '_' and '-', starting with a letter or digit. Limits of 0 mean unlimited.`, setup: setupTenantAdd},
			{name: "list", short: "list tenants", setup: noFlags(cmdTenantList)},
			{name: "show", args: "<id>", nargs: 1, short: "show one tenant and its sinks", setup: noFlags(cmdTenantShow)},
			{name: "disable", args: "<id>", nargs: 1, short: "refuse the tenant's data (collectors answer 403); keeps its token and topic", setup: noFlags(cmdTenantStatus(control.StatusDisabled))},
			{name: "enable", args: "<id>", nargs: 1, short: "accept the tenant's data again", setup: noFlags(cmdTenantStatus(control.StatusActive))},
			{name: "rotate-token", args: "<id>", nargs: 1, short: "replace the tenant's token and print the new one once; the old one stops working", setup: noFlags(cmdTenantRotate)},
			{name: "remove", args: "<id>", nargs: 1, short: "remove the tenant from the control topic (its topic stays until \"topics gc --yes\")", setup: noFlags(cmdTenantRemove)},
		}},
		{name: "sink", short: "add, list and remove sinks (where phloem delivers a tenant's records)", cmds: []*leaf{
			{name: "add", args: "<id>", nargs: 1, short: "add a sink for a tenant, or for all tenants with --tenant '*'", long: `
Types: http (params: url, timeout, authorization), file (params: dir, max_bytes, max_age, fsync=batch|never), stdout, stream.
Example: phloemctl sink add acme-http --tenant acme --type http --param url=https://example.com/ingest`, setup: setupSinkAdd},
			{name: "list", short: "list sinks", setup: setupSinkList},
			{name: "remove", args: "<id>", nargs: 1, short: "remove a sink", setup: noFlags(cmdSinkRemove)},
		}},
		{name: "topics", short: "list tenant topics and delete those of removed tenants", cmds: []*leaf{
			{name: "list", short: "list topics matching the topic template, with their tenant's state", setup: noFlags(cmdTopicsList)},
			{name: "gc", short: "list (dry run) or, with --yes, delete the topics of removed tenants", long: `
A topic is garbage when it matches --topic-template and its tenant is not in the
control topic (removed with "tenant remove"). Disabled tenants keep their topics.
Without --yes nothing is deleted. Deleting a topic deletes its data.`, setup: setupTopicsGC},
		}},
	}
}

type runFunc = func(ctx context.Context, a *app, args []string) error

func noFlags(fn runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return fn }
}

func notFound(id string) error {
	return fmt.Errorf("tenant %q not found; \"phloemctl tenant list\" shows the tenants", id)
}

// tenant reads the control state and returns it with the tenant id, or an error
// saying how to find the tenants.
func (a *app) tenant(ctx context.Context, id string) (*control.State, control.Tenant, error) {
	st, err := a.state(ctx)
	if err != nil {
		return nil, control.Tenant{}, err
	}
	t, ok := st.Tenant(id)
	if !ok {
		return nil, control.Tenant{}, notFound(id)
	}
	return st, t, nil
}

func limitString(v float64) string {
	if v == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// tokenResult is the JSON output of commands that issue a token.
type tokenResult struct {
	Tenant control.Tenant `json:"tenant"`
	Token  string         `json:"token"`
	Note   string         `json:"note"`
}

const tokenNote = "This token will not be shown again: store it now (e.g. in your secret manager)."

func (a *app) printToken(t control.Tenant, token, what string) error {
	if a.json() {
		return a.printJSON(tokenResult{Tenant: t, Token: token, Note: tokenNote})
	}
	a.printf("%s\nToken: %s\n%s\nTo replace it later: phloemctl tenant rotate-token %s\n", what, token, tokenNote, t.ID)
	return nil
}

func setupTenantAdd(fs *flag.FlagSet) runFunc {
	var limits control.Limits
	var partitions int
	fs.Float64Var(&limits.RecordsPerSec, "records-per-sec", 0, "rate limit in records per second; 0: unlimited")
	fs.Float64Var(&limits.BytesPerSec, "bytes-per-sec", 0, "rate limit in bytes per second; 0: unlimited")
	fs.IntVar(&partitions, "partitions", 0, "partitions of the tenant's topic; 0: the default (3)")
	return func(ctx context.Context, a *app, args []string) error {
		id := args[0]
		if err := topics.ValidTenantID(id); err != nil {
			return usageError{err}
		}
		if limits.RecordsPerSec < 0 || limits.BytesPerSec < 0 {
			return usagef("--records-per-sec and --bytes-per-sec must not be negative (0 means unlimited)")
		}
		if partitions < 0 || partitions > 1<<20 {
			return usagef("--partitions %d out of range", partitions)
		}
		st, err := a.state(ctx)
		if err != nil {
			return err
		}
		if cur, ok := st.Tenant(id); ok {
			return fmt.Errorf("tenant %q already exists (status %s); use \"phloemctl tenant rotate-token %s\" for a new token, or remove it first", id, cur.Status, id)
		}
		w, err := a.writer(ctx)
		if err != nil {
			return err
		}
		if partitions == 0 {
			partitions = int(a.g.topics.Partitions)
		}
		// Topic first: a collector must never know a tenant whose topic is missing.
		// Ensure treats an existing topic as success, so a failed add can be re-run.
		topic, err := topics.Ensure(ctx, a.adm, a.g.topics, id, int32(partitions))
		if err != nil {
			return err
		}
		token, err := control.NewToken()
		if err != nil {
			return err
		}
		t := control.Tenant{
			ID: id, TokenHash: control.HashToken(token), Status: control.StatusActive, Limits: limits,
			Topic: topic, Partitions: int32(partitions), Version: 1,
		}
		if err := w.PutTenant(ctx, t); err != nil {
			return fmt.Errorf("%w; the topic %q exists, re-run the same command to finish", err, topic)
		}
		return a.printToken(t, token, fmt.Sprintf("Tenant %q added (topic %s, %d partitions).", id, topic, partitions))
	}
}

func tenantRow(t control.Tenant) []string {
	return []string{t.ID, string(t.Status), t.Topic, strconv.Itoa(int(t.Partitions)), limitString(t.Limits.RecordsPerSec), limitString(t.Limits.BytesPerSec), strconv.FormatUint(t.Version, 10)}
}

var tenantHeader = []string{"ID", "STATUS", "TOPIC", "PARTITIONS", "RECORDS/S", "BYTES/S", "VERSION"}

func cmdTenantList(ctx context.Context, a *app, _ []string) error {
	st, err := a.state(ctx)
	if err != nil {
		return err
	}
	return printList(a, st.Tenants(), "No tenants. Add one with: phloemctl tenant add <id>", tenantHeader, tenantRow)
}

// printList prints items as JSON (an empty list, never null) or as a table, or
// says empty (with what to do) when there are none.
func printList[T any](a *app, items []T, empty string, header []string, row func(T) []string) error {
	if a.json() {
		if items == nil {
			items = []T{}
		}
		return a.printJSON(items)
	}
	if len(items) == 0 {
		a.printf("%s\n", empty)
		return nil
	}
	rows := make([][]string, len(items))
	for i, it := range items {
		rows[i] = row(it)
	}
	return a.table(header, rows)
}

func cmdTenantShow(ctx context.Context, a *app, args []string) error {
	st, t, err := a.tenant(ctx, args[0])
	if err != nil {
		return err
	}
	sinks := st.SinksFor(t.ID)
	if a.json() {
		if sinks == nil {
			sinks = []control.Sink{}
		}
		return a.printJSON(struct {
			Tenant control.Tenant `json:"tenant"`
			Sinks  []control.Sink `json:"sinks"`
		}{t, sinks})
	}
	rows := [][]string{
		{"id", t.ID}, {"status", string(t.Status)}, {"topic", t.Topic},
		{"partitions", strconv.Itoa(int(t.Partitions))},
		{"records/s", limitString(t.Limits.RecordsPerSec)}, {"bytes/s", limitString(t.Limits.BytesPerSec)},
		{"token sha256", t.TokenHash}, {"version", strconv.FormatUint(t.Version, 10)},
	}
	var names []string
	for _, k := range sinks {
		names = append(names, k.ID+" ("+k.Type+")")
	}
	if len(names) == 0 {
		names = []string{"none"}
	}
	rows = append(rows, []string{"sinks", strings.Join(names, ", ")})
	return a.table([]string{"FIELD", "VALUE"}, rows)
}

func cmdTenantStatus(status control.TenantStatus) runFunc {
	return func(ctx context.Context, a *app, args []string) error {
		_, t, err := a.tenant(ctx, args[0])
		if err != nil {
			return err
		}
		changed := t.Status != status
		if changed {
			w, err := a.writer(ctx)
			if err != nil {
				return err
			}
			t.Status = status
			t.Version++
			if err := w.PutTenant(ctx, t); err != nil {
				return err
			}
		}
		if a.json() {
			return a.printJSON(struct {
				Tenant  control.Tenant `json:"tenant"`
				Changed bool           `json:"changed"`
			}{t, changed})
		}
		if !changed {
			a.printf("Tenant %q is already %s; nothing written.\n", t.ID, status)
			return nil
		}
		a.printf("Tenant %q is now %s.\n", t.ID, status)
		return nil
	}
}

func cmdTenantRotate(ctx context.Context, a *app, args []string) error {
	_, t, err := a.tenant(ctx, args[0])
	if err != nil {
		return err
	}
	w, err := a.writer(ctx)
	if err != nil {
		return err
	}
	token, err := control.NewToken()
	if err != nil {
		return err
	}
	t.TokenHash = control.HashToken(token)
	t.Version++
	if err := w.PutTenant(ctx, t); err != nil {
		return err
	}
	return a.printToken(t, token, fmt.Sprintf("Token of tenant %q rotated; the previous token no longer works.", t.ID))
}

func cmdTenantRemove(ctx context.Context, a *app, args []string) error {
	st, t, err := a.tenant(ctx, args[0])
	if err != nil {
		return err
	}
	w, err := a.writer(ctx)
	if err != nil {
		return err
	}
	if err := w.DeleteTenant(ctx, t.ID); err != nil {
		return err
	}
	var own []string
	for _, k := range st.SinksFor(t.ID) {
		if k.Tenant == t.ID {
			own = append(own, k.ID)
		}
	}
	if a.json() {
		if own == nil {
			own = []string{}
		}
		return a.printJSON(struct {
			Removed    string   `json:"removed"`
			Topic      string   `json:"topic"`
			OrphanSink []string `json:"sinks_left"`
		}{t.ID, t.Topic, own})
	}
	a.printf("Tenant %q removed. Its topic %s is kept: \"phloemctl topics gc\" lists topics of removed tenants, \"phloemctl topics gc --yes\" deletes them.\n", t.ID, t.Topic)
	if len(own) > 0 {
		a.printf("Sinks still configured for it: %s (remove with \"phloemctl sink remove <id>\").\n", strings.Join(own, ", "))
	}
	return nil
}

// paramsFlag collects repeated --param key=value flags.
type paramsFlag map[string]string

func (p paramsFlag) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, k+"="+p[k])
	}
	return strings.Join(parts, ",")
}

func (p paramsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not key=value", v)
	}
	p[k] = val
	return nil
}

func setupSinkAdd(fs *flag.FlagSet) runFunc {
	var tenant, typ string
	params := paramsFlag{}
	fs.StringVar(&tenant, "tenant", "", "tenant id whose records the sink receives, or '*' for all tenants (required)")
	fs.StringVar(&typ, "type", "", "sink type: http, file, stdout or stream (required)")
	fs.Var(params, "param", "sink parameter key=value; repeat for several (http: url=..., file: dir=...)")
	return func(ctx context.Context, a *app, args []string) error {
		id := args[0]
		if err := control.ValidSinkID(id); err != nil {
			return usageError{err}
		}
		if tenant == "" || typ == "" {
			return usagef("--tenant and --type are required")
		}
		if err := control.ValidSinkType(typ); err != nil {
			return usageError{err}
		}
		if tenant != control.AllTenants {
			if err := topics.ValidTenantID(tenant); err != nil {
				return usageError{err}
			}
		}
		st, err := a.state(ctx)
		if err != nil {
			return err
		}
		if _, ok := st.Sink(id); ok {
			return fmt.Errorf("sink %q already exists; remove it first with \"phloemctl sink remove %s\"", id, id)
		}
		if _, ok := st.Tenant(tenant); !ok && tenant != control.AllTenants {
			return notFound(tenant)
		}
		w, err := a.writer(ctx)
		if err != nil {
			return err
		}
		s := control.Sink{ID: id, Tenant: tenant, Type: typ, Params: map[string]string(params), Version: 1}
		if err := w.PutSink(ctx, s); err != nil {
			return err
		}
		if a.json() {
			return a.printJSON(s)
		}
		a.printf("Sink %q (%s) added for tenant %s.\n", id, typ, tenant)
		return nil
	}
}

func setupSinkList(fs *flag.FlagSet) runFunc {
	var tenant string
	fs.StringVar(&tenant, "tenant", "", "show only the sinks that receive this tenant's records (its own and '*')")
	return func(ctx context.Context, a *app, _ []string) error {
		st, err := a.state(ctx)
		if err != nil {
			return err
		}
		sinks := st.Sinks()
		if tenant != "" {
			sinks = st.SinksFor(tenant)
		}
		return printList(a, sinks, "No sinks. Add one with: phloemctl sink add <id> --tenant <tenant> --type <type>",
			[]string{"ID", "TENANT", "TYPE", "PARAMS", "VERSION"}, func(k control.Sink) []string {
				return []string{k.ID, k.Tenant, k.Type, paramsFlag(k.Params).String(), strconv.FormatUint(k.Version, 10)}
			})
	}
}

func cmdSinkRemove(ctx context.Context, a *app, args []string) error {
	id := args[0]
	st, err := a.state(ctx)
	if err != nil {
		return err
	}
	if _, ok := st.Sink(id); !ok {
		return fmt.Errorf("sink %q not found; \"phloemctl sink list\" shows the sinks", id)
	}
	w, err := a.writer(ctx)
	if err != nil {
		return err
	}
	if err := w.DeleteSink(ctx, id); err != nil {
		return err
	}
	if a.json() {
		return a.printJSON(struct {
			Removed string `json:"removed"`
		}{id})
	}
	a.printf("Sink %q removed.\n", id)
	return nil
}

// topicRow is one line of "topics list".
type topicRow struct {
	topics.Info
	// State is the tenant's status, or "removed" when the tenant is not in the
	// control topic (the topic is then garbage for "topics gc").
	State string `json:"state"`
}

func cmdTopicsList(ctx context.Context, a *app, _ []string) error {
	st, err := a.state(ctx)
	if err != nil {
		return err
	}
	infos, err := topics.List(ctx, a.adm, a.g.topics)
	if err != nil {
		return err
	}
	out := make([]topicRow, len(infos))
	for i, in := range infos {
		state := "removed"
		if t, ok := st.Tenant(in.Tenant); ok {
			state = string(t.Status)
		}
		out[i] = topicRow{Info: in, State: state}
	}
	if a.json() {
		return a.printJSON(out)
	}
	if len(out) == 0 {
		a.printf("No topics match %s.\n", a.g.topics.Template)
		return nil
	}
	rows := make([][]string, len(out))
	for i, r := range out {
		rows[i] = []string{r.Topic, r.Tenant, strconv.Itoa(r.Partitions), r.State}
	}
	return a.table([]string{"TOPIC", "TENANT", "PARTITIONS", "TENANT STATE"}, rows)
}

func setupTopicsGC(fs *flag.FlagSet) runFunc {
	var yes bool
	fs.BoolVar(&yes, "yes", false, "really delete; without it, only list what would be deleted")
	return func(ctx context.Context, a *app, _ []string) error {
		// The live set must come from complete state: a.state waits until the
		// Watcher caught up, so a live tenant never looks removed.
		st, err := a.state(ctx)
		if err != nil {
			return err
		}
		live := func(id string) bool { _, ok := st.Tenant(id); return ok }
		results, gcErr := topics.GC(ctx, a.adm, a.g.topics, live, yes)
		if results == nil {
			results = []topics.GCResult{}
		}
		if a.json() {
			if err := a.printJSON(struct {
				DryRun bool              `json:"dry_run"`
				Topics []topics.GCResult `json:"topics"`
			}{!yes, results}); err != nil {
				return err
			}
			return gcErr
		}
		switch {
		case len(results) == 0 && gcErr == nil:
			a.printf("No topics of removed tenants.\n")
		case !yes:
			a.printf("Would delete %d topic(s) of removed tenants (dry run):\n", len(results))
			for _, r := range results {
				a.printf("  %s (tenant %s)\n", r.Topic, r.Tenant)
			}
			a.printf("Run \"phloemctl topics gc --yes\" to delete them. This deletes their data.\n")
		default:
			for _, r := range results {
				if r.Deleted {
					a.printf("Deleted %s (tenant %s).\n", r.Topic, r.Tenant)
				} else {
					a.printf("NOT deleted %s (tenant %s): %s\n", r.Topic, r.Tenant, r.Error)
				}
			}
		}
		return gcErr
	}
}
