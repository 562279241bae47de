package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tiergate/tiergate/policy"
)

// runValidate checks each file and prints every problem as
// "file: place: message". It exits 1 when any file has a problem.
func runValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: tiergate validate FILE...") }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitCode(exitError)
	}
	bad := false
	for _, name := range fs.Args() {
		data, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(stdout, "%s: %v\n", name, err)
			bad = true
			continue
		}
		_, err = policy.Load(data)
		var ce *policy.ConfigError
		switch {
		case errors.As(err, &ce):
			for _, p := range ce.Problems {
				fmt.Fprintf(stdout, "%s: %s\n", name, p)
			}
			bad = true
		case err != nil:
			fmt.Fprintf(stdout, "%s: %v\n", name, err)
			bad = true
		}
	}
	if bad {
		return exitCode(exitError)
	}
	return nil
}
