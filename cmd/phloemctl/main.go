// Command phloemctl is the operator's tool for Phloem's control channel: it adds,
// lists, disables and removes tenants, manages sinks, and lists and
// garbage-collects tenant topics. Run "phloemctl --help" for usage.
//
// main is wiring only; the commands live in cli.go and commands.go, where tests
// call run in-process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
