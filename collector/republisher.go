package collector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector/wire"
	"phloem/phloem/topics"
)

// Kafka record header keys of tenant topics (the shared record format lives in
// phloem/topics, so that the collector and the consumer cannot drift apart).
const (
	HeaderMeterID     = topics.HeaderMeterID
	HeaderSeq         = topics.HeaderSeq
	HeaderRequestID   = topics.HeaderRequestID
	HeaderCollectorID = topics.HeaderCollectorID
	HeaderTimestamp   = topics.HeaderTimestamp
)

// Batch is one decoded ingest request, handed to a Republisher. Its memory (the
// records' payloads) belongs to the collector and stays valid until the
// Republisher calls done.
type Batch struct {
	// Tenant is the id of the token's tenant; Topic is that tenant's topic. Both
	// come from the control state, never from anything else the client sent.
	Tenant string
	Topic  string
	// Partitions is the partition count asked for when the topic is created.
	Partitions int32
	MeterID    string
	RequestID  string
	// Received is when the collector read the request; it is the Kafka record
	// timestamp (the meter's own timestamp travels in HeaderTimestamp, so a meter
	// with a wrong clock cannot push records out of retention).
	Received time.Time
	Records  []wire.Record
	// Deadline is the request's server deadline: records not sent to Kafka by
	// then are failed rather than stored after the meter was told 503.
	Deadline time.Time
}

// Republisher stores batches durably. The collector answers 200 only after done
// reported nil for the request's batch.
type Republisher interface {
	// Publish starts storing b. done must be called exactly once, from any
	// goroutine (possibly before Publish returns), with nil once every record is
	// acknowledged or with the first error, and only when the Republisher no
	// longer references b's memory. ctx bounds only the wait for room in a full
	// buffer; it is the request's context.
	Publish(ctx context.Context, b *Batch, done func(error))
	// Ping checks the destination answers (readiness).
	Ping(ctx context.Context) error
	// Flush waits for everything published to be acknowledged or failed.
	Flush(ctx context.Context) error
	// Close releases the Republisher; Publish must not be called after it.
	Close()
}

// ErrKafkaUnavailable wraps produce failures; the ingest answer is 503.
var ErrKafkaUnavailable = errors.New("kafka did not acknowledge the batch")

// DiscardRepublisher acknowledges every batch at once without storing it: the
// collector's own throughput ceiling in benchmarks, and a sink for tests that
// exercise only the HTTP side. Never use it in production: it acknowledges data
// it drops.
type DiscardRepublisher struct{}

// Publish calls done(nil) at once.
func (DiscardRepublisher) Publish(_ context.Context, _ *Batch, done func(error)) { done(nil) }

// Ping returns nil.
func (DiscardRepublisher) Ping(context.Context) error { return nil }

// Flush returns nil.
func (DiscardRepublisher) Flush(context.Context) error { return nil }

// Close does nothing.
func (DiscardRepublisher) Close() {}

// kafkaRepublisher produces batches with franz-go.
//
// Contexts (STYLE.md rule 6): a kgo batch is cancelled by the context of its
// FIRST record only, and kgo mixes records of many requests in one partition
// batch. So records never carry the meter connection's context: a meter that
// hangs up must not cancel another meter's records. Each request's records carry
// a context derived from the republisher's own (alive until Close) with the
// request's server deadline; past it, records kgo has not yet sent fail, so a
// batch answered 503 is not also stored later in the common case (broker down
// before the send). If the broker went away after the send, kgo cannot fail the
// records safely (idempotent producer): they may be stored after the 503, and the
// meter's retry then stores them again, a duplicate identifiable by (meter id,
// seq), as the delivery contract allows. The one coupling left: when request A's
// deadline passes while A's record heads a partition batch, records of requests
// behind it in that partition fail too and those requests get 503. That only
// happens when Kafka is already slower than the deadline.
type kafkaRepublisher struct {
	cl          *kgo.Client
	adm         *kadm.Client
	collectorID []byte
	ensure      bool
	ensureTO    time.Duration
	topicsCfg   topics.Config
	m           *metrics

	ctx    context.Context // parent of record contexts; cancelled by Close
	cancel context.CancelFunc

	ensured sync.Map // topic -> struct{}: created (or found) by this process
}

