package topics

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Placeholder is the part of Config.Template replaced by the tenant id.
const Placeholder = "{tenant}"

// DefaultTemplate is the default topic name template.
const DefaultTemplate = "phloem.t." + Placeholder

// tenantIDPattern is the tenant id syntax without anchors, shared by ValidTenantID and
// Regexp so that the two can never disagree.
const tenantIDPattern = `[a-z0-9][a-z0-9_-]{0,62}`

var tenantIDRe = regexp.MustCompile(`^` + tenantIDPattern + `$`)

// maxTopicLen is Kafka's limit on topic name length.
const maxTopicLen = 249

// ErrInvalidTenantID is returned (wrapped) by ValidTenantID.
var ErrInvalidTenantID = errors.New("invalid tenant id")

// Config says how tenant topics are named and created. The zero value is not valid;
// start from DefaultConfig.
type Config struct {
	// Template is the topic name with Placeholder ("{tenant}") where the tenant id
	// goes; it must contain the placeholder exactly once. Default "phloem.t.{tenant}".
	Template string
	// Partitions is the partition count of a new tenant topic when the caller does not
	// ask for one. Default 3; must be >= 1.
	Partitions int32
	// ReplicationFactor of new tenant topics. Default -1: the broker's default.
	ReplicationFactor int16
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{Template: DefaultTemplate, Partitions: 3, ReplicationFactor: -1}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if strings.Count(c.Template, Placeholder) != 1 {
		return fmt.Errorf("topic template %q must contain %s exactly once", c.Template, Placeholder)
	}
	// The longest tenant id must still give a legal Kafka topic name.
	longest := c.Name(strings.Repeat("a", 63))
	if len(longest) > maxTopicLen {
		return fmt.Errorf("topic template %q gives names longer than Kafka's %d characters for a 63-character tenant id", c.Template, maxTopicLen)
	}
	for _, r := range strings.Replace(c.Template, Placeholder, "", 1) {
		if !validTopicRune(r) {
			return fmt.Errorf("topic template %q contains %q: Kafka topic names allow only [a-zA-Z0-9._-]", c.Template, r)
		}
	}
	if c.Partitions < 1 {
		return fmt.Errorf("topic partitions %d must be at least 1", c.Partitions)
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 {
		return fmt.Errorf("topic replication factor %d must be -1 (broker default) or at least 1", c.ReplicationFactor)
	}
	return nil
}

func validTopicRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// Name returns the topic of tenant. It does not validate the id: callers validate
// ids once, where they enter the system (ValidTenantID).
func (c Config) Name(tenant string) string {
	return strings.Replace(c.Template, Placeholder, tenant, 1)
}

// Tenant is the inverse of Name: it returns the tenant id of topic, and false when
// topic does not match the template or the embedded id is not a valid tenant id.
func (c Config) Tenant(topic string) (string, bool) {
	prefix, suffix, ok := strings.Cut(c.Template, Placeholder)
	if !ok || len(topic) < len(prefix)+len(suffix) {
		return "", false
	}
	if !strings.HasPrefix(topic, prefix) || !strings.HasSuffix(topic, suffix) {
		return "", false
	}
	id := topic[len(prefix) : len(topic)-len(suffix)]
	if ValidTenantID(id) != nil {
		return "", false
	}
	return id, true
}

// Regexp returns an anchored regular expression that matches exactly the topic names
// Name gives for valid tenant ids, for kgo.ConsumeRegex.
func (c Config) Regexp() string {
	prefix, suffix, _ := strings.Cut(c.Template, Placeholder)
	return `^` + regexp.QuoteMeta(prefix) + tenantIDPattern + regexp.QuoteMeta(suffix) + `$`
}

// ValidTenantID reports whether id is a valid tenant id: 1 to 63 characters of
// [a-z0-9_-], starting with a letter or digit. The syntax keeps ids safe in topic
// names, control keys, metric labels and URLs alike.
func ValidTenantID(id string) error {
	if !tenantIDRe.MatchString(id) {
		return fmt.Errorf("%w %q: use 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit", ErrInvalidTenantID, id)
	}
	return nil
}

// Ensure creates the topic of tenant with the given partition count (<= 0 means
// c.Partitions) and c.ReplicationFactor. A topic that already exists is success: adding a
// tenant is retried by operators, and a retry must not fail on the half it already did.
// It returns the topic name.
func Ensure(ctx context.Context, adm *kadm.Client, c Config, tenant string, partitions int32) (topic string, err error) {
	if err := ValidTenantID(tenant); err != nil {
		return "", err
	}
	if partitions <= 0 {
		partitions = c.Partitions
	}
	topic = c.Name(tenant)
	resp, err := adm.CreateTopic(ctx, partitions, c.ReplicationFactor, nil, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		if resp.ErrMessage != "" {
			err = fmt.Errorf("%w (%s)", err, resp.ErrMessage)
		}
		return topic, fmt.Errorf("cannot create topic %q for tenant %q: %w", topic, tenant, err)
	}
	return topic, nil
}

// Info describes one existing tenant topic.
type Info struct {
	Topic      string `json:"topic"`
	Tenant     string `json:"tenant"`
	Partitions int    `json:"partitions"`
}

// List returns the existing topics that match the template, sorted by name.
func List(ctx context.Context, adm *kadm.Client, c Config) ([]Info, error) {
	// WithAuthorizedOps makes kadm bypass the client's metadata cache (up to
	// MetadataMinAge, 5s, old): a listing right after a create or a GC must be current.
	details, err := adm.ListTopics(kadm.WithAuthorizedOps(ctx))
	if err != nil {
		return nil, fmt.Errorf("cannot list topics: %w", err)
	}
	var out []Info
	for name, d := range details {
		if d.Err != nil {
			continue
		}
		tenant, ok := c.Tenant(name)
		if !ok {
			continue
		}
		out = append(out, Info{Topic: name, Tenant: tenant, Partitions: len(d.Partitions)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}

// Orphans returns, sorted, the topics in existing that match the template and whose
// tenant is not live. Topics that do not match the template are never returned, so
// GC cannot touch anything but tenant topics.
func Orphans(c Config, existing []string, live func(tenant string) bool) []string {
	var out []string
	for _, topic := range existing {
		tenant, ok := c.Tenant(topic)
		if !ok || live(tenant) {
			continue
		}
		out = append(out, topic)
	}
	sort.Strings(out)
	return out
}

// GCResult is the outcome for one orphaned topic.
type GCResult struct {
	Topic   string `json:"topic"`
	Tenant  string `json:"tenant"`
	Deleted bool   `json:"deleted"`
	Error   string `json:"error,omitempty"`
}

// GC finds topics of tenants that are not live and, only when apply is true, deletes
// them. With apply false it is a dry run that lists what it would delete. The caller
// must build live from a complete control state (a Watcher that is Ready): a partial
// state would make live tenants look removed. The returned error is non-nil when
// listing failed or any deletion failed; the results say which.
func GC(ctx context.Context, adm *kadm.Client, c Config, live func(tenant string) bool, apply bool) ([]GCResult, error) {
	infos, err := List(ctx, adm, c)
	if err != nil {
		return nil, err
	}
	existing := make([]string, len(infos))
	for i, in := range infos {
		existing[i] = in.Topic
	}
	orphans := Orphans(c, existing, live)
	results := make([]GCResult, len(orphans))
	for i, topic := range orphans {
		tenant, _ := c.Tenant(topic)
		results[i] = GCResult{Topic: topic, Tenant: tenant}
	}
	if !apply || len(orphans) == 0 {
		return results, nil
	}
	resps, err := adm.DeleteTopics(ctx, orphans...)
	if err != nil {
		for i := range results {
			results[i].Error = err.Error()
		}
		return results, fmt.Errorf("cannot delete topics %s: %w", strings.Join(orphans, ", "), err)
	}
	var errs []error
	for i := range results {
		r, ok := resps[results[i].Topic]
		switch {
		case !ok:
			results[i].Error = "no answer from broker for this topic"
		case r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition):
			results[i].Error = r.Err.Error()
		default:
			// Already gone counts as deleted: a retried GC must converge.
			results[i].Deleted = true
			continue
		}
		errs = append(errs, fmt.Errorf("cannot delete topic %q: %s", results[i].Topic, results[i].Error))
	}
	return results, errors.Join(errs...)
}
