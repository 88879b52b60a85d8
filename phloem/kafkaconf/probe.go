package kafkaconf

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DefaultProbeTimeout is used by Probe for a non-positive timeout.
const DefaultProbeTimeout = 5 * time.Second

// ProbeError is returned by Probe when no seed broker answered. Its message names
// every address and why it failed, e.g.
//
//	kafka unreachable: cannot connect to 127.0.0.1:1 within 5s: dial tcp 127.0.0.1:1: connect: connection refused
type ProbeError struct {
	Timeout time.Duration
	Addrs   []string // the seed brokers tried, in order
	Errs    []error  // Errs[i] is why Addrs[i] failed
}

func (e *ProbeError) Error() string {
	var b strings.Builder
	b.WriteString("kafka unreachable: ")
	if len(e.Addrs) == 1 {
		fmt.Fprintf(&b, "cannot connect to %s within %s: %v", e.Addrs[0], e.Timeout, e.Errs[0])
		return b.String()
	}
	fmt.Fprintf(&b, "cannot connect to any of %d seed brokers within %s: ", len(e.Addrs), e.Timeout)
	for i, a := range e.Addrs {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", a, e.Errs[i])
	}
	return b.String()
}

// Unwrap returns the per-address errors, so errors.Is(err, context.DeadlineExceeded)
// tells a blackhole from a refusal.
func (e *ProbeError) Unwrap() []error { return e.Errs }

// Probe checks that at least one seed broker in opts answers a Kafka request
// (a broker-only Metadata request, over the configured TLS and SASL) within
// timeout (non-positive: DefaultProbeTimeout), asking every seed at once. It
// returns nil as soon as one answers, or a *ProbeError naming each address and
// why it failed. It returns no later than the timeout or ctx, whichever is first:
// a refused port fails at once, a blackholed address at the deadline. The probe
// uses its own short-lived client and closes it before returning.
//
// opts should be connection options (Config.Opts, or the same plus kgo.SeedBrokers),
// not consumer or producer options: the probe's client is a full kgo client and
// would, for example, join a consumer group given kgo.ConsumerGroup.
func Probe(ctx context.Context, opts []kgo.Opt, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// The probe's deadline bounds the dial too (kgo dials under the request's
	// context), so the configured dial timeout is left alone.
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("cannot build kafka client for the probe: %w", err)
	}
	defer cl.Close()

	addrs, _ := cl.OptValue(kgo.SeedBrokers).([]string)
	seeds := cl.SeedBrokers()
	if len(addrs) != len(seeds) {
		// Cannot happen with kgo's current seed handling; keep the names
		// honest anyway rather than misattribute an error.
		addrs = make([]string, len(seeds))
		for i := range seeds {
			addrs[i] = fmt.Sprintf("seed broker %d", i)
		}
	}

	errs := make([]error, len(seeds))
	ok := make(chan struct{}, len(seeds))
	var wg sync.WaitGroup
	for i, br := range seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := kmsg.NewPtrMetadataRequest()
			req.Topics = []kmsg.MetadataRequestTopic{} // brokers only
			_, err := br.Request(ctx, req)
			if err != nil {
				errs[i] = err
				return
			}
			ok <- struct{}{}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	select {
	case <-ok:
		cancel() // release the other probes; the deferred Close waits for nothing else
		<-done
		return nil
	case <-done:
		select {
		case <-ok:
			return nil
		default:
		}
	}
	for i, err := range errs {
		if errors.Is(err, context.DeadlineExceeded) {
			errs[i] = fmt.Errorf("no answer: %w", err)
		}
	}
	return &ProbeError{Timeout: timeout, Addrs: addrs, Errs: errs}
}