func newKafkaRepublisher(cfg Config, m *metrics) (*kafkaRepublisher, error) {
	codec, err := compressionCodec(cfg.Compression)
	if err != nil {
		return nil, err
	}
	prodTO := cfg.ProduceRequestTimeout
	if prodTO == 0 {
		prodTO = cfg.IngestTimeout
	}
	delivTO := cfg.RecordDeliveryTimeout
	if delivTO == 0 {
		delivTO = cfg.IngestTimeout
	}
	opts := append([]kgo.Opt(nil), cfg.KafkaOpts...)
	opts = append(opts,
		// Idempotence is franz-go's default; acks=all is required by it and
		// stated here so that nobody "optimises" it away.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(cfg.ProducerLinger),
		kgo.ProducerBatchCompression(codec),
		kgo.MaxBufferedRecords(cfg.MaxBufferedRecords),
		kgo.MaxBufferedBytes(cfg.MaxBufferedBytes),
		kgo.ProduceRequestTimeout(prodTO),
		kgo.RecordDeliveryTimeout(delivTO),
		// Key = meter id: the default partitioner hashes keys, keeping each
		// meter's records in order on one partition.
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot create Kafka producer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &kafkaRepublisher{
		cl:          cl,
		adm:         kadm.NewClient(cl),
		collectorID: []byte(cfg.CollectorID),
		ensure:      cfg.EnsureTopics,
		ensureTO:    cfg.TopicEnsureTimeout,
		topicsCfg:   cfg.Topics,
		m:           m,
		ctx:         ctx,
		cancel:      cancel,
	}, nil
}

// pubState tracks one batch's acknowledgements. kgo calls promises serially on
// its own goroutine, so promise is kept short and lock-free.
type pubState struct {
	remaining atomic.Int64
	err       atomic.Pointer[error]
	start     time.Time
	m         *metrics
	cancel    context.CancelFunc
	done      func(error)
}

func (s *pubState) promise(_ *kgo.Record, err error) {
	if err != nil {
		s.err.CompareAndSwap(nil, &err)
		s.m.produceErrors.Inc()
	}
	if s.remaining.Add(-1) == 0 {
		s.finish()
	}
}

func (s *pubState) finish() {
	s.cancel()
	if ep := s.err.Load(); ep != nil {
		s.done(fmt.Errorf("%w: %w", ErrKafkaUnavailable, *ep))
		return
	}
	s.m.produceLatency.Observe(time.Since(s.start).Seconds())
	s.done(nil)
}

func (k *kafkaRepublisher) Publish(ctx context.Context, b *Batch, done func(error)) {
	if err := k.ensureTopic(ctx, b); err != nil {
		done(err)
		return
	}
	n := len(b.Records)
	if n == 0 {
		done(nil)
		return
	}
	rctx, cancel := context.WithDeadline(k.ctx, b.Deadline)
	st := &pubState{start: time.Now(), m: k.m, cancel: cancel, done: done}
	st.remaining.Store(int64(n))

	// One allocation each for records, headers and header values of the whole
	// batch, instead of several per record.
	recs := make([]kgo.Record, n)
	hdrs := make([]kgo.RecordHeader, 5*n)
	nums := make([]byte, 0, 40*n)
	key := []byte(b.MeterID)
	rid := []byte(b.RequestID)
	ts := b.Received
	promise := st.promise
	for i := range recs {
		wr := &b.Records[i]
		start := len(nums)
		nums = strconv.AppendUint(nums, wr.Seq, 10)
		mid := len(nums)
		nums = strconv.AppendInt(nums, wr.Timestamp, 10)
		h := hdrs[5*i : 5*i+5 : 5*i+5]
		h[0] = kgo.RecordHeader{Key: HeaderMeterID, Value: key}
		h[1] = kgo.RecordHeader{Key: HeaderSeq, Value: nums[start:mid:mid]}
		h[2] = kgo.RecordHeader{Key: HeaderRequestID, Value: rid}
		h[3] = kgo.RecordHeader{Key: HeaderCollectorID, Value: k.collectorID}
		h[4] = kgo.RecordHeader{Key: HeaderTimestamp, Value: nums[mid:len(nums):len(nums)]}
		r := &recs[i]
		r.Topic = b.Topic
		r.Key = key
		r.Value = wr.Payload
		r.Headers = h
		r.Timestamp = ts
		r.Context = rctx
		// ctx (the request's) only bounds waiting for buffer room: if the
		// buffer stays full past the deadline, the record fails with the
		// context's error and the request gets 503.
		k.cl.Produce(ctx, r, promise)
	}
}

// ensureTopic creates the batch's topic once per process when configured to.
func (k *kafkaRepublisher) ensureTopic(ctx context.Context, b *Batch) error {
	if !k.ensure {
		return nil
	}
	if _, ok := k.ensured.Load(b.Topic); ok {
		return nil
	}
	ectx, cancel := context.WithTimeout(ctx, k.ensureTO)
	defer cancel()
	var err error
	if b.Topic == k.topicsCfg.Name(b.Tenant) {
		_, err = topics.Ensure(ectx, k.adm, k.topicsCfg, b.Tenant, b.Partitions)
	} else {
		// The tenant record names its own topic: create that one.
		_, err = k.adm.CreateTopic(ectx, max(b.Partitions, k.topicsCfg.Partitions), k.topicsCfg.ReplicationFactor, nil, b.Topic)
		if err != nil && isTopicExists(err) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("%w: cannot ensure topic %q of tenant %q: %w", ErrKafkaUnavailable, b.Topic, b.Tenant, err)
	}
	k.ensured.Store(b.Topic, struct{}{})
	return nil
}

func (k *kafkaRepublisher) Ping(ctx context.Context) error {
	if err := k.cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka ping: %w", err)
	}
	return nil
}

func (k *kafkaRepublisher) Flush(ctx context.Context) error {
	if err := k.cl.Flush(ctx); err != nil {
		return fmt.Errorf("cannot flush Kafka producer: %w", err)
	}
	return nil
}

func (k *kafkaRepublisher) Close() {
	k.cl.Close() // fails what is still buffered, calling every promise
	k.cancel()
}
