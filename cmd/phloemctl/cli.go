package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"phloem/phloem/control"
	"phloem/phloem/kafkaconf"
	"phloem/phloem/topics"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // the command line is wrong
)

// globals are the flags every command accepts, before or after the command words.
type globals struct {
	kafka        kafkaconf.Config
	output       string
	timeout      time.Duration
	controlTopic string
	topics       topics.Config
	replication  int // --replication-factor; copied to topics.ReplicationFactor by validate
}

func defaultGlobals() globals {
	return globals{
		kafka:        kafkaconf.DefaultConfig(),
		output:       "table",
		timeout:      10 * time.Second,
		controlTopic: control.DefaultTopic,
		topics:       topics.DefaultConfig(),
		replication:  int(topics.DefaultConfig().ReplicationFactor),
	}
}

func (g *globals) register(fs *flag.FlagSet) {
	g.kafka.RegisterFlags(fs)
	// phloemctl never starts the embedded broker: its state would vanish on exit.
	fs.Lookup("brokers").Usage = "Kafka seed brokers, comma-separated host:port list; required (env PHLOEM_BROKERS)"
	fs.StringVar(&g.output, "output", g.output, "output format: table or json")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline for the whole command, connecting included")
	fs.StringVar(&g.controlTopic, "control-topic", g.controlTopic, "the control topic")
	fs.StringVar(&g.topics.Template, "topic-template", g.topics.Template, "tenant topic name template; "+topics.Placeholder+" is replaced by the tenant id")
	fs.IntVar(&g.replication, "replication-factor", g.replication, "replication factor of new tenant topics; -1: the broker's default")
}

func (g *globals) validate() error {
	if g.output != "table" && g.output != "json" {
		return fmt.Errorf("unknown --output %q: use table or json", g.output)
	}
	if g.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, got %s", g.timeout)
	}
	if g.controlTopic == "" {
		return errors.New("--control-topic must not be empty")
	}
	if g.replication < -1 || g.replication > 32767 {
		return fmt.Errorf("--replication-factor %d out of range", g.replication)
	}
	g.topics.ReplicationFactor = int16(g.replication)
	if err := g.topics.Validate(); err != nil {
		return err
	}
	return nil
}

// leaf is one command, e.g. "tenant add".
type leaf struct {
	name  string
	args  string // positional arguments in the usage line, e.g. "<id>"
	nargs int    // exact number of positional arguments
	short string
	long  string
	// setup registers the command's own flags on fs and returns the function that
	// runs the command once the flags are parsed.
	setup func(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error
}

type group struct {
	name  string
	short string
	cmds  []*leaf
}

func (gr *group) find(name string) *leaf {
	for _, c := range gr.cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

func findGroup(name string) *group {
	for _, g := range commandTree() {
		if g.name == name {
			return g
		}
	}
	return nil
}

const topUsage = `phloemctl manages Phloem's tenants, sinks and tenant topics through the control
topic (%s) on Kafka.

Usage:
  phloemctl [global flags] <command> <subcommand> [arguments] [flags]

Commands:
%s
Global flags (accepted anywhere on the command line):
%s
Environment: PHLOEM_BROKERS is the default of --brokers; PHLOEM_KAFKA_PASSWORD holds
the SASL password. Run "phloemctl <command> --help" for the subcommands of a command.
`

func writeTopUsage(w io.Writer) {
	var cmds strings.Builder
	tw := tabwriter.NewWriter(&cmds, 0, 4, 2, ' ', 0)
	for _, g := range commandTree() {
		for _, c := range g.cmds {
			fmt.Fprintf(tw, "  %s %s %s\t%s\n", g.name, c.name, c.args, c.short)
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, topUsage, control.DefaultTopic, cmds.String(), globalDefaults())
}

func globalDefaults() string {
	fs := flag.NewFlagSet("globals", flag.ContinueOnError)
	g := defaultGlobals()
	g.register(fs)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

func writeGroupUsage(w io.Writer, g *group) {
	fmt.Fprintf(w, "phloemctl %s: %s\n\nUsage:\n", g.name, g.short)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range g.cmds {
		fmt.Fprintf(tw, "  phloemctl %s %s %s\t%s\n", g.name, c.name, c.args, c.short)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nRun \"phloemctl %s <subcommand> --help\" for its flags; \"phloemctl --help\" lists the global flags.\n", g.name)
}

func writeLeafUsage(w io.Writer, g *group, c *leaf, fs *flag.FlagSet) {
	line := strings.Join(strings.Fields("phloemctl "+g.name+" "+c.name+" "+c.args), " ")
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n", line, c.short)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	// Command flags first, then the global ones, so the relevant ones are on top.
	global := flag.NewFlagSet("", flag.ContinueOnError)
	dg := defaultGlobals()
	dg.register(global)
	own := flag.NewFlagSet("", flag.ContinueOnError)
	fs.VisitAll(func(f *flag.Flag) {
		if global.Lookup(f.Name) == nil {
			own.Var(f.Value, f.Name, f.Usage)
			own.Lookup(f.Name).DefValue = f.DefValue
		}
	})
	var b strings.Builder
	own.SetOutput(&b)
	own.PrintDefaults()
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", b.String())
	}
	fmt.Fprintf(w, "\nGlobal flags: see \"phloemctl --help\" (--brokers, --output, --timeout, TLS and SASL).\n")
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "-?"
}

// splitCommand finds the command words (group and subcommand) among args, which may
// be preceded or followed by global flags, and returns the remaining arguments in
// order. It consults a flag set holding the global flags to know which flags take a
// value, so that in "--output json tenant list" the word "json" is not a command.
func splitCommand(args []string) (words, rest []string, help bool) {
	probe := flag.NewFlagSet("probe", flag.ContinueOnError)
	g := defaultGlobals()
	g.register(probe)
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			rest = append(rest, args[i:]...)
			return words, rest, help
		case isHelp(a):
			help = true
			rest = append(rest, a)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			rest = append(rest, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := probe.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					i++
					rest = append(rest, args[i])
				}
			}
		case len(words) < 2:
			words = append(words, a)
		default:
			rest = append(rest, a)
		}
	}
	return words, rest, help
}

