package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
)

// exitCode is an error that carries a process exit status whose message has
// already been printed.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// printReport writes a round's report as one JSON object or as text. A
// round with any error, or with nothing measured, then ends with exit
// status 1 (the report has said why).
func printReport(w io.Writer, asJSON bool, rep interface{ writeText(io.Writer) error }, failed, measured int) error {
	var err error
	if asJSON {
		err = json.NewEncoder(w).Encode(rep)
	} else {
		err = rep.writeText(w)
	}
	if err != nil {
		return err
	}
	if failed > 0 || measured == 0 {
		return exitCode(1)
	}
	return nil
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"null-extproc", "serve a null ext_proc server (CONTINUE to everything), the baseline", runNull},
	{"extproc", "drive an ext_proc server as Envoy does and report throughput, latency and memory", runExtproc},
	{"http-upstream", "serve a stand-in provider over plain HTTP/1.1 (a Responses answer with usage; GET /counts says what arrived)", runHTTPUpstream},
	{"body", "print the Responses body extproc sends (for an HTTP load generator)", runBody},
	{"ws-upstream", "serve a fake Responses WebSocket upstream (response.create answered with created, a delta, completed)", runWSUpstream},
	{"ws-relay", "serve the minimal WebSocket relay (two goroutines copying frames), the bridge's baseline", runWSRelay},
	{"ws", "drive WebSocket sessions (latency, throughput, idle memory, concurrency) and report", runWS},
}

func usageText() string {
	s := "usage: tiergate-load <command> [flags]\n\ncommands:\n"
	for _, c := range commands {
		s += fmt.Sprintf("  %-13s %s\n", c.name, c.summary)
	}
	return s + "\nRun 'tiergate-load <command> -h' for a command's flags.\n"
}

// run is the whole program behind main: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// Every mode may hold thousands of connections (the ws modes do).
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return exitCode(2)
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText())
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
	}
	fmt.Fprintf(stderr, "tiergate-load: unknown command %q\n\n%s", args[0], usageText())
	return exitCode(2)
}
