// Command rewrite prints a shipped Envoy bootstrap rewritten to run
// elsewhere (see envoyrig.Rewrite): scripts/run uses it to point Envoy at a
// local stand-in for the providers and to move its ports.
//
//	go run ./internal/envoyrig/rewrite [flags] envoy/envoy.yaml > envoy.json
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tiergate/tiergate/internal/envoyrig"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rewrite:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("rewrite", flag.ContinueOnError)
	listen := fs.String("listen", "", "host:port the llm_ingress listener binds instead of 0.0.0.0:8080")
	admin := fs.String("admin", "", "host:port Envoy's admin API binds instead of 127.0.0.1:9901")
	extproc := fs.String("extproc", "", "tiergate's ext_proc address (host:port or unix:///path) instead of the bootstrap's")
	ws := fs.String("ws", "", "tiergate's WebSocket bridge (host:port) instead of 127.0.0.1:8081")
	upstream := fs.String("upstream", "", "host:port of a stand-in for both providers (api.openai.com and api.anthropic.com)")
	upstreamCA := fs.String("upstream-ca", "", "PEM file of the CA the stand-in's certificate chains to (its names must still be api.openai.com and api.anthropic.com)")
	noExtProc := fs.Bool("no-extproc", false, "remove the ext_proc filter (Envoy alone, a benchmark's floor)")
	plainUpstream := fs.Bool("plain-upstream", false, "reach the providers' clusters over plain HTTP/1.1 (a benchmark's local stand-in)")
	exactBalance := fs.Bool("exact-balance", false, "spread the llm_ingress listener's connections evenly over Envoy's workers (a benchmark's few connections)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want one bootstrap file, got %d arguments", fs.NArg())
	}
	in, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	o := envoyrig.Options{Admin: *admin, UpstreamCA: *upstreamCA, Clusters: map[string]string{},
		WithoutExtProc: *noExtProc, PlainUpstreams: *plainUpstream, ExactBalance: *exactBalance}
	if *listen != "" {
		o.Listeners = map[string]string{"llm_ingress": *listen}
	}
	if *extproc != "" {
		o.Clusters["tiergate_extproc"] = *extproc
	}
	if *ws != "" {
		o.Clusters["tiergate_ws"] = *ws
	}
	if *upstream != "" {
		o.Clusters["openai"] = *upstream
		o.Clusters["anthropic"] = *upstream
	}
	out, err := envoyrig.Rewrite(in, o)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}
