package topics

// Record format of tenant topics. The collector writes it and the phloem consumer
// reads it; both take the names from here so that they cannot drift apart. The
// record key is the meter id (per-meter order within a partition) and the value is
// the record's payload. Header names carry a "phloem-" prefix so that they never
// collide with headers of other producers sharing a cluster.
const (
	HeaderMeterID     = "phloem-meter-id"
	HeaderSeq         = "phloem-seq"          // decimal per-meter sequence number
	HeaderRequestID   = "phloem-request-id"   // the ingest request's X-Request-Id
	HeaderCollectorID = "phloem-collector-id" // the collector that stored the record
	HeaderTimestamp   = "phloem-timestamp"    // the meter's timestamp, decimal unix nanoseconds
)