// run is the whole command line tool: it parses args, runs the command under a
// deadline and returns the exit code. Output goes to stdout, diagnostics to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	words, rest, help := splitCommand(args)
	if len(words) == 0 {
		if help {
			writeTopUsage(stdout)
			return exitOK
		}
		writeTopUsage(stderr)
		return exitUsage
	}
	g := findGroup(words[0])
	if g == nil {
		fmt.Fprintf(stderr, "phloemctl: unknown command %q; run \"phloemctl --help\" for the list of commands\n", words[0])
		return exitUsage
	}
	if len(words) == 1 {
		if help {
			writeGroupUsage(stdout, g)
			return exitOK
		}
		writeGroupUsage(stderr, g)
		return exitUsage
	}
	c := g.find(words[1])
	if c == nil {
		fmt.Fprintf(stderr, "phloemctl: unknown subcommand %q of %q; run \"phloemctl %s --help\"\n", words[1], g.name, g.name)
		return exitUsage
	}

	fs := flag.NewFlagSet("phloemctl "+g.name+" "+c.name, flag.ContinueOnError)
	gl := defaultGlobals()
	gl.register(fs)
	exec := c.setup(fs)
	usageOut := stderr
	if help {
		usageOut = stdout
	}
	fs.SetOutput(usageOut)
	fs.Usage = func() { writeLeafUsage(usageOut, g, c, fs) }

	// flag stops at the first positional argument; collect positionals and keep
	// parsing so that flags may follow them ("tenant add acme --partitions 6").
	var pos []string
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage // flag already printed the error and the usage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != c.nargs {
		fmt.Fprintf(stderr, "phloemctl %s %s: want %d argument(s) %s, got %d; run \"phloemctl %s %s --help\"\n",
			g.name, c.name, c.nargs, c.args, len(pos), g.name, c.name)
		return exitUsage
	}
	if err := gl.validate(); err != nil {
		fmt.Fprintf(stderr, "phloemctl: %v\n", err)
		return exitUsage
	}

	ctx, cancel := context.WithTimeout(ctx, gl.timeout)
	defer cancel()
	a := &app{g: gl, stdout: stdout, stderr: stderr}
	defer a.close()
	if err := exec(ctx, a, pos); err != nil {
		fmt.Fprintf(stderr, "phloemctl %s %s: %v\n", g.name, c.name, err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

// usageError marks an error in the command's arguments (exit code 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }
