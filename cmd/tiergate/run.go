package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
)

// exitCode is an error that carries a process exit status whose message has
// already been printed.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Exit statuses of `tiergate eval` (docs/contracts.md, "CLI"); validate
// and eval also end a usage error with exitError, as they do a bad flag.
const (
	exitForwarded = 0
	exitError     = 1
	exitRefused   = 3
)

const usageText = `usage: tiergate <command> [flags]

commands:
  serve     run the ext_proc server, the WebSocket bridge and the admin listener
  validate  check policy files: tiergate validate FILE...
  eval      show what a request becomes: tiergate eval --path /v1/responses < body.json
  test      run policy tests: tiergate test FILE...
  replay    re-decide usage logs under a policy: tiergate replay --config FILE [--json] [--simulate-budgets] USAGE.jsonl...
  cost      re-price usage logs: tiergate cost --config FILE [--json] USAGE.jsonl...
  drain     Envoy's preStop hook: drain Envoy and tiergate's sessions, wait for requests in flight
  version   print the version

Run 'tiergate <command> -h' for a command's flags.
`

// run is the whole program behind main: tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitCode(2)
	}
	var err error
	switch args[0] {
	case "serve":
		err = runServe(ctx, args[1:], stdout, stderr)
	case "validate":
		err = runValidate(args[1:], stdout, stderr)
	case "eval":
		err = runEval(args[1:], stdin, stdout, stderr)
	case "cost":
		err = runCost(args[1:], stdout, stderr)
	case "test":
		err = runTest(args[1:], stdout, stderr)
	case "replay":
		err = runReplay(args[1:], stdout, stderr)
	case "drain":
		err = runDrain(ctx, args[1:], stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "tiergate", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	default:
		fmt.Fprintf(stderr, "tiergate: unknown command %q\n\n%s", args[0], usageText)
		return exitCode(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// Version is stamped at build time with -ldflags "-X main.Version=...";
// otherwise the module version or VCS revision is reported.
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return "devel-" + s.Value
			}
		}
	}
	return "devel"
}
