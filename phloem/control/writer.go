package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/topics"
)

// Writer writes control records. Each call produces one record synchronously and
// returns only once Kafka acknowledged it, or with the error. The client must keep
// kgo's default acks (all in-sync replicas): a control write that a broker failure can
// lose would silently resurrect a removed tenant or an old token.
//
// Writer does not compute versions: the caller reads the current state through a
// Watcher (after Ready) and writes current version + 1. It owns nothing; the caller
// closes the client.
type Writer struct {
	client *kgo.Client
	topic  string
}

// NewWriter returns a Writer producing to topic ("" means DefaultTopic) on client.
func NewWriter(client *kgo.Client, topic string) *Writer {
	if topic == "" {
		topic = DefaultTopic
	}
	return &Writer{client: client, topic: topic}
}

// PutTenant writes t under TenantKey(t.ID) after validating it.
func (w *Writer) PutTenant(ctx context.Context, t Tenant) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("cannot write tenant: %w", err)
	}
	v, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("cannot encode tenant %q: %w", t.ID, err)
	}
	return w.produce(ctx, TenantKey(t.ID), v)
}

// DeleteTenant writes a tombstone for tenant id. It does not delete the tenant's
// topic: see topics.GC.
func (w *Writer) DeleteTenant(ctx context.Context, id string) error {
	if err := topics.ValidTenantID(id); err != nil {
		return fmt.Errorf("cannot remove tenant: %w", err)
	}
	return w.produce(ctx, TenantKey(id), nil)
}

// PutSink writes s under SinkKey(s.ID) after validating it.
func (w *Writer) PutSink(ctx context.Context, s Sink) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("cannot write sink: %w", err)
	}
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("cannot encode sink %q: %w", s.ID, err)
	}
	return w.produce(ctx, SinkKey(s.ID), v)
}

// DeleteSink writes a tombstone for sink id.
func (w *Writer) DeleteSink(ctx context.Context, id string) error {
	if err := ValidSinkID(id); err != nil {
		return fmt.Errorf("cannot remove sink: %w", err)
	}
	return w.produce(ctx, SinkKey(id), nil)
}

func (w *Writer) produce(ctx context.Context, key string, value []byte) error {
	// A nil Value is a tombstone (null on the wire), which compaction removes.
	r := &kgo.Record{Topic: w.topic, Key: []byte(key), Value: value}
	if err := w.client.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("cannot write control record %q to topic %q: %w", key, w.topic, err)
	}
	return nil
}

// EnsureTopic creates the control topic with one partition and cleanup.policy=compact.
// One partition keeps a total order of control events; compaction keeps the latest
// record per key, so replay time follows the number of tenants, not of changes. An
// existing topic is success (its configuration is not checked).
func EnsureTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	if topic == "" {
		topic = DefaultTopic
	}
	configs := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	resp, err := adm.CreateTopic(ctx, 1, -1, configs, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		if resp.ErrMessage != "" {
			err = fmt.Errorf("%w (%s)", err, resp.ErrMessage)
		}
		return fmt.Errorf("cannot create control topic %q: %w", topic, err)
	}
	return nil
}
