// Package topics names, creates, lists and garbage-collects the per-tenant data topics.
//
// Every tenant's records live on one Kafka topic whose name comes from a template
// (default "phloem.t.{tenant}"). Config.Name and Config.Tenant are exact inverses for
// valid tenant ids, and Config.Regexp matches exactly the names Config.Name produces,
// so a consumer subscribing with kgo.ConsumeRegex never picks up a foreign topic.
//
// Topic garbage collection exists because a removed tenant's topic otherwise stays on
// the brokers forever, and restart costs grew with topic count in systems like ours
// (DESIGN.md, failure table). Orphans is a pure function (existing topics minus live
// tenants); GC lists, computes and, only when asked, deletes. Dry run is the default
// everywhere: deleting a topic deletes a tenant's data.
//
// Concurrency: the package keeps no state and starts no goroutines. Config is a value
// type and safe to share. Every function that talks to Kafka takes a context; callers
// give it a deadline.
package topics
