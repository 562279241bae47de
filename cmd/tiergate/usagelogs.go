package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
	"github.com/tiergate/tiergate/usage"
)

// maxRecordLine bounds one usage log line (a record is a few hundred bytes;
// a model name from a client can make it longer).
const maxRecordLine = 1 << 20

// logCommand is what `tiergate cost` and `tiergate replay` share: a policy
// file the usage logs are judged by, the logs, and the report's format.
// A command adds its own flags to fs before parse.
type logCommand struct {
	name   string
	fs     *flag.FlagSet
	config *string
	asJSON *bool
	stderr io.Writer
}

// newLogCommand sets up the flags of the command name: --config, described
// by configHelp, and --json; usageLine is the synopsis -h prints.
func newLogCommand(name, configHelp, usageLine string, stderr io.Writer) *logCommand {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &logCommand{
		name: name, fs: fs, stderr: stderr,
		config: fs.String("config", "", configHelp),
		asJSON: fs.Bool("json", false, "write the report as one JSON object"),
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: "+usageLine)
		fs.PrintDefaults()
	}
	return c
}

// parse parses args and loads the policy. A missing --config or log, or a
// policy that does not load, is reported on stderr and ends with
// exitError.
func (c *logCommand) parse(args []string) (*policy.Policy, error) {
	if err := c.fs.Parse(args); err != nil {
		return nil, err
	}
	if *c.config == "" || c.fs.NArg() == 0 {
		c.fs.Usage()
		return nil, exitCode(exitError)
	}
	p, err := loadPolicy(*c.config)
	if err != nil {
		fmt.Fprintln(c.stderr, err)
		return nil, exitCode(exitError)
	}
	return p, nil
}

// eachRecord calls f with every record of every log, in order. A record
// that cannot be read, or that f fails on, is reported on stderr with its
// file and line, and ends the command with exitError.
func (c *logCommand) eachRecord(f func(*tiergatev1.UsageRecord) error) error {
	for _, name := range c.fs.Args() {
		if err := eachRecord(name, f); err != nil {
			fmt.Fprintf(c.stderr, "tiergate %s: %v\n", c.name, err)
			return exitCode(exitError)
		}
	}
	return nil
}

// write writes rep to stdout as one line of JSON with --json, else as
// table writes it.
func (c *logCommand) write(stdout io.Writer, rep any, table func(io.Writer)) error {
	if !*c.asJSON {
		table(stdout)
		return nil
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	fmt.Fprintf(stdout, "%s\n", b)
	return nil
}

// eachRecord calls f with every record of a usage log, naming the line of
// any that cannot be read. Blank lines are skipped.
func eachRecord(name string, f func(*tiergatev1.UsageRecord) error) error {
	file, err := os.Open(name)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 64<<10), maxRecordLine)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		rec, err := usage.ParseRecord(line)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if err := f(rec); err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
